"""The engine: decide in memory, announce only after the journal commit, rebuild on open."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from livecart.config import loads
from livecart.core.control import Control, ControlAction, parse_params
from livecart.core.errors import ControlError, JournalError
from livecart.core.records import Comment, Intent, Item, Outcome, ParseResult, Status
from livecart.core.settings import Config
from livecart.runtime.pipeline import Engine
from livecart.store.sqlite import SqliteStore

TOML = """
[stream]
name = "test sale"
featured = "egg"
hold_minutes = {hold}

[storage]
path = "{path}"
durability = "fsync"
batch_delay_ms = 1

[[products]]
sku = "egg"
name = "Eggs"
aliases = ["egg"]
stock = 3
limit = 5
presale = 2

[[products]]
sku = "tea"
name = "Tea"
aliases = ["tea"]
  [[products.variants]]
  name = "s"
  stock = 1
"""

BUY = re.compile(r"^(egg|tea)(?: (\w+))? (\d+)$")


def parse(text: str, featured: str | None) -> ParseResult:
    """A tiny stand-in for the parser: 'egg 2', 'tea s 1', '+1', 'cancel', 'boom'."""
    if text == "boom":
        raise RuntimeError("parser bug")
    if text == "+1":
        return ParseResult(Intent.BUY, (Item(featured, None, 1),))
    if text == "cancel":
        return ParseResult(Intent.CANCEL)
    m = BUY.match(text)
    if m:
        return ParseResult(Intent.BUY, (Item(m[1], m[2], int(m[3])),))
    return ParseResult(Intent.NONE)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def config(tmp_path: Path, hold: float = 30, db: str = "j.db") -> Config:
    return loads(TOML.format(path=tmp_path / db, hold=hold), file="t.toml", base_dir=tmp_path)


def c(n: int, text: str, user: str = "u") -> Comment:
    return Comment("douyin", "7312", f"m{n}", user, user, text, 0.0)


async def test_submit_returns_durable_outcomes(tmp_path: Path) -> None:
    eng = await Engine.open(config(tmp_path), parse=parse, clock=Clock())
    out = await eng.submit([c(1, "egg 2", "a"), c(2, "hello"), c(3, "egg 3", "b")])
    assert [(o.user, o.status.value, o.qty) for o in out] == [
        ("a", "reserved", 2), ("b", "reserved", 1), ("b", "presale", 2)]
    assert eng.journal.last_seq == 3  # all three comments are in the file before submit returned
    assert eng.snapshot()["comments"] == 3
    await eng.close()


async def test_listeners_get_each_durable_batch(tmp_path: Path) -> None:
    eng = await Engine.open(config(tmp_path), parse=parse, clock=Clock())
    seen: list[tuple[int, list[str]]] = []

    def listener(outs: Sequence[Outcome]) -> None:
        seen.append((eng.journal.last_seq, [o.status.value for o in outs]))

    def broken(outs: Sequence[Outcome]) -> None:
        raise ValueError("listener bug")

    eng.add_listener(broken)
    eng.add_listener(listener)
    await eng.submit([c(1, "egg 1")])
    await eng.submit([c(2, "chat")])  # no outcome, no call
    await eng.submit([c(3, "tea 1")])
    assert seen == [(1, ["reserved"]), (3, ["rejected"])]
    assert eng.metrics.counter("listener_errors_total", "").get() == 2
    await eng.close()


async def test_concurrent_submits_share_group_commits(tmp_path: Path) -> None:
    eng = await Engine.open(config(tmp_path), parse=parse, clock=Clock())
    results = await asyncio.gather(*(eng.submit([c(n, "chat")]) for n in range(100)))
    assert results == [[]] * 100
    assert eng.journal.rows_written == 100
    assert eng.journal.batches < 100
    await eng.close()


async def test_reopen_rebuilds_the_ledger_and_skips_seen_comments(tmp_path: Path) -> None:
    stream = [c(1, "egg 2", "a"), c(2, "+1", "b"), c(3, "cancel", "a"), c(4, "tea s 1", "c"), c(5, "egg 3", "d")]
    clean = await Engine.open(config(tmp_path, db="clean.db"), parse=parse, clock=Clock())
    await clean.submit(stream)
    expected = clean.snapshot()
    orders = list(clean.ledger.orders())
    await clean.close()

    cfg = config(tmp_path)
    first = await Engine.open(cfg, parse=parse, clock=Clock())
    await first.submit(stream[:2])
    await first.close()
    again = await Engine.open(cfg, parse=parse, clock=Clock())
    assert again.snapshot()["comments"] == 2
    out = await again.submit(stream)  # the whole input again: the first two are skipped
    assert {o.comment for o in out} == {"m3", "m4", "m5"}
    assert again.snapshot() == expected
    assert list(again.ledger.orders()) == orders
    await again.close()


async def test_controls_are_journaled_and_rebuilt(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    eng = await Engine.open(cfg, parse=parse, clock=Clock())
    await eng.submit([c(1, "egg 3", "a"), c(2, "egg 2", "b")])
    promoted = await eng.control(parse_params("restock", ["egg", "1"]))
    assert [(o.status, o.user, o.qty) for o in promoted] == [(Status.PROMOTED, "b", 1)]
    paid = await eng.control(parse_params("pay", ["o-000001"]))
    assert [o.status for o in paid] == [Status.PAID]
    await eng.control(parse_params("presale", ["egg", "5"]))
    await eng.control(parse_params("limit", ["egg", "1"]))
    await eng.control(parse_params("feature", ["tea"]))
    await eng.control(parse_params("cancel", ["o-000002"]))
    snap = eng.snapshot()
    await eng.close()
    again = await Engine.open(cfg, parse=parse, clock=Clock())
    assert again.snapshot() == snap
    assert again.ledger.featured == "tea"
    await again.close()


async def test_bad_controls_raise_and_journal_nothing(tmp_path: Path) -> None:
    eng = await Engine.open(config(tmp_path), parse=parse, clock=Clock())
    with pytest.raises(ControlError, match="not journalled"):
        await eng.control(Control(ControlAction.STATUS))
    with pytest.raises(ControlError, match="no presale quantity in the config"):
        await eng.control(parse_params("presale", ["tea/s", "on"]))
    with pytest.raises(ControlError, match="no product"):
        await eng.control(parse_params("restock", ["nope", "1"]))
    await eng.flush()
    assert eng.journal.last_seq == 0
    await eng.close()


async def test_tick_expires_holds_and_survives_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path, hold=1)
    clock = Clock()
    eng = await Engine.open(cfg, parse=parse, clock=clock)
    await eng.submit([c(1, "egg 3", "a"), c(2, "egg 1", "b")])
    assert await eng.tick() == []
    clock.now += 60
    out = await eng.tick()
    assert [(o.status.value, o.user) for o in out] == [("expired", "a"), ("promoted", "b")]
    snap = eng.snapshot()
    await eng.close()
    again = await Engine.open(cfg, parse=parse, clock=clock)
    assert again.snapshot() == snap
    await again.close()


async def test_a_parser_failure_is_counted_and_the_comment_taken_as_no_intent(tmp_path: Path) -> None:
    eng = await Engine.open(config(tmp_path), parse=parse, clock=Clock())
    assert await eng.submit([c(1, "boom"), c(2, "egg 1")]) != []
    assert eng.metrics.counter("parse_errors_total", "").get() == 1
    assert eng.snapshot()["comments"] == 2
    await eng.close()


async def test_metrics_count_comments_intents_outcomes_and_batches(tmp_path: Path) -> None:
    eng = await Engine.open(config(tmp_path), parse=parse, clock=Clock())
    await eng.submit([c(1, "egg 1"), c(1, "egg 1"), c(2, "hi")])
    text = eng.metrics.render()
    assert "livecart_comments_total 3" in text
    assert "livecart_duplicate_comments_total 1" in text
    assert 'livecart_intents_total{intent="buy"} 1' in text
    assert 'livecart_outcomes_total{status="reserved"} 1' in text
    assert "livecart_journal_batches 1" in text
    await eng.close()


async def test_closed_engine_refuses_work_and_close_is_idempotent(tmp_path: Path) -> None:
    eng = await Engine.open(config(tmp_path), parse=parse, clock=Clock())
    await eng.close()
    await eng.close()
    with pytest.raises(JournalError, match="closed"):
        await eng.submit([c(1, "egg 1")])


async def test_repr_shows_ledger_and_journal(tmp_path: Path) -> None:
    async with await Engine.open(config(tmp_path), parse=parse, clock=Clock()) as eng:
        assert "<Engine 'test sale': <Ledger" in repr(eng)
        assert "<Journal j.db" in repr(eng)


def norm(state: dict[str, Any]) -> dict[str, Any]:
    """A ledger state with its id sets as sets (a set's order is its history, not its content)."""
    if "dedupe" in state:
        return state
    return {**state, "seen": {(p, r): set(ids) for p, r, ids in state["seen"]}}


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
async def test_a_restart_starts_from_the_latest_snapshot_and_replays_only_the_tail(tmp_path: Path,
                                                                                   backend: str) -> None:
    import dataclasses

    from livecart.store import codec
    from livecart.store.memory import MemorySpace, MemoryStore

    base = config(tmp_path)
    cfg = dataclasses.replace(base, storage=dataclasses.replace(base.storage, snapshot_events=7))
    space = MemorySpace()

    async def open_engine() -> Engine:
        store = await MemoryStore.open(space, catalogue=cfg.catalogue, hold_seconds=cfg.stream.hold_minutes * 60,
                                       featured=cfg.stream.featured) if backend == "memory" else None
        return await Engine.open(cfg, parse=parse, clock=Clock(), store=store)

    eng = await open_engine()
    texts = ["egg 2", "hello", "egg 1", "cancel", "egg 3", "tea", "egg"]
    for n in range(40):
        await eng.submit([c(n, texts[n % len(texts)], f"u{n % 5}")])
    await eng.control(parse_params("restock", ["egg", "2"]))
    assert eng.journal.snapshots_written >= 4
    live = eng.ledger.state()
    # Killed: no closing snapshot, so the tail after the last one is replayed.
    j = eng.journal
    assert isinstance(j, SqliteStore | MemoryStore)
    await j.flush()
    if j._snapshot is not None:
        await j._snapshot
    if isinstance(j, SqliteStore):
        await j._db.close()
        if j._lock is not None:
            j._lock.release()
    again = await open_engine()
    snap, tail = again.journal.rebuilt_from
    assert 0 < snap <= 41
    assert snap + tail == 41
    assert norm(again.ledger.state()) == norm(live)
    full = codec.rebuild_entries(again.journal.header, await again.journal.entries())
    assert norm(full.state()) == norm(live)
    await again.close()
    # A clean close leaves a snapshot at the last event: nothing to replay next time.
    last = await open_engine()
    assert last.journal.rebuilt_from == (41, 0)
    assert norm(last.ledger.state()) == norm(live)
    await last.close()


async def test_submit_journals_exactly_what_comment_row_encodes(tmp_path: Path) -> None:
    """Engine.submit builds its journal rows inline (the hot path); they must be comment_row's, byte for byte,
    for every intent and item shape: one item, several, a parser's reason, a cancel, no intent, a duplicate."""
    from livecart.core.records import Reason
    from livecart.store import codec

    results = {
        "one": ParseResult(Intent.BUY, (Item("egg", None, 2),)),
        "two": ParseResult(Intent.BUY, (Item("egg", None, 1), Item("tea", "s", 1))),
        "bad": ParseResult(Intent.BUY, (Item(None, None, 1, Reason.UNKNOWN_PRODUCT),)),
        "cancel": ParseResult(Intent.CANCEL),
        "cancel tea": ParseResult(Intent.CANCEL, (Item("tea", None, 1),)),
        "ask": ParseResult(Intent.ASK),
        "chat": ParseResult(Intent.NONE),
    }
    clock = Clock()
    eng = await Engine.open(config(tmp_path), parse=lambda text, featured: results[text], clock=clock)
    comments = [Comment("douyin", "7312", f"m{n}", f"u{n % 3}", f"name {n}", text, 0.0)
                for n, text in enumerate(results)]
    await eng.submit([*comments, comments[0]])  # the repeat is a duplicate: no row
    written = await eng.journal.rows()
    await eng.close()
    want = [codec.comment_row(n, clock.now, co, results[co.text]) for n, co in enumerate(comments, 1)]
    assert [r[0] for r in written] == list(range(1, len(comments) + 1))
    assert [(s, t, k, b) for s, t, k, b in written] == [(s, t, k, orjson.dumps(d)) for s, t, k, d in want]


@pytest.mark.parametrize("parsed", [False, True])
async def test_a_batch_s_rows_are_gone_before_the_collector_comes_back_on(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          parsed: bool) -> None:
    """The collector is off while a batch is decided; the young collection that its end sets off must not find
    the batch's journal rows still alive (they were encoded by the store's append): scanning them, ~4 objects a
    comment, was most of that collection's work, at the end of every batch."""
    import contextlib
    import gc
    from collections.abc import Iterator

    from livecart.store import codec

    alive: list[int] = []
    paused = codec.paused_gc

    @contextlib.contextmanager
    def watched() -> Iterator[None]:
        with paused():
            yield
            # Still paused: what a collection would scan now, among it any comment row of the batch.
            alive.append(sum(1 for o in gc.get_objects()
                             if type(o) is tuple and len(o) == 4 and o[2] == codec.COMMENT))

    eng = await Engine.open(config(tmp_path), parse=parse)
    monkeypatch.setattr(codec, "paused_gc", watched)
    batch = [c(n, "egg 1", user=f"u{n}") for n in range(500)]
    if parsed:
        await eng.submit_parsed([(x, parse(x.text, "egg")) for x in batch])
    else:
        await eng.submit(batch)
    await eng.close()
    assert alive == [0]


async def test_a_damaged_latest_snapshot_falls_back_to_the_one_before_then_to_a_full_replay(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses
    import sqlite3

    base = config(tmp_path)
    cfg = dataclasses.replace(base, storage=dataclasses.replace(base.storage, snapshot_events=5))
    eng = await Engine.open(cfg, parse=parse, clock=Clock())
    texts = ["egg 2", "hello", "egg 1", "cancel", "tea s 1"]
    for n in range(30):
        await eng.submit([c(n, texts[n % len(texts)], f"u{n % 4}")])
    written = eng.journal.snapshots_written
    assert written >= 2
    text = eng.metrics.render()
    assert f"livecart_journal_snapshots_written {float(written)}" in text
    assert "livecart_journal_last_snapshot_seq" in text
    assert "livecart_journal_last_snapshot_bytes" in text
    live = eng.ledger.state()
    await eng.close()
    path = cfg.storage.path
    con = sqlite3.connect(path)
    seqs = [s for (s,) in con.execute("SELECT seq FROM snapshots ORDER BY seq DESC")]
    assert len(seqs) == 2
    with con:  # a flipped byte in the latest snapshot: its checksum fails
        con.execute("UPDATE snapshots SET body = CAST(substr(body, 1, 10) || 'X' || substr(body, 12) AS BLOB) "
                    "WHERE seq = ?", (seqs[0],))
    con.close()
    with caplog.at_level("WARNING", logger="livecart.journal"):
        again = await Engine.open(cfg, parse=parse, clock=Clock())
    assert again.journal.rebuilt_from[0] == seqs[1]
    assert getattr(again.journal, "snapshot_fallbacks", 0) == 1
    assert f"the snapshot at event {seqs[0]} is not used" in caplog.text
    assert "livecart_journal_snapshot_fallbacks 1.0" in again.metrics.render()
    assert norm(again.ledger.state()) == norm(live)
    await again.close()  # writes a good snapshot at the last event again
    con = sqlite3.connect(path)
    with con:  # every snapshot damaged, one as a checksum failure, one as a body that is not a state
        for seq, version in con.execute("SELECT seq, version FROM snapshots").fetchall():
            body = b'{"not": "a state"}'
            from livecart.store.sqlite import _snapshot_crc
            con.execute("UPDATE snapshots SET body = ?, crc = ? WHERE seq = ?",
                        (body, _snapshot_crc(seq, version, body) ^ (seq % 2), seq))
    con.close()
    third = await Engine.open(cfg, parse=parse, clock=Clock())
    assert third.journal.rebuilt_from == (0, live["seq"])
    assert getattr(third.journal, "snapshot_fallbacks", 0) == 2
    assert norm(third.ledger.state()) == norm(live)
    await third.close()


async def test_a_snapshot_the_events_after_it_do_not_replay_onto_is_passed_over(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A latest snapshot that passes its checksum and restores, but that the events after it do not fit (here
    its held orders say "presale" without being in a queue, so a cancel after it fails in the ledger), is
    passed over like a damaged one: not a traceback and a daemon that cannot start."""
    import dataclasses
    import sqlite3

    from livecart.store.sqlite import _snapshot_crc

    base = config(tmp_path)
    cfg = dataclasses.replace(base, storage=dataclasses.replace(base.storage, snapshot_events=5))
    eng = await Engine.open(cfg, parse=parse, clock=Clock())
    texts = ["egg 2", "hello", "egg 1", "cancel", "tea s 1"]
    for n in range(34):  # the last snapshot before the close's at 30; then egg 2, hello, egg 1, cancel
        await eng.submit([c(n, texts[n % len(texts)], f"u{n % 4}")])
    live = eng.ledger.state()
    await eng.close()
    con = sqlite3.connect(cfg.storage.path)
    (seq, version, body), (older, _, _) = con.execute(
        "SELECT seq, version, body FROM snapshots ORDER BY seq DESC").fetchall()
    con.close()
    # Take the snapshot before the last events (the close writes one at the last event: drop that one).
    con = sqlite3.connect(cfg.storage.path)
    with con:
        con.execute("DELETE FROM snapshots WHERE seq = ?", (seq,))
        body = con.execute("SELECT body FROM snapshots WHERE seq = ?", (older,)).fetchone()[0]
        cut = body.index(b"\n") if b"\n" in body else len(body)
        state = orjson.loads(body[:cut])
        state["orders"]["status"] = ["presale" if st == "reserved" else st for st in state["orders"]["status"]]
        body = orjson.dumps(state) + body[cut:]
        con.execute("UPDATE snapshots SET body = ?, crc = ? WHERE seq = ?",
                    (body, _snapshot_crc(older, version, body), older))
    con.close()
    with caplog.at_level("WARNING", logger="livecart.journal"):
        again = await Engine.open(cfg, parse=parse, clock=Clock())
    assert again.journal.rebuilt_from == (0, live["seq"])  # the only snapshot passed over: a full replay
    assert getattr(again.journal, "snapshot_fallbacks", 0) == 1
    assert f"the snapshot at event {older} is not used" in caplog.text
    assert "does not replay onto the state before it" in caplog.text
    assert norm(again.ledger.state()) == norm(live)
    await again.close()


async def test_the_state_is_not_copied_again_while_the_last_snapshot_is_being_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses
    import threading

    from livecart.store import sqlite as sqlite_module

    base = config(tmp_path)
    cfg = dataclasses.replace(base, storage=dataclasses.replace(base.storage, snapshot_events=2))
    release = threading.Event()
    encode = sqlite_module._encode_snapshot

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return encode(*args, **kwargs)

    monkeypatch.setattr(sqlite_module, "_encode_snapshot", slow)
    eng = await Engine.open(cfg, parse=parse, clock=Clock())
    # Each ask hands the store a copy of the ledger's state, made just before (the ledger's own method cannot
    # be patched in the compiled build): the asks count the copies.
    taken = 0
    checkpoint = eng.journal.checkpoint

    def counted(seq: int, state: dict[str, Any]) -> bool:
        nonlocal taken
        taken += 1
        return checkpoint(seq, state)

    monkeypatch.setattr(eng.journal, "checkpoint", counted)
    for n in range(12):  # a snapshot is due at every second event, the first is held on its worker thread
        await eng.submit([c(n, "chat")])
    assert taken == 1
    release.set()
    await eng.journal.snapshot_written()
    await asyncio.sleep(0)  # the engine hears that it is written
    # The events after it are due: asked at once, not at a next batch (after a burst there may be none).
    assert taken == 2
    await eng.journal.snapshot_written()
    assert eng.journal.snapshots_written == 2
    assert eng.journal.last_snapshot_seq == 12
    await eng.close()


async def test_orders_are_sealed_a_segment_per_batch_before_any_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import msgspec

    from livecart.core import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "ORDER_SEGMENT", 2)
    base = config(tmp_path)
    cfg = dataclasses.replace(base, storage=dataclasses.replace(base.storage, snapshot_events=10_000))
    eng = await Engine.open(cfg, parse=parse, clock=Clock())
    await eng.control(parse_params("restock", ["egg", "50"]))
    for n in range(9):
        await eng.submit([c(n, "egg 1", f"u{n}")])
        assert len(eng.ledger._sealed) == (n + 1) // 2  # one full segment more every second order
    assert eng.journal.snapshots_written == 0
    orders = list(eng.ledger.orders())
    for i, part in enumerate(eng.ledger._sealed):
        got = msgspec.json.decode(part)
        assert got["id"] == [o["order"] for o in orders[2 * i:2 * i + 2]]
        assert got["user"] == [f"u{2 * i}", f"u{2 * i + 1}"]
    await eng.close()
