"""The bounded duplicate-id memory (livecart.core.dedupe) with a tiny window, tiny chunks and a tiny filter
(so false positives are common): a duplicate of any age is recognised, nothing new is dropped, across
restarts and snapshots, on both stores; and a snapshot plus its tail still equals a full replay."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livecart.core import dedupe
from livecart.core.catalogue import Catalogue, Product
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult
from livecart.core.settings import Config
from livecart.runtime.pipeline import Engine
from livecart.store import codec
from livecart.store.base import Store
from livecart.store.memory import MemorySpace, MemoryStore
from livecart.store.sqlite import SqliteStore
from tests.store.props import dedupe_config as config

BUY = ParseResult(Intent.BUY, (Item("egg", None, 1),))
NOTHING = ParseResult(Intent.NONE)


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 3 ids and a filter of one 64-bit word per 256 keys (saturated): a "maybe" is frequent."""
    monkeypatch.setattr(dedupe, "CHUNK", 3)
    monkeypatch.setattr(dedupe, "SEGMENT0", 4)
    monkeypatch.setattr(dedupe, "_WORDS_SHIFT", 8)


def parse(text: str, featured: str | None) -> ParseResult:
    return BUY if text == "buy" else NOTHING


async def open_engine(cfg: Config, backend: str, space: MemorySpace) -> Engine:
    if backend == "memory":
        store = await MemoryStore.open(space, catalogue=cfg.catalogue, recent=cfg.storage.dedupe_window)
        return await Engine.open(cfg, parse=parse, store=store)
    return await Engine.open(cfg, parse=parse)


async def entries(backend: str, cfg: Config, space: MemorySpace) -> list[codec.Entry]:
    store: Store
    if backend == "memory":
        store = await MemoryStore.open(space, readonly=True)
    else:
        store = await SqliteStore.open(cfg.storage.path, readonly=True)
    try:
        return await store.entries()
    finally:
        await store.close()


K = TypeVar("K")


def first_times(batches: list[list[K]]) -> tuple[list[int], set[K]]:
    """The model of the duplicate memory: a key is journalled the first time it comes, never again. How many
    keys of each batch are journalled, and every key."""
    seen: set[K] = set()
    want: list[int] = []
    for keys in batches:
        n = 0
        for k in keys:
            if k not in seen:
                seen.add(k)
                n += 1
        want.append(n)
    return want, seen


# A run: batches of comment ids (from a small space, so repeats of every age happen), with a restart after
# some batches.
batches = st.lists(st.tuples(st.lists(st.integers(0, 40), min_size=1, max_size=12), st.booleans()),
                   min_size=1, max_size=14)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=batches, window=st.integers(1, 4), snap=st.integers(1, 9))
def test_duplicates_of_any_age_are_recognised_and_nothing_new_is_dropped(
        tmp_path_factory: pytest.TempPathFactory, backend: str, run: list[tuple[list[int], bool]], window: int,
        snap: int) -> None:
    tmp = tmp_path_factory.mktemp("dd")
    cfg = config(tmp, window, snap)
    space = MemorySpace()

    async def go() -> tuple[list[int], dict[str, Any]]:
        engine = await open_engine(cfg, backend, space)
        journalled: list[int] = []
        maybes = 0
        try:
            for ids, restart in run:
                before = engine.ledger.seq
                await engine.submit([Comment("p", "r", f"m{i}", f"u{i % 7}", "n", "buy" if i % 3 else "hi", 0.0)
                                     for i in ids])
                journalled.append(engine.ledger.seq - before)
                dd = engine.ledger.dedupe
                assert dd is not None
                maybes += dd.maybes
                if restart:
                    await engine.close()
                    engine = await open_engine(cfg, backend, space)
        finally:
            dd = engine.ledger.dedupe
            assert dd is not None
            stats = {"maybes": maybes + dd.maybes, "spilled": dd.spilled, "chunks": len(dd.chunks)}
            await engine.close()
        return journalled, stats

    journalled, _ = asyncio.run(go())
    want, seen = first_times([ids for ids, _ in run])
    assert journalled == want
    rows = asyncio.run(entries(backend, cfg, space))
    assert sorted(d[2] for _, _, _, d in rows) == sorted(f"m{i}" for i in seen)


# The same with two rooms taking turns at random: the ledger keeps a key's room by runs (a switch of room
# starts one), which chunks cut through and snapshots carry.
room_batches = st.lists(st.tuples(st.lists(st.tuples(st.sampled_from("rs"), st.integers(0, 25)), min_size=1,
                                           max_size=12), st.booleans()), min_size=1, max_size=14)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=room_batches, window=st.integers(1, 4), snap=st.integers(1, 9))
def test_keys_of_rooms_taking_turns_are_told_apart_at_any_age(
        tmp_path_factory: pytest.TempPathFactory, backend: str, run: list[tuple[list[tuple[str, int]], bool]],
        window: int, snap: int) -> None:
    cfg = config(tmp_path_factory.mktemp("dd"), window, snap)
    space = MemorySpace()

    async def go() -> list[int]:
        engine = await open_engine(cfg, backend, space)
        journalled: list[int] = []
        try:
            for keys, restart in run:
                before = engine.ledger.seq
                await engine.submit([Comment("p", room, f"m{i}", "u", "n", "hi", 0.0) for room, i in keys])
                journalled.append(engine.ledger.seq - before)
                if restart:
                    await engine.close()
                    engine = await open_engine(cfg, backend, space)
        finally:
            await engine.close()
        return journalled

    journalled = asyncio.run(go())
    want, seen = first_times([keys for keys, _ in run])
    assert journalled == want
    rows = asyncio.run(entries(backend, cfg, space))
    assert sorted((d[1], d[2]) for _, _, _, d in rows) == sorted((room, f"m{i}") for room, i in seen)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_an_old_duplicate_is_found_in_the_store_and_false_positives_drop_nothing(tmp_path: Path,
                                                                                  backend: str) -> None:
    """200 new ids with a window of 2, a filter of 4-key segments: the filter says "maybe" for many new ids
    (false positives), each is confirmed new; then every old id again: all recognised, most by the store."""
    cfg = config(tmp_path, 2, 50)
    space = MemorySpace()

    async def go() -> None:
        engine = await open_engine(cfg, backend, space)
        for k in range(0, 200, 10):
            await engine.submit([Comment("p", "r", f"m{i}", "u", "n", "hi", 0.0) for i in range(k, k + 10)])
        assert engine.ledger.seq == 200
        dd = engine.ledger.dedupe
        assert dd is not None
        assert dd.maybes > 0
        assert dd.old_dupes == 0
        await engine.close()
        engine = await open_engine(cfg, backend, space)  # from the last snapshot: the index in the store
        dd = engine.ledger.dedupe
        assert dd is not None
        assert not dd.handoff
        await engine.submit([Comment("p", "r", f"m{i}", "u", "n", "hi", 0.0) for i in range(200)])
        assert engine.ledger.seq == 200
        assert dd.old_dupes >= 190
        lookups = engine.journal.lookups  # type: ignore[attr-defined]
        assert lookups > 0
        await engine.submit([Comment("p", "r", "new", "u", "n", "hi", 0.0)])
        assert engine.ledger.seq == 201
        await engine.close()

    asyncio.run(go())


async def test_a_chunk_lost_in_a_crash_is_rebuilt_from_the_journal(tmp_path: Path) -> None:
    cfg = config(tmp_path, 2, 1000)
    engine = await open_engine(cfg, "sqlite", MemorySpace())
    await engine.submit([Comment("p", "r", f"m{i}", "u", "n", "hi", 0.0) for i in range(30)])
    await engine.close()
    import sqlite3
    con = sqlite3.connect(cfg.storage.path)
    with con:
        con.execute("DELETE FROM dedupe_keys WHERE no >= 3")
        con.execute("DELETE FROM snapshots")  # a full replay: the index lost the chunks a crash never wrote
    con.close()
    engine = await open_engine(cfg, "sqlite", MemorySpace())
    await engine.submit([Comment("p", "r", f"m{i}", "u", "n", "hi", 0.0) for i in range(30)])
    assert engine.ledger.seq == 30
    await engine.close()


def test_snapshot_plus_tail_equals_full_replay_with_a_tiny_window() -> None:
    cat = Catalogue((Product("egg", "Eggs", stock=3, limit=2, presale=2),))
    header = codec.Header(cat, codec.catalogue_json(cat), 0.0, "egg", 0.0, 2)
    led = Ledger(cat, clock=lambda: 0.0, featured="egg", recent=2)
    rows: list[codec.Entry] = []
    snaps: list[tuple[int, bytes]] = []
    for i in range(40):
        c = Comment("p", "r" if i % 5 else "s", f"m{i}", f"u{i % 4}", "n", "", 0.0)
        pr = BUY if i % 2 else NOTHING
        led.decide(c, pr)
        rows.append(codec.comment_row(led.seq, 0.0, c, pr))
        if i % 7 == 3:
            snaps.append((led.seq, codec.encode_snapshot(led.state())))
    full = codec.rebuild_entries(header, [(s, t, k, list(d)) for s, t, k, d in rows])
    for seq, body in snaps:
        tail = [(s, t, k, list(d)) for s, t, k, d in rows if s > seq]
        part = codec.resume(header, codec.SNAPSHOT_VERSION, body, tail)
        a, b = full.state(), part.state()
        da, db = a.pop("dedupe"), b.pop("dedupe")
        assert a == b
        assert da == db


def test_config_of_the_window_is_kept_by_the_journal(tmp_path: Path) -> None:
    cfg = config(tmp_path, 3, 10)

    async def go() -> None:
        e = await Engine.open(cfg, parse=parse)
        await e.submit([Comment("p", "r", "a", "u", "n", "hi", 0.0)])
        await e.close()
        other = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, dedupe_window=7))
        e = await Engine.open(other, parse=parse)
        assert e.ledger.dedupe is not None
        assert e.ledger.dedupe.recent == 3
        await e.close()

    asyncio.run(go())


async def test_a_reader_starts_from_the_snapshot_without_the_duplicate_memory(tmp_path: Path) -> None:
    """`report` reads the snapshot's sale part only (no window, no filter) and still gives the sale."""
    cfg = config(tmp_path, 2, 1000)
    engine = await open_engine(cfg, "sqlite", MemorySpace())
    await engine.submit([Comment("p", "r", f"m{i}", f"u{i % 3}", "n", "buy", 0.0) for i in range(40)])
    live = engine.ledger.snapshot()
    await engine.close()  # a snapshot at the last event
    ro = await SqliteStore.open(cfg.storage.path, readonly=True)
    try:
        ledger = await ro.rebuild()
        assert ro.rebuilt_from == (40, 0)
        assert ro.snapshot_fallbacks == 0
        assert ledger.dedupe is None
        assert ledger.snapshot() == live
    finally:
        await ro.close()


def test_a_snapshot_with_base64_arrays_still_restores() -> None:
    """Snapshots of format 3 first carried the arrays as base64 inside the JSON; they read as the raw ones."""
    import orjson

    cat = Catalogue((Product("egg", "Eggs", stock=3, limit=2, presale=2),))
    led = Ledger(cat, clock=lambda: 0.0, featured="egg", recent=2)
    for i in range(30):
        led.decide(Comment("p", "r", f"m{i}", f"u{i % 4}", "n", "", 0.0), BUY)
    state = led.state()
    raw = codec.encode_snapshot(state)
    rest = {k: v for k, v in state.items() if k != "dedupe"}
    b64 = orjson.dumps(rest) + b"\n" + orjson.dumps(state["dedupe"], default=codec._b64)
    for body in (raw, b64):
        again = Ledger.restore(cat, codec.decode_snapshot(body), clock=lambda: 0.0)
        assert again.state() == state
    with pytest.raises(ValueError, match="do not add up"):
        codec.decode_snapshot(raw[:-1])


def test_a_full_filter_segment_never_changes_and_a_snapshot_takes_it_without_a_copy() -> None:
    """The snapshot passes full segments as views of the segments themselves (no copy), which holds only while
    a full segment is never written again; the segment being filled is copied."""
    dd = dedupe.Dedupe(2)
    ri, ids = dd.room("p", "r")
    for i in range(40):
        assert dd.admit(ri, f"m{i}", i + 1, True)
        ids.add(f"m{i}")
    assert len(dd._segs) >= 3
    state = dd.state()
    full = [(seg, n, cap) for seg, n, cap in state["filter"] if n >= cap]
    assert len(full) >= 2
    assert all(isinstance(seg, memoryview) and seg.readonly for seg, _, _ in full)
    assert all(seg.obj is dd._segs[i] for i, (seg, _, _) in enumerate(full))
    last = state["filter"][-1]
    if last[1] < last[2]:
        assert isinstance(last[0], bytes)
    frozen = [bytes(seg) for seg, _, _ in full]
    for i in range(40, 400):
        assert dd.admit(ri, f"m{i}", i + 1, True)
        ids.add(f"m{i}")
    assert [bytes(dd._segs[i]) for i in range(len(frozen))] == frozen


async def test_a_snapshot_written_in_pieces_is_the_encoded_state(tmp_path: Path) -> None:
    """The SQLite journal writes a snapshot's body piecewise (blob I/O): the row holds exactly what
    encode_snapshot gives for the state, its checksum checks, and a restart starts from it."""
    import sqlite3

    from livecart.store.sqlite import inspect_file

    cfg = config(tmp_path, 2, 1000)
    engine = await open_engine(cfg, "sqlite", MemorySpace())
    await engine.submit([Comment("p", "r", f"m{i}", "u", "n", "buy", 0.0) for i in range(60)])
    dd = engine.ledger.dedupe
    assert dd is not None
    assert any(n >= cap for n, cap in zip(dd._seg_n, dd._seg_cap, strict=True))  # a full segment, as a view
    want = codec.encode_snapshot(engine.ledger.state())
    await engine.close()  # the closing snapshot, at event 60
    con = sqlite3.connect(cfg.storage.path)
    try:
        (body,) = con.execute("SELECT body FROM snapshots WHERE seq = 60").fetchone()
    finally:
        con.close()
    assert body == want
    assert inspect_file(cfg.storage.path).ok
    engine = await open_engine(cfg, "sqlite", MemorySpace())
    try:
        assert engine.journal.rebuilt_from == (60, 0)  # type: ignore[attr-defined]
        assert engine.journal.snapshot_fallbacks == 0  # type: ignore[attr-defined]
    finally:
        await engine.close()


def test_a_format_3_memory_restores_as_the_same_keys_taken_now() -> None:
    """data/dedupe-format3.json: the duplicate-id memory of snapshot format 3 (every key's event, the window
    kept out of the filter, chunks cut a few keys later), as livecart 55088fe wrote it after each of 40 keys
    (window 4, the tiny sizes above, keys leaving two at a time as a window of 4,096+ does). Each restores to
    exactly the memory that taking the same keys gives today, and answers as it does."""
    import json

    data = json.loads((Path(__file__).parent / "data" / "dedupe-format3.json").read_text(encoding="utf-8"))
    now = dedupe.Dedupe(4)
    for (room, cid, seq), old in zip(data["keys"], data["states"], strict=True):
        ri, ids = now.room("p", room)
        assert now.admit(ri, cid, seq, True)
        ids.add(cid)
        assert "infilter" in old
        restored = dedupe.Dedupe.restore(old)
        assert restored.state() == now.state()
        for room2, cid2, _ in data["keys"]:
            assert restored.contains("p", room2, cid2) == now.contains("p", room2, cid2)
    assert len(now.chunks) == 12
    assert now.filtering


@pytest.mark.parametrize(("step", "most_allowed"), [(dedupe.PREFILL_STEP, 11), (4, 5)])
def test_the_filter_takes_the_window_a_little_at_a_time_and_a_restore_before_it_is_on_catches_up(
        monkeypatch: pytest.MonkeyPatch, step: int, most_allowed: int) -> None:
    """No one key pays for putting the whole window in the filter (a stall of the event loop at 100,000 ids):
    before the first key leaves the window, the keys go in a sixteenth of the window at a time (10 for a
    window of 160), or PREFILL_STEP at a time where that is less. A memory restored from a snapshot taken
    meanwhile (which holds none of that) ends in the same state."""
    monkeypatch.setattr(dedupe, "PREFILL_STEP", step)
    live = dedupe.Dedupe(160, chunk=50)
    ri, ids = live.room("p", "r")
    live.switch(ri)
    restored: dedupe.Dedupe | None = None
    rri, rids = 0, set[str]()
    most = 0
    for i in range(400):
        before = len(live.hashes)
        assert live.admit(ri, f"m{i}", i + 1, True)
        ids.add(f"m{i}")
        most = max(most, len(live.hashes) - before)
        assert live.filtering == (i >= 160)
        if i == 99:
            restored = dedupe.Dedupe.restore(live.state())
            rri, rids = restored.room("p", "r")
            restored.switch(rri)
            assert restored.state() == live.state()
        elif restored is not None:
            assert restored.admit(rri, f"m{i}", i + 1, True)
            rids.add(f"m{i}")
    assert most <= most_allowed
    assert restored is not None
    assert restored.state() == live.state()
    live.lookup = restored.lookup = lambda key, h, lo, hi: True  # a store that holds every key: the filter decides
    assert all(live.contains("p", "r", f"m{i}") and restored.contains("p", "r", f"m{i}") for i in range(400))


def test_an_indexed_chunk_leaves_the_sets_a_step_at_a_time_and_its_keys_are_still_found() -> None:
    """The daemon lets an indexed chunk's 65,536 ids go FORGET_STEP per batch, not at once (9 ms); meanwhile
    and afterwards every one of them is still recognised: from its set, then through the store's index."""
    dd = dedupe.Dedupe(4, chunk=10)
    dd.keep = True
    ri, ids = dd.room("p", "r")
    dd.switch(ri)
    for i in range(14):  # the window of 4 and one full chunk of 10
        assert dd.admit(ri, f"m{i}", i + 1, True)
        ids.add(f"m{i}")
    ((no, _, _, keys),) = dd.take_fresh()
    index = {text for text, _ in keys}
    dd.lookup = lambda key, h, lo, hi: key in index
    dd.indexed(no, gradual=True)
    assert len(ids) == dd.in_memory == 14
    left = []
    while dd.forgetting:
        dd.forget_some(4)
        left.append(len(ids))
        assert dd.in_memory == len(ids)
        assert all(dd.contains("p", "r", f"m{i}") for i in range(14))
    assert left == [10, 6, 4]  # the window stays
    assert ids == {f"m{i}" for i in range(10, 14)}
    before = dd.old_dupes
    assert not dd.admit(ri, "m3", 15, True)  # an old one, found in the index
    assert dd.old_dupes == before + 1


def test_a_memory_restored_from_a_state_in_memory_shares_no_list_with_it_and_checks_its_rooms() -> None:
    """A state taken in memory (not decoded from a snapshot) holds the memory's own lists: the restored memory
    copies them, so the two go on apart. Ring rooms out of range, negative, or of the wrong type are refused."""
    dd = dedupe.Dedupe(4)
    for k in range(30):
        ri, ids = dd.room("p", "r" if k % 3 else "s")
        assert dd.admit(ri, f"m{k}", k + 1, True)
        ids.add(f"m{k}")
    state = dd.state()
    again = dedupe.Dedupe.restore(state)
    assert again.state() == state
    assert again._run_ri == dd._run_ri
    assert again._run_at == dd._run_at
    assert again.sets == dd.sets
    ri, ids = again.room("p", "r")
    assert again.admit(ri, "new", 31, True)
    assert "new" not in state["ids"]
    assert "new" not in dd.ring
    for bad in ([0] * (len(state["ids"]) - 1) + [2], [-1] + [0] * (len(state["ids"]) - 1)):
        with pytest.raises(ValueError, match="do not fit its window"):
            dedupe.Dedupe.restore({**state, "ring_rooms": bad})
    with pytest.raises((TypeError, ValueError)):
        dedupe.Dedupe.restore({**state, "ring_rooms": ["x"] * len(state["ids"])})
    as_text = dedupe.Dedupe.restore({**state, "ring_rooms": [str(r) for r in state["ring_rooms"]],
                                     "ids": list(state["ids"])})
    assert as_text.state() == state


@pytest.mark.parametrize("segment", [4, 16, 64])
def test_a_maybe_is_asked_of_the_chunks_of_the_segments_that_hold_it(monkeypatch: pytest.MonkeyPatch,
                                                                       segment: int) -> None:
    """The filter at its real density (16 bits a key) in small segments (4, 8, 16... keys and up), chunks of 3:
    every old key sent again is found, through a lookup asked only of the chunks whose keys went into the
    segments holding its bits (which always include its own chunk), and most lookups are asked of fewer chunks
    than there are. A memory restored from a snapshot asks the same; one whose segment counts do not add up to
    its keys asks every chunk."""
    monkeypatch.setattr(dedupe, "_WORDS_SHIFT", 2)
    dd = dedupe.Dedupe(2, chunk=3, segment=segment)
    dd.keep = True
    ri, ids = dd.room("p", "r")
    dd.switch(ri)
    n = 600
    for i in range(n):
        assert dd.admit(ri, f"m{i}", i + 1, True)
        ids.add(f"m{i}")
    assert len(dd._segs) >= 4
    chunk_of: dict[str, int] = {}
    for no, _, _, keys in dd.take_fresh():
        for text, _ in keys:
            chunk_of[text] = no
        dd.indexed(no)
    asked: list[tuple[str, int, int | None]] = []

    def lookup(key: str, h: int, lo: int, hi: int | None) -> bool:
        asked.append((key, lo, hi))
        no = chunk_of.get(key)
        return no is not None and lo <= no and (hi is None or no < hi)

    def again(memory: dedupe.Dedupe) -> list[tuple[str, int, int | None]]:
        asked.clear()
        memory.lookup = lookup
        r, _ = memory.room("p", "r")
        old = [f"m{i}" for i in range(n) if f"m{i}" not in memory._room_sets[r]]
        assert len(old) == len(chunk_of)
        assert not any(memory.admit(r, cid, n + 1, True) for cid in old)  # every one found
        assert len(asked) == len(old)
        for key, lo, hi in asked:  # its own chunk is always in the span asked
            no = chunk_of[key]
            assert lo <= no
            assert hi is None or no < hi
        return list(asked)

    live = again(dd)
    narrow = sum(1 for _, lo, hi in live if lo > 0 or hi is not None)
    assert narrow > len(live) // 2
    restored = dedupe.Dedupe.restore(dd.state())
    assert restored.spans
    assert again(restored) == live
    state = dd.state()
    state["filter"][0][1] += 1  # a count that does not add up
    off = dedupe.Dedupe.restore(state)
    assert not off.spans
    assert all(lo == 0 and hi is None for _, lo, hi in again(off))
