"""Pacing for a store's background work on worker threads.

A snapshot's encoding and an index chunk's grouping run on worker threads, in Python, beside the event loop
that decides the sale. Only one thread holds the interpreter's lock at a time, and a thread that wants it
waits for the holder to let go: every 5 ms (``sys.getswitchinterval()``) when the holder does not. So a
worker that encodes a 30 MB snapshot for a second, alone, held the event loop up to 5 ms at a time, again and
again, and a flash sale's p99 per frame was the snapshot's (issue #17: episodes of 65–78 frames at 10–16 ms).

A :class:`Pacer` is called between small steps of such work. After each burst of :data:`BURST` seconds of it
the worker sleeps (which lets go of the lock) long enough that it takes at most ``share`` of the time, so the
event loop gets the lock within about a burst. The work takes longer on the clock (1/``share`` as long while
the worker has a core to itself), none of it on the loop, and none of it is on any decision's path. While
nothing comes in (``busy`` says so: a clean stop waiting for its last snapshot, a quiet sale) it does not
sleep: no one is waiting for the lock then.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds of work between two pauses.
BURST = 0.0005
#: The part of the time a paced worker works (the rest it sleeps).
SHARE = 0.25


class Pacer:
    """Call it between steps of background work: it sleeps once the work since the last pause reaches
    ``burst`` seconds, for ``worked * (1 - share) / share``, unless ``busy`` (called then, on the worker's
    thread) says the event loop has nothing to do. One pacer per piece of work on one thread (it holds when
    that work's burst began)."""

    __slots__ = ("burst", "share", "busy", "_began")

    def __init__(self, burst: float = BURST, share: float = SHARE, busy: Callable[[], bool] | None = None) -> None:
        if burst <= 0 or not 0 < share <= 1:
            raise ValueError(f"a pacer needs burst > 0 and 0 < share <= 1, not {burst}, {share}")
        self.burst = burst
        self.share = share
        self.busy = busy
        self._began: float | None = None

    def __call__(self) -> None:
        now = time.perf_counter()
        began = self._began
        if began is None:  # the first step: its work starts here
            self._began = now
            return
        worked = now - began
        if worked < self.burst:
            return
        rest = worked * (1 - self.share) / self.share
        if rest > 0 and (self.busy is None or self.busy()):
            time.sleep(rest)
        self._began = time.perf_counter()


def unpaced() -> None:
    """A pause that never pauses (work done where nothing else waits: a command, a test)."""
