"""The adapters' positions a journal keeps (livecart.plugin.Resume): written behind the batches they follow,
read back at the next open, refused by a read-only journal, forgotten by a repair that cuts the journal."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from livecart.store import sqlite as sq
from livecart.store.memory import MemorySpace, MemoryStore
from livecart.store.sqlite import SqliteStore, repair_file
from tests.store.test_integrity import CAT, flip, write


async def test_a_kept_position_is_written_within_a_second_and_read_at_the_next_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sq, "POSITION_EVERY", 0.05)
    p = tmp_path / "j.db"
    s, _ = await write(p, 2, close=False)
    assert s.positions() == {}
    assert s.keep_position("replay", {"offset": 10, "line": 1})
    assert s.keep_position("replay", {"offset": 20, "line": 2})  # the latest wins
    assert s.keep_position("ws", [1, "a"])
    for _ in range(200):
        if s.positions_written:
            break
        await asyncio.sleep(0.01)
    assert s.positions_written == 1
    con = sqlite3.connect(p)
    try:
        rows = dict(con.execute("SELECT key, value FROM meta WHERE key LIKE 'position:%'"))
    finally:
        con.close()
    assert rows == {"position:replay": '{"offset":20,"line":2}', "position:ws": '[1,"a"]'}
    assert s.keep_position("replay", {"offset": 30, "line": 3})  # written by close, not later
    await s.close()
    assert not s.keep_position("replay", {"offset": 40, "line": 4})
    again = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0)
    try:
        assert again.positions() == {"replay": {"offset": 30, "line": 3}, "ws": [1, "a"]}
    finally:
        await again.close()
    reader = await SqliteStore.open(p, readonly=True)
    try:
        assert reader.positions() == {"replay": {"offset": 30, "line": 3}, "ws": [1, "a"]}
        assert not reader.keep_position("replay", {"offset": 50})
    finally:
        await reader.close()


async def test_a_position_that_is_not_json_is_left_out_with_a_warning(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "j.db"
    await write(p, 1)
    con = sqlite3.connect(p)
    with con:
        con.execute("INSERT INTO meta VALUES ('position:replay', '{not json')")
        con.execute("INSERT INTO meta VALUES ('position:ws', '7')")
    con.close()
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0)
    try:
        assert s.positions() == {"ws": 7}
    finally:
        await s.close()
    assert "position of adapter replay is not JSON" in caplog.text


async def test_a_position_orjson_cannot_encode_is_refused_not_fatal(tmp_path: Path) -> None:
    s, _ = await write(tmp_path / "j.db", 1, close=False)
    try:
        assert not s.keep_position("replay", {1j})
        assert s.keep_position("replay", 1)
    finally:
        await s.close()


async def test_repair_forgets_the_positions_when_it_cuts_and_keeps_them_when_nothing_is_cut(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    s, _ = await write(p, 4, close=False)
    assert s.keep_position("replay", {"offset": 99})
    await s.close()
    assert repair_file(p).backup is None  # whole: left as it is
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0)
    assert s.positions() == {"replay": {"offset": 99}}
    await s.close()
    flip(p, b"alice-0012")
    assert repair_file(p).backup is not None
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0)
    try:
        assert s.positions() == {}
        assert s.last_seq == 10
    finally:
        await s.close()


async def test_the_memory_store_keeps_positions_in_its_space() -> None:
    space = MemorySpace()
    s = await MemoryStore.open(space, catalogue=CAT)
    assert s.positions() == {}
    assert s.keep_position("replay", {"offset": 5})
    await s.close()
    assert not s.keep_position("replay", {"offset": 6})
    again = await MemoryStore.open(space, catalogue=CAT)
    try:
        assert again.positions() == {"replay": {"offset": 5}}
    finally:
        await again.close()
