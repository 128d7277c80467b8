"""One writer per journal: the flock beside the file (livecart.store.lock)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from livecart.core.catalogue import Catalogue, Product
from livecart.core.errors import JournalLocked
from livecart.store.lock import JournalLock, lock_path, read_holder
from livecart.store.sqlite import SqliteStore

CAT = Catalogue((Product("egg", "Eggs", stock=3),))


def test_a_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    j = tmp_path / "j.db"
    with JournalLock.acquire(j, purpose="run") as held:
        held.update(control="http://127.0.0.1:5555/control")
        with pytest.raises(JournalLocked) as info:
            JournalLock.acquire(j)
        msg = str(info.value)
        assert f"pid {os.getpid()}" in msg
        assert "livecart run" in msg
        assert "started " in msg
        assert "controls at http://127.0.0.1:5555/control" in msg
        assert info.value.holder["control"] == "http://127.0.0.1:5555/control"
    # Released: the next writer gets it, and the file stays (never deleted, see the module docstring).
    JournalLock.acquire(j).release()
    assert lock_path(j).exists()
    assert read_holder(j) == {}


async def test_a_second_read_write_store_is_refused_and_a_reader_is_not(tmp_path: Path) -> None:
    j = tmp_path / "j.db"
    first = await SqliteStore.open(j, catalogue=CAT)
    try:
        with pytest.raises(JournalLocked):
            await SqliteStore.open(j, catalogue=CAT)
        reader = await SqliteStore.open(j, readonly=True)
        await reader.close()
    finally:
        await first.close()
    again = await SqliteStore.open(j, catalogue=CAT)  # the first released its lock on close
    await again.close()


async def test_a_store_opened_with_the_callers_lock_leaves_it_held(tmp_path: Path) -> None:
    j = tmp_path / "j.db"
    with JournalLock.acquire(j) as lock:
        s = await SqliteStore.open(j, catalogue=CAT, lock=lock)
        await s.close()
        assert lock.held
        with pytest.raises(JournalLocked):
            JournalLock.acquire(j)


async def test_a_hard_link_is_the_same_journal_and_is_refused(tmp_path: Path) -> None:
    # Found from outside: a second daemon on a hard link to the journal (another name, no symlink to
    # resolve) took a lock of its own, both acknowledged comments, and one's were lost.
    j = tmp_path / "j.db"
    first = await SqliteStore.open(j, catalogue=CAT)
    try:
        link = tmp_path / "elsewhere.db"
        os.link(j, link)
        with pytest.raises(JournalLocked, match="hard link"):
            await SqliteStore.open(link, catalogue=CAT)
        # Refused before SQLite opened it under that name (it would have used a WAL of that name).
        assert not await asyncio.to_thread(os.path.exists, str(link) + "-wal")
        # A reader still reads beside the writer, under any name.
        reader = await SqliteStore.open(link, readonly=True)
        await reader.close()
    finally:
        await first.close()
    again = await SqliteStore.open(tmp_path / "elsewhere.db", catalogue=CAT)  # released with the first
    await again.close()
