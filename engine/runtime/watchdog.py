"""Saying so when the event loop stops running: a plugin that blocks (``time.sleep``, a synchronous HTTP call,
a long computation) stalls everything else, intake, decisions, acknowledgements and host controls, and
otherwise leaves no trace of where.

The loop bumps a heartbeat every :data:`BEAT` seconds. A thread looks at it as often; when the loop has not
beaten for :data:`STALL` seconds it logs one warning with where the event loop's thread is (the innermost
frames of its stack: the plugin's file and line), counts the stall in ``livecart_loop_stalls_total``, and
says when the loop runs again. The thread only reads a float and, on a stall, one frame stack: it costs
nothing measurable while the loop runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from livecart.runtime.metrics import Registry

log = logging.getLogger("livecart.daemon")

#: How often the loop beats and the thread looks (s).
BEAT = 0.25
#: A heartbeat this late (s) is a stall worth saying.
STALL = 2.0


class LoopWatchdog:
    """Start with :meth:`start` from the event loop's thread; :meth:`stop` ends both sides."""

    def __init__(self, registry: Registry, *, stall: float = STALL, beat: float = BEAT) -> None:
        self.stall = stall
        self.beat = beat
        self.stalls = 0
        self._count = registry.counter("loop_stalls_total",
                                       f"Times the event loop did not run for {stall:g} s or more (a blocking "
                                       "plugin or hook); the log says where it was")
        self._last = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stopped = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="watchdog")
        self._thread = threading.Thread(target=self._watch, name="livecart-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    async def _beat(self) -> None:
        while True:
            self._last = time.monotonic()
            await asyncio.sleep(self.beat)

    def _watch(self) -> None:
        stalled_since: float | None = None
        while not self._stopped.wait(self.beat):
            late = time.monotonic() - self._last
            if late >= self.stall and stalled_since is None:
                stalled_since = self._last
                self.stalls += 1
                self._count.inc()
                log.warning("the event loop has not run for %.1f s: intake, decisions, acknowledgements and host "
                            "controls all wait. It is busy in:\n%s", late, self._where())
            elif late < self.beat * 2 and stalled_since is not None:
                log.warning("the event loop runs again after %.1f s", time.monotonic() - stalled_since)
                stalled_since = None
        if stalled_since is not None:  # stopped (from the running loop) before the next look saw it run
            log.warning("the event loop runs again after %.1f s", self._last - stalled_since)

    def _where(self, frames: int = 4) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "  (its stack could not be read)"
        return "".join(traceback.format_stack(frame)[-frames:]).rstrip()

    def __repr__(self) -> str:
        return f"<LoopWatchdog stall at {self.stall:g} s: {self.stalls} so far>"
