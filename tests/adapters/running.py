"""A push adapter's endpoint up, with a reader task pulling its batches (shared by the push-adapter tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from livecart.adapters._push import PushAdapter
from livecart.core.records import Comment
from livecart.plugin import Batch


class Running:
    """``async with Running(adapter) as url:`` — the endpoint's URL; :meth:`wait_for` waits for comments.

    The reader plays the engine: each batch is settled as durable once taken (``durable=False`` leaves them
    pending, for tests of what happens before the journal commits)."""

    def __init__(self, a: PushAdapter, *, durable: bool = True) -> None:
        self.a = a
        self.durable = durable
        self.batches: list[Batch] = []
        self.it: AsyncIterator[Sequence[Comment]] = a.batches()
        self.got: list[Comment] = []
        self.arrived = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def __aenter__(self) -> str:
        self.task = asyncio.create_task(self._read())
        async with asyncio.timeout(10):
            ready = asyncio.create_task(self.a.ready.wait())
            await asyncio.wait({ready, self.task}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
        if self.task.done():
            self.task.result()  # the adapter failed before listening: raise its error here
        return f"http://127.0.0.1:{self.a.port}{self.a.options['path']}"

    async def _read(self) -> None:
        async for batch in self.it:
            self.got.extend(batch)
            assert isinstance(batch, Batch)
            self.batches.append(batch)
            if self.durable:
                batch.settle()
            self.arrived.set()

    async def wait_for(self, n: int) -> list[Comment]:
        async with asyncio.timeout(10):  # safety bound only
            while len(self.got) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.got

    async def __aexit__(self, *exc: object) -> None:
        await self.a.close()
        assert self.task is not None
        async with asyncio.timeout(10):
            await self.task   # the stream ends cleanly on close


def first_copies(comments: list[Comment]) -> list[Comment]:
    """The comments in order, each ``(platform, room, id)`` once: what the engine processes."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for c in comments:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out
