"""JetStream mode from outside (docs/contract.md §7): ``livecart run`` processes on a 3-node cluster, killed.

Two processes feed the same paced stream into one sale. One is killed with SIGKILL, then the node leading
the sale's stream, then both come back, then the other process is killed. The final ``report --json`` and
export must equal those of an uncrashed SQLite run of the same stream (the export's ``time`` column aside:
each run stamps orders with its own clock), and the deciders' announcements (each writes its fenced mark,
then logs "announced K outcomes of log messages A-B") must never cover a log message twice and, with the
batches a new decider finds "in doubt" (the last one its predecessor marked, which it may not have handed
out before it died; never announced again), must cover every outcome.

A second test pauses the decider (SIGSTOP) for longer than its lease: a standby takes over, and the paused
one, continued, steps down without announcing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest

from livecart.bench.natscluster import Cluster, LivecartRun, jetstream_storage, sale_config
from tests.e2e.proc import livecart, wait_for

pytestmark = pytest.mark.slow

N = 2500
STEP = 0.01  # seconds between comments at speed 1: the stream lasts 25 s

TEXTS = ["egg +1", "egg x2", "tea +1", "hello", "鸡蛋来两盒", "cancel egg", "egg x3", "tea x2"]


def _comments(path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(N):
            user = f"u-{(i * 7919) % 900}"
            text = TEXTS[(i * 31 + i // 5) % len(TEXTS)]
            f.write(json.dumps({"platform": "test", "room": "r", "id": f"m-{i}", "user": user, "name": user,
                                "text": text, "ts": 1_700_000_000 + i * STEP}, ensure_ascii=False) + "\n")


def _config(d: Path, storage: str, comments: Path, speed: float) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / "sale.toml"
    p.write_text(sale_config(storage, comments, speed, name="Cluster fault test", egg_stock=1500, egg_limit=4,
                             egg_presale=300, tea_stock=200), encoding="utf-8")
    return p


class Run(LivecartRun):
    """One ``livecart run`` process whose log (every incarnation) goes to ``<dir>/run.log``."""

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def deciding(self) -> int:
        return self.text().count("deciding sale")


ANNOUNCED = re.compile(r"announced (\d+) outcomes of log messages (\d+)-(\d+)")
IN_DOUBT = re.compile(r"in doubt: (\d+) outcomes of log messages (\d+)-(\d+)")


def _announcements(*runs: Run, again: bool = False) -> list[tuple[int, int, int]]:
    pattern = IN_DOUBT if again else ANNOUNCED
    return sorted((int(a), int(b), int(k)) for r in runs for k, a, b in pattern.findall(r.text()))


def _assert_disjoint(ranges: list[tuple[int, int, int]]) -> None:
    for (a1, b1, _), (a2, b2, _) in zip(ranges, ranges[1:], strict=False):
        assert a2 > b1, f"log messages {a2}-{min(b1, b2)} were announced twice: {a1}-{b1} and {a2}-{b2}"


def _report(cfg: Path) -> dict[str, object]:
    r = livecart("report", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, object] = json.loads(r.stdout)
    return data


def _export(cfg: Path) -> list[dict[str, object]]:
    r = livecart("export", str(cfg), "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    for row in rows:
        row.pop("time")
    return rows


def _sqlite_reference(tmp_path: Path, comments: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    cfg = _config(tmp_path / "sqlite", f'path = "{tmp_path / "sqlite" / "j.db"}"', comments, 0)
    r = livecart("run", str(cfg), timeout=120)
    assert r.returncode == 0, r.stderr
    return _report(cfg), _export(cfg)


def _status(cfg: Path, *, standbys: int) -> dict[str, Any] | None:
    r = livecart("cluster", "status", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data if data["decider"] is not None and len(data["standbys"]) == standbys else None


def _reported(cfg: Path, n: int) -> dict[str, object] | None:
    r = livecart("report", str(cfg), "--json")
    if r.returncode != 0:
        return None
    data: dict[str, object] = json.loads(r.stdout)
    return data if data["comments"] == n else None


def test_two_processes_survive_process_and_leader_node_kills(nats_cluster: Cluster, tmp_path: Path) -> None:
    comments = tmp_path / "comments.jsonl"
    _comments(comments)
    want_report, want_export = _sqlite_reference(tmp_path, comments)
    storage = jetstream_storage(nats_cluster.urls, "fault", 3)
    p1 = Run(_config(tmp_path / "p1", storage, comments, 1))
    p2 = Run(_config(tmp_path / "p2", storage, comments, 1))
    try:
        p1.start()
        p2.start()
        wait_for(lambda: p1.deciding() + p2.deciding(), "a decider", 60)
        time.sleep(3)  # both feeding
        p1.signal(signal.SIGKILL)
        leader = wait_for(lambda: nats_cluster.stream_leader("LIVECART_fault"), "the stream's leader", 20)
        leader.kill()
        time.sleep(4)  # an election, while p2 goes on feeding
        leader.start(nats_cluster.exe)
        p1.start()
        time.sleep(5)
        p2.signal(signal.SIGKILL)
        # p1 feeds the rest (from the start of the file: what is in the log already is recognised)
        got = wait_for(lambda: _reported(p1.cfg, N), f"all {N} comments in the log", 120)
        total = sum(int(v) for v in got["outcomes"].values())  # type: ignore[attr-defined]
        # ... and, once it decides (after p2's lease ran out), announces up to the end of the log
        wait_for(lambda: p1.deciding(), "p1 to take over", 60)
        wait_for(_settled(p1, p2), "the announcements to settle", 60)
        assert got == want_report
        assert _export(p1.cfg) == want_export
        ranges = _announcements(p1, p2)
        _assert_disjoint(ranges)
        announced = sum(k for _, _, k in ranges)
        doubt = _announcements(p1, p2, again=True)
        again = sum(k for _, _, k in doubt)
        # What a new decider finds in doubt is one batch its predecessor marked: at most one announcement.
        for a, b, _ in doubt:
            overlapping = [r for r in ranges if r[0] <= b and r[1] >= a]
            assert len(overlapping) <= 1, f"in doubt {a}-{b} repeats {overlapping}"
        # Never twice as a first announcement ...
        assert announced <= total
        # ... and every outcome announced, or in the one batch a killed decider marked and maybe did not hand
        # out (in doubt: never announced again).
        assert announced + again >= total
        print(f"outcomes {total}, announced {announced}, in doubt {again}, ranges {len(ranges)}")
    finally:
        p1.stop()
        p2.stop()


def _settled(*runs: Run) -> object:
    """A condition: no new announcement for 3 s."""
    last = [len(_announcements(*runs)), time.monotonic()]

    def check() -> bool:
        n = len(_announcements(*runs))
        if n != last[0]:
            last[:] = [n, time.monotonic()]
            return False
        return time.monotonic() - float(last[1]) >= 3.0

    return check


def test_a_paused_decider_steps_down_without_announcing(nats_server: str, tmp_path: Path) -> None:
    comments = tmp_path / "comments.jsonl"
    _comments(comments)
    sale = f"pause-{time.time_ns() % 10**9}"
    storage = jetstream_storage([nats_server], sale, 1)
    runs = [Run(_config(tmp_path / f"p{i}", storage, comments, 0.5)) for i in (1, 2)]
    try:
        for r in runs:
            r.start()
        first = wait_for(lambda: next((r for r in runs if r.deciding()), None), "a decider", 60)
        other = runs[1] if first is runs[0] else runs[0]
        wait_for(lambda: _announcements(first), "a first announcement", 30)
        st = wait_for(lambda: _status(first.cfg, standbys=1), "cluster status to show both processes", 15)
        assert st["decider"]["pid"] == first.pid()
        assert st["standbys"][0]["pid"] == other.pid()
        assert st["log"]["last_seq"] > 0
        first.signal(signal.SIGSTOP)
        wait_for(lambda: other.deciding(), "the standby to take over", 30)
        wait_for(lambda: _announcements(other), "the new decider's first announcement", 30)
        time.sleep(1)
        before = len(_announcements(first))  # sorted by log message: what comes later sorts after it
        mark = len(first.text())
        first.signal(signal.SIGCONT)
        # It finds its lease run out, or (if it was waiting for the stream when stopped) its fenced message
        # refused: either way it steps down.
        wait_for(lambda: "stepping down: " in first.text()[mark:], "the old decider to step down", 30)
        time.sleep(2)  # outcomes keep coming; the old decider must stay quiet
        # Stopped between marking a batch and announcing it, it announces that one batch when it resumes: the
        # new decider found it marked and logged it in doubt, without announcing it (never twice). Nothing
        # else (it failed once in CI with one announcement more, 2026-12-02).
        later = _announcements(first)[before:] if len(_announcements(first)) > before else []
        doubted = _announcements(other, again=True)
        for a, b, _ in later:
            assert any(a2 <= a and b <= b2 for a2, b2, _ in doubted), (later, doubted)
        _assert_disjoint(_announcements(*runs))
        # The resumed process shows itself again at its next heartbeat (every 2 s; its connection may first
        # have to come back: the server can drop a client that stopped reading for this long).
        st = wait_for(lambda: _status(first.cfg, standbys=1), "both processes in cluster status again", 15)
        assert st["decider"]["pid"] == other.pid()
        assert st["standbys"][0]["pid"] == first.pid()
    finally:
        for r in runs:
            r.stop()
        asyncio.run(_delete_sale(nats_server, sale))


async def _delete_sale(server: str, sale: str) -> None:
    """The test's sale off the shared server: its stream and its KV bucket."""
    nc = await nats.connect(servers=[server])
    try:
        for name in (f"LIVECART_{sale}", f"KV_livecart_{sale}"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()
