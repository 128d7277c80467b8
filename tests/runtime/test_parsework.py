"""Parsing ahead in a second process (``livecart.runtime.parsework``): the helper answers exactly what the
parser does, its table starts again when full, a helper that dies or talks nonsense is stopped and the
daemon parses itself, and a sale decides the same whether it runs or not. The helper is a real process
(``python -m livecart.runtime.parsework``) except where a test needs to feed the daemon's end by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import msgspec
import pytest

from livecart.config import load
from livecart.core.errors import ConfigError
from livecart.core.parser import Parser
from livecart.core.records import NOTHING, Comment, ParseResult
from livecart.runtime import daemon, parsework
from livecart.runtime.parsework import ParseAhead, ParseAheadGone
from livecart.runtime.pipeline import Engine
from tests.runtime.test_crash import make_replay, start, wait_for_events, write_config
from tests.runtime.test_daemon import Running, comment, ctl, fed_factory, until, write

CORE = Path(__file__).resolve().parents[1] / "core"
SAMPLE = Path(__file__).resolve().parents[2] / "config" / "sample.toml"


async def helper_for(parser: Parser, **kwargs: Any) -> ParseAhead:
    return await ParseAhead.start(parser.catalogue, bare_plus_one=parser.bare_plus_one, max_qty=parser.max_qty,
                                  **kwargs)


def corpus(name: str) -> list[tuple[str | None, str]]:
    rows = [line.split("\t") for line in (CORE / name).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    return [(None if r[0] == "-" else r[0], r[1]) for r in rows if ":" not in r[0]]


async def parsed_ahead(ahead: ParseAhead, lines: list[tuple[str | None, str]], size: int = 7
                       ) -> list[ParseResult | None]:
    futs = [ahead.ask([t for _, t in lines[i:i + size]], lines[i][0]) for i in range(0, len(lines), size)]
    got: list[ParseResult | None] = []
    for fut in futs:
        assert fut is not None
        _, results = await asyncio.wait_for(fut, 10)
        got.extend(results)
    return got


@pytest.mark.parametrize(("catalogue", "lines"), [
    (SAMPLE, "parser_corpus.tsv"), (CORE / "real_chat.toml", "real_chat.tsv")])
async def test_the_helper_answers_what_the_parser_answers_for_every_line_of_both_corpora(
        catalogue: Path, lines: str) -> None:
    parser = Parser.from_config(load(catalogue))
    rows = corpus(lines)
    # One request per featured product (a request is parsed under one), in the corpus's order.
    rows.sort(key=lambda r: r[0] or "")
    ahead = await helper_for(parser)
    try:
        got = []
        for featured in sorted({f or "" for f, _ in rows}):
            group = [r for r in rows if (r[0] or "") == featured]
            got += await parsed_ahead(ahead, group, size=len(group))
    finally:
        await ahead.close()
    assert len(got) == len(rows) > 300
    assert got == [parser.parse(t, f) for f, t in rows]
    assert ahead.proc.returncode == 0  # closed: its input ended and it left on its own


async def test_the_table_starts_again_when_full_on_both_sides() -> None:
    parser = Parser.from_config(load(SAMPLE))
    lines = [("egg-10", f"鸡蛋{n}盒") for n in range(1, 10)] * 3 + [("egg-10", "+1"), ("egg-10", "hello")]
    ahead = await helper_for(parser, table_max=4)
    try:
        got = await parsed_ahead(ahead, lines, size=3)
    finally:
        await ahead.close()
    assert got == [parser.parse(t, f) for f, t in lines]
    assert len(ahead._table) <= 1 + 4 + 3  # started again: at most the limit plus one request's new ones


def frames(*bodies: bytes) -> io.BytesIO:
    return io.BytesIO(b"".join(struct.pack("<I", len(b)) + b for b in bodies))


def answers(out: bytes) -> list[tuple[bool, Any, list[int]]]:
    got = []
    view = memoryview(out)
    while view:
        (n,) = struct.unpack("<I", view[:4])
        reset, fresh, raw = msgspec.msgpack.decode(bytes(view[4:4 + n]))
        idx = array("I")
        idx.frombytes(raw)
        got.append((reset, fresh, list(idx)))
        view = view[4 + n:]
    return got


def test_a_text_the_helper_fails_on_comes_back_to_be_parsed_by_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fragile:  # wraps the parser (the compiled build's Parser cannot be subclassed in Python)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.parser = Parser(*args, **kwargs)

        def parse(self, text: str, featured: str | None = None) -> ParseResult:
            if text == "boom":
                raise RuntimeError("a parser bug")
            return self.parser.parse(text, featured)

    monkeypatch.setattr(parsework, "Parser", Fragile)
    cfg = load(SAMPLE)
    init = pickle.dumps((cfg.catalogue, True, 99, 100))
    out = io.BytesIO()
    enc = msgspec.msgpack.encode
    assert parsework.serve(frames(init, enc(("egg-10", ["+1", "boom", "+1"])), enc((None, ["boom"]))), out) == 0
    first, second = answers(out.getvalue())
    assert first[2] == [1, parsework.YOURSELF, 1]
    assert len(first[1]) == 1
    assert second == (False, [], [parsework.YOURSELF])


def test_the_helper_ends_quietly_when_its_input_ends_before_or_inside_a_frame() -> None:
    assert parsework.serve(io.BytesIO(b""), io.BytesIO()) == 0
    cfg = load(SAMPLE)
    init = pickle.dumps((cfg.catalogue, True, 99, 100))
    cut = frames(init).getvalue() + struct.pack("<I", 50) + b"\x92"
    out = io.BytesIO()
    assert parsework.serve(io.BytesIO(cut), out) == 0
    assert out.getvalue() == b""


class FakeProc:
    """The daemon's end fed by hand: ``stdout`` is what the "helper" says."""

    def __init__(self) -> None:
        self.stdout = asyncio.StreamReader()
        self.stdin = self
        self.written = bytearray()
        self.returncode: int | None = None
        self.pid = 0
        self.killed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.stdout.feed_eof()

    def kill(self) -> None:
        self.killed = True
        self.returncode = -9

    async def wait(self) -> int:
        return self.returncode or 0


def answer(reset: bool, fresh: list[Any], idx: list[int]) -> bytes:
    body = msgspec.msgpack.encode((reset, fresh, array("I", idx).tobytes()))
    return struct.pack("<I", len(body)) + body


async def test_nonsense_from_the_helper_stops_it_and_fails_what_was_asked(caplog: pytest.LogCaptureFixture) -> None:
    proc = FakeProc()
    ahead = ParseAhead(proc, "fake")  # type: ignore[arg-type]
    ahead._reader = asyncio.create_task(ahead._read_loop())
    first = ahead.ask(["+1", "hi"], "egg-10")
    second = ahead.ask(["+1"], "egg-10")
    assert first is not None
    assert second is not None
    proc.stdout.feed_data(answer(False, [("buy", [("egg-10", None, 1, None)]), ("none", [])], [1, 2]))
    featured, results = await asyncio.wait_for(first, 5)
    assert featured == "egg-10"
    assert results[1] == NOTHING
    assert results[0] is not None
    with caplog.at_level(logging.WARNING, logger="livecart.runtime.parsework"):
        proc.stdout.feed_data(answer(False, [], [7]))  # an index it never sent
        with pytest.raises(ParseAheadGone):
            await asyncio.wait_for(second, 5)
    assert ahead.gone is not None
    assert "made no sense" in ahead.gone
    assert proc.killed
    assert ahead.ask(["+1"], "egg-10") is None
    assert sum("parsed in the daemon from here on" in r.getMessage() for r in caplog.records) == 1
    await ahead.close()


async def test_a_helper_killed_fails_what_it_had_and_is_asked_no_more(caplog: pytest.LogCaptureFixture) -> None:
    ahead = await helper_for(Parser.from_config(load(SAMPLE)))
    first = ahead.ask(["+1"], "egg-10")
    assert first is not None
    await asyncio.wait_for(first, 10)
    with caplog.at_level(logging.WARNING, logger="livecart.runtime.parsework"):
        os.kill(ahead.proc.pid, signal.SIGSTOP)  # so that it cannot answer what comes next before it dies
        pending = ahead.ask(["+1"], "egg-10")
        assert pending is not None
        await asyncio.sleep(0.05)
        os.kill(ahead.proc.pid, signal.SIGKILL)
        with pytest.raises(ParseAheadGone):
            await asyncio.wait_for(pending, 10)
    assert ahead.gone is not None
    assert "exit status -9" in ahead.gone
    assert ahead.ask(["+1"], "egg-10") is None
    assert any("is gone" in r.getMessage() for r in caplog.records)
    await ahead.close()


async def test_closing_with_answers_still_coming_lets_the_helper_finish_them_and_exit() -> None:
    # 60 answers of 1,000 indices (~240 KB) are more than a pipe holds: the daemon's end must go on reading
    # while the helper ends, or the helper blocks on its write and is killed.
    ahead = await helper_for(Parser.from_config(load(SAMPLE)))
    asked = [ahead.ask(["+1", "鸡蛋来两盒", "hello", "蜂蜜 x2", "要"] * 200, "egg-10") for _ in range(60)]
    assert all(f is not None for f in asked)
    await asyncio.wait_for(ahead.close(), 10)
    assert ahead.proc.returncode == 0
    assert ahead.gone == "stopped"


async def test_a_text_that_cannot_be_sent_is_parsed_by_the_daemon() -> None:
    ahead = await helper_for(Parser.from_config(load(SAMPLE)))
    try:
        assert ahead.ask(["+1", "a\ud800"], "egg-10") is None  # a lone surrogate has no UTF-8
        assert ahead.unsent == 1
        fine = ahead.ask(["+1"], "egg-10")
        assert fine is not None
        await asyncio.wait_for(fine, 10)
    finally:
        await ahead.close()


async def test_a_stuck_helper_is_asked_no_more_than_max_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsework, "MAX_WAITING", 3)
    proc = FakeProc()
    ahead = ParseAhead(proc, "fake")  # type: ignore[arg-type]
    asked = [ahead.ask(["+1"], None) for _ in range(5)]
    assert [f is not None for f in asked] == [True, True, True, False, False]
    await ahead.close()


# --- the engine and the daemon ----------------------------------------------------------------------------

async def test_the_engine_uses_results_only_under_the_featured_product_they_were_parsed_under(
        tmp_path: Path) -> None:
    cfg = load(write(tmp_path))
    engine = await Engine.open(cfg)
    try:
        assert engine.ledger.featured == "egg-10"
        honey = Parser.from_config(cfg).parse("+1", "honey-500")
        # Parsed under honey while eggs are featured: parsed again here, so "+1" buys eggs.
        out = await engine.submit([comment(1)], ("honey-500", [honey]))
        assert [o.sku for o in out] == ["egg-10"]
        # Parsed under eggs: used as given (a result the parser would never give, to see it is the one used).
        out = await engine.submit([comment(2)], ("egg-10", [honey]))
        assert [o.sku for o in out] == ["honey-500"]
        # None: not parsed, so parsed here.
        out = await engine.submit([comment(3, "蜂蜜两瓶")], ("egg-10", [None]))
        assert [(o.sku, o.qty) for o in out] == [("honey-500", 2)]
    finally:
        await engine.close()


FED = '[[adapters]]\ntype = "fed"\nname = "feed"\n'
TEXTS = ["+1", "鸡蛋来两盒", "蜂蜜 x2", "hello", "要", "egg 3", "不要了", "honey 4", "多少钱", "link 1 +2", "扣1"]


def batch(start: int, n: int = 100) -> list[Comment]:
    return [comment(i, TEXTS[i % len(TEXTS)], user=f"u-{i % 37}") for i in range(start, start + n)]


async def a_sale(tmp_path: Path, how: str) -> tuple[list[tuple[Any, ...]], dict[str, Any], dict[str, float]]:
    """Pause, queue a batch, let the helper answer it, feature honey, resume; pause, queue a batch and a
    small one (one submit: results for the first, the second parsed in the daemon), resume; then nine more
    batches and a small one: every outcome, the final report and the parsing process's counts."""
    made: dict[str, Any] = {}
    os.mkdir(tmp_path)
    run = Running(write(tmp_path, FED, stock=40), make_adapter=fed_factory(made))
    run.cfg = dataclasses.replace(run.cfg, daemon=dataclasses.replace(run.cfg.daemon, parse_process=how))
    seen: list[tuple[Any, ...]] = []
    async with run as d:
        d.engine.add_listener(lambda outs: seen.extend((o.comment, o.sku, o.variant, o.qty, o.status, o.reason)
                                                       for o in outs))
        assert (d.ahead is not None) == (how == "on")
        await d.handle_control(ctl("pause"))
        made["feed"].push(batch(0))
        if d.ahead is not None:
            await until(lambda: d.ahead is not None and d.ahead.answered >= 1, "the helper's answer")
        await d.handle_control(ctl("feature", "honey-500"))  # "+1" parsed ahead under egg-10 is parsed again
        await d.handle_control(ctl("resume"))
        await until(lambda: d.engine.ledger.comments == 100, "the first batch")
        await d.handle_control(ctl("pause"))
        made["feed"].push(batch(100))
        made["feed"].push(batch(5000, 10))  # under AHEAD_MIN: parsed in the daemon, not asked
        if d.ahead is not None:
            await until(lambda: d.ahead is not None and d.ahead.answered >= 2, "the helper's answer")
        await d.handle_control(ctl("resume"))
        await until(lambda: d.engine.ledger.comments == 210, "the two batches")
        for k in range(2, 11):
            made["feed"].push(batch(100 * k))
        await until(lambda: d.engine.ledger.comments == 1110, "nine more batches")
        made["feed"].push(batch(1100, 10))
        made["feed"].end()
        assert await run.finish() == 0
    counts = {dict(k).get("result", ""): v for k, v in d._ahead_batches.values.items()}
    return seen, d.engine.ledger.snapshot(), counts


async def test_a_sale_decides_the_same_with_the_parsing_process_as_without(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Results are waited for as long as it takes here, so that a loaded machine cannot make them all late.
    monkeypatch.setattr(daemon, "AHEAD_WAIT", 30.0)
    on, on_report, on_counts = await a_sale(tmp_path / "on", "on")
    off, off_report, off_counts = await a_sale(tmp_path / "off", "off")
    assert on == off
    assert len(on) > 200
    for report in (on_report, off_report):
        report.pop("orders_detail", None)
    assert on_report["products"] == off_report["products"]
    assert on_report["comments"] == off_report["comments"] == 1120
    # The batch parsed under egg-10 was parsed again under honey; the two small batches were not asked (one
    # of them was decided in one submit with a batch whose results were used); the other ten were used.
    assert on_counts == {"featured": 1, "none": 2, "used": 10}
    assert off_counts == {}
    # The first batch's "+1" bought honey, the product featured when it was decided.
    first_plus_one = [o for o in on if o[0] == "m-0"]
    assert first_plus_one
    assert first_plus_one[0][1] == "honey-500"


async def test_a_sale_goes_on_when_the_helper_is_killed_and_parses_in_the_daemon(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    made: dict[str, Any] = {}
    run = Running(write(tmp_path, FED, stock=40), make_adapter=fed_factory(made))
    run.cfg = dataclasses.replace(run.cfg, daemon=dataclasses.replace(run.cfg.daemon, parse_process="on"))
    async with run as d:
        assert d.ahead is not None
        for k in range(5):
            made["feed"].push(batch(100 * k))
        await until(lambda: d.engine.ledger.comments == 500, "the first five batches")
        with caplog.at_level(logging.WARNING, logger="livecart.runtime.parsework"):
            os.kill(d.ahead.proc.pid, signal.SIGKILL)
            await until(lambda: d.ahead is not None and d.ahead.gone is not None, "the helper's end")
        for k in range(5, 10):
            made["feed"].push(batch(100 * k))
        made["feed"].end()
        assert await run.finish() == 0
    assert d.engine.ledger.comments == 1000
    assert d.ahead.gone is not None
    assert "exit status -9" in d.ahead.gone
    assert any("parsed in the daemon from here on" in r.getMessage() for r in caplog.records)
    counts = {dict(k).get("result", ""): v for k, v in d._ahead_batches.values.items()}
    assert counts.get("none", 0) >= 1  # not asked once it was gone


def test_a_parse_process_setting_that_is_not_a_choice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("[daemon]\n", '[daemon]\nparse_process = "yes"\n'),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="parse_process"):
        load(path)


# --- ``livecart run`` as a process ---------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc; a zombie is not live)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in found if alive(c)]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def the_helper_of(proc: subprocess.Popen[bytes]) -> int:
    limit = time.monotonic() + 30
    while time.monotonic() < limit:
        kids = children(proc.pid)
        if kids:
            assert len(kids) == 1
            return kids[0]
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.01)  # polling interval, bounded by the deadline above
    raise AssertionError("no parsing process started")


def paced_sale(tmp_path: Path) -> tuple[Path, Path]:
    replay = tmp_path / "comments.jsonl"
    make_replay(replay, 3000, seed=3, step=0.01)  # ~30 s at speed 1: long enough to act on it mid-way
    cfg = write_config(tmp_path / "sale", replay, speed=1, durability="os")
    cfg.write_text(cfg.read_text(encoding="utf-8") + '\n[daemon]\nparse_process = "on"\n', encoding="utf-8")
    return cfg, tmp_path / "sale" / "journal.db"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_the_helper_ends_with_the_daemon_when_the_daemon_is_killed_with_sigkill(tmp_path: Path) -> None:
    cfg, db = paced_sale(tmp_path)
    proc = start(cfg)
    try:
        helper = the_helper_of(proc)
        assert wait_for_events(db, proc, 50)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        limit = time.monotonic() + 10
        while alive(helper) and time.monotonic() < limit:
            time.sleep(0.01)  # polling interval, bounded by the deadline above
        assert not alive(helper), "the parsing process outlived its daemon"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_sigterm_to_the_whole_process_group_drains_without_losing_the_helper_early(tmp_path: Path) -> None:
    # systemd (KillMode=control-group) and a terminal's Ctrl-C signal every process of the unit or group: the
    # helper must leave the daemon's drain alone and end when the daemon closes its pipe.
    cfg, db = paced_sale(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "livecart.cli.main", "run", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        helper = the_helper_of(proc)
        assert wait_for_events(db, proc, 50)
        for sig in (signal.SIGTERM, signal.SIGINT):  # the helper alone: it stays
            os.kill(helper, sig)
        assert wait_for_events(db, proc, 150)  # a second of the sale later
        assert alive(helper)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = err.decode()
    assert proc.returncode == 0, text
    assert "is gone" not in text
    assert "parsing process:" in text
    assert "batches parsed ahead" in text
    assert not alive(helper)


def test_auto_counts_the_cpu_quota_of_the_process_own_cgroup_and_those_above_it(tmp_path: Path) -> None:
    mine = len(os.sched_getaffinity(0))
    root, own = tmp_path / "fs", tmp_path / "cgroup"
    own.write_text("0::/system.slice/livecart@tonggu.service\n")
    unit = root / "system.slice" / "livecart@tonggu.service"
    unit.mkdir(parents=True)
    assert parsework.cpus(root, own) == mine  # no quota anywhere: the affinity alone
    (unit / "cpu.max").write_text("max 100000\n")
    assert parsework.cpus(root, own) == mine
    (unit / "cpu.max").write_text("150000 100000\n")  # CPUQuota=150%: one whole CPU
    assert parsework.cpus(root, own) == 1
    (unit / "cpu.max").write_text("max 100000\n")
    (root / "system.slice" / "cpu.max").write_text("100000 100000\n")  # a quota on the slice above
    assert parsework.cpus(root, own) == 1
    (root / "cpu.max").write_text("50000 100000\n")  # a container's (cgroup namespace: "0::/")
    own.write_text("0::/\n")
    assert parsework.cpus(root, own) == 1
    # cgroup v1: the cpu controller's hierarchy
    v1, own1 = tmp_path / "v1", tmp_path / "cgroup1"
    own1.write_text("5:cpu,cpuacct:/lc\n4:memory:/lc\n")
    (v1 / "cpu,cpuacct" / "lc").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "lc" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu,cpuacct" / "lc" / "cpu.cfs_period_us").write_text("100000\n")
    assert parsework.cpus(v1, own1) == mine
    (v1 / "cpu,cpuacct" / "lc" / "cpu.cfs_quota_us").write_text("100000\n")
    assert parsework.cpus(v1, own1) == 1
    assert parsework.cpus(tmp_path / "none", tmp_path / "missing") == mine  # nothing to read


async def test_the_helper_imports_livecart_not_what_lies_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("livecart.py", "msgspec.py"):
        (tmp_path / name).write_text('print("not livecart")\nraise SystemExit(3)\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    ahead = await helper_for(Parser.from_config(load(SAMPLE)))
    try:
        fut = ahead.ask(["+1"] * 64, "egg-10")
        assert fut is not None
        _, results = await asyncio.wait_for(fut, 10)
        assert results == [Parser.from_config(load(SAMPLE)).parse("+1", "egg-10")] * 64
    finally:
        await ahead.close()
    assert ahead.proc.returncode == 0


async def test_the_helper_runs_in_its_own_session_out_of_reach_of_the_terminals_ctrl_c() -> None:
    ahead = await helper_for(Parser.from_config(load(SAMPLE)))
    try:
        assert os.getsid(ahead.proc.pid) == ahead.proc.pid != os.getsid(0)
        assert os.getpgid(ahead.proc.pid) != os.getpgid(0)
    finally:
        await ahead.close()


async def test_a_helper_that_is_behind_is_asked_no_more_than_max_waiting_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsework, "MAX_WAITING_BYTES", 10_000)
    proc = FakeProc()
    ahead = ParseAhead(proc, "fake")  # type: ignore[arg-type]
    long = "我要鸡蛋" * 500  # ~6 KB a text in UTF-8
    asked = [ahead.ask([long], None) for _ in range(3)]
    assert [f is not None for f in asked] == [True, True, False]
    assert ahead.skipped == 1
    ahead._reader = asyncio.create_task(ahead._read_loop())
    proc.stdout.feed_data(answer(False, [("none", [])], [1]))  # the first one answered: room again
    assert asked[0] is not None
    await asyncio.wait_for(asked[0], 5)
    assert ahead.ask([long], None) is not None
    await ahead.close()
