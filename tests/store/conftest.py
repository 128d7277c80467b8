"""The backends every store test runs against. A new backend joins the contract suite with one line in
:data:`BACKENDS`: a function that, given the test's request and temp dir, returns an ``open(**kw)`` for one
location (every call opens the same journal again, as reopening a file does).

The JetStream backend uses the shared server on 127.0.0.1:4222 (or one of its own: the ``nats_server``
fixture, which skips with the reason when there is none, or fails under ``LIVECART_REQUIRE_SERVICES=1``),
a journal of its own per test, deleted (stream and bucket) afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from livecart.store.base import Store
from livecart.store.memory import MemorySpace, MemoryStore
from livecart.store.sqlite import SqliteStore

Opener = Callable[..., Awaitable[Store]]


def _sqlite(request: pytest.FixtureRequest, tmp: Path) -> Opener:
    async def open_(**kw: Any) -> Store:
        return await SqliteStore.open(tmp / "journal.db", **kw)
    return open_


def _memory(request: pytest.FixtureRequest, tmp: Path) -> Opener:
    space = MemorySpace()

    async def open_(**kw: Any) -> Store:
        return await MemoryStore.open(space, **kw)
    return open_


async def drop_journal(server: str, name: str) -> None:
    """Delete the stream and bucket of JetStream journal ``name``."""
    import nats
    import nats.js.errors

    from livecart.store.jsstore import JournalNames

    names = JournalNames(name)
    nc = await nats.connect(servers=[server])
    try:
        for stream in (names.stream, f"KV_{names.bucket}"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def _jetstream(request: pytest.FixtureRequest, tmp: Path) -> Opener:
    from livecart.store.jsstore import JetStreamStore

    server: str = request.getfixturevalue("nats_server")
    name = f"t-{uuid.uuid4().hex[:12]}"

    def cleanup() -> None:
        # In a thread of its own: the test's event loop may still be running (or be closed) here.
        t = threading.Thread(target=lambda: asyncio.run(drop_journal(server, name)))
        t.start()
        t.join(30)

    request.addfinalizer(cleanup)

    async def open_(**kw: Any) -> Store:
        return await JetStreamStore.open([server], name, **kw)
    return open_


@pytest.fixture
def sale() -> str:
    """A JetStream sale id of the test's own."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def cleanup(nats_server: str, sale: str) -> AsyncIterator[None]:
    """The test's sale (stream and bucket) deleted from the server afterwards."""
    import nats
    import nats.js.errors

    from livecart.store import jetstream as js

    yield
    nc = await nats.connect(servers=[nats_server])
    try:
        names = js.Names(sale)
        for name in (names.stream, f"KV_{names.bucket}"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Opener]] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "jetstream": _jetstream,
}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    factory = BACKENDS[request.param]
    return factory(request, tmp_path)
