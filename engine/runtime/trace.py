"""An opt-in trace of where the time between a batch's arrival and its acknowledgement goes (issue #17).

``LIVECART_TRACE=FILE livecart run CONFIG`` writes one JSON object to FILE when the daemon stops:

* ``frames``: per adapter batch (a companion's frame, a push, an MQTT message), from its arrival to its
  settlement (the acknowledgement written), as percentiles, split into stages: waiting for the loop to take it
  and decide it, deciding, waiting for a journal transaction to be cut, the writer thread picking it up, the
  SQLite statement (with its fsync), the way back to the event loop, and settling.
* ``tail``: the slowest 1 % of those batches, each stage averaged, and what overlapped them: the main thread's
  CPU (the daemon's own work), its run-queue wait (runnable but not running: the machine's other processes),
  the writer thread's run-queue wait, garbage collections and ledger copies for snapshots.
* ``loop``: a heartbeat every millisecond; each beat later than 5 ms split as above (CPU, run-queue wait, and
  the rest: blocked, on the GIL held by another thread or on page faults).
* ``commits``, ``gc``, ``snapshots``, ``work`` (encodings and other statements on the writer's connection)
  and ``threads`` (CPU and run-queue wait of every thread of the process).

The run-queue figures come from ``/proc/self/task/TID/schedstat`` (Linux; absent elsewhere). Tracing costs a
/proc read a millisecond and a few calls per batch; without the variable nothing is traced.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

ENV = "LIVECART_TRACE"
#: A heartbeat later than this (seconds) is a stall.
STALL = 0.005
#: Issue #17's goal for ingest -> durable (seconds): the frames above it are examined in ``over_target``.
TARGET = 0.005

_now = time.perf_counter


def _schedstat(tid: int) -> Callable[[], tuple[int, int]] | None:
    """A reader of thread ``tid``'s (CPU ns, run-queue wait ns) so far, or None without /proc schedstat."""
    try:
        fd = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
    except OSError:
        return None

    def read() -> tuple[int, int]:
        try:
            f = os.pread(fd, 128, 0).split()
            return int(f[0]), int(f[1])
        except (OSError, IndexError, ValueError):
            return 0, 0

    return read


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p90/p99/p999/max of non-empty ``values`` (seconds), times ``scale`` (ms by default), rounded to 3
    places (the benchmarks report theirs the same way)."""
    v = sorted(values)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))] * scale, 3)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p999": at(0.999), "max": round(v[-1] * scale, 3)}


def _pct(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """:func:`percentiles` of ``values`` with their count and mean."""
    if not values:
        return {"n": 0}
    return {"n": len(values), **percentiles(values, scale), "mean": round(sum(values) / len(values) * scale, 3)}


class Trace:
    """Collects the timings (see the module docstring); :meth:`write` summarises them into the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.started = _now()
        # per submit: (borns of its adapter batches, taken off the queue, decisions start, end, last seq, settled)
        self.submits: list[tuple[list[float], float, float, float, int, float]] = []
        self.current: list[Any] | None = None  # the submit being decided (filled by decided())
        # per journal transaction: (last seq, rows, cut, sent, thread start, statement done, back on the loop)
        self.commits: list[tuple[int, int, float, float, float, float, float]] = []
        self.gcs: list[tuple[float, float, int, int]] = []  # (start, pause, generation, collected)
        self._gc_start = 0.0
        self.states: list[tuple[float, float]] = []  # Ledger.state() on the loop: (start, seconds)
        self.work: list[tuple[str, float, float]] = []  # (what, start, end)
        main = threading.get_native_id()
        self._main = _schedstat(main)
        self._writer: Callable[[], tuple[int, int]] | None = None
        self.writer_tid = 0
        # heartbeat: time, main thread (CPU ns, wait ns), writer thread (CPU ns, wait ns), cumulative
        self.ticks: list[tuple[float, int, int, int, int]] = []
        self._beat: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ collecting

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat(), name="trace-heartbeat")

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = _now()
        else:
            self.gcs.append((self._gc_start, _now() - self._gc_start, info["generation"], info["collected"]))

    def _sample(self) -> None:
        c, w = self._main() if self._main is not None else (0, 0)
        wc, ww = self._writer() if self._writer is not None else (0, 0)
        self.ticks.append((_now(), c, w, wc, ww))

    async def _heartbeat(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(0.001)

    def taken(self, borns: list[float], taken: float) -> None:
        """A submit starts deciding now (called right before ``Engine.submit``)."""
        self.current = [borns, taken, _now(), 0.0, 0]

    def decided(self, seq: int) -> None:
        """The submit being decided has appended its rows up to ``seq`` (called by the engine)."""
        cur = self.current
        if cur is not None:
            cur[3] = _now()
            cur[4] = seq

    def settled(self, rec: list[Any]) -> None:
        self.submits.append((rec[0], rec[1], rec[2], rec[3], rec[4], _now()))

    def commit(self, last: int, rows: int, cut: float, sent: float, started: float, done: float,
               back: float, tid: int) -> None:
        """One journal transaction (called by the store, once its waiters are resolved)."""
        self.commits.append((last, rows, cut, sent, started, done, back))
        if tid and tid != self.writer_tid:
            self.writer_tid = tid
            self._writer = _schedstat(tid)

    def state_taken(self, start: float, seconds: float) -> None:
        self.states.append((start, seconds))

    def worked(self, what: str, start: float, end: float) -> None:
        self.work.append((what, start, end))

    # ------------------------------------------------------------------ summarising

    def stop(self) -> None:
        """Stop the heartbeat and the GC callback; :meth:`write` may follow (after the journal closed)."""
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._sample()
        self.threads = _threads()

    def write(self) -> dict[str, Any]:
        out = self.summary()
        self.path.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
        return out

    def summary(self) -> dict[str, Any]:
        ticks = self.ticks
        tt = [t[0] for t in ticks]

        def between(a: float, b: float, k: int) -> float:
            """Seconds of counter ``k`` (cumulative ns, sampled at the ticks) between ``a`` and ``b``."""
            if not ticks or b <= a:
                return 0.0
            return (_interp(tt, ticks, k, b) - _interp(tt, ticks, k, a)) / 1e9

        commits = sorted(self.commits)
        tops = [c[0] for c in commits]
        frames: list[dict[str, float]] = []
        for borns, taken, dec0, dec1, seq, settled in self.submits:
            i = bisect.bisect_left(tops, seq)
            c = commits[i] if seq and i < len(commits) else None
            for born in borns:
                f = {"total": settled - born, "queue": taken - born, "start": dec0 - taken, "decide": dec1 - dec0,
                     "t0": born, "t1": settled}
                if c is not None:
                    _, _, cut, _, started, done, back = c
                    f.update(to_cut=cut - dec1, to_thread=started - cut, statement=done - started,
                             to_loop=back - done, settle=settled - back)
                frames.append(f)
        stages = ("total", "queue", "start", "decide", "to_cut", "to_thread", "statement", "to_loop", "settle")
        out: dict[str, Any] = {"seconds": round(_now() - self.started, 3), "frames": {
            s: _pct([f[s] for f in frames if s in f]) for s in stages}}
        # the tail: the slowest 1 % of batches, and what overlapped them
        frames.sort(key=lambda f: f["total"])
        tail = frames[int(len(frames) * 0.99):] if frames else []
        gcs = self.gcs
        if tail:
            agg: dict[str, float] = {s: 0.0 for s in stages}
            extra = {"main_cpu": 0.0, "main_runqueue_wait": 0.0, "main_other": 0.0, "writer_runqueue_wait": 0.0,
                     "gc": 0.0, "ledger_state": 0.0}
            for f in tail:
                a, b = f["t0"], f["t1"]
                for s in stages:
                    agg[s] += f.get(s, 0.0)
                cpu, wait = between(a, b, 1), between(a, b, 2)
                extra["main_cpu"] += cpu
                extra["main_runqueue_wait"] += wait
                extra["main_other"] += max(0.0, (b - a) - cpu - wait)
                extra["writer_runqueue_wait"] += between(a, b, 4)
                extra["gc"] += sum(_overlap(a, b, g[0], g[0] + g[1]) for g in gcs)
                extra["ledger_state"] += sum(_overlap(a, b, s0, s0 + d) for s0, d in self.states)
            n = len(tail)
            out["tail"] = {"frames": n, "from_ms": round(tail[0]["total"] * 1000, 3),
                           "mean_ms": {k: round(v / n * 1000, 3) for k, v in {**agg, **extra}.items()},
                           "explained": "stages add up to total (to_cut..settle only for frames in a traced "
                                        "commit); main_cpu + main_runqueue_wait + main_other = total: the main "
                                        "thread running, runnable but not running, and blocked or idle"}
        # what the batches over the target overlapped: the daemon's own pauses, or none of them
        over = [f for f in frames if f["total"] > TARGET]
        if over:
            own: dict[str, list[tuple[float, float]]] = {"gc": [(g[0], g[0] + g[1]) for g in gcs],
                                                         "ledger_state": [(a, a + d) for a, d in self.states]}
            for what, a, b in self.work:
                own.setdefault(what, []).append((a, b))
            hit = {k: 0 for k in own}
            none = 0
            wait_share = 0.0
            for f in over:
                a, b = f["t0"], f["t1"]
                any_own = False
                for k, spans in own.items():
                    if any(_overlap(a, b, c, d) > 0 for c, d in spans):
                        hit[k] += 1
                        any_own = True
                none += not any_own
                wait_share += between(a, b, 2) / (b - a) if b > a else 0.0
            n = len(over)
            out["over_target"] = {"target_ms": TARGET * 1000, "frames": n, "share_of_frames": round(n / len(frames), 4),
                                  "overlapping": {k: round(v / n, 3) for k, v in hit.items()},
                                  "overlapping_none_of_these": round(none / n, 3),
                                  "main_runqueue_wait_share": round(wait_share / n, 3)}
        # the loop's stalls
        stalls = {"count": 0, "seconds": 0.0, "main_cpu": 0.0, "main_runqueue_wait": 0.0, "main_blocked": 0.0,
                  "gc": 0.0}
        gaps: list[float] = []
        for p, q in zip(ticks, ticks[1:], strict=False):
            gap = q[0] - p[0]
            gaps.append(gap)
            if gap > STALL:
                cpu, wait = (q[1] - p[1]) / 1e9, (q[2] - p[2]) / 1e9
                stalls["count"] += 1
                stalls["seconds"] += gap
                stalls["main_cpu"] += cpu
                stalls["main_runqueue_wait"] += wait
                stalls["main_blocked"] += max(0.0, gap - cpu - wait)
                stalls["gc"] += sum(_overlap(p[0], q[0], g[0], g[0] + g[1]) for g in gcs)
        out["loop"] = {"beats": len(gaps), "beat_gap": _pct(gaps),
                       "stalls_over_ms": STALL * 1000,
                       "stalls": {k: round(v, 4) if isinstance(v, float) else v for k, v in stalls.items()}}
        if ticks:
            span = ticks[-1][0] - ticks[0][0]
            out["loop"]["main_thread"] = {
                "cpu_share": round((ticks[-1][1] - ticks[0][1]) / 1e9 / span, 3) if span else None,
                "runqueue_wait_share": round((ticks[-1][2] - ticks[0][2]) / 1e9 / span, 3) if span else None}
        out["commits"] = {"n": len(commits), "rows": _pct([c[1] for c in commits], 1.0),
                          "cut_to_sent": _pct([c[3] - c[2] for c in commits]),
                          "to_thread": _pct([c[4] - c[3] for c in commits]),
                          "statement": _pct([c[5] - c[4] for c in commits]),
                          "to_loop": _pct([c[6] - c[5] for c in commits]),
                          "gap_between_statements": _pct([b[4] - a[5] for a, b in zip(commits, commits[1:],
                                                                                      strict=False)])}
        by_gen: dict[str, list[float]] = {}
        for _, pause, gen, _ in gcs:
            by_gen.setdefault(str(gen), []).append(pause)
        out["gc"] = {g: {**_pct(v), "total_ms": round(sum(v) * 1000, 1)} for g, v in sorted(by_gen.items())}
        out["gc_thresholds"] = list(gc.get_threshold())
        out["snapshots"] = {"ledger_state_on_loop": _pct([d for _, d in self.states])}
        kinds: dict[str, list[float]] = {}
        for what, a, b in self.work:
            kinds.setdefault(what, []).append(b - a)
        out["work"] = {k: {**_pct(v), "total_ms": round(sum(v) * 1000, 1)} for k, v in sorted(kinds.items())}
        out["threads"] = getattr(self, "threads", {})
        return out


def _interp(tt: list[float], ticks: list[tuple[float, int, int, int, int]], k: int, t: float) -> float:
    i = bisect.bisect_left(tt, t)
    if i <= 0:
        return float(ticks[0][k])
    if i >= len(tt):
        return float(ticks[-1][k])
    a, b = ticks[i - 1], ticks[i]
    span = b[0] - a[0]
    frac = (t - a[0]) / span if span > 0 else 1.0
    return a[k] + (b[k] - a[k]) * frac


def _overlap(a: float, b: float, c: float, d: float) -> float:
    return max(0.0, min(b, d) - max(a, c))


def _threads() -> dict[str, dict[str, Any]]:
    """CPU seconds and run-queue wait of every thread of this process (Linux)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            f = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        out[f"{tid} {name}"] = {"cpu_s": round(int(f[0]) / 1e9, 3), "runqueue_wait_s": round(int(f[1]) / 1e9, 3),
                                "slices": int(f[2])}
    return out


def from_env() -> Trace | None:
    """A :class:`Trace` writing to ``$LIVECART_TRACE``, or None when it is not set."""
    path = os.environ.get(ENV)
    return Trace(path) if path else None
