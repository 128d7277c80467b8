"""``livecart run FILE``: adapters -> parser -> ledger -> journal, until told to stop (CONTRACTS.md §5).

Tasks (named, under one :class:`asyncio.TaskGroup`):

* ``intake:<adapter>`` - one per configured adapter: its batches go into a bounded queue. When the queue is
  full the adapter waits (backpressure reaches the socket / file instead of memory).
* ``consume`` - takes batches off the queue, merges what is waiting into one submit of up to
  ``[storage] batch_max`` comments, and keeps a few submits in flight so decisions and journal commits
  overlap (decisions stay in queue order: each submit decides synchronously when it is called).
* ``expiry`` - once a second, expires unpaid holds (only when ``hold_minutes`` > 0).

The daemon stops when SIGINT or SIGTERM arrives, or when every adapter has ended (a replay file read to
its end, a server that closed): then it drains and exits 0 (1 if an adapter ended with an error or the
journal failed). A second signal exits at once with status 1; the journal is SQLite in WAL mode, so the
file is never corrupt, and what was acknowledged is in it.

The shutdown order lives in :func:`serve` alone: stop intake -> drain the queue through the engine ->
flush and close the journal -> close the adapters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from engine import registry
from engine.config import Config, load
from engine.core import Engine, ParseFn, tune_gc
from engine.errors import AdapterError, JournalError
from engine.plugin import Adapter
from engine.records import Comment

log = logging.getLogger("livecart.daemon")

#: Batches (as adapters yield them) waiting for the engine before adapters are made to wait.
QUEUE_BATCHES = 64
#: Submits in flight at once: while one batch waits for its commit, the next is being decided.
INFLIGHT = 4
TICK_SECONDS = 1.0

_END = None


class Daemon:
    """The running pieces of one stream, and whether any of them failed."""

    def __init__(self, cfg: Config, engine: Engine, adapters: Sequence[Adapter]) -> None:
        self.cfg = cfg
        self.engine = engine
        self.adapters = list(adapters)
        self.queue: asyncio.Queue[Sequence[Comment] | None] = asyncio.Queue(QUEUE_BATCHES)
        self.stop = asyncio.Event()
        self.failed: list[str] = []

    async def intake(self, adapter: Adapter) -> None:
        try:
            async for batch in adapter.batches():
                if batch:
                    await self.queue.put(batch)
        except AdapterError as exc:
            self.failed.append(f"adapter {adapter.name}: {exc}")
            log.error("adapter %s ended with an error: %s", adapter.name, exc)
        except Exception as exc:  # an adapter bug ends that adapter, not the sale
            self.failed.append(f"adapter {adapter.name}: {exc!r}")
            log.exception("adapter %s failed", adapter.name)
        else:
            log.info("adapter %s ended", adapter.name)

    async def consume(self) -> None:
        limit = self.cfg.storage.batch_max
        slots = asyncio.Semaphore(INFLIGHT)
        inflight: set[asyncio.Task[object]] = set()
        errors: list[BaseException] = []

        def finished(t: asyncio.Task[object]) -> None:
            inflight.discard(t)
            slots.release()
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                errors.append(exc)

        done = False
        while not done:
            first = await self.queue.get()
            if first is _END:
                break
            batch = list(first)
            while len(batch) < limit and not self.queue.empty():
                more = self.queue.get_nowait()
                if more is _END:
                    done = True
                    break
                batch.extend(more)
            await slots.acquire()
            if errors:
                raise errors[0]  # a journal failure stops the daemon
            # The decisions happen inside submit() before its first await, i.e. right here, in order.
            task: asyncio.Task[object] = asyncio.ensure_future(self.engine.submit(batch))
            inflight.add(task)
            task.add_done_callback(finished)
        if inflight:
            await asyncio.wait(inflight)
        if errors:
            raise errors[0]

    async def expire(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            await self.engine.tick()


async def serve(cfg: Config, *, clock: Callable[[], float] = time.time, parse: ParseFn | None = None,
                stop: asyncio.Event | None = None, on_ready: Callable[[Daemon], None] | None = None,
                tune: bool = False) -> int:
    """Run the stream of ``cfg`` until ``stop`` is set or every adapter has ended. Returns the exit status.

    ``tune`` applies :func:`engine.core.tune_gc` once the ledger is rebuilt (process-wide: the CLI does)."""
    adapters = [registry.adapter_class(a.type)(a.options, name=a.name) for a in cfg.adapters]
    async with contextlib.AsyncExitStack() as stack:
        for a in adapters:  # entered first, so closed last (step 4)
            await stack.enter_async_context(a)
        engine = await Engine.open(cfg, clock=clock, parse=parse)
        stack.push_async_callback(engine.close)  # step 3: flush and close the journal
        if tune:
            tune_gc()
        d = Daemon(cfg, engine, adapters)
        if stop is not None:
            d.stop = stop
        if on_ready is not None:
            on_ready(d)
        log.info("stream %r running: %r, %d adapter(s)", cfg.stream.name, engine.ledger, len(adapters))
        try:
            async with asyncio.TaskGroup() as tg:
                readers = [tg.create_task(d.intake(a), name=f"intake:{a.name}") for a in adapters]
                consumer = tg.create_task(d.consume(), name="consume")
                ticker = (tg.create_task(d.expire(), name="expiry") if cfg.stream.hold_minutes > 0 else None)
                stopper: asyncio.Future[Any] = tg.create_task(d.stop.wait(), name="stop")
                everyone: asyncio.Future[Any] = asyncio.gather(*readers)
                await asyncio.wait({stopper, everyone}, return_when=asyncio.FIRST_COMPLETED)
                # --- shutdown, in this order (STYLE 7) ---
                # 1. stop intake
                for r in readers:
                    r.cancel()
                await asyncio.gather(everyone, return_exceptions=True)
                stopper.cancel()
                # 2. drain: everything queued goes through the engine, then the consumer ends
                await d.queue.put(_END)
                await consumer
                if ticker is not None:
                    ticker.cancel()
            # 3. and 4. happen as the exit stack unwinds: the journal is flushed, then adapters close.
        except* JournalError as eg:
            for exc in eg.exceptions:
                log.error("journal failed: %s", exc)
            d.failed.append(f"journal: {eg.exceptions[0]}")
        log.info("stream %r stopped: %r", cfg.stream.name, engine.ledger)
    if d.failed:
        for f in d.failed:
            print(f"livecart run: {f}", file=sys.stderr)
        return 1
    return 0


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    count = [0]

    def on_signal(signame: str) -> None:
        count[0] += 1
        if count[0] == 1:
            log.warning("%s: stopping intake, draining, flushing the journal (again to exit at once)", signame)
            stop.set()
        else:
            # Immediate exit: the WAL journal holds every acknowledged outcome and is never left corrupt.
            sys.stderr.write(f"livecart run: {signame} again, exiting at once\n")
            os._exit(1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows event loops
            loop.add_signal_handler(sig, on_signal, sig.name)


async def _main(cfg: Config) -> int:
    stop = asyncio.Event()
    _install_signals(stop)
    return await serve(cfg, stop=stop, tune=True)


def main(args: argparse.Namespace) -> int:
    """``livecart run FILE``."""
    cfg = load(args.file)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(_main(cfg))
    return int(uvloop.run(_main(cfg)))
