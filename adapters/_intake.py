"""Async helpers shared by the push-style adapters (WebSocket server, webhook, MQTT).

* :class:`Intake` — a bounded buffer of comment batches between the code that receives them (one task per
  peer) and :meth:`Adapter.batches` (the consumer). It is bounded in comments, not batches. A receiver either
  waits for room (:meth:`Intake.put`: the WebSocket server stops reading that socket, so TCP pushes back on
  the peer) or is told there is none (:meth:`Intake.offer`: the webhook answers 503). The consumer takes
  everything waiting at once, up to a limit, so that a burst of one-comment frames becomes one batch. A
  :class:`~livecart.plugin.Batch` put in is settled when the merged batch that carries it is settled (an
  empty one at once: it holds nothing to make durable).
* :class:`Milestone` — a counter that can be awaited (``await m.reached(2)``), so that tests and the daemon
  can wait for "connected twice" without sleeping.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from livecart.core.records import Comment
from livecart.plugin import Batch, settle_all


class Intake:
    """A bounded FIFO of comment batches with one consumer. Closing it lets the consumer drain and end."""

    def __init__(self, capacity: int, *, max_batch: int = 4096) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be more than 0")
        self.capacity = capacity
        self.max_batch = max_batch
        self._batches: deque[Sequence[Comment]] = deque()
        self._size = 0
        self._closed = False
        self._has_data: asyncio.Future[None] | None = None
        self._has_room: deque[asyncio.Future[None]] = deque()
        #: Most comments ever held at once (a test of boundedness; a gauge for the daemon).
        self.high_water = 0
        #: Times a producer had to wait for room (each one is backpressure applied to a peer).
        self.waits = Milestone()
        #: Batches taken in.
        self.arrived = Milestone()

    def __len__(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def full(self) -> bool:
        return self._size >= self.capacity

    def _append(self, batch: Sequence[Comment]) -> None:
        self._batches.append(batch)
        self._size += len(batch)
        self.arrived.advance()
        if self._size > self.high_water:
            self.high_water = self._size
        w = self._has_data
        if w is not None and not w.done():
            w.set_result(None)

    def offer(self, batch: Sequence[Comment]) -> bool:
        """Add ``batch`` if there is room for it now; False when full (or closed), and nothing is added.

        An empty buffer always takes a batch, even one larger than the capacity, so a single oversized
        request cannot be refused forever.
        """
        if self._closed or (self._size and self._size + len(batch) > self.capacity):
            return False
        if batch:
            self._append(batch)
        elif isinstance(batch, Batch):
            batch.settle()
        return True

    async def put(self, batch: Sequence[Comment]) -> bool:
        """Add ``batch``, waiting while the buffer is full. False (nothing added) once the buffer is closed."""
        while not self._closed and self._size and self._size >= self.capacity:
            fut = asyncio.get_running_loop().create_future()
            self._has_room.append(fut)
            self.waits.advance()
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
        if self._closed:
            return False
        if batch:
            self._append(batch)
        elif isinstance(batch, Batch):
            batch.settle()
        return True

    async def get(self) -> Batch | None:
        """Everything waiting (at most about ``max_batch`` comments) as one :class:`Batch` whose settlement
        settles the batches it merges; None once closed and empty."""
        while not self._batches:
            if self._closed:
                return None
            self._has_data = asyncio.get_running_loop().create_future()
            await self._has_data
            self._has_data = None
        out = Batch()
        parts: list[Batch] = []
        batches = self._batches
        while batches and len(out) < self.max_batch:
            part = batches.popleft()
            out.extend(part)
            if isinstance(part, Batch):
                parts.append(part)
        if parts:
            out.when_settled(lambda error: settle_all(parts, error))
        self._size -= len(out)
        while self._has_room and self._size < self.capacity:
            fut = self._has_room.popleft()
            if not fut.done():
                fut.set_result(None)
        return out

    def abandon(self, error: BaseException) -> None:
        """Close, and settle every :class:`Batch` still buffered with ``error`` (its sender keeps it): for an
        adapter that closes after its consumer has gone."""
        self.close()
        left, self._batches = self._batches, deque()
        self._size = 0
        settle_all(left, error)

    def close(self) -> None:
        """Refuse further batches; the consumer gets what is buffered, then None. Idempotent."""
        self._closed = True
        if self._has_data is not None and not self._has_data.done():
            self._has_data.set_result(None)
        while self._has_room:
            fut = self._has_room.popleft()
            if not fut.done():
                fut.set_result(None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Intake {state}: {self._size}/{self.capacity} comments, high water {self.high_water}>"


class Milestone:
    """A count that only goes up, which coroutines can wait on without polling."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def advance(self) -> None:
        self.count += 1
        if not self._waiters:
            return
        keep = []
        for n, fut in self._waiters:
            if self.count >= n:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((n, fut))
        self._waiters = keep

    async def reached(self, n: int) -> None:
        """Return once the count is at least ``n``."""
        if self.count >= n:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        await fut

    def __repr__(self) -> str:
        return f"<Milestone {self.count}>"
