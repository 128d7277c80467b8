"""``livecart run FILE``: adapters -> parser -> ledger -> journal -> announcements, until told to stop.

What runs (named tasks under one :class:`asyncio.TaskGroup`):

* ``intake:<adapter>`` - one per configured adapter: its batches go into one bounded queue
  (``[daemon].queue`` batches). When the queue is full the adapter waits, so backpressure reaches the
  socket or file instead of memory; every wait is counted (``livecart_intake_waits_total{adapter}``,
  ``livecart_intake_wait_seconds_total{adapter}``). Several adapters (one stream simulcast on Douyin,
  Bilibili and Twitch) feed the same queue, so they share one inventory.
* ``consume`` - takes batches off the queue, merges what is waiting into one submit of up to
  ``[storage] batch_max`` comments, and keeps a few submits in flight so decisions and journal commits
  overlap (decisions stay in queue order: each submit decides synchronously when it is called). While the
  host has paused intake it takes nothing, so the queue fills and the adapters wait.
* ``expiry`` - once a second, expires unpaid holds (only when ``hold_minutes`` > 0).
* ``replies:<adapter>`` - one per adapter that can reply: a rate-limited :class:`ReplyQueue`.
* the status server (``/healthz``, ``/metrics``, ``/api/state``), the control server (``livecart ctl``)
  and, when ``[control].mqtt_topic`` is set, the MQTT control subscriber; hook workers
  (:class:`HookRunner`).

Announcements follow durability (docs/contract.md §6): buyer replies, hook calls and stream events are fed by one
:meth:`Engine.add_listener` callback, which the engine calls only after the journal has committed the
outcomes. A reply goes back through the adapter that read the comment: the daemon remembers which adapter
each ``(platform, room)`` came from.

Stopping: SIGINT or SIGTERM, or every adapter has ended (a replay read to its end). Then, in the order
written down once, in :func:`serve`: stop intake -> drain the queue through the engine -> stop host
controls -> let replies and hooks drain (``[daemon].drain_seconds``, the rest counted as shed) -> flush and
close the journal -> stop the status server -> close the adapters. Exit status 0, or 1 when an adapter ended
with an error or the journal failed. A second signal exits at once with status 1; the journal is SQLite in
WAL mode, so the file is never corrupt and what was acknowledged is in it. A restart rebuilds the ledger
from the journal and recognises every comment it has seen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import importlib
import logging
import math
import operator
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from itertools import chain, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson

from livecart import registry
from livecart.config import load
from livecart.core import control
from livecart.core.catalogue import Catalogue
from livecart.core.control import Control, ControlAction
from livecart.core.errors import AdapterError, ControlError, JournalError, LivecartError, NotDurable
from livecart.core.events import Event, EventDetector, outcome_key
from livecart.core.ledger import CONTROL_KEYS
from livecart.core.records import Comment, Outcome, Parsed, ParseResult, Status, comment_problem
from livecart.core.settings import Config, PluginSettings
from livecart.listen import GUARDS, raise_nofile_limit
from livecart.plugin import Adapter, AdapterStats, Batch, CallbackErrors, Resume, settle_all
from livecart.runtime.console import Console
from livecart.runtime.control import ControlServer, MqttControl, control_state_path, resolved_state_path
from livecart.runtime.hooks import HookRunner
from livecart.runtime.metrics import Registry
from livecart.runtime.parsework import ParseAhead, cpus
from livecart.runtime.pipeline import Engine, ParseFn, tune_gc, tune_malloc, tune_switching
from livecart.runtime.replies import Replier, ReplyQueue, RoomKey, shown_name
from livecart.runtime.status import DaemonMetrics, StatusServer
from livecart.runtime.trace import Trace, from_env

if TYPE_CHECKING:
    # Imported when a sale runs in JetStream mode only (_serve): with the NATS client it is ~86 ms of every
    # start of a daemon on a journal file (python -X importtime, 2026-12-01).
    from livecart.runtime.cluster import ClusterEngine
from livecart.runtime.watchdog import LoopWatchdog
from livecart.store.lock import JournalLock, hold_existing
from livecart.store.sqlite import SqliteStore

log = logging.getLogger("livecart.daemon")
#: Most reply routes kept across a restart (the newest rooms): a room is a live stream, a daemon reads a few.
MAX_ROUTES = 10_000
#: How often the replies' progress is kept (Daemon.keep_progress): what a crash may make a restart tell twice.
PROGRESS_SECONDS = 0.1
#: How often a JetStream sale's decider keeps the replies' progress in the sale's bucket (a write over the
#: network each time it moved): what a takeover after a crash may tell twice.
CLUSTER_PROGRESS_SECONDS = 0.5

#: Batches (as adapters yield them) waiting for the engine before adapters are made to wait (default).
QUEUE_BATCHES = 64
#: Submits in flight at once: while one batch waits for its commit, the next is being decided.
INFLIGHT = 4
TICK_SECONDS = 1.0
#: Smallest adapter batch sent to the parsing process. A smaller one (a companion's frame of 15 comments at a
#: paced rate) is parsed in the daemon: a round trip to the helper and back costs about what parsing 15
#: comments does, and adds its wake-ups to the latency (WebSocket at 15,000 comments/s in 15-comment frames:
#: p50 1.19-1.26 ms through the helper against 1.01-1.09 ms without it, and 20 % more CPU a comment).
AHEAD_MIN = 64
#: Longest wait for the parsing process's results of a batch the engine takes (s); then it parses them.
AHEAD_WAIT = 0.05
#: After a wait that was too long, how long its results are used only when back already (s).
AHEAD_PAUSE = 1.0

_END = None
_PLATFORM = operator.attrgetter("platform")
_TEXT = operator.attrgetter("text")
_UNIT_STATUS = operator.attrgetter("sku", "variant", "status")

AdapterFactory = Callable[[PluginSettings], Adapter]
#: An adapter's batch in the intake queue, with the parsing process's work on it (None: not asked).
Queued = tuple[Sequence[Comment], "asyncio.Future[Parsed] | None"]
#: Put in the intake queue to wake the consumer when a journal write failed (an empty batch otherwise).
_WAKE: Queued = ((), None)
Sleep = Callable[[float], Awaitable[None]]


def _address(adapter: Adapter) -> str | None:
    """Where a listening adapter (websocket server mode, webhook, douyin push) accepts peers, if it does."""
    try:
        port = getattr(adapter, "bound_port", None)
    except Exception:  # not listening (client mode, not open yet)
        return None
    if not isinstance(port, int) or port <= 0:
        return None
    host = str(adapter.options.get("host", "127.0.0.1"))
    scheme = "ws" if adapter.type == "websocket" else "http"
    path = str(adapter.options.get("path", "")) if scheme == "http" else ""
    return f"{scheme}://{host}:{port}{path}"


def _figures(p: Mapping[str, Any]) -> dict[str, Any]:
    """A product's report figures plus ``presale_cap`` (the live cap, which :mod:`livecart.core.events` reads)."""
    return {"stock": p["stock"], "left": p["left"], "reserved": p["reserved"], "presale": p["presale"],
            "presale_cap": p.get("cap", 0)}



#: Seconds an adapter's ``open()`` may take (a platform login, a first connection) before the daemon gives up
#: with an error naming it; after :data:`ADAPTER_SLOW_OPEN` it says which adapter it is waiting for.
ADAPTER_OPEN_SECONDS = 30.0
ADAPTER_SLOW_OPEN = 5.0
#: Seconds an adapter's ``close()`` may take at shutdown before it is left behind (logged and counted).
ADAPTER_CLOSE_SECONDS = 10.0


async def _open_adapter(a: Adapter, within: float = ADAPTER_OPEN_SECONDS, slow: float = ADAPTER_SLOW_OPEN) -> None:
    """``a.open()``; a plugin's unexpected exception becomes an :class:`AdapterError` naming the adapter (one
    line on stderr, exit 1), its traceback logged at DEBUG (``livecart -vv run``) for the plugin's author. One
    that has not returned after ``slow`` seconds is named in the log, and after ``within`` it is cancelled
    and the same kind of error (a plugin whose open() never returned hung the start with no word of which)."""
    task = asyncio.ensure_future(a.open())
    try:
        done, _ = await asyncio.wait((task,), timeout=min(slow, within))
        if not done:
            log.warning("waiting for adapter %s (%s) to open (%g s so far; giving up after %g s)",
                        a.name, a.type, slow, within)
            done, _ = await asyncio.wait((task,), timeout=max(0.0, within - slow))
        if not done:
            task.cancel()
            raise AdapterError(f"adapter {a.name} ({a.type}) did not finish opening within {within:g} s")
        task.result()
    except LivecartError:
        raise
    except asyncio.CancelledError:
        task.cancel()
        raise
    except Exception as exc:
        log.debug("adapter %s (%s) failed to open", a.name, a.type, exc_info=True)
        raise AdapterError(f"adapter {a.name} ({a.type}) failed to open: {exc!r} (livecart -vv run shows where)"
                           ) from exc


async def _close_adapter(a: Adapter, within: float = ADAPTER_CLOSE_SECONDS) -> None:
    """``a.close()``; an error there is logged and counted, never the reason a clean stop exits 1. One that
    has not returned within ``within`` seconds is left behind, logged and counted the same way (a plugin
    whose close() never returned kept the daemon from exiting after its last word, "stopped")."""
    try:
        await asyncio.wait_for(a.close(), within)
    except TimeoutError:
        a.stats.errors += 1
        log.error("adapter %s did not finish closing within %g s; left behind", a.name, within)
    except Exception as exc:
        a.stats.errors += 1
        log.error("adapter %s failed to close: %r", a.name, exc)
        log.debug("adapter %s close()", a.name, exc_info=True)


def checked(batch: object, stats: AdapterStats) -> Sequence[Comment]:
    """A plugin adapter's ``batch`` with every element that is not a valid :class:`Comment` counted as
    malformed (``bad_comment``) and left out; a :class:`Batch` is filtered in place, so that it still settles
    (the good comments in it are what its sender is told are durable). Something that is not a list at all
    is counted once and becomes an empty batch."""
    if not isinstance(batch, list | tuple):
        stats.malformed("bad_comment", f"adapter yielded a {type(batch).__name__}, not a list of comments",
                        batch)
        return ()
    bad = [(i, why) for i, c in enumerate(batch) if (why := comment_problem(c)) is not None]
    if not bad:
        return batch
    for i, why in bad:
        stats.malformed("bad_comment", f"element {i}: {why}", batch[i])
    drop = {i for i, _ in bad}
    good = [c for i, c in enumerate(batch) if i not in drop]
    if isinstance(batch, Batch):
        batch[:] = good
        return batch
    return good


def beside_journal(cfg: Config, suffix: str) -> Path:
    """A file a daemon keeps beside the journal's real file (symlinks resolved, as its lock is): its name +
    ``suffix`` (``.routes.json``, ``.replies.json``)."""
    return Path(str(Path(cfg.storage.path).resolve()) + suffix)


def read_progress(path: Path) -> tuple[float, float] | None:
    """The replies' progress a previous run kept in ``path`` (:meth:`Daemon.save_progress`): up to when its
    buyers were told, by when the orders were made (``told_until``) and by when the outcomes were decided
    (``decided_until``; a file from before it was kept: the first). None without the file; :class:`OSError`
    or :class:`ValueError` when it cannot be read."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError(f"the file holds a {type(data).__name__}, not an object")
    told = data.get("told_until")
    decided = data.get("decided_until", told)
    for name, t in (("told_until", told), ("decided_until", decided)):
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ValueError(f"{name} is {type(t).__name__}, not a time")
    return float(told), float(decided)  # type: ignore[arg-type]  # checked just above


def _ts(o: Outcome) -> float:
    return o.ts


def _replace_json(path: Path, data: Any) -> OSError | None:
    """Write ``data`` as JSON to ``path``, replacing it whole (a temporary file renamed over it; not synced:
    the files written so are hints for the next start). The error, when it could not be written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return exc
    return None


class BuyerNames(Mapping[str, str]):
    """user id -> the display name on the comment of their latest order, read from the engine's ledger when
    asked (nothing copied: the name lives on the order, in the journal and its snapshots); for a buyer with
    no order, the name in :attr:`others` (the refused buyers a restart tells again)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.others: Mapping[str, str] = {}

    def __getitem__(self, user: str) -> str:
        name: str | None = self._engine.ledger.name_of(user)
        if name is None:
            name = self.others.get(user)
            if name is None:
                raise KeyError(user)
        return name

    def get(self, user: str, default: Any = None) -> Any:
        name = self._engine.ledger.name_of(user)
        if name is None:
            name = self.others.get(user)
        return default if name is None else name

    def __iter__(self) -> Iterator[str]:
        ledger = self._engine.ledger
        return (u for u in list(ledger.users()) if ledger.name_of(u) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Daemon:
    """The running pieces of one stream and the glue between them.

    Built by :func:`serve`; ``on_ready`` receives it, which is how tests reach the live parts. Nothing here
    decides anything about orders: the engine does; this moves data and keeps counts.
    """

    def __init__(self, cfg: Config, engine: Engine | ClusterEngine, adapters: Sequence[Adapter], *,
                 registry: Registry | None = None, replier: Replier | None = None,
                 reply_queues: Mapping[str, ReplyQueue] | None = None, hooks: HookRunner | None = None,
                 queue_batches: int = QUEUE_BATCHES) -> None:
        self.cfg = cfg
        self.stream = cfg.stream.name
        self.engine = engine
        self.adapters = list(adapters)
        #: Batches waiting for the engine, each with its parse by the parsing process when one runs.
        self.queue: asyncio.Queue[Queued | None] = asyncio.Queue(queue_batches)
        #: The parsing process (:mod:`livecart.runtime.parsework`), when one runs.
        self.ahead: ParseAhead | None = None
        self._ahead_wait_from = 0.0  # monotonic time from which its results are waited for again
        self._ahead_warned = -60.0  # when it was last said to be late
        self.stop = asyncio.Event()
        self.failed: list[str] = []
        #: The adapters that ended with an error (shown as "failed" by /healthz).
        self.failed_adapters: set[str] = set()
        #: The first journal failure, as soon as a write fails (before the daemon stops on it).
        self.journal_error: BaseException | None = None
        self.started = time.time()
        #: Set while intake runs; cleared by the host's ``pause`` control.
        self.running = asyncio.Event()
        if engine.ledger.intake_paused:
            # The host paused intake before the restart and has not resumed it: stay paused.
            log.warning("intake is PAUSED, as the host left it before the restart; resume with "
                        "'livecart ctl FILE resume'")
        else:
            self.running.set()
        on_intake = getattr(engine, "on_intake", None)  # a ClusterEngine
        if on_intake is not None:
            # A pause / resume of the sale reaches every process through the log, whoever took it.
            on_intake(self._pause_from_log)
        self.draining = False
        #: The latency trace (``LIVECART_TRACE``, :mod:`livecart.runtime.trace`), else None.
        self.trace: Trace | None = None
        self.registry = registry if registry is not None else Registry()
        self.metrics = DaemonMetrics(self.registry)
        self.metrics.watch_adapters(a.stats for a in self.adapters)
        self.metrics.watch_queues(self.queue_depths)
        r = self.registry
        self._waits = r.counter("intake_waits_total", "Adapter batches that waited because the queue was full")
        self._wait_seconds = r.counter("intake_wait_seconds_total", "Seconds adapters spent waiting for room")
        self._pauses = r.counter("pauses_total", "Host pause / resume controls")
        self._ahead_batches = r.counter(
            "parse_ahead_batches_total", "Batches taken by the engine while a parsing process runs, by whether "
            "its results were used (used) or the engine parsed them: not back yet (late), parsed under another "
            "featured product (featured), the process gone (gone), not asked (none)")
        self._paused_g = r.gauge("paused", "1 while the host has paused intake")
        self._events = r.counter("events_total", "Stream events (sold_out, low_stock, presale_opened ...)")
        self._unroutable = r.counter("replies_unroutable_total",
                                     "Outcomes that could not be answered: their room has no replying adapter")
        self._unroutable_said: set[tuple[str | None, str | None]] = set()
        self._up = r.gauge("uptime_seconds", "Seconds since the daemon started")
        self._conns = r.counter("connections_total", "Connections of each listener by event: accepted, refused "
                                "(over the cap), idle and request_timeout (closed by a timeout)")
        self._open_conns = r.gauge("connections_open", "Open connections of each listener")
        self.replier = replier
        self.reply_queues: dict[str, ReplyQueue] = dict(reply_queues or {})
        #: adapter name -> its own Replier, for adapters with a ``reply_language`` of their own.
        self.repliers: dict[str, Replier] = {}
        self.hooks = hooks
        self.detector = EventDetector(cfg.catalogue, low_stock=cfg.status.low_stock)
        #: (platform, room) -> name of the replying adapter that reads it, learned from the rooms' comments and
        #: kept in :attr:`routes_file` across restarts (see :meth:`load_routes`).
        self.routes: dict[RoomKey, str] = {}
        self.routes_file: Path | None = None
        #: Where :meth:`keep_progress` keeps how far buyers have been told (see :meth:`load_progress`).
        self.progress_file: Path | None = None
        #: A JetStream sale's process with reply queues: the decider keeps that progress in the sale's bucket.
        self.cluster_progress = False
        self._progress_kept: float | None = None
        self._decided_kept: float | None = None
        #: Orders a start announces that are not in the reply queues yet (see :meth:`announce_some`).
        self._to_announce: deque[Outcome] = deque()
        #: The decision time of the newest outcome handed to :meth:`on_durable`.
        self._durable_ts: float | None = None
        #: Comments of replying adapters between intake and their durable outcomes (display name, reply-to).
        self._recent: dict[tuple[str, str, str], Comment] = {}
        self._journal_max = 0.0
        self._baseline: dict[str, dict[str, Any]] = {}
        self.status: StatusServer | None = None
        self.control: ControlServer | None = None
        self.mqtt_control: MqttControl | None = None
        #: user id -> display name, from the buyer's orders (replies and the console name buyers by it). The
        #: ledger keeps the name on each order, so it is journalled with the sale and survives a restart.
        self.names: Mapping[str, str] = BuyerNames(engine)
        #: Called with each stream event after it is announced (the console's feed).
        self.event_listeners: list[Callable[[Event], None]] = []
        self.console: Console | None = None
        #: Keyed controls this process applied or is applying, by key: their answers (handle_control).
        self._keyed: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
        self._mirror_engine_metrics()
        self.refresh_baseline()
        engine.add_listener(self.on_durable)
        if isinstance(engine, Engine) and self.replier is not None and self.reply_queues:
            engine.on_again = self._reply_again
        self._again = self.registry.counter(
            "replies_again_total", "Orders announced again to a buyer whose comment came back after a restart "
            "(decided by an earlier process, which may have died before announcing them)")

    # ------------------------------------------------------------------ metrics

    def _mirror_engine_metrics(self) -> None:
        """Export the engine's own counters through the daemon's registry, under the names the daemon
        documents. The engine counts comments without a platform; the daemon counts them by platform at
        intake, so the engine's unlabelled ``comments_total`` is exported as ``comments_submitted_total``."""
        eng = self.engine.metrics
        if eng is self.registry:
            return
        m = self.metrics
        renamed = {"livecart_comments_total": "comments_submitted_total"}
        own = {"livecart_intents_total": m.intents, "livecart_outcomes_total": m.outcomes}
        skip = {"livecart_journal_batches", "livecart_journal_batch_seconds", "livecart_journal_batch_seconds_mean"}

        ack_errors = self.registry.counter("ack_callback_errors_total",
                                           "Settlement callbacks of adapters' batches that raised (logged; the "
                                           "batch is settled as it was, only telling its sender failed)")

        def collect() -> None:
            eng.refresh()  # the engine's own collectors: the journal's snapshot and the duplicate-id gauges
            for metric in eng.metrics():
                if metric.name in skip:
                    continue
                target = own.get(metric.name)
                if target is None:
                    short = renamed.get(metric.name, metric.name.removeprefix("livecart_"))
                    target = (self.registry.counter(short, metric.help) if metric.kind == "counter"
                              else self.registry.gauge(short, metric.help))
                target.values = dict(metric.values)
            j = self.engine.journal
            m.journal.count, m.journal.sum = int(j.batches), float(j.batch_seconds_total)
            self._journal_max = max(self._journal_max, float(j.last_batch_seconds))
            m.journal_max.set(self._journal_max)
            self._up.set(round(time.time() - self.started, 3))
            self._paused_g.set(0 if self.running.is_set() else 1)
            ack_errors.set(float(CallbackErrors.count))
            for g in list(GUARDS):
                for event, n in g.counts.items():
                    self._conns.set(float(n), listener=g.name, event=event)
                self._open_conns.set(float(len(g.live)), listener=g.name)

        self.registry.collector(collect)

    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each internal queue: ``intake`` (batches), ``journal`` (rows), ``replies:<name>``."""
        depths = {"intake": self.queue.qsize(), "journal": self.engine.journal.pending}
        for name, q in self.reply_queues.items():
            depths[f"replies:{name}"] = q.depth
        return depths

    # ------------------------------------------------------------------ intake and the engine

    async def intake(self, adapter: Adapter) -> None:
        name = adapter.name
        replying = name in self.reply_queues
        comments = self.metrics.comments
        routes = self.routes
        recent = self._recent
        queue = self.queue
        last: RoomKey | None = None
        ledger = self.engine.ledger
        # The built-in adapters build comments by decoding (msgspec validates every field); a plugin may
        # call the constructor, which trusts its caller, or yield something else: checked here, per comment.
        trusted = type(adapter).__module__.startswith("livecart.")
        try:
            async for batch in adapter.batches():
                if not trusted:
                    batch = checked(batch, adapter.stats)
                if not batch and not isinstance(batch, Batch):
                    continue  # an empty Batch still goes through, so that it settles in its turn
                ahead = self.ahead
                item: Queued = (batch, None if ahead is None or len(batch) < AHEAD_MIN
                                else ahead.ask(list(map(_TEXT, batch)), ledger.featured))
                for platform, n in Counter(map(_PLATFORM, batch)).items():  # counted in C
                    comments.inc(n, platform=platform)
                if replying:
                    for c in batch:
                        recent[(c.platform, c.room, c.id)] = c
                        if last is None or last[0] != c.platform or last[1] != c.room:
                            last = (c.platform, c.room)
                            if routes.get(last) != name:
                                routes[last] = name
                                log.info("replies to %s room %s go through adapter %s", c.platform, c.room, name)
                                self.save_routes()
                if queue.full():
                    # Backpressure: the adapter waits here, which stops it reading its source. Counted.
                    t0 = time.monotonic()
                    try:
                        await queue.put(item)
                    except asyncio.CancelledError:  # stopping: this batch never reaches the engine
                        settle_all((batch,), NotDurable(f"adapter {name}: the daemon stopped before taking "
                                                        "this batch in"))
                        raise
                    self._waits.inc(adapter=name)
                    self._wait_seconds.inc(time.monotonic() - t0, adapter=name)
                else:
                    queue.put_nowait(item)
        except AdapterError as exc:
            said = str(exc)  # the adapters' own errors often name the adapter already
            self.failed.append(said if said.startswith(f"adapter {name}:") else f"adapter {name}: {said}")
            self.failed_adapters.add(name)
            log.error("adapter %s ended with an error: %s", name, exc)
            await self._adapter_down(adapter)
        except Exception as exc:  # an adapter bug ends that adapter, not the sale
            self.failed.append(f"adapter {name}: {exc!r}")
            self.failed_adapters.add(name)
            log.exception("adapter %s failed", name)
            await self._adapter_down(adapter)
        else:
            log.info("adapter %s ended", name)

    async def _adapter_down(self, adapter: Adapter) -> None:
        """An adapter that failed: counted, shown as not connected, and closed now (its port, its connection)
        rather than at shutdown; closing again then does nothing."""
        adapter.stats.errors += 1
        adapter.stats.connected = False
        await _close_adapter(adapter)

    async def consume(self) -> None:
        limit = self.cfg.storage.batch_max
        slots = asyncio.Semaphore(INFLIGHT)
        inflight: set[asyncio.Task[object]] = set()
        errors: list[BaseException] = []
        recent = self._recent
        queue = self.queue

        def finished(t: asyncio.Task[object], *, batch: list[Comment]) -> None:
            inflight.discard(t)
            slots.release()
            if recent:
                for c in batch:
                    recent.pop((c.platform, c.room, c.id), None)
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                errors.append(exc)
                if self.journal_error is None:
                    # Health says so at once, and the consumer, which may be waiting for the next comment
                    # that never comes, is woken to stop the daemon (a full queue: it is not waiting).
                    self.journal_error = exc
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(_WAKE)

        done = False
        prev: asyncio.Task[object] | None = None
        try:
            while not done:
                if not self.running.is_set():
                    await self.running.wait()
                first = await queue.get()
                if first is _END:
                    break
                if first is _WAKE:
                    if errors:
                        raise errors[0]  # a journal failure stops the daemon
                    continue
                if not self.running.is_set():  # paused while this consumer was waiting for the batch
                    await self.running.wait()
                taken_in = [first]
                n = len(first[0])
                while n < limit and not queue.empty():
                    more = queue.get_nowait()
                    if more is _END:
                        done = True
                        break
                    taken_in.append(more)
                    n += len(more[0])
                batch = list(chain.from_iterable(b for b, _ in taken_in))
                acks: list[Batch] = [b for b, _ in taken_in if isinstance(b, Batch)]
                parsed = await self._parsed(taken_in) if self.ahead is not None else None
                taken = time.perf_counter()
                await slots.acquire()
                if errors:
                    settle_all(acks, NotDurable(f"the journal failed: {errors[0]}"))
                    raise errors[0]  # a journal failure stops the daemon
                # The decisions happen inside submit() when the task first runs, in the order of creation.
                prev = task = asyncio.ensure_future(self._submit(batch, acks, prev, taken, parsed))
                inflight.add(task)
                task.add_done_callback(functools.partial(finished, batch=batch))
            if inflight:
                await asyncio.wait(inflight)
            if errors:
                raise errors[0]
        finally:
            # Whatever is still queued (the journal failed, or this task was cancelled) is not durable: its
            # senders must hear so, and keep it.
            while not queue.empty():
                left = queue.get_nowait()
                if left is not _END:
                    settle_all((left[0],), NotDurable("the daemon stopped before taking this batch in"))

    async def _parsed(self, taken_in: Sequence[Queued]) -> Parsed | None:
        """The parsing process's results for the comments of the batches ``taken_in``: a batch's results
        where they are back and were parsed under the featured product the ledger has now, None for each
        comment of the other batches (the engine parses those); None when no batch has any.

        Results not back yet are waited for at most :data:`AHEAD_WAIT` seconds: when intake and the engine
        take turns on the event loop, a batch is taken as soon as it is asked for, and the helper parses it
        while the loop decides the batch before. A helper that was too late is not waited for again during
        :data:`AHEAD_PAUSE` seconds (it has no free core, or is stuck): results it has back are still used.
        Each batch is counted in ``parse_ahead_batches_total`` by what became of it."""
        pending = [fut for _, fut in taken_in if fut is not None and not fut.done()]
        # Not before its first answer: it is still starting (~0.1-0.2 s), and the engine parses meanwhile.
        if pending and self.ahead is not None and self.ahead.answered and time.monotonic() >= self._ahead_wait_from:
            _, late = await asyncio.wait(pending, timeout=AHEAD_WAIT)
            if late:
                now = time.monotonic()
                self._ahead_wait_from = now + AHEAD_PAUSE
                if now >= self._ahead_warned + 60.0:  # at most once a minute
                    self._ahead_warned = now
                    log.warning("the parsing process (%s) had not answered within %d ms; the daemon parses "
                                "what it has not answered for the next %g s (it has no free CPU, or is stuck)",
                                self.ahead.where, AHEAD_WAIT * 1000, AHEAD_PAUSE)
        featured = self.engine.ledger.featured
        results: list[ParseResult | None] = []
        count = self._ahead_batches.inc
        used = False
        for batch, fut in taken_in:
            why = "used"
            if fut is None:
                why = "none"
            elif not fut.done():
                fut.cancel()
                why = "late"
            elif fut.cancelled() or fut.exception() is not None:
                why = "gone"
            else:
                f, got = fut.result()
                if f != featured:
                    why = "featured"
                else:
                    results.extend(got)
                    used = True
            if why != "used":
                results.extend(repeat(None, len(batch)))
            count(result=why)
        return (featured, results) if used else None

    async def _submit(self, batch: list[Comment], acks: list[Batch], prev: asyncio.Task[object] | None,
                      taken: float = 0.0, parsed: Parsed | None = None) -> None:
        """Submit ``batch``; settle the adapters' batches in it once durable, never before an earlier submit
        is: a comment that the engine skips as seen before may be in that earlier, uncommitted one."""
        trace = self.trace
        if trace is not None:
            trace.taken([b.born for b in acks], taken)
            traced = trace.current
        try:
            if parsed is not None:
                await cast(Engine, self.engine).submit(batch, parsed)
            else:
                await self.engine.submit(batch)
        except BaseException as exc:
            settle_all(acks, exc if isinstance(exc, Exception) else NotDurable("the daemon stopped"))
            raise
        if not acks:
            return
        if prev is not None and not prev.done():
            await asyncio.wait((prev,))
        failed = prev.exception() if prev is not None and not prev.cancelled() else None
        settle_all(acks, NotDurable(f"an earlier batch failed: {failed}") if failed is not None else None)
        if trace is not None and traced is not None:
            trace.settled(traced)

    async def expire(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            await self.engine.tick()

    # ------------------------------------------------------------------ announcements (durable only)

    def on_durable(self, outcomes: Sequence[Outcome]) -> None:
        """The engine's listener: called with each batch of outcomes after the journal committed them.
        Feeds buyer replies, hooks and stream events; never waits (queues only)."""
        j = self.engine.journal
        if j.last_batch_seconds > self._journal_max:
            self._journal_max = j.last_batch_seconds
        if outcomes:
            self._durable_ts = outcomes[-1].ts
        if self.replier is not None and self.reply_queues:
            self._reply(outcomes)
        if self.hooks is not None:
            self.hooks.submit_outcomes(outcomes)
        self._detect(outcomes)

    def load_routes(self, path: Path) -> None:
        """Read the rooms' reply routes a previous run of this journal kept in ``path``, and keep them there
        from now on. Without them, what a restart decides for a room before anyone there comments again (the
        expiry of holds that ran out while the daemon was down, a presale promoted by a restock, the host's
        pay or cancel) would go unanswered. Routes to adapters that no longer reply are dropped; a file that
        cannot be read is logged and ignored: routes are learned again from the next comments."""
        self.routes_file = path
        try:
            data = orjson.loads(path.read_bytes())
            rows = data["routes"]
            if not isinstance(rows, list):
                raise TypeError("routes is not a list")
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("%s cannot be read (%s); replies to a room go out again once someone there comments",
                        path, exc)
            return
        kept = 0
        gone: Counter[str] = Counter()
        for row in rows:
            if isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row):
                if row[2] in self.reply_queues:
                    self.routes[(row[0], row[1])] = row[2]
                    kept += 1
                else:
                    gone[row[2]] += 1
        if kept:
            log.info("replies to %d room(s) go where they went before the restart (%s)", kept, path)
        if gone:
            log.warning("replies to %d room(s) went through adapter(s) that no longer reply (%s): their "
                        "outcomes are unroutable until someone there comments through another adapter",
                        gone.total(), ", ".join(f"{name}: {n}" for name, n in gone.most_common()))

    def told_until(self) -> float | None:
        """Up to when every durable outcome's reply has been sent, shed or given up, as the time its order was
        made (what :meth:`Ledger.again_since` asks): just before the oldest order (or, for a refusal, the
        decision) among the replies still waiting or being sent, else the newest durable outcome. The order's
        time, not the outcome's: a promotion's or an announcement's order was made before it. None: no
        outcome yet in this process."""
        return self.progress()[0]

    def progress(self) -> tuple[float | None, float | None]:
        """:meth:`told_until`, and the same by when the outcomes were decided (``decided_until``): just before
        the oldest outcome still waiting (or being sent, or shed at a stop), else the newest durable one. A
        restart replays the journal after the second and tells the buyers of every order made or changed
        there, and of every refusal (see :meth:`load_progress`). One pass over what waits."""
        order_made = self.engine.ledger.order_made
        made: float | None = None
        decided: float | None = None
        for o in chain(self._to_announce, *(q.unsent() for q in self.reply_queues.values())):
            t = o.ts
            if decided is None or t < decided:
                decided = t
            if o.order is not None:
                m = order_made(o.order)
                if m is not None and m < t:
                    t = m
            if made is None or t < made:
                made = t
        if made is None or decided is None:
            return self._durable_ts, self._durable_ts
        return made - 1e-6, decided - 1e-6

    def untold(self) -> int:
        """How many replies wait to be told or could not be (merged messages counted once)."""
        return len(self._to_announce) + sum(1 for q in self.reply_queues.values() for _ in q.unsent())

    def load_progress(self, path: Path) -> None:
        """Announce, once, the outcomes a previous run of this journal decided but had not told their buyers
        about when it died (their replies were queued: a flash peak, a platform's rate limit, a companion
        away), from the progress it kept in ``path``; then keep this run's progress there
        (:meth:`keep_progress`). Without the file (a first run, a journal from before it was kept) nothing
        is announced again; a file that cannot be read is logged and ignored. Orders are told where they
        stand now; refusals (sold out, over the limit) as they were, from the engine's
        :attr:`~livecart.runtime.pipeline.Engine.untold_refusals` (its journal replayed them: opened with
        :func:`read_progress`'s time). Nothing is decided twice, only told again (a reply sent just before
        the crash may go out twice)."""
        self.progress_file = path
        engine = self.engine
        if not isinstance(engine, Engine):
            return
        # Everything decided before this start is told once what is announced below has gone out.
        self._durable_ts = engine.opened_at
        try:
            kept = read_progress(path)
        except (OSError, ValueError) as exc:
            log.warning("%s cannot be read (%s); outcomes whose replies were waiting when the last run ended are "
                        "announced only if their comments come back", path, exc)
            kept = None
        if kept is None:
            # Kept at once, not at the first tenth of a second: a crash before then (a flash's first burst
            # keeps the event loop busy for longer) would leave the next start with no progress at all.
            self._keep_progress_file(engine.opened_at, engine.opened_at)
            return
        told, decided = kept
        self._progress_kept, self._decided_kept = told, decided
        if told > engine.opened_at + 60:
            log.warning("%s says buyers were told up to %.0f s from now (a clock set back, or another sale's "
                        "file?); nothing is announced again from it", path, told - engine.opened_at)
        # The orders made after the progress, and those the replay after it changed (a cancel, a payment, a
        # promotion of an order made long before): a cancel decided just before a crash was never told (the
        # progress by when orders were made had not yet been kept behind it). Only when the replay did not
        # reach back that far, every order made after the progress by that count (more told twice).
        ledger = engine.ledger
        again = ledger.again_since(decided if engine.replay_covered else told, engine.opened_at)
        again += ledger.again_of(engine.untold_orders)
        refusals = [o for o in engine.untold_refusals if decided < o.ts < engine.opened_at]
        if refusals:
            if isinstance(self.names, BuyerNames):
                self.names.others = engine.untold_names
            again = sorted(again + refusals, key=_ts)  # in the order they were decided (stable: orders first)
        self._announce_again(again, "the restart")

    def on_takeover(self, told: float | None, mine: set[str], refused: Sequence[Outcome] = ()) -> None:
        """This process became the decider of a JetStream sale: tell the buyers of the orders made after
        ``told`` (the progress the deciders before kept) that are not in ``mine`` (what this process is about
        to announce itself) where they stand, and the buyers ``refused`` (refusals after ``told`` it does not
        announce itself) again, once: their replies were queued in a decider that died (a platform's rate
        limit, a companion away) and would otherwise never go out. At least once: a reply sent in the last
        moments before the crash may go out twice."""
        if told is not None:
            again = self.engine.ledger.again_since(told, math.inf, exclude=mine)
            if refused:
                state = getattr(self.engine, "state", None)
                if isinstance(self.names, BuyerNames) and state is not None:
                    self.names.others = state.names
                again = sorted(again + list(refused), key=_ts)
            self._announce_again(again, "this takeover")

    def _announce_again(self, again: list[Outcome], before: str) -> None:
        """Announce ``again`` (outcomes decided before ``before`` whose buyers were not told) through the reply
        queues, a part at a time (:meth:`announce_some`)."""
        if again:
            refused = sum(o.status is Status.REJECTED for o in again)
            log.warning("%d order(s)%s decided before %s had not been announced to their buyers; announcing "
                        "them now", len(again) - refused, f" and {refused} refusal(s)" if refused else "", before)
            self._to_announce.extend(again)
            self.announce_some()

    def announce_some(self) -> None:
        """Hand the reply queues the next of the orders a start announces, as far as they have room (half of
        the smallest queue at a time): thousands at once would overflow a small ``[replies].queue`` and shed
        the same oldest ones at every start. :meth:`keep_progress` calls it until all are handed over."""
        todo = self._to_announce
        if not todo:
            return
        room = min((q.maxsize // 2 - q.depth for q in self.reply_queues.values()), default=0)
        if room <= 0:
            return
        self._reply_again([todo.popleft() for _ in range(min(room, len(todo)))])

    async def save_progress(self) -> None:
        """Keep :meth:`told_until` when it moved: in :attr:`progress_file` for the next start (whole, tmp +
        rename; not synced: a file older than the truth only makes a restart tell some buyers twice), or, in
        a JetStream sale while this process decides, in the sale's bucket for the next decider
        (:meth:`on_takeover`)."""
        told, decided = self.progress()
        if told is None or decided is None:
            return
        if self.progress_file is not None:
            if (told, decided) != (self._progress_kept, self._decided_kept):
                self._keep_progress_file(told, decided)
        elif told != self._progress_kept and self.cluster_progress and getattr(self.engine, "leading", False):
            await cast("ClusterEngine", self.engine).keep_told(told)
            self._progress_kept = told

    def _keep_progress_file(self, told: float, decided: float) -> None:
        path = self.progress_file
        if path is None:
            return
        exc = _replace_json(path, {"told_until": told, "decided_until": decided})
        if exc is not None:
            log.warning("cannot keep the replies' progress in %s (%s); after a crash, replies that were "
                        "waiting are sent only for comments that come back", path, exc)
            self.progress_file = None
            return
        self._progress_kept, self._decided_kept = told, decided

    async def keep_progress(self, every: float) -> None:
        """:meth:`save_progress` every ``every`` seconds while replies go out (and :meth:`announce_some`)."""
        while True:
            await asyncio.sleep(every)
            self.announce_some()
            await self.save_progress()

    def save_routes(self) -> None:
        """Write :attr:`routes` (the newest :data:`MAX_ROUTES`) to :attr:`routes_file`, replacing it whole.
        A room's route changes rarely (its first comment, or another adapter reading it), so this is a small
        write now and then, never per comment."""
        path = self.routes_file
        if path is None:
            return
        rows = [[p, r, a] for (p, r), a in list(self.routes.items())[-MAX_ROUTES:]]
        exc = _replace_json(path, {"routes": rows})
        if exc is not None:
            log.warning("cannot keep the reply routes in %s (%s); a restart learns them from new comments",
                        path, exc)
            self.routes_file = None  # said once; replies go on

    def _reply_again(self, outcomes: Sequence[Outcome]) -> None:
        """Answer again the buyers of orders an earlier process decided, whose comments came back (their
        companion resent what was never acknowledged: the process died after the journal had them, perhaps
        before it announced them). Replies only: no hook, no event, no count of outcomes."""
        routes = self.routes
        mine = [o for o in outcomes if (o.platform, o.room) in routes]  # others have no one to tell
        if mine:
            self._again.inc(len(mine))
            self._reply(mine)

    def _reply(self, outcomes: Sequence[Outcome]) -> None:
        assert self.replier is not None
        routes = self.routes
        mine = [o for o in outcomes if (o.platform, o.room) in routes]
        if len(mine) != len(outcomes):
            # Outcomes from rooms no replying adapter reads (Douyin, Bilibili, a replay, host controls).
            self._unroutable.inc(len(outcomes) - len(mine))
            rooms: set[tuple[str | None, str | None]] = {(o.platform, o.room) for o in outcomes
                                                         if o.platform is not None}
            rooms -= routes.keys()
            if rooms - self._unroutable_said:
                self._say_unroutable(rooms - self._unroutable_said)
        if not mine:
            return
        if self.repliers:
            # Adapters with their own reply_language: each gets its outcomes rendered by its own replier.
            by: dict[str, list[Outcome]] = {}
            for o in mine:
                by.setdefault(routes[(o.platform, o.room)], []).append(o)  # type: ignore[index]
            plans = [p for name, group in by.items()
                     for p in self.repliers.get(name, self.replier).plan(group, self._recent, self.names,
                                                                         self.engine.ledger.order_name)]
        else:
            plans = self.replier.plan(mine, self._recent, self.names, self.engine.ledger.order_name)
        for room, reply in plans:
            q = self.reply_queues.get(routes.get(room, ""))
            if q is None:
                self._unroutable.inc()
                continue
            q.put(reply)

    def _say_unroutable(self, rooms: set[tuple[str | None, str | None]]) -> None:
        """Once per room: its buyers get no replies from this process (counted, not said, before)."""
        self._unroutable_said |= rooms
        for platform, room in sorted(rooms, key=str):
            log.info("outcomes in %s room %s get no reply from this process: no adapter here that replies has "
                     "read a comment from it (counted in livecart_replies_unroutable_total)", platform, room)

    def refresh_baseline(self, keys: Sequence[str] | None = None) -> None:
        """Remember the ledger's figures (all keys, or ``keys``) as the "before" of the next event check."""
        products = self.engine.snapshot()["products"]
        for key in (products if keys is None else keys):
            if key in products:
                self._baseline[key] = _figures(products[key])

    def _detect(self, outcomes: Sequence[Outcome]) -> None:
        # One outcome per (sku, variant, status) stands for all of them: the detector reads only those three
        # fields of an outcome. Deduplicated in C (a dict over attrgetter tuples), not per outcome in Python:
        # a flash sale's batch is thousands of rejections of one or two products.
        few = list(dict(zip(map(_UNIT_STATUS, outcomes), outcomes, strict=True)).values())
        keys = {k for o in few if (k := outcome_key(o)) is not None}
        if not keys:
            return
        # The affected units only: the whole snapshot, after every durable batch, grew with the catalogue.
        product = self.engine.ledger.product
        after = {k: _figures(p) for k in keys if (p := product(k)) is not None}
        before = {k: self._baseline[k] for k in after if k in self._baseline}
        events = self.detector.detect(before, after, few)
        self._baseline.update(after)
        for e in events:
            self._announce(e)

    def _announce(self, event: Event) -> None:
        self._events.inc(kind=event.kind.value)
        d = event.data
        log.info("%s %s (left %s of %s, presale queue %s)", event.kind.value, event.key, d.get("left"),
                 d.get("stock"), d.get("presale"))
        if self.hooks is not None:
            self.hooks.submit_event(event)
        for cb in self.event_listeners:
            cb(event)

    # ------------------------------------------------------------------ host controls

    async def handle_control(self, c: Control) -> Mapping[str, Any]:
        """Apply a host control (the :data:`livecart.runtime.control.Handler` of every control transport).

        ``status`` answers the state. Every other control goes through :meth:`Engine.control`, which journals
        it; ``pause`` / ``resume`` also act on intake here (logged and counted). A keyed control that was
        applied already (sent again after no answer, before or after a restart) is not applied again: its
        answer is the state now, with ``"replayed": true``; one sent again while the first is being applied
        waits for the first one's answer. Raises :class:`ControlError` for one that cannot be applied."""
        if c.key is not None and c.action is not ControlAction.STATUS:
            answer, replayed = await self._keyed_control(c)
            if replayed:
                log.info("control %s with key %s was applied before: not applied again", c.action.value, c.key)
                return {**answer, "replayed": True}
        else:
            answer = await self._apply_control(c)
        if self.console is not None and c.action is not ControlAction.STATUS:
            self.console.record_control(c)  # the console's feed shows host actions from every transport
        return answer

    async def _keyed_control(self, c: Control) -> tuple[Mapping[str, Any], bool]:
        """:meth:`_apply_control` for a control with a key, once per key: its answer, and whether it had been
        applied before (its answer is then the first one's, when this process gave it, else the state now)."""
        key = str(c.key)
        first = self._keyed.get(key)
        if first is not None and first.done() and first.exception() is None \
                and control.applied_before(self.engine.ledger, c, self.cfg.catalogue):
            return first.result(), True
        if first is not None and not first.done():
            return await asyncio.shield(first), True  # raises the first one's error, as it did
        if control.applied_before(self.engine.ledger, c, self.cfg.catalogue):
            return self._answer(c, []), True  # applied by an earlier process (the journal says so)
        fut: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._keyed[key] = fut
        while len(self._keyed) > CONTROL_KEYS:
            del self._keyed[next(iter(self._keyed))]
        try:
            answer = await self._apply_control(c)
        except BaseException as exc:
            self._keyed.pop(key, None)  # not applied: the same key may try again
            fut.set_exception(exc if isinstance(exc, Exception) else ControlError("not applied: the daemon stopped"))
            fut.exception()  # retrieved: nobody else may be waiting
            raise
        fut.set_result(answer)
        return answer, False

    async def _apply_control(self, c: Control) -> Mapping[str, Any]:
        a = c.action
        if a is ControlAction.STATUS:
            return self.state()
        if a is ControlAction.PAUSE or a is ControlAction.RESUME:
            paused = self._pause(a is ControlAction.PAUSE)
            if paused["changed"]:
                await self.engine.control(c)  # journalled, so a restart comes back the same way
            return paused
        outs = await self.engine.control(c)
        if a is ControlAction.LIMIT:
            self._limit_changed(str(c.sku), int(c.qty or 0))
        # A control may change figures without outcomes (restock with no queue, a new cap): refresh the
        # baseline so the next event check compares against the state after it.
        self.refresh_baseline()
        return self._answer(c, outs)

    def _answer(self, c: Control, outs: list[Outcome]) -> dict[str, Any]:
        """A control's answer: its outcomes, and the figures it changed as they are now."""
        a = c.action
        if a is ControlAction.PAUSE or a is ControlAction.RESUME:
            return {"paused": self.is_paused(), "changed": False, "queued_batches": self.queue.qsize()}
        answer: dict[str, Any] = {"outcomes": [o.to_dict() for o in outs]}
        key = _key(c) if a is ControlAction.RESTOCK or a is ControlAction.PRESALE else None
        products = self.engine.snapshot()["products"]
        if key is not None and key in products:
            answer["product"] = {"key": key, **_figures(products[key])}
        if a is ControlAction.FEATURE:
            answer["featured"] = self.engine.ledger.featured
        return answer

    def _limit_changed(self, sku: str, limit: int) -> None:
        if self.replier is None:
            return
        cat = self.replier.catalogue
        products = tuple(dataclasses.replace(p, limit=limit) if p.sku == sku else p for p in cat.products)
        for r in (self.replier, *self.repliers.values()):
            r.catalogue = Catalogue(products)

    def _pause(self, pause: bool) -> dict[str, Any]:
        was_paused = not self.running.is_set()
        if pause:
            self.running.clear()
        else:
            self.running.set()
        if was_paused != pause:
            self._pauses.inc(action="pause" if pause else "resume")
            log.warning("intake %s by the host", "PAUSED" if pause else "resumed")
        return {"paused": pause, "changed": was_paused != pause, "queued_batches": self.queue.qsize()}

    def _pause_from_log(self, paused: bool) -> None:
        if paused == self.running.is_set():
            log.warning("the sale's log %s intake (a host control taken by another process of the sale)",
                        "PAUSES" if paused else "resumes")
            self._pause(paused)

    # ------------------------------------------------------------------ state and health

    def snapshot(self) -> dict[str, Any]:
        return self.engine.snapshot()

    def order_rows(self) -> Iterator[dict[str, Any]]:
        """Every order with its pay-by time (read-only, for the console's order search)."""
        return self.engine.ledger.orders_detail()

    def presale_queue(self, key: str) -> list[dict[str, Any]]:
        """The orders waiting in ``key``'s presale queue, head first."""
        ledger = self.engine.ledger
        return [row for oid in ledger.queue(key) if (row := ledger.order(oid)) is not None]

    def recent_orders(self, n: int) -> list[Outcome]:
        """The ``n`` newest orders, as they stand now (the console's feed when a daemon starts mid-sale)."""
        return self.engine.ledger.latest(n)

    def buyer_name(self, user: str, order: str | None = None) -> str:
        """How the console names a buyer: by the name on ``order``'s comment, else their latest order's, else
        the user id (:func:`~livecart.runtime.replies.shown_name`)."""
        name = self.engine.ledger.order_name(order) if order is not None else None
        return shown_name(name or self.names.get(user), user)

    def is_paused(self) -> bool:
        return not self.running.is_set()

    def summary_line(self, before: tuple[float, int, int] | None = None) -> tuple[str, tuple[float, int, int]]:
        """One compact line for the terminal, and the sample to pass as ``before`` next time (for rates)::

            17:05:01 1,234 comments 250/s · 300 orders 40/s · left 9,700 · held 280 · paid 20 · presale 0 ·
            featured egg-10 · adapters 2/2
        """
        snap = self.engine.snapshot()
        now = time.time()
        comments, orders = int(snap["comments"]), int(snap["orders"])
        rate_c = rate_o = 0.0
        if before is not None and now > before[0]:
            rate_c = (comments - before[1]) / (now - before[0])
            rate_o = (orders - before[2]) / (now - before[0])
        units = list(snap["products"].values())
        left = sum(p["left"] for p in units)
        reserved = sum(p["reserved"] for p in units)
        paid = sum(p.get("paid", 0) for p in units)
        presale = sum(p["presale"] for p in units)
        up = sum(1 for a in self.adapters if a.stats.connected)
        line = (f"{time.strftime('%H:%M:%S', time.localtime(now))} {comments:,} comments {rate_c:,.0f}/s · "
                f"{orders:,} orders {rate_o:,.0f}/s · left {left:,} · held {reserved - paid:,} · paid {paid:,} · "
                f"presale {presale:,} · featured {snap['featured'] or '-'} · adapters {up}/{len(self.adapters)}")
        if not self.running.is_set():
            line += " · PAUSED"
        return line, (now, comments, orders)

    async def print_summary(self, every: float, out: Any = None) -> None:
        """Write :meth:`summary_line` to ``out`` (stderr) every ``every`` seconds until cancelled."""
        stream = out if out is not None else sys.stderr
        line, sample = self.summary_line()
        while True:
            await asyncio.sleep(every)
            line, sample = self.summary_line(sample)
            stream.write(line + "\n")
            stream.flush()

    def adapter_state(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for a in self.adapters:
            s = a.stats
            entry: dict[str, Any] = {"type": a.type, "connected": s.connected, "received": s.received,
                                     "malformed": s.malformed_total, "duplicates": s.duplicates,
                                     "reconnects": s.reconnects, "errors": s.errors,
                                     "can_reply": a.name in self.reply_queues}
            addr = _address(a)
            if addr is not None:
                entry["address"] = addr
            out[a.name] = entry
        return out

    def state(self) -> dict[str, Any]:
        """``/api/state``: the live figures (products as in ``livecart report --json``) and the daemon's parts.

        Product figures include decisions whose journal commit is still in flight (milliseconds)."""
        snap = self.engine.snapshot()
        products = {k: {f: p[f] for f in ("stock", "left", "reserved", "presale")}
                    for k, p in snap["products"].items()}
        replies = {name: {r: q.count(r) for r in ("queued", "sent", "merged", "shed", "failed")} | {"depth": q.depth}
                   for name, q in self.reply_queues.items()}
        return {
            "stream": self.stream, "paused": not self.running.is_set(), "draining": self.draining,
            "uptime": round(time.time() - self.started, 3), "featured": snap["featured"],
            "comments": snap["comments"], "outcomes": snap["outcomes"], "orders": snap["orders"],
            "products": products, "adapters": self.adapter_state(), "queues": self.queue_depths(),
            "journal": {"path": self.engine.journal.where, "batches": self.engine.journal.batches,
                        "durable_seq": getattr(self.engine.journal, "last_seq", None),
                        # JetStream mode: what holds the sale is the cluster's replicas, not a local sync
                        "durability": (self.cfg.storage.durability if self.cfg.storage.backend != "jetstream"
                                       else f"jetstream, {self.cfg.storage.replicas} replica(s)")},
            "replies": replies, "hooks": [h.name for h in self.hooks.hooks] if self.hooks is not None else [],
            "events": {k.value: n for k, n in self.detector.counts.items()},
            "control": (f"http://{self.control.host}:{self.control.port}/control"
                        if self.control is not None else None),
            "status": self.status.url if self.status is not None else None,
            "mqtt_control": ({"topic": self.mqtt_control.topic, "subscribed": self.mqtt_control.ready.is_set()}
                             if self.mqtt_control is not None else None),
            "failed": self.failures(),
        }

    def limits(self) -> Mapping[str, int]:
        """Each product's per-buyer limit now (the console shows it)."""
        return self.engine.ledger.limits()

    def failures(self) -> list[str]:
        """What has failed so far (``adapter NAME: ...``, ``journal: ...``), a journal write failure from
        the moment it happens."""
        out = list(self.failed)
        if self.journal_error is not None and not any(f.startswith("journal") for f in out):
            out.append(f"journal: {self.journal_error}")
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while the journal works and at least one adapter is still running (or none failed)."""
        failed = self.failures()
        journal_failed = any(f.startswith("journal") for f in failed)
        adapters_failed = [f for f in failed if f.startswith("adapter")]
        ok = not journal_failed and len(adapters_failed) < max(1, len(self.adapters))
        return ok, {"stream": self.stream, "paused": not self.running.is_set(), "draining": self.draining,
                    "adapters": {a.name: "failed" if a.name in self.failed_adapters else a.stats.state
                                 for a in self.adapters},
                    "failed": failed}

    def __repr__(self) -> str:
        state = "paused" if not self.running.is_set() else ("draining" if self.draining else "running")
        return (f"<Daemon {self.stream!r} {state}: {len(self.adapters)} adapters, {self.queue.qsize()} batches "
                f"queued, {len(self.reply_queues)} reply queues, {self.engine.ledger!r}>")


def _key(c: Control) -> str:
    return f"{c.sku}/{c.variant}" if c.variant is not None else str(c.sku)


def _interruptible(sleep: Sleep, stop: asyncio.Event) -> Sleep:
    """``sleep`` that returns early when ``stop`` is set meanwhile (a reply queue sleeping out a long wait
    notices the shutdown and starts its drain); once it is set, a plain ``sleep`` (the drain's waits for the
    rate limit, which the daemon ends after ``drain_seconds``)."""
    async def nap(seconds: float) -> None:
        if stop.is_set():
            await sleep(seconds)
            return
        waiter = asyncio.ensure_future(stop.wait())
        sleeper = asyncio.ensure_future(sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waiter, sleeper):
                t.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    return nap


def _parse_process(cfg: Config) -> bool:
    """Whether to parse in a second process (``[daemon] parse_process``): "auto" is yes when this process
    may run on two CPUs or more."""
    how = cfg.daemon.parse_process
    return how == "on" or (how == "auto" and cpus() >= 2)


def _give_positions(adapters: Sequence[Adapter], engine: Engine | ClusterEngine) -> None:
    """Give each adapter its position kept in the journal and the means to keep a new one
    (:class:`livecart.plugin.Resume`), where the journal keeps positions (the SQLite and memory stores; a
    JetStream sale's processes keep none)."""
    if not isinstance(engine, Engine):
        return
    journal = engine.journal
    saved = journal.positions()
    if saved is None:
        return
    for a in adapters:
        a.resume = Resume(saved.get(a.name), functools.partial(journal.keep_position, a.name))


def _default_factory(ps: PluginSettings) -> Adapter:
    return registry.adapter_class(ps.type)(ps.options, name=ps.name)


@dataclasses.dataclass(slots=True)
class _Parts:
    """What :func:`serve` builds before the journal opens: adapters, metrics, replies, hooks."""

    adapters: list[Adapter]
    registry: Registry
    replier: Replier
    hooks: HookRunner
    queues: dict[str, ReplyQueue]


def _build(cfg: Config, factory: AdapterFactory, reply_clock: Callable[[], float]) -> _Parts:
    """The adapters and the reply and hook machinery of ``cfg``; no I/O yet."""
    adapters = [factory(a) for a in cfg.adapters]
    reg = Registry()
    replier = Replier(cfg)
    hooks = HookRunner.from_config(cfg, metrics=reg, timeout=cfg.daemon.hook_timeout,
                                   queue_size=cfg.daemon.hook_queue, grace=cfg.daemon.drain_seconds)
    queues: dict[str, ReplyQueue] = {}
    if replier.enabled:
        for a in adapters:
            if type(a).can_reply:
                limit = a.options.get("reply_limit", type(a).reply_limit)
                window = a.options.get("reply_window", type(a).reply_window)
                queues[a.name] = ReplyQueue.for_adapter(
                    a, limit=limit, window=float(window), maxsize=cfg.replies.queue, max_len=cfg.replies.max_len,
                    clock=reply_clock, metrics=reg, stream=cfg.stream.name)
    return _Parts(adapters, reg, replier, hooks, queues)


async def _open_endpoints(d: Daemon, stack: contextlib.AsyncExitStack) -> None:
    """Start the status server and the host controls of ``d`` (closed as ``stack`` unwinds). The control
    server starts last: the state file it writes tells ``livecart ctl`` (and tests) that the daemon is up."""
    cfg, reg = d.cfg, d.registry
    if cfg.status.enabled:
        d.status = StatusServer(cfg.status.host, cfg.status.port, reg, d.state, d.health, stream=cfg.stream.name)
        # The host's console on the status address; its token is the control server's (made below).
        d.console = Console(d, cfg.catalogue, lambda: d.control.token if d.control is not None else "",
                            stream=cfg.stream.name, language=cfg.replies.language,
                            hold_minutes=cfg.stream.hold_minutes, registry=reg)
        d.engine.add_listener(d.console.record)
        d.event_listeners.append(d.console.record_event)
        d.status.console = d.console
        await _listen(d.status.start, "status endpoints", d.status.host, d.status.port)
        stack.push_async_callback(d.status.close)  # step 5
        d.console.start()
        stack.push_async_callback(d.console.close)  # before step 5: ends the open pages' streams
    d.control = ControlServer(cfg.control.host, cfg.control.port, cfg.control.token, d.handle_control,
                              state_path=control_state_path(cfg), metrics=reg, stream=cfg.stream.name)
    d.control.mirror_path = resolved_state_path(cfg)
    d.control.keep_live_owner = cfg.storage.backend == "jetstream"
    d.control.state_extra = {"stream": cfg.stream.name,
                             "status": d.status.url if d.status is not None else None,
                             "adapters": {a.name: addr for a in d.adapters if (addr := _address(a))}}
    if cfg.control.mqtt_topic:
        d.mqtt_control = MqttControl(cfg.control.mqtt_host or "127.0.0.1", cfg.control.mqtt_port,
                                     cfg.control.mqtt_topic, d.handle_control,
                                     token=d.control.token,  # the generated one when [control].token is ""
                                     metrics=reg, stream=cfg.stream.name)
        stack.push_async_callback(d.mqtt_control.close)
    if d.hooks is not None:
        stack.push_async_callback(d.hooks.close)  # idempotent: the normal path closes them at step 4
        await d.hooks.start()
    stack.push_async_callback(d.control.close)
    await _listen(d.control.start, "host controls", d.control.host, d.control.port)
    if d.mqtt_control is not None:
        d.mqtt_control.start()


async def _run(d: Daemon, reply_sleep: Sleep) -> None:
    """The daemon's tasks under one TaskGroup, until ``d.stop`` is set or every adapter has ended, then the
    shutdown in the order STYLE 7 writes down. Steps 5-7 (status server, journal, adapters) happen as the
    caller's exit stack unwinds."""
    stopping = asyncio.Event()  # set once shutdown starts: rate-limit sleeps end early
    queues = d.reply_queues
    if d.trace is not None:
        d.trace.start()
    async with asyncio.TaskGroup() as tg:
        readers = [tg.create_task(d.intake(a), name=f"intake:{a.name}") for a in d.adapters]
        consumer = tg.create_task(d.consume(), name="consume")
        ticker = (tg.create_task(d.expire(), name="expiry") if d.cfg.stream.hold_minutes > 0 else None)
        senders = [tg.create_task(q.run(_sender(d, name), sleep=_interruptible(reply_sleep, stopping)),
                                  name=f"replies:{name}") for name, q in queues.items()]
        progress = (tg.create_task(d.keep_progress(PROGRESS_SECONDS if d.progress_file is not None
                                                   else CLUSTER_PROGRESS_SECONDS), name="replies-progress")
                    if d.progress_file is not None or d.cluster_progress else None)
        stopper: asyncio.Future[Any] = tg.create_task(d.stop.wait(), name="stop")
        everyone: asyncio.Future[Any] = asyncio.gather(*readers)
        # When the consumer fails (the journal), the group cancels the readers before anything below awaits
        # this: retrieved here, so that asyncio does not log "exception was never retrieved" on the way out.
        everyone.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        # With the JetStream log the process goes on deciding or standing by when its adapters end
        # (docs/contract.md §7): only a signal stops it.
        ends = {stopper} if d.cfg.storage.backend == "jetstream" else {stopper, everyone}
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        d.draining = True
        log.info("stopping intake; draining %d queued batch(es)", d.queue.qsize())
        # 1. stop intake
        for r in readers:
            r.cancel()
        await asyncio.gather(everyone, return_exceptions=True)
        stopper.cancel()
        # 2. drain: everything taken in goes through the engine (even while paused), then the consumer ends
        d.running.set()
        await d.queue.put(_END)
        await consumer
        if ticker is not None:
            ticker.cancel()
        # 3. host controls stop (they need the journal, which closes at step 6)
        if d.control is not None:
            await d.control.close()
        if d.mqtt_control is not None:
            await d.mqtt_control.close()
        # 4. replies and hooks get `drain_seconds` to go out; what is left is counted as shed. The progress
        #    is kept first, so a reply that does not go out now is announced by the next start.
        if progress is not None:
            progress.cancel()
            await d.save_progress()
        stopping.set()
        for q in queues.values():
            q.close()
        if senders:
            # Replies still rate-limited go out as the limit allows until drain_seconds; then the rest is shed.
            _, late = await asyncio.wait(senders, timeout=d.cfg.daemon.drain_seconds)
            for t in late:
                t.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)  # each counts what it shed
            if progress is not None:
                await d.save_progress()  # what the drain sent is not announced again by the next start
                untold = d.untold()
                if untold and isinstance(d.engine, Engine):
                    # The next start finds them by replaying the journal after the progress (refusals make no
                    # order; a cancel changes an order made long before): no last snapshot after them.
                    d.engine.snapshot_at_close = False
                    log.warning("%d repl%s not sent before this stop; the next start tells those buyers (it "
                                "replays the journal from the snapshot before them)", untold,
                                "y was" if untold == 1 else "ies were")
        if d.hooks is not None:
            await d.hooks.close()
        if d.trace is not None:  # every submit is settled by now
            d.trace.stop()
            d.trace.write()


async def serve(cfg: Config, *, clock: Callable[[], float] = time.time, parse: ParseFn | None = None,
                stop: asyncio.Event | None = None, on_ready: Callable[[Daemon], None] | None = None,
                tune: bool = False, make_adapter: AdapterFactory | None = None,
                reply_clock: Callable[[], float] = time.monotonic, reply_sleep: Sleep = asyncio.sleep,
                live_every: float = 0.0) -> int:
    """Run the stream of ``cfg`` until ``stop`` is set or every adapter has ended. Returns the exit status.

    ``tune`` applies :func:`livecart.runtime.pipeline.tune_malloc` first, and
    :func:`~livecart.runtime.pipeline.tune_gc` and :func:`~livecart.runtime.pipeline.tune_switching` once
    the ledger is rebuilt (process-wide: the CLI does).
    ``make_adapter`` builds each ``[[adapters]]`` entry (default: the entry-point registry); ``reply_clock``
    and ``reply_sleep`` drive the reply rate limits (tests inject a virtual clock). ``live_every`` > 0 prints
    :meth:`Daemon.summary_line` to stderr that often (``livecart run`` on a terminal, or ``--live``).
    Raises :class:`~livecart.core.errors.PluginError` / :class:`JournalError` when the stream cannot start, and
    :class:`~livecart.core.errors.JournalLocked` at once when another process writes the journal.
    """
    if cfg.storage.backend == "jetstream":
        # No local journal file to lock: several processes run one sale by design, and the cluster's lease
        # and fencing decide which of them is the decider (docs/contract.md §7).
        return await _serve(cfg, None, clock=clock, parse=parse, stop=stop, on_ready=on_ready, tune=tune,
                            make_adapter=make_adapter, reply_clock=reply_clock, reply_sleep=reply_sleep,
                            live_every=live_every)
    # One writer per journal, decided before anything else is touched: a second daemon on the same journal
    # is refused here, before it binds a port, opens an adapter or writes a control state file.
    lock = JournalLock.acquire(cfg.storage.path, purpose="run")
    try:
        # The journal file itself too (a hard link is the same journal by another name), before any listener
        # binds: refused here, a second daemon opens nothing.
        hold_existing(lock, Path(cfg.storage.path))
        return await _serve(cfg, lock, clock=clock, parse=parse, stop=stop, on_ready=on_ready, tune=tune,
                            make_adapter=make_adapter, reply_clock=reply_clock, reply_sleep=reply_sleep,
                            live_every=live_every)
    finally:
        lock.release()


async def _serve(cfg: Config, lock: JournalLock | None, *, clock: Callable[[], float], parse: ParseFn | None,
                 stop: asyncio.Event | None, on_ready: Callable[[Daemon], None] | None, tune: bool,
                 make_adapter: AdapterFactory | None, reply_clock: Callable[[], float], reply_sleep: Sleep,
                 live_every: float) -> int:
    # Before any listener computes its connection cap from the descriptor limit (livecart.listen).
    raise_nofile_limit()
    if tune:
        tune_malloc()  # before the journal is read: a rebuild's buffers are the first large ones
    parts = _build(cfg, make_adapter or _default_factory, reply_clock)
    async with contextlib.AsyncExitStack() as stack:
        ahead = None
        if parse is None and lock is not None and _parse_process(cfg):
            try:  # started first: it gets ready while the journal is read
                ahead = await ParseAhead.start(cfg.catalogue, bare_plus_one=cfg.stream.bare_plus_one,
                                               max_qty=cfg.stream.max_qty)
            except OSError as err:
                log.warning("cannot start the parsing process (%s); comments are parsed in the daemon", err)
            else:
                stack.push_async_callback(ahead.close)
        # The journal (or the cluster) before any adapter listens: a journal or a sale that refuses this
        # process (damage, another catalogue, no cluster at that address) stops it before a companion could
        # connect to a port that is about to go away.
        engine: Engine | ClusterEngine
        if lock is None:  # JetStream mode (docs/contract.md §7): the log is the cluster's, not a local file
            cluster = importlib.import_module("livecart.runtime.cluster")
            engine = await cluster.ClusterEngine.open(cfg, clock=clock, parse=parse)
        else:
            told = None
            if parts.queues:  # what the last run had not told is replayed for load_progress
                with contextlib.suppress(OSError, ValueError):  # said by load_progress
                    kept = read_progress(beside_journal(cfg, ".replies.json"))
                    told = kept[1] if kept is not None else None
            engine = await Engine.open(cfg, clock=clock, parse=parse, lock=lock, told=told)
        try:
            for a in parts.adapters:  # entered before the engine's close, so closed after it (step 7)
                await _open_adapter(a)
                stack.push_async_callback(_close_adapter, a)
        except BaseException:
            await engine.close()
            raise
        stack.push_async_callback(engine.close)  # step 6: flush and close the journal
        _give_positions(parts.adapters, engine)
        if tune:
            tune_gc()
            tune_switching()
        d = Daemon(cfg, engine, parts.adapters, registry=parts.registry, replier=parts.replier,
                   reply_queues=parts.queues, hooks=parts.hooks, queue_batches=cfg.daemon.queue)
        if ahead is not None:
            d.ahead = ahead
            log.info("parsing ahead in a second process (%s)", ahead.where)
        if isinstance(engine, Engine):
            d.trace = trace = from_env()
            if trace is not None:
                engine.trace = trace
                if isinstance(engine.journal, SqliteStore):
                    engine.journal.on_commit = trace.commit
                    engine.journal.on_work = trace.worked
        if stop is not None:
            d.stop = stop
        d.repliers = {a.name: Replier(cfg, language=lang) for a in d.adapters
                      if a.name in parts.queues and (lang := str(a.options.get("reply_language", "") or ""))
                      and lang != parts.replier.language}
        if lock is not None and parts.queues:  # one writer: this process owns the journal's files
            d.load_routes(beside_journal(cfg, ".routes.json"))
            d.load_progress(beside_journal(cfg, ".replies.json"))  # announces through the routes and repliers
        elif parts.queues and not isinstance(engine, Engine):
            d.cluster_progress = True
            engine.on_takeover = d.on_takeover
        await _open_endpoints(d, stack)
        watchdog = LoopWatchdog(d.registry)  # says where, when a plugin blocks the event loop
        watchdog.start()
        stack.push_async_callback(watchdog.stop)
        if d.control is not None and lock is not None:
            lock.update(control=f"http://{d.control.host}:{d.control.port}/control")
        log.info("running: %d adapter(s) (%s), %d replying, %d hook(s); status %s; controls %s; %r",
                 len(d.adapters), ", ".join(f"{a.name}={a.type}" for a in d.adapters), len(parts.queues),
                 len(parts.hooks.hooks), d.status.url if d.status is not None else "off",
                 f"http://{cfg.control.host}:{d.control.port if d.control else 0}/control", engine.ledger)
        if on_ready is not None:
            on_ready(d)
        liveline = (asyncio.create_task(d.print_summary(live_every), name="summary") if live_every > 0
                    else None)
        try:
            await _run(d, reply_sleep)
        except* JournalError as eg:
            for exc in eg.exceptions:
                log.error("journal failed: %s", exc)
            d.failed.append(f"journal: {eg.exceptions[0]}")
        finally:
            if liveline is not None:
                liveline.cancel()
        log.info("stopped: %r; %s", engine.ledger, _summary(d))
    if d.failed:
        for f in d.failed:
            print(f"livecart run: {f}", file=sys.stderr)
        return 1
    return 0


async def _listen(start: Callable[[], Awaitable[None]], what: str, host: str, port: int) -> None:
    try:
        await start()
    except OSError as exc:
        raise LivecartError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from exc


def _sender(d: Daemon, name: str) -> Callable[[Sequence[Any]], Awaitable[None]]:
    adapter = next(a for a in d.adapters if a.name == name)
    return adapter.send_replies


def _summary(d: Daemon) -> str:
    parts = [f"{a.name}: {a.stats.received} received, {a.stats.malformed_total} malformed" for a in d.adapters]
    for name, q in d.reply_queues.items():
        parts.append(f"replies {name}: {q.count('sent')} sent, {q.count('merged')} merged, "
                     f"{q.count('shed')} shed, {q.count('failed')} failed")
    if d.ahead is not None:
        c = d._ahead_batches
        used, total = int(c.get(result="used")), int(c.total())
        parts.append(f"parsing process: {used:,} of {total:,} batches parsed ahead"
                     + (f", then it was gone: {d.ahead.gone}" if d.ahead.gone not in (None, "stopped") else ""))
    waits = int(d._waits.total())
    if waits:
        parts.append(f"intake waited {waits} time{'' if waits == 1 else 's'} for a full queue")
    return "; ".join(parts)


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


class _StreamField(logging.Filter):
    """Adds ``stream`` to every record, so each log line names the sale it belongs to."""

    def __init__(self, stream: str) -> None:
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, "stream", self.stream)  # noqa: B010 - LogRecord takes extra attributes
        return True


def setup_logging(stream: str, verbose: int = 0) -> None:
    """One line per event: ``time level logger stream="NAME": message``. INFO by default for the daemon
    (``-v`` is the same, ``-vv`` DEBUG, which includes per-comment details)."""
    root = logging.getLogger()
    fmt = logging.Formatter('%(asctime)s %(levelname)s %(name)s stream="%(stream)s": %(message)s')
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for h in root.handlers:
        h.setFormatter(fmt)
        h.addFilter(_StreamField(stream))
    logging.getLogger("livecart").setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)


#: Seconds between two live summary lines of ``livecart run``.
LIVE_EVERY = 5.0


async def _main(cfg: Config, live_every: float = 0.0) -> int:
    stop = asyncio.Event()
    _install_signals(stop)
    return await serve(cfg, stop=stop, tune=True, live_every=live_every)


def main(args: argparse.Namespace) -> int:
    """``livecart run FILE``: a live summary line every few seconds on stderr when it is a terminal (or with
    ``--live``; ``--no-live`` turns it off), so logs written to a file stay clean."""
    # No cyclic collection until the ledger is rebuilt: tune_gc() then collects once and turns it on. At 10M
    # comments a restart restores ~1M objects, which young collections would otherwise scan as they come.
    gc.disable()
    cfg = load(args.file)
    setup_logging(cfg.stream.name, int(getattr(args, "verbose", 0) or 0))
    live = getattr(args, "live", None)
    live_every = LIVE_EVERY if (sys.stderr.isatty() if live is None else live) else 0.0
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
            return asyncio.run(_main(cfg, live_every))
        return int(uvloop.run(_main(cfg, live_every)))
    finally:
        # The loop's handlers went with it: a signal from here to the process's end (its threads winding
        # down) exits at once with status 1, as a second signal does, not with the default 143 / 130.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _exit_at_once)


def _exit_at_once(signum: int, frame: object) -> None:
    sys.stderr.write(f"livecart run: {signal.Signals(signum).name} while exiting, exiting at once\n")
    os._exit(1)
