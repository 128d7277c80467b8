"""The replay adapter: JSON Lines files and stdin, at recorded pace, scaled, or flat out."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livecart.adapters.replay import MAX_LINE, ReplayAdapter
from livecart.core.errors import FatalAdapterError
from livecart.core.records import Comment
from livecart.plugin import Batch, Resume

REPO = Path(__file__).resolve().parents[2]


def c(i: int, ts: float | None = None, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": f"u-{i}",
                         "text": f"+{i}", "ts": 1584250000.0 + i if ts is None else ts}
    d.update(kw)
    return d


def write(path: Path, *lines: bytes | str | dict[str, Any] | list[Any]) -> Path:
    with path.open("wb") as f:
        for line in lines:
            if isinstance(line, dict | list):
                line = orjson.dumps(line)
            f.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


class FakeTime:
    """A clock that moves only when the replay sleeps, recording each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, d: float) -> None:
        self.slept.append(d)
        self.now += d


async def replay(path: Path | str, **opts: Any) -> tuple[list[list[Comment]], ReplayAdapter]:
    ad = ReplayAdapter({"path": str(path), **opts}, name="replay-test")
    async with ad:
        batches = [list(b) async for b in ad.batches()]
    return batches, ad


async def test_flat_out_yields_every_comment_in_order_in_bounded_batches(tmp_path: Path) -> None:
    p = write(tmp_path / "c.jsonl", *(c(i) for i in range(10)))
    batches, ad = await replay(p, batch=4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [x.id for b in batches for x in b] == [f"m-{i}" for i in range(10)]
    assert batches[0][0] == Comment("douyin", "7312", "m-0", "u-0", "u-0", "+0", 1584250000.0)
    assert ad.stats.received == 10
    assert ad.lines_read == 10


async def test_a_line_may_hold_an_array_and_missing_platform_room_are_filled(tmp_path: Path) -> None:
    bare = {"id": "b", "user": "u", "text": "要", "ts": 5}
    p = write(tmp_path / "c.jsonl", [c(1), c(2)], bare)
    batches, _ = await replay(p, platform="bilibili", room="42")
    got = [x for b in batches for x in b]
    assert [x.id for x in got] == ["m-1", "m-2", "b"]
    assert got[2].key == ("bilibili", "42", "b")


async def test_malformed_lines_are_counted_skipped_and_the_replay_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = write(tmp_path / "c.jsonl", c(1), "{not json", "", "   ", c(2, ts="soon"), "[1, 2]",
              b'{"text": "\xff"}', b"[" + b" " * MAX_LINE + b"]", c(3))
    batches, ad = await replay(p)
    assert [x.id for b in batches for x in b] == ["m-1", "m-3"]
    assert ad.stats.malformed_by_reason == {"bad_json": 2, "bad_field": 1, "not_an_object": 2,
                                            "oversized": 1}
    assert "line 2" in caplog.text  # the sample says where the bad line is


async def test_speed_one_keeps_the_recorded_pace(tmp_path: Path) -> None:
    p = write(tmp_path / "c.jsonl", c(1, ts=100.0), c(2, ts=100.5), c(3, ts=100.5), c(4, ts=102.0))
    t = FakeTime()
    ad = ReplayAdapter({"path": str(p), "speed": 1.0}, name="r", clock=t.clock, sleep=t.sleep)
    async with ad:
        batches = [[x.id for x in b] async for b in ad.batches()]
    assert t.slept == pytest.approx([0.5, 1.5])
    assert batches == [["m-1"], ["m-2"], ["m-3"], ["m-4"]]


async def test_speed_ten_replays_ten_times_faster(tmp_path: Path) -> None:
    p = write(tmp_path / "c.jsonl", c(1, ts=100.0), c(2, ts=101.0), c(3, ts=103.0))
    t = FakeTime()
    ad = ReplayAdapter({"path": str(p), "speed": 10.0}, name="r", clock=t.clock, sleep=t.sleep)
    async with ad:
        got = [x.id async for x in ad]
    assert got == ["m-1", "m-2", "m-3"]
    assert t.slept == pytest.approx([0.1, 0.2])


async def test_paced_replay_does_not_sleep_when_it_is_already_late(tmp_path: Path) -> None:
    p = write(tmp_path / "c.jsonl", c(1, ts=100.0), c(2, ts=101.0), c(3, ts=102.0))
    t = FakeTime()

    def slow_clock() -> float:
        t.now += 5.0  # every look at the clock finds the replay five seconds further on
        return t.now

    ad = ReplayAdapter({"path": str(p), "speed": 1.0}, name="r", clock=slow_clock, sleep=t.sleep)
    async with ad:
        got = [x.id async for x in ad]
    assert got == ["m-1", "m-2", "m-3"]
    assert t.slept == []


async def test_a_ts_out_of_scale_is_not_waited_for_and_the_pace_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found from outside: one ``ts`` in milliseconds among seconds stalled a ``speed = 1`` replay for
    decades, silently (its comment counted received, never decided, the rest of the file never read)."""
    p = write(tmp_path / "c.jsonl", c(1, ts=100.0), c(2, ts=100_500.0 * 1000), c(3, ts=101.0), c(4, ts=100.5),
              c(5, ts=103.0), c(6, ts=1e300))
    t = FakeTime()
    ad = ReplayAdapter({"path": str(p), "speed": 1.0}, name="r", clock=t.clock, sleep=t.sleep)
    async with ad:
        got = [x.id async for x in ad]
    assert got == [f"m-{i}" for i in range(1, 7)]
    assert t.slept == pytest.approx([1.0, 2.0])  # 100 -> 101 -> 103; the out-of-order 100.5 goes at once
    assert "line 2: its ts is" in caplog.text
    assert caplog.text.count("its ts is") == 1  # said once


async def test_speed_zero_never_sleeps(tmp_path: Path) -> None:
    p = write(tmp_path / "c.jsonl", c(1, ts=100.0), c(2, ts=5000.0))
    t = FakeTime()
    ad = ReplayAdapter({"path": str(p), "speed": 0}, name="r", clock=t.clock, sleep=t.sleep)
    async with ad:
        assert [x.id async for x in ad] == ["m-1", "m-2"]
    assert t.slept == []


async def test_dash_reads_stdin_and_leaves_it_open(monkeypatch: pytest.MonkeyPatch) -> None:
    data = io.BytesIO(orjson.dumps(c(1)) + b"\n" + orjson.dumps(c(2)) + b"\n")
    fake = io.TextIOWrapper(data)
    monkeypatch.setattr(sys, "stdin", fake)
    batches, _ = await replay("-")
    assert [x.id for b in batches for x in b] == ["m-1", "m-2"]
    assert not fake.closed


async def test_stdin_flat_out_passes_on_what_has_come_when_the_pipe_goes_quiet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A live pipe (``path = "-"``, ``speed = 0``): three comments and then silence go on as a batch at once,
    not when 512 have come or the pipe is closed."""
    r, w = os.pipe()
    fake = io.TextIOWrapper(os.fdopen(r, "rb"))
    monkeypatch.setattr(sys, "stdin", fake)
    os.write(w, b"".join(orjson.dumps(c(n)) + b"\n" for n in (1, 2, 3)))
    ad = ReplayAdapter({"path": "-", "speed": 0}, name="r")
    try:
        async with ad:
            it = ad.batches()
            first = await asyncio.wait_for(it.__anext__(), timeout=10)
            assert [x.id for x in first] == ["m-1", "m-2", "m-3"]
            os.write(w, orjson.dumps(c(4)) + b"\n")
            os.close(w)
            w = -1
            assert [x.id async for b in it for x in b] == ["m-4"]
    finally:
        if w >= 0:
            os.close(w)
        fake.close()


async def test_a_missing_file_is_a_fatal_error_naming_it(tmp_path: Path) -> None:
    ad = ReplayAdapter({"path": str(tmp_path / "nope.jsonl")}, name="r")
    with pytest.raises(FatalAdapterError, match="nope.jsonl"):
        await ad.open()


async def test_close_is_idempotent(tmp_path: Path) -> None:
    ad = ReplayAdapter({"path": str(write(tmp_path / "c.jsonl", c(1)))}, name="r")
    await ad.open()
    await ad.close()
    await ad.close()
    assert ad.closed


def test_path_is_required() -> None:
    with pytest.raises(FatalAdapterError, match="path"):
        ReplayAdapter({}, name="r")


async def test_the_bundled_sample_replays_without_a_malformed_line() -> None:
    batches, ad = await replay(REPO / "config" / "sample-comments.jsonl")
    assert sum(map(len, batches)) == ad.lines_read > 0
    assert ad.stats.malformed_total == 0


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)
_comment = st.builds(
    lambda i, user, text, ts: {"platform": "p", "room": "r", "id": f"m-{i}", "user": user, "name": user * 2,
                               "text": text, "ts": ts},
    st.integers(0, 10**6), st.text("abcxyz0123", min_size=1, max_size=8), _text,
    st.floats(0, 2e9, allow_nan=False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(comments=st.lists(_comment, max_size=30), batch=st.integers(1, 7), arrays=st.booleans())
async def test_any_recording_replays_exactly_as_written(
        tmp_path: Path, comments: list[dict[str, Any]], batch: int, arrays: bool) -> None:
    lines: list[Any] = [comments[i:i + 3] for i in range(0, len(comments), 3)] if arrays else comments
    p = write(tmp_path / "prop.jsonl", *lines)
    batches, ad = await replay(p, batch=batch)
    assert [x.to_dict() for b in batches for x in b] == comments
    assert all(0 < len(b) <= batch for b in batches)
    assert ad.stats.malformed_total == 0


# --------------------------------------------------------------------------- the position kept in the journal

class Kept:
    """What a journal would keep for the adapter (livecart.plugin.Resume's other side)."""

    def __init__(self, saved: Any = None) -> None:
        self.saved = saved
        self.kept: list[dict[str, int]] = []  # offset, line, crc

    def resume(self) -> Resume:
        return Resume(self.saved, self.kept.append)


async def run_kept(path: Path, kept: Kept, *, settle: bool = True, **opts: Any) -> tuple[list[Comment], ReplayAdapter]:
    """Replay ``path`` with ``kept`` as its journal, settling each batch as the daemon does once durable."""
    ad = ReplayAdapter({"path": str(path), **opts}, name="replay-test")
    ad.resume = kept.resume()
    got: list[Comment] = []
    async with ad:
        async for b in ad.batches():
            assert isinstance(b, Batch)
            got += b
            if settle:
                b.settle()
    return got, ad


@pytest.mark.parametrize("opts", [{"batch": 4}, {"batch": 4, "speed": 1000.0}])
async def test_a_replay_goes_on_from_the_position_its_durable_batches_kept(tmp_path: Path,
                                                                           opts: dict[str, Any]) -> None:
    """Flat out and paced: each settled batch keeps the byte offset and line after it; a replay given one of
    those positions yields exactly the comments after it; given the last, none."""
    p = write(tmp_path / "r.jsonl", *(c(i) for i in range(10)), "", "not json", *(c(i) for i in range(10, 23)))
    kept = Kept()
    got, _ = await run_kept(p, kept, **opts)
    assert [x.id for x in got] == [f"m-{i}" for i in range(23)]
    offsets = [k["offset"] for k in kept.kept]
    assert offsets == sorted(offsets)
    assert kept.kept[-1]["offset"] == p.stat().st_size
    assert kept.kept[-1]["line"] == 25
    data = p.read_bytes()
    for k in kept.kept:
        assert data[:k["offset"]].count(b"\n") == k["line"]  # a line's end, and its number
        again = Kept(k)
        rest, ad = await run_kept(p, again, **opts)
        assert ad.resumed_at == k["line"]
        before = {f"m-{i}" for i in range(23)} - {x.id for x in rest}
        assert [x.id for x in rest] == [f"m-{i}" for i in range(23) if f"m-{i}" not in before]
        assert len(before) == sum(1 for line in data[:k["offset"]].splitlines() if line.startswith(b"{"))
    assert (await run_kept(p, Kept(kept.kept[-1]), **opts))[0] == []


async def test_nothing_is_kept_for_a_batch_that_is_not_durable(tmp_path: Path) -> None:
    p = write(tmp_path / "r.jsonl", *(c(i) for i in range(10)))
    kept = Kept()
    ad = ReplayAdapter({"path": str(p), "batch": 4}, name="replay-test")
    ad.resume = kept.resume()
    async with ad:
        batches = [b async for b in ad.batches()]
    assert all(isinstance(b, Batch) for b in batches)
    batches[0].settle()  # type: ignore[attr-defined]
    batches[1].settle(RuntimeError("the journal failed"))  # type: ignore[attr-defined]
    assert [k["line"] for k in kept.kept] == [4]


async def test_a_file_that_grew_is_read_on_from_the_position(tmp_path: Path) -> None:
    p = write(tmp_path / "r.jsonl", *(c(i) for i in range(6)))
    kept = Kept()
    await run_kept(p, kept, batch=4)
    with p.open("ab") as f:
        f.write(orjson.dumps(c(6)) + b"\n")
    rest, ad = await run_kept(p, Kept(kept.kept[-1]), batch=4)
    assert [x.id for x in rest] == ["m-6"]
    assert ad.resumed_at == 6


@pytest.mark.parametrize("change", ["edited", "shorter", "shifted", "garbage", "negative"])
async def test_a_position_that_does_not_fit_the_file_is_refused_and_the_file_read_from_its_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str) -> None:
    p = write(tmp_path / "r.jsonl", *(c(i) for i in range(8)))
    kept = Kept()
    await run_kept(p, kept, batch=4)
    saved: Any = dict(kept.kept[0])
    data = p.read_bytes()
    if change == "edited":  # same length, one id changed before the position
        p.write_bytes(data.replace(b'"m-1"', b'"m-9"'))
    elif change == "shorter":
        p.write_bytes(data[:saved["offset"] - 10])
    elif change == "shifted":  # the position no longer falls on a line's start
        p.write_bytes(b" " + data)
    elif change == "garbage":
        saved = "line 4"
    else:
        saved["offset"] = -1
    rest, ad = await run_kept(p, Kept(saved), batch=4)
    assert rest[0].id == "m-0"
    assert len(rest) == (8 if change != "shorter" else 3)
    assert ad.resumed_at == 0
    assert "does not fit" in caplog.text


async def test_stdin_keeps_no_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(orjson.dumps(c(1)) + b"\n")))
    kept = Kept({"offset": 0, "line": 0, "crc": 0})
    ad = ReplayAdapter({"path": "-"}, name="replay-test")
    ad.resume = kept.resume()
    async with ad:
        batches = [b async for b in ad.batches()]
    assert [type(b) for b in batches] == [list]
    assert ad.resumed_at == 0


async def test_a_change_anywhere_before_the_position_is_noticed(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The position carries the CRC-32 of every byte before it: one id changed in the middle of a 300 KB
    recording, far from its start and from the position, is noticed."""
    p = write(tmp_path / "r.jsonl", *(c(i) for i in range(3000)))
    kept = Kept()
    await run_kept(p, kept, batch=512)
    assert kept.kept[-1]["offset"] == p.stat().st_size > 200_000
    data = p.read_bytes()
    assert data.count(b'"m-1500"') == 1
    p.write_bytes(data.replace(b'"m-1500"', b'"m-9999"'))
    rest, ad = await run_kept(p, Kept(kept.kept[-1]), batch=512)
    assert len(rest) == 3000
    assert ad.resumed_at == 0
    assert "its first" in caplog.text
    assert "bytes have changed" in caplog.text


@pytest.mark.parametrize("opts", [{"batch": 4}, {"batch": 4, "speed": 1000.0}])
async def test_a_last_line_without_its_newline_is_not_passed_and_is_read_whole_once_the_file_grows(
        tmp_path: Path, opts: dict[str, Any]) -> None:
    """A recording still being written ends in a cut line: it is counted as malformed, and the position stays
    before it, so the next run reads it again once it is whole (a position after it lost that comment)."""
    full = b"".join(orjson.dumps(c(i)) + b"\n" for i in range(12))
    cut_at = full.index(b"\n", full.index(b'"m-9"')) - 20  # in the middle of line 10
    p = tmp_path / "r.jsonl"
    p.write_bytes(full[:cut_at])
    kept = Kept()
    got, ad = await run_kept(p, kept, **opts)
    assert [x.id for x in got] == [f"m-{i}" for i in range(9)]
    assert ad.stats.malformed_total == 1
    assert kept.kept[-1]["line"] == 9
    assert kept.kept[-1]["offset"] == full.index(b"\n", full.index(b'"m-8"')) + 1
    p.write_bytes(full)
    rest, ad = await run_kept(p, Kept(kept.kept[-1]), **opts)
    assert ad.resumed_at == 9
    assert [x.id for x in rest] == ["m-9", "m-10", "m-11"]
    assert ad.stats.malformed_total == 0


async def test_lines_holding_arrays_move_the_position_a_line_at_a_time(tmp_path: Path) -> None:
    """Twelve lines of ten comments each, read four lines (forty comments) at a time and cut into batches of
    four: each batch keeps the end of the last line whose comments it completes, and a replay from any of
    those positions yields exactly the comments of the lines after it."""
    p = write(tmp_path / "r.jsonl", *([c(10 * k + i) for i in range(10)] for k in range(12)))
    kept = Kept()
    got, _ = await run_kept(p, kept, batch=4)
    assert len(got) == 120
    lines = [k["line"] for k in kept.kept]
    assert lines == sorted(lines)
    assert set(lines) == set(range(13))  # it moved a line at a time, not a block of four lines at a time
    data = p.read_bytes()
    for k in kept.kept:
        assert data[:k["offset"]].count(b"\n") == k["line"]
        rest, _ = await run_kept(p, Kept(k), batch=4)
        assert [x.id for x in rest] == [f"m-{i}" for i in range(10 * k["line"], 120)]


async def test_it_says_connected_while_it_reads_its_recording(tmp_path: Path) -> None:
    # Found from outside: the board showed a replay that was reading as 'disconnected' (未连接).
    p = write(tmp_path / "c.jsonl", *(c(i) for i in range(10)))
    ad = ReplayAdapter({"path": str(p), "batch": 4}, name="replay-test")
    seen = []
    async with ad:
        assert not ad.stats.connected
        async for _ in ad.batches():
            seen.append(ad.stats.connected)
        assert not ad.stats.connected  # the recording has ended
    assert seen == [True, True, True]
