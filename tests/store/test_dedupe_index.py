"""The SQLite journal's index of old comment ids (``dedupe_keys``): written a slice of buckets at a time, so a
crash can leave a chunk cut short, which the next start drops and writes again."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from livecart.core import dedupe
from livecart.core.records import Comment, Intent, ParseResult
from livecart.core.settings import Config
from livecart.runtime.pipeline import Engine
from livecart.store import sqlite as sq
from tests.store.props import dedupe_config


def nothing(text: str, featured: str | None) -> ParseResult:
    return ParseResult(Intent.NONE)


async def _after_a_restart(cfg: Config, *queries: str) -> list[list[tuple[Any, ...]]]:
    """Open the engine on the journal (its start indexes what the index lacks) and close it, then the rows of
    each of ``queries``."""
    engine = await Engine.open(cfg, parse=nothing)
    await engine.close()
    con = sqlite3.connect(cfg.storage.path)
    try:
        return [con.execute(q).fetchall() for q in queries]
    finally:
        con.close()


def test_a_chunk_is_written_in_slices_holding_every_key_once_and_its_range_last() -> None:
    rng = random.Random(7)
    keys = {(f"p\x1fr\x1fm{i}", rng.getrandbits(32)) for i in range(5000)}
    slices = [{row[1]: row[2] for row in zip(s[::3], s[1::3], s[2::3], strict=True) if row[0] == 4}
              for s in sq._chunk_slices(4, 10, 5009, keys)]
    assert all(len(s) <= sq.DEDUPE_SLICE for s in slices[:-1])
    assert [(-1 in s) for s in slices] == [False] * (len(slices) - 1) + [True]
    assert slices[-1][-1] == "10 5009"
    merged: dict[int, set[str]] = {}
    for s in slices:
        for b, text in s.items():
            if b != -1:
                assert b not in merged  # every bucket in one slice
                merged[b] = set(text.strip("\n").split("\n"))
    want: dict[int, set[str]] = {}
    for k, h in keys:
        want.setdefault(h & (sq.DEDUPE_BUCKETS - 1), set()).add(k)
    assert merged == want


def test_a_paced_chunk_is_grouped_the_same_and_pauses_every_few_thousand_keys() -> None:
    rng = random.Random(11)
    n = 3 * dedupe.PAUSE_STEP + 5
    ids = [f"m{i}" for i in range(n)]
    hashes = dedupe.array("q", (rng.getrandbits(62) for _ in range(n)))
    keys = dedupe.ChunkKeys(ids, [0] * n, hashes, ["p\x1fr\x1f"])
    pauses = 0

    def pause() -> None:
        nonlocal pauses
        pauses += 1

    assert keys.lines(sq.DEDUPE_BUCKETS, pause) == keys.lines(sq.DEDUPE_BUCKETS)
    assert pauses >= 4  # grouping: every PAUSE_STEP ids, and joining: every PAUSE_STEP ids and groups
    two_rooms = dedupe.ChunkKeys(ids, [0, 1] * (n // 2) + [0], hashes, ["p\x1fr\x1f", "p\x1fs\x1f"])
    pauses = 0
    assert two_rooms.lines(64, pause) == dedupe.key_lines(iter(two_rooms), 64)
    assert pauses == n // dedupe.PAUSE_STEP
    assert sq._chunk_slices(3, 1, n, keys, pause) == sq._chunk_slices(3, 1, n, keys)


async def test_a_chunk_cut_short_between_its_slices_is_dropped_and_written_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedupe, "CHUNK", 3)
    cfg = dedupe_config(tmp_path, window=2)
    engine = await Engine.open(cfg, parse=nothing)
    await engine.submit([Comment("p", "r", f"m{i}", "u", "n", "hi", 0.0) for i in range(20)])
    await engine.close()
    con = sqlite3.connect(cfg.storage.path)
    with con:
        whole = sorted(con.execute("SELECT no, bucket, keys FROM dedupe_keys WHERE no = 1"))
        used = {b for _, b, _ in whole}
        stray = next(b for b in range(sq.DEDUPE_BUCKETS) if b not in used)
        # A crash after some slices of chunk 1 were rewritten with other keys, before its range (bucket -1),
        # and part of a chunk the ledger never made.
        con.execute("DELETE FROM dedupe_keys WHERE no = 1 AND bucket = -1")
        con.execute("INSERT INTO dedupe_keys VALUES (1, ?, ?)", (stray, "\np\x1fr\x1fnever\n"))
        con.execute("INSERT INTO dedupe_keys VALUES (40, 5, ?)", ("\np\x1fr\x1fnever\n",))
    con.close()
    chunk1, chunk40 = await _after_a_restart(cfg, "SELECT no, bucket, keys FROM dedupe_keys WHERE no = 1",
                                             "SELECT count(*) FROM dedupe_keys WHERE no = 40")
    assert sorted(chunk1) == whole
    assert chunk40[0][0] == 0


ODD_IDS = ["m\\x", "m\nn", "蛋蛋", "a\x1fb", "z\x00", "plain", "😀", "tab\there"]


async def test_chunks_a_crash_kept_from_the_index_are_rebuilt_from_the_journal_key_for_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys that need escaping, from two rooms: the chunk rebuilt at the restart (read back from the journal's
    rows) holds exactly what the live run wrote (from the ledger's memory)."""
    monkeypatch.setattr(dedupe, "CHUNK", 4)
    cfg = dedupe_config(tmp_path, window=3)
    engine = await Engine.open(cfg, parse=nothing)
    rooms = [("p", "r"), ("k\\s", "直播间\n1")]
    await engine.submit([Comment(*rooms[i % 2], f"{ODD_IDS[i % len(ODD_IDS)]}-{i}", "u", "n", "hi", 0.0)
                         for i in range(30)])
    await engine.close()
    con = sqlite3.connect(cfg.storage.path)
    with con:
        whole = sorted(con.execute("SELECT no, bucket, keys FROM dedupe_keys"))
        assert {no for no, _, _ in whole} >= {0, 1, 2}
        con.execute("DELETE FROM dedupe_keys WHERE no >= 1")  # as if the crash came before they were written
    con.close()
    (rebuilt,) = await _after_a_restart(cfg, "SELECT no, bucket, keys FROM dedupe_keys")
    assert sorted(rebuilt) == whole


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_lookup_searches_only_the_chunks_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             backend: str) -> None:
    """``lookup(key, h, lo, hi)`` finds a key in chunks ``lo`` up to ``hi`` (None: the last indexed) and in no
    other, on both stores that keep an index."""
    from livecart.store.memory import MemorySpace, MemoryStore

    monkeypatch.setattr(dedupe, "CHUNK", 4)
    cfg = dedupe_config(tmp_path, window=2)
    if backend == "memory":
        store = await MemoryStore.open(MemorySpace(), catalogue=cfg.catalogue, recent=cfg.storage.dedupe_window)
        engine = await Engine.open(cfg, parse=nothing, store=store)
    else:
        engine = await Engine.open(cfg, parse=nothing)
    try:
        await engine.submit([Comment("p", "r", f"m{i}", "u", "n", "hi", 0.0) for i in range(30)])
        dd = engine.ledger.dedupe
        assert dd is not None
        for _ in range(500):  # the chunks are written in the background
            if not dd.handoff:
                break
            await asyncio.sleep(0.01)
        assert len(dd.chunks) == 7  # m0-m27 in chunks 0-6
        assert not dd.handoff  # all of them indexed
        lookup = engine.journal.lookup
        for i in (1, 9, 26):
            key = dedupe.key_text("p", "r", f"m{i}")
            h = dedupe.key_hash("p", "r", f"m{i}")
            no = i // 4
            assert lookup(key, h, 0, None)
            assert lookup(key, h, no, no + 1)
            assert lookup(key, h, no, None)
            assert lookup(key, h, 0, no + 1)
            assert not lookup(key, h, no + 1, None)
            assert not lookup(key, h, 0, no)
            assert not lookup(key, h, no, no)
        assert not lookup(dedupe.key_text("p", "r", "m29"), dedupe.key_hash("p", "r", "m29"), 0, None)
    finally:
        await engine.close()
