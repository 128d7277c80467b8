"""Running hook plugins (entry-point group ``livecart.hooks``) so that none of them can stall ordering.

Each hook gets its own bounded queue and its own worker task. :meth:`HookRunner.submit_outcomes` and
:meth:`HookRunner.submit_event` only append to those queues (they never await a hook); when a queue is
full its oldest item is shed and counted. The worker calls the hook under a timeout; an exception or a
timeout is counted and logged (once per hook and kind at WARNING, then at DEBUG) and the worker goes on.
Consecutive outcome batches waiting in a queue are coalesced into one call (up to ``max_batch`` outcomes),
so a slow hook sees fewer, larger batches instead of a growing backlog.

The caller must submit only durable outcomes (docs/contract.md §6): the engine calls its outcome listeners after
the journal commit.

Metrics (in the given :class:`~livecart.runtime.metrics.Registry`):

* ``livecart_hook_calls_total{hook, kind=outcomes|event|open|close, result=ok|error|timeout}``
* ``livecart_hook_shed_total{hook, kind}`` items dropped because the hook's queue was full or it was closed
* ``livecart_hook_queue_depth{hook}`` items waiting
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from livecart.core.events import Event
from livecart.core.records import Outcome
from livecart.core.settings import Config
from livecart.plugin import Hook
from livecart.runtime.metrics import Registry

log = logging.getLogger("livecart.hooks")


@dataclass(frozen=True, slots=True)
class _Item:
    outcomes: tuple[Outcome, ...] = ()
    event: Event | None = None


class _Slot:
    """One hook with its queue, worker and counters."""

    def __init__(self, hook: Hook, maxsize: int) -> None:
        self.hook = hook
        self.maxsize = maxsize
        self.queue: deque[_Item] = deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.logged: set[tuple[str, str]] = set()


class HookRunner:
    """Owns hook instances and isolates them (module docstring).

    ``timeout`` bounds each call (seconds); ``queue_size`` bounds each hook's queue (items: a batch of
    outcomes or an event); ``grace`` is how long :meth:`close` lets hooks drain before cancelling them.
    Call :meth:`start` before submitting (submissions before it are queued and delivered once started).
    """

    def __init__(self, hooks: Iterable[Hook] = (), *, stream: str = "", metrics: Registry | None = None,
                 timeout: float = 10.0, queue_size: int = 256, grace: float = 2.0, max_batch: int = 1000
                 ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be 1 or more")
        self.stream = stream
        self.timeout = timeout
        self.grace = grace
        self.max_batch = max_batch
        self.metrics = metrics if metrics is not None else Registry()
        self._calls = self.metrics.counter("hook_calls_total", "Hook calls by hook, kind and result")
        self._shed = self.metrics.counter("hook_shed_total", "Hook queue items dropped (queue full or closed)")
        self._depth = self.metrics.gauge("hook_queue_depth", "Items waiting for each hook")
        self.metrics.collector(self._collect)
        self._slots = [_Slot(h, queue_size) for h in hooks]
        self._started = False
        self._closed = False
        self._idle = asyncio.Event()

    @classmethod
    def from_config(cls, config: Config, *, hook_class: Callable[[str], type[Hook]] | None = None,
                    **kwargs: Any) -> HookRunner:
        """Instantiate every ``[[hooks]]`` table through the entry-point registry (or ``hook_class``).

        A hook class that declares a ``stream`` option gets ``[stream].name`` there unless the table sets it.
        Raises :class:`~livecart.core.errors.PluginError` for an unknown or broken hook type."""
        if hook_class is None:
            from livecart import registry

            hook_class = registry.hook_class
        hooks: list[Hook] = []
        for ps in config.hooks:
            cls_ = hook_class(ps.type)
            options = dict(ps.options)
            # Convention: a hook that declares a ``stream`` option is told the stream's name by default.
            if "stream" in cls_.OPTIONS and not options.get("stream"):
                options["stream"] = config.stream.name
            hooks.append(cls_(options, name=ps.name))
        kwargs.setdefault("stream", config.stream.name)
        return cls(hooks, **kwargs)

    @property
    def hooks(self) -> list[Hook]:
        return [s.hook for s in self._slots]

    def _collect(self) -> None:
        for s in self._slots:
            self._depth.set(len(s.queue), hook=s.hook.name)

    def depth(self, name: str) -> int:
        for s in self._slots:
            if s.hook.name == name:
                return len(s.queue)
        raise KeyError(name)

    def count(self, hook: str, kind: str, result: str) -> int:
        return int(self._calls.get(hook=hook, kind=kind, result=result))

    def shed(self, hook: str) -> int:
        return int(sum(v for k, v in self._shed.values.items() if ("hook", hook) in k))

    async def start(self) -> None:
        """Open each hook (under the timeout; a failure is counted and logged, the hook still gets calls)
        and start its worker. Idempotent."""
        if self._started:
            return
        self._started = True
        for s in self._slots:
            await self._call(s, "open", s.hook.open)
            s.task = asyncio.create_task(self._work(s), name=f"livecart-hook-{s.hook.name}")

    def _put(self, item: _Item, kind: str) -> None:
        for s in self._slots:
            if self._closed:
                self._shed.inc(hook=s.hook.name, kind=kind)
                continue
            if len(s.queue) >= s.maxsize:
                dropped = s.queue.popleft()
                self._shed.inc(hook=s.hook.name, kind="event" if dropped.event is not None else "outcomes")
                self._log_once(s, "shed", f"queue full ({s.maxsize} items): shedding the oldest (counted)")
            s.queue.append(item)
            s.wakeup.set()
            self._idle.clear()

    def submit_outcomes(self, batch: Sequence[Outcome]) -> None:
        """Queue a batch of durable outcomes for every hook. Never waits."""
        if batch:
            self._put(_Item(outcomes=tuple(batch)), "outcomes")

    def submit_event(self, event: Event) -> None:
        """Queue a stream event for every hook. Never waits."""
        self._put(_Item(event=event), "event")

    def _log_once(self, s: _Slot, what: str, message: str) -> None:
        first = (what, "") not in s.logged
        s.logged.add((what, ""))
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "hook %s: %s%s", s.hook.name, message,
                "; further ones are counted and logged at DEBUG" if first else "")

    async def _call(self, s: _Slot, kind: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await fn()
        except TimeoutError:
            self._calls.inc(hook=s.hook.name, kind=kind, result="timeout")
            self._log_once(s, f"{kind}:timeout", f"{kind} call timed out after {self.timeout:g}s")
        except Exception as exc:
            self._calls.inc(hook=s.hook.name, kind=kind, result="error")
            self._log_once(s, f"{kind}:error", f"{kind} call failed: {exc!r}")
        else:
            self._calls.inc(hook=s.hook.name, kind=kind, result="ok")

    def _next(self, s: _Slot) -> _Item:
        item = s.queue.popleft()
        if item.event is not None:
            return item
        merged = list(item.outcomes)
        while s.queue and s.queue[0].event is None and len(merged) + len(s.queue[0].outcomes) <= self.max_batch:
            merged.extend(s.queue.popleft().outcomes)
        return _Item(outcomes=tuple(merged))

    async def _work(self, s: _Slot) -> None:
        hook = s.hook
        while True:
            if not s.queue:
                if self._closed:
                    return
                s.wakeup.clear()
                await s.wakeup.wait()
                continue
            item = self._next(s)
            s.busy = True
            self._idle.clear()
            try:
                if item.event is not None:
                    await self._call(s, "event", partial(hook.on_event, item.event.kind.value,
                                                         item.event.to_dict()))
                else:
                    await self._call(s, "outcomes", partial(hook.on_outcomes, item.outcomes))
            finally:
                s.busy = False
                self._check_idle()

    def _check_idle(self) -> None:
        if not any(s.queue or s.busy for s in self._slots):
            self._idle.set()

    async def drained(self) -> None:
        """Wait until every hook's queue is empty and no call is running (for tests and shutdown)."""
        self._check_idle()
        await self._idle.wait()

    async def close(self) -> None:
        """Stop taking items, give hooks ``grace`` seconds to drain, cancel what is left (counted as shed),
        then close each hook under the timeout. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = [s.task for s in self._slots if s.task is not None]
        for s in self._slots:
            s.wakeup.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for s in self._slots:
            if s.queue:
                for item in s.queue:
                    self._shed.inc(hook=s.hook.name, kind="event" if item.event is not None else "outcomes")
                log.warning("hook %s: closed with %d items undelivered (counted as shed)",
                            s.hook.name, len(s.queue))
                s.queue.clear()
            if self._started:
                await self._call(s, "close", s.hook.close)
        self._check_idle()

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.hook.name} ({len(s.queue)} waiting)" for s in self._slots) or "no hooks"
        state = "closed" if self._closed else ("running" if self._started else "idle")
        return f"<HookRunner {state}: {parts}>"
