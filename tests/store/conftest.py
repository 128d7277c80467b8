"""The backends every store test runs against. A new backend joins the contract suite with one line in
:data:`BACKENDS`: a function that, given a test's temp dir, returns an ``open(**kw)`` for one location
(every call opens the same journal again, as reopening a file does)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from livecart.store.base import Store
from livecart.store.memory import MemorySpace, MemoryStore
from livecart.store.sqlite import SqliteStore

Opener = Callable[..., Awaitable[Store]]


def _sqlite(tmp: Path) -> Opener:
    async def open_(**kw: Any) -> Store:
        return await SqliteStore.open(tmp / "journal.db", **kw)
    return open_


def _memory(tmp: Path) -> Opener:
    space = MemorySpace()

    async def open_(**kw: Any) -> Store:
        return await MemoryStore.open(space, **kw)
    return open_


BACKENDS: dict[str, Callable[[Path], Opener]] = {
    "sqlite": _sqlite,
    "memory": _memory,
}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    factory: Callable[[Path], Opener] = BACKENDS[request.param]
    return factory(tmp_path)
