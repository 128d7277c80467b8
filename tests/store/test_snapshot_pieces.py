"""Snapshots of format 7 in the SQLite journal: written in pieces, each its own transaction, so the journal's
commits go between them; a snapshot exists only once its last transaction commits."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from livecart.core.catalogue import Catalogue, Product
from livecart.core.errors import JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult
from livecart.store import codec, sqlite
from livecart.store.sqlite import SqliteStore, _snapshot_crc, inspect_file, repair_file

CAT = Catalogue((Product("egg", "Eggs", stock=500, presale=5, price=29.9),))


def rows_of(n: int, start: int = 0, led: Ledger | None = None, recent: int = 0) -> tuple[Ledger, list[codec.Entry]]:
    """``n`` buy comments decided by ``led`` (a new ledger with a window of ``recent`` ids by default), as rows."""
    led = led or Ledger(CAT, clock=lambda: 1.0, recent=recent)
    rows = []
    for i in range(start, start + n):
        c = Comment("p", "r", f"m{i}", f"alice-{i:04d}", "", "", 0.0)
        pr = ParseResult(Intent.BUY, (Item("egg", None, 1),))
        led.decide(c, pr)
        rows.append(codec.comment_row(led.seq, 1.0, c, pr))
    return led, rows


async def journal_with_snapshot(p: Path, n: int = 120, tail: int = 5, recent: int = 0) -> Ledger:
    """A journal of ``n`` comments, a snapshot at the last, then ``tail`` more; the ledger that decided them.
    With a window of ``recent`` ids its filter (4 MB) is in the snapshot; without, the body is a few KB."""
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0, clock=lambda: 1.0, recent=recent)
    led, rows = rows_of(n, recent=recent)
    await s.append(rows)
    assert s.checkpoint(n, led.state())
    led, more = rows_of(tail, n, led)
    await s.append(more)
    await s.close()
    assert s.snapshots_written == 1
    return led


def same(a: Ledger, b: Ledger) -> bool:
    """Whether two ledgers hold the same state (seen ids compared as sets: a set's order is its history)."""
    def norm(state: dict[str, Any]) -> dict[str, Any]:
        if "seen" in state:
            state["seen"] = {(p, r): set(ids) for p, r, ids in state["seen"]}
        return state
    return norm(a.state()) == norm(b.state())


def db(p: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{p}?mode=ro", uri=True)


async def rebuild(p: Path) -> tuple[Ledger, tuple[int, int]]:
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0)
    try:
        return await s.rebuild(), s.rebuilt_from
    finally:
        await s.close()


@pytest.mark.parametrize(("recent", "piece"), [(0, 512), (40, 1 << 16)])
async def test_a_snapshot_bigger_than_a_piece_is_stored_in_pieces_and_gives_the_same_ledger(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recent: int, piece: int) -> None:
    """Small parts of the body are joined into pieces, and a long one (a filter segment) cut into several."""
    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", piece)
    p = tmp_path / "j.db"
    led = await journal_with_snapshot(p, recent=recent)
    con = db(p)
    version, first, size = con.execute("SELECT version, length(body), crc FROM snapshots").fetchone()[:3]
    pieces = con.execute("SELECT no, length(body) FROM snapshot_pieces ORDER BY no").fetchall()
    con.close()
    assert version == codec.SNAPSHOT_VERSION == 7
    assert 0 < first <= piece
    assert len(pieces) >= 3
    assert [no for no, _ in pieces] == list(range(1, len(pieces) + 1))
    assert all(0 < n <= piece for _, n in pieces)
    rebuilt, where = await rebuild(p)
    assert where == (120, 5)  # from the snapshot, the tail replayed
    assert same(rebuilt, led)
    reader = await SqliteStore.open(p, readonly=True)
    try:
        assert await reader.report() == led.snapshot()
    finally:
        await reader.close()
    insp = inspect_file(p)
    assert insp.ok
    assert insp.snapshots == 1


async def test_the_journals_commits_go_between_the_pieces_of_a_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit asked for while a snapshot is being written waits for one piece, not for the whole body."""
    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", 64)
    p = tmp_path / "j.db"
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0, clock=lambda: 1.0, durability="os")
    led, rows = rows_of(300)
    await s.append(rows)
    assert s.checkpoint(300, led.state())
    watch = db(p)
    for _ in range(2000):  # until the first piece is in
        if watch.execute("SELECT count(*) FROM snapshot_pieces").fetchone()[0]:
            break
        await asyncio.sleep(0.001)
    else:
        pytest.fail("no piece of the snapshot was written")
    led, more = rows_of(1, 300, led)
    await s.append(more)  # durable
    written = watch.execute("SELECT count(*) FROM snapshot_pieces").fetchone()[0]
    assert s.snapshots_written == 0  # the snapshot is not done, and the commit did not wait for it
    assert watch.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0  # nor does it exist yet
    await s.close()
    total = watch.execute("SELECT count(*) FROM snapshot_pieces").fetchone()[0]
    watch.close()
    assert s.snapshots_written == 1
    assert written < total
    rebuilt, where = await rebuild(p)
    assert where == (300, 1)
    assert same(rebuilt, led)


async def test_a_snapshots_pieces_go_in_while_the_event_loop_is_busy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pieces follow one another on the connection's thread: an event loop busy deciding a sale, which takes
    a finished call's result only between two batches, does not hold each piece up (a snapshot of 48 pieces took
    0.8-1.1 s under a flash sale when every piece went through the loop; a kill -9 then had that much more to
    replay)."""
    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", 64)
    p = tmp_path / "j.db"
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0, clock=lambda: 1.0, durability="os")
    led, rows = rows_of(300)
    await s.append(rows)
    expected = len(sqlite._encode_snapshot(300, led.state())[2]) - 1  # the first piece goes in the last transaction
    assert expected >= 10
    assert s.checkpoint(300, led.state())
    watch = db(p)

    def written() -> int:
        return int(watch.execute("SELECT count(*) FROM snapshot_pieces").fetchone()[0])

    for _ in range(2000):  # until the first piece is in
        if written():
            break
        await asyncio.sleep(0.001)
    # The loop busy from here: no await, the interpreter's lock let go now and then (as a loop deciding does).
    deadline = time.monotonic() + 10
    while written() < expected and time.monotonic() < deadline:
        time.sleep(0.005)  # noqa: ASYNC251 - the point: the loop held up, as deciding holds it
    assert written() == expected
    assert s.snapshots_written == 0  # its last transaction needs the loop: the batch it follows is durable
    await s.close()
    watch.close()
    assert s.snapshots_written == 1
    rebuilt, where = await rebuild(p)
    assert where == (300, 0)
    assert same(rebuilt, led)


async def test_background_steps_on_the_connection_let_queued_work_go_first_and_stop_when_the_journal_fails(
        tmp_path: Path) -> None:
    s = await SqliteStore.open(tmp_path / "j.db", catalogue=CAT, hold_seconds=0.0, clock=lambda: 1.0)
    loop = asyncio.get_running_loop()
    ran: list[object] = []

    def ask_commit() -> None:  # on the loop
        tasks.append(asyncio.ensure_future(s._on_db_thread(ran.append, "commit")))

    tasks: list[asyncio.Future[None]] = []

    def step(i: int) -> None:
        if i == 0:  # a commit is asked for while the first step runs: wait until it is queued for this thread
            loop.call_soon_threadsafe(ask_commit)
            deadline = time.monotonic() + 5
            while s._db._tx.empty() and time.monotonic() < deadline:
                time.sleep(0.001)
        ran.append(i)

    assert await s._in_turn_on_db_thread([functools.partial(step, i) for i in range(3)]) is True
    await asyncio.gather(*tasks)
    assert ran == [0, "commit", 1, 2]  # the commit went after the step that was running, not after them all

    ran.clear()

    def failing(i: int) -> None:
        ran.append(i)
        if i == 1:
            s._failed = JournalError("the disk is full")

    assert await s._in_turn_on_db_thread([functools.partial(failing, i) for i in range(4)]) is False
    assert ran == [0, 1]  # nothing after the failure
    s._failed = None

    def boom() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        await s._in_turn_on_db_thread([boom, functools.partial(ran.append, 9)])
    assert 9 not in ran
    await s.close()


async def test_pieces_whose_snapshot_never_came_are_passed_over_and_dropped_by_the_next_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a crash between a snapshot's pieces and its last transaction leaves is not damage."""
    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", 512)
    p = tmp_path / "j.db"
    led = await journal_with_snapshot(p)
    con = sqlite3.connect(p)
    con.executemany("INSERT INTO snapshot_pieces VALUES (?, ?, ?)", [(125, no, b"x" * 512) for no in (1, 2)])
    con.commit()
    con.close()
    assert inspect_file(p).ok
    reader = await SqliteStore.open(p, readonly=True)
    try:
        assert await reader.report() == led.snapshot()
    finally:
        await reader.close()
    rebuilt, where = await rebuild(p)  # a writer: the leftovers go
    assert where == (120, 5)
    assert same(rebuilt, led)
    con = db(p)
    assert con.execute("SELECT DISTINCT seq FROM snapshot_pieces").fetchall() == [(120,)]
    con.close()


async def test_a_format_6_snapshot_in_one_body_still_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", 512)
    p = tmp_path / "j.db"
    led = await journal_with_snapshot(p)
    con = sqlite3.connect(p)
    (seq,) = con.execute("SELECT seq FROM snapshots").fetchone()
    body = con.execute("SELECT body FROM snapshots").fetchone()[0] + b"".join(
        b for (b,) in con.execute("SELECT body FROM snapshot_pieces WHERE seq = ? ORDER BY no", (seq,)))
    con.execute("UPDATE snapshots SET version = 6, body = ?, crc = ?", (body, _snapshot_crc(seq, 6, body)))
    con.execute("DELETE FROM snapshot_pieces")
    con.commit()
    con.close()
    assert inspect_file(p).ok
    rebuilt, where = await rebuild(p)
    assert where == (120, 5)
    assert same(rebuilt, led)


async def test_a_damaged_piece_fails_the_snapshots_checksum_and_repair_keeps_the_good_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", 512)
    p = tmp_path / "j.db"
    led = await journal_with_snapshot(p)
    # A second snapshot, whose second piece is then damaged: verify names it, a start passes over it.
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0, clock=lambda: 1.0)
    led, more = rows_of(5, 125, led)
    await s.append(more)
    assert s.checkpoint(130, led.state())
    await s.close()
    con = sqlite3.connect(p)
    con.execute("UPDATE snapshot_pieces SET body = CAST(upper(body) AS BLOB) WHERE seq = 130 AND no = 2")
    con.commit()
    con.close()
    insp = inspect_file(p)
    assert insp.bad_snapshots == [130]
    rebuilt, where = await rebuild(p)
    assert where == (120, 10)  # the older snapshot, and the events after it
    assert same(rebuilt, led)
    rep = repair_file(p)
    assert rep.dropped_snapshots == 1
    assert inspect_file(p).ok
    rebuilt, where = await rebuild(p)
    assert where == (120, 10)  # the good snapshot came through repair whole, pieces and all
    assert same(rebuilt, led)


@pytest.mark.parametrize("pieces", [1024, 1 << 20])
async def test_a_snapshot_written_again_at_the_same_event_replaces_the_old_one_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pieces: int) -> None:
    """A start that passed over a snapshot may write one at the same event on its way out: the old row and
    all its pieces go (with the new one's first piece, or with its row when the new body is one piece), so
    none of them is left to be read with the new."""
    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", 256)
    p = tmp_path / "j.db"
    led = await journal_with_snapshot(p, tail=0)
    con = db(p)
    before = con.execute("SELECT count(*) FROM snapshot_pieces WHERE seq = 120").fetchone()[0]
    con.close()
    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", pieces)  # the same body again, in fewer pieces
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0, clock=lambda: 1.0)
    await s.rebuild()
    assert s.checkpoint(120, led.state())
    await s.close()
    con = db(p)
    after = con.execute("SELECT count(*) FROM snapshot_pieces WHERE seq = 120").fetchone()[0]
    con.close()
    assert after < before
    assert (after == 0) == (pieces == 1 << 20)
    assert inspect_file(p).ok
    rebuilt, where = await rebuild(p)
    assert where == (120, 0)
    assert same(rebuilt, led)


async def test_a_clean_stop_snapshots_the_last_event_even_while_a_snapshot_is_being_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot in pieces takes a while; the engine's close waits for it and then takes its own, so the next
    start replays nothing (found from outside: the last snapshot of four 300k runs was 10-17k events short)."""
    import dataclasses

    from livecart.config import loads
    from livecart.runtime.pipeline import Engine

    monkeypatch.setattr(sqlite, "SNAPSHOT_PIECE", 64)
    toml = (f'[stream]\nname = "s"\n[storage]\npath = "{tmp_path / "j.db"}"\ndurability = "os"\n'
            '[[products]]\nsku = "egg"\nname = "Eggs"\nstock = 500\n')
    base = loads(toml, file="t.toml", base_dir=tmp_path)
    cfg = dataclasses.replace(base, storage=dataclasses.replace(base.storage, snapshot_events=10_000))
    none = ParseResult(Intent.NONE)
    eng = await Engine.open(cfg, parse=lambda text, featured: none)
    await eng.submit([Comment("p", "r", f"m{i}", "u", "u", "hi", 0.0) for i in range(300)])
    assert eng.journal.checkpoint(300, eng.ledger.state())
    await eng.submit([Comment("p", "r", f"n{i}", "u", "u", "hi", 0.0) for i in range(5)])
    await eng.close()
    assert eng.journal.snapshots_written == 2
    con = db(tmp_path / "j.db")
    assert con.execute("SELECT max(seq) FROM snapshots").fetchone()[0] == 305
    con.close()


async def test_verify_beside_a_writer_sees_one_moment_of_the_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot (and its batch) committed while verify reads the batches is not "damaged" (found from
    outside: verify beside a running daemon said a whole snapshot failed its checksum in 9 of 13 runs)."""
    p = tmp_path / "j.db"
    await journal_with_snapshot(p)
    real = sqlite.Chain.check
    wrote: list[int] = []

    def check(self: sqlite.Chain, first: int, last: int, body: bytes | str, crc: int | None) -> None:
        if not wrote:  # a writer commits a batch and a snapshot of it meanwhile
            w = sqlite3.connect(p)
            (top,) = w.execute("SELECT max(last) FROM batches").fetchone()
            w.execute("INSERT INTO batches (first, last, ts, body, crc) VALUES (?, ?, 1.0, '[]', 0)",
                      (top + 1, top + 1))
            snap = b"{}"
            w.execute("INSERT INTO snapshots VALUES (?, 1.0, 6, ?, ?)", (top + 1, _snapshot_crc(top + 1, 6, snap), snap))
            w.commit()
            w.close()
            wrote.append(top + 1)
        real(self, first, last, body, crc)

    monkeypatch.setattr(sqlite.Chain, "check", check)
    insp = inspect_file(p, check_wal=False)
    assert wrote
    assert insp.ok
    assert insp.snapshots == 1
    assert insp.good_events == 125


def test_the_pieces_of_a_body_are_its_bytes_and_its_long_parts_are_not_copied() -> None:
    led, _ = rows_of(120, recent=40)  # its filter segment: a raw part of 4 MB
    state = led.state()
    crc, size, pieces = sqlite._encode_snapshot(120, state)
    body = codec.encode_snapshot(state)
    assert b"".join(pieces) == body
    assert size == len(body)
    assert crc == _snapshot_crc(120, codec.SNAPSHOT_VERSION, body)
    assert all(0 < len(p) <= sqlite.SNAPSHOT_PIECE for p in pieces)
    assert sum(len(p) for p in pieces if isinstance(p, memoryview)) >= 4 << 20  # views of the segment
    short = sum(n for part in codec.snapshot_parts(state) if (n := memoryview(part).nbytes) < sqlite._OWN_PIECE)
    assert sum(len(p) for p in pieces if not isinstance(p, memoryview)) <= short  # only short parts copied


def test_a_paced_snapshot_is_the_same_bytes_and_pauses_after_every_call_of_the_encoder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Pieces of 7 items: the window's 40 ids and their rooms, and the orders' columns, are each encoded in
    # several calls, apart from the rest of their JSON.
    monkeypatch.setattr(codec, "_PIECE", 7)
    led, rows = rows_of(120, recent=40)
    state = led.state()
    assert len(state["dedupe"]["ids"]) > 7
    calls = 0
    real = codec.orjson.dumps

    def dumps(*args: Any, **kwargs: Any) -> bytes:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    pauses = 0

    def pause() -> None:
        nonlocal pauses
        pauses += 1

    unpaced = codec.encode_snapshot(state)
    with monkeypatch.context() as m:
        m.setattr(codec.orjson, "dumps", dumps)
        crc, size, pieces = sqlite._encode_snapshot(120, state, pause)
    body = b"".join(pieces)
    assert body == unpaced
    assert crc == _snapshot_crc(120, codec.SNAPSHOT_VERSION, body)
    # Every call of the encoder that holds items of the state is followed by a pause (the markers of the
    # parts encoded apart, and the list of the raw parts' sizes, are a few bytes each).
    assert pauses >= 2 * (40 // 7 + 1) + 2
    assert calls >= pauses
    header = codec.Header(CAT, codec.catalogue_json(CAT), 0.0, None, 0.0, recent=40)
    got = codec.resume(header, codec.SNAPSHOT_VERSION, body, [])
    assert same(got, led)
