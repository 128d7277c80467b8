"""The engine of ``[storage] backend = "jetstream"``: feed the sale's log, follow it, decide when leased.

Every ``livecart run`` of a sale (on any number of machines) runs one :class:`ClusterEngine`, which the
daemon drives exactly like the SQLite :class:`~livecart.runtime.pipeline.Engine`. Three named tasks:

``log-follower``
    reads the sale's log (:mod:`livecart.store.jetstream`) from the start, in order, into a
    :class:`~livecart.store.jetstream.SaleState`: every process keeps the same ledger warm, so a standby
    takes over without replaying anything.
``decider``
    competes for the sale's lease, a KV entry ``lease`` (create, or update-if-revision): a standby takes it
    only after it saw the same revision unchanged for :data:`LEASE_SECONDS` (longer than a Raft election, so
    an election does not make the lease flap); the holder renews it every ``LEASE_SECONDS / 5`` and counts
    itself the decider only until ``LEASE_SECONDS - LEASE_MARGIN`` after its last successful renewal (its
    own monotonic clock: a process paused by SIGSTOP or cut off knows it is out when it runs again). Once
    leased it catches up with the log and publishes a takeover on the decisions subject, fenced with
    ``Nats-Expected-Last-Subject-Sequence``: from then on any message of the previous decider is refused by
    the stream. Then, in a loop: publish an expiry sweep when a hold is due, and when outcomes wait, take
    those up to the last message applied, N, publish a mark "handed out through N" (fenced), check the
    lease (still the decider, so no other process is announcing) and hand them to the listeners (buyer
    replies, hooks, events). A mark always comes before its hand-off, so no outcome is ever handed out
    twice: a new decider announces from the last mark on. What the last mark covered is *in doubt* at a
    takeover: its decider may have stopped between the mark and the hand-off. The new decider logs and
    counts it and does not announce it again (CONTRACTS §7: no outcome announced twice); it stays decided,
    in ``report`` and the export.
``member``
    puts ``member.<id>`` in the bucket every few seconds (host, pid, role, seq applied) for
    ``livecart cluster status``.

:meth:`ClusterEngine.submit` publishes comment batches (at most :data:`~livecart.store.jetstream.BATCH_COMMENTS`
each, one after the other so this process's comments enter the log in the order it read them) and returns
once the stream has acknowledged them: that is when an adapter may acknowledge them to the platform. Its
outcomes come later, from the decider, through the listeners. Host controls enter the log the same way; the
caller gets their outcomes once this process's follower has applied them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import nats.errors
import nats.js.errors
import orjson

from livecart.core import control
from livecart.core.control import Control
from livecart.core.errors import ControlError, JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Outcome, ParseResult
from livecart.core.settings import Config
from livecart.runtime.metrics import Registry
from livecart.store import jetstream as js
from livecart.store.codec import SNAPSHOT_VERSION, dumps_state
from livecart.store.jetstream import Fenced, SaleLog, SaleState

log = logging.getLogger("livecart.cluster")

#: The decider lease (s): a standby takes over after seeing it unrenewed this long. Longer than a Raft
#: election (5-8 s measured; a 3 s lease flapped during one).
LEASE_SECONDS = 10.0
#: The holder stops deciding this much before a standby may take over.
LEASE_MARGIN = 2.0
#: The decider publishes marks / sweeps at most this often (s) while outcomes wait.
MARK_INTERVAL = 0.02
TICK_SECONDS = 1.0
MEMBER_SECONDS = 2.0

ParseFn = Callable[[str, str | None], ParseResult]
Listener = Callable[[Sequence[Outcome]], None]


class LogStats:
    """What the daemon shows of its journal, for the sale's log: where it is and how publishing goes."""

    def __init__(self, sale_log: SaleLog) -> None:
        self._log = sale_log
        self.where = f"jetstream:{sale_log.names.sale}@{','.join(sale_log.servers)}"
        self.pending = 0

    @property
    def batches(self) -> int:
        return self._log.publishes

    @property
    def last_batch_seconds(self) -> float:
        return self._log.last_publish_seconds

    @property
    def batch_seconds_total(self) -> float:
        return self._log.publish_seconds


class ClusterEngine:
    """The :class:`~livecart.runtime.pipeline.Engine` of one process in a JetStream sale. Use :meth:`open`."""

    def __init__(self, cfg: Config, sale_log: SaleLog, state: SaleState, metrics: Registry,
                 clock: Callable[[], float], lease_seconds: float) -> None:
        self.cfg = cfg
        self.log = sale_log
        self.state = state
        self.journal = LogStats(sale_log)
        self.metrics = metrics
        self._clock = clock
        self.lease_seconds = lease_seconds
        self._lease_differs_said = False
        self.member = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._listeners: list[Listener] = []
        self._intake_listeners: list[Callable[[bool], None]] = []
        self._publish_lock = asyncio.Lock()
        self._batch_no = 0
        self._applied = asyncio.Condition()
        self._outcomes_waiting = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.leading = False
        self._lease: _Lease | None = None
        self.announced_total = 0
        self.takeovers = 0
        #: Called at each takeover, before this process announces anything, with the replies' progress the
        #: deciders before it kept (:meth:`keep_told`; None: none kept), the orders whose outcomes this
        #: process is about to announce itself (those after the last mark) and the refusals made after that
        #: progress that it does not announce itself: the daemon tells again the buyers of the other orders
        #: made after that progress and of those refusals (replies a dead decider had queued).
        self.on_takeover: Callable[[float | None, set[str], list[Outcome]], None] | None = None
        #: The log message of the snapshot this process started from (0: none), and of the last it wrote.
        self.snapshot_seq = state.applied
        self.snapshots_written = 0
        self.snapshot_failures = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_ledger_seq = state.ledger.seq
        self._snapshot_at = time.monotonic()
        self._m_comments = metrics.counter("comments_total", "comments received by the engine")
        self._m_outcomes = metrics.counter("outcomes_total", "announced outcomes by status")
        #: Outcomes of the previous decider's last mark, found at a takeover: maybe never handed out (it may
        #: have stopped between the mark and the hand-off); never announced again.
        self.in_doubt_total = 0
        self._m_again = metrics.counter("outcomes_in_doubt_total",
                                        "outcomes of the previous decider's last mark at a takeover: maybe not "
                                        "announced, never announced twice")
        self._m_fenced = metrics.counter("decider_stepdowns_total", "times this process stopped deciding")
        lead = metrics.gauge("decider", "1 while this process decides the sale")
        applied = metrics.gauge("log_applied_seq", "the last log message this process applied")

        def collect() -> None:
            lead.set(1 if self.leading else 0)
            applied.set(self.state.applied)

        metrics.collector(collect)

    @classmethod
    async def open(cls, cfg: Config, *, clock: Callable[[], float] = time.time, parse: ParseFn | None = None,
                   metrics: Registry | None = None, lease_seconds: float | None = None) -> ClusterEngine:
        """Connect, create the sale's log if new (refusing another catalogue), catch up with it, and start
        following it and competing for the lease (of ``lease_seconds``, default ``[storage] lease_seconds``).
        Raises :class:`JournalError`."""
        if lease_seconds is None:
            lease_seconds = cfg.storage.lease_seconds
        if lease_seconds <= 2 * LEASE_MARGIN:
            raise ValueError(f"lease_seconds must be more than {2 * LEASE_MARGIN}, got {lease_seconds}")
        if parse is None:
            parse = importlib.import_module("livecart.core.parser").Parser.from_config(cfg).parse
        st = cfg.storage
        sale_log = await SaleLog.open(st.servers, st.sale, replicas=st.replicas, create=True,
                                      catalogue=cfg.catalogue, hold_seconds=cfg.stream.hold_minutes * 60.0,
                                      featured=cfg.stream.featured, clock=clock)
        assert sale_log.header is not None
        assert parse is not None
        try:
            await sale_log.check_parser(js.parser_json(cfg))
        except BaseException:
            await sale_log.close()
            raise
        state = await js.start_state(sale_log, parse)
        engine = cls(cfg, sale_log, state, metrics or Registry(), clock, lease_seconds)
        try:
            end = await sale_log.last_seq()
            engine._start("log-follower", engine._follow())
            await engine.wait_applied(end)
        except BaseException:
            await engine.close()
            raise
        log.info("sale %s: caught up with the log at seq %d as %s (from %s); %r", st.sale, end, engine.member,
                 f"the snapshot at {engine.snapshot_seq}" if engine.snapshot_seq else "the start",
                 engine.state.ledger)
        engine._start("decider", engine._decide())
        engine._start("member", engine._heartbeat())
        return engine

    def _start(self, name: str, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        t.add_done_callback(self._task_done)
        self._tasks.append(t)

    def _task_done(self, t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("task %s of sale %s failed: %r", t.get_name(), self.cfg.storage.sale, t.exception())

    # ------------------------------------------------------------------ what the daemon calls

    @property
    def ledger(self) -> Ledger:
        return self.state.ledger

    def on_intake(self, cb: Callable[[bool], None]) -> None:
        """Call ``cb(paused)`` whenever the log pauses or resumes intake (a host's ``pause`` / ``resume``,
        sent to any process of the sale or by ``livecart ctl`` from any machine): every process of the sale
        follows it, so all of them stop (or start again) feeding their adapters' comments."""
        self._intake_listeners.append(cb)

    def add_listener(self, cb: Listener) -> None:
        """Call ``cb(outcomes)`` with each batch of outcomes this process announces as the decider."""
        self._listeners.append(cb)

    async def submit(self, comments: Sequence[Comment]) -> list[Outcome]:
        """Publish ``comments`` to the sale's log; return (``[]``) once the stream has acknowledged them.

        The outcomes are announced by the decider, through the listeners. Raises :class:`JournalError` once
        closed. Publishing waits out elections and lost servers, resending each batch identically."""
        if self._closed:
            raise JournalError("the engine is closed")
        self._m_comments.inc(len(comments))
        async with self._publish_lock:
            for i in range(0, len(comments), js.BATCH_COMMENTS):
                await self._publish_comments(comments[i:i + js.BATCH_COMMENTS])
        return []

    async def _publish_comments(self, part: Sequence[Comment]) -> None:
        body = js.comments_body(part)
        if len(body) > js.BATCH_BYTES and len(part) > 1:
            # Long comments: halves, in order, each well under the server's payload limit (1 MB default).
            half = len(part) // 2
            await self._publish_comments(part[:half])
            await self._publish_comments(part[half:])
            return
        self._batch_no += 1
        await self.log.publish(self.log.names.inputs, body, f"{self.member}-{self._batch_no}")

    async def control(self, c: Control) -> list[Outcome]:
        """Put a host control into the log and return its outcomes once this process has applied it.

        Raises :class:`ControlError` when the ledger refuses it (every process refuses it alike) or it
        changes nothing (``status``)."""
        if self._closed:
            raise JournalError("the engine is closed")
        kind, args = control.record(c, self.cfg.catalogue)
        async with self._publish_lock:
            self._batch_no += 1
            seq = await self.log.publish(self.log.names.inputs, js.control_body(kind, args),
                                         f"{self.member}-{self._batch_no}", patience=30.0)
        self.state.expect(seq)
        await self.wait_applied(seq)
        result = self.state.results.pop(seq, [])
        if isinstance(result, ControlError):
            raise result
        return result

    async def tick(self) -> list[Outcome]:
        """Expiry sweeps are the decider's (they enter the log fenced): nothing to do here."""
        return []

    def snapshot(self) -> dict[str, Any]:
        return self.ledger.snapshot()

    async def flush(self) -> None:
        async with self._publish_lock:
            pass

    async def wait_applied(self, seq: int) -> None:
        """Until this process's follower has applied log message ``seq``."""
        async with self._applied:
            await self._applied.wait_for(lambda: self.state.applied >= seq)

    async def close(self) -> None:
        """Stop deciding and following, and disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        leading = self.leading
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._snapshot_task is not None:
            await asyncio.gather(self._snapshot_task, return_exceptions=True)
        if leading and self._lease is not None:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError):
                # Give the lease up (if still ours): a standby takes over at once, not after LEASE_SECONDS.
                await asyncio.wait_for(self.log.kv.delete("lease", last=self._lease.rev), 2.0)
                log.info("gave the decider lease up")
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError):
            await asyncio.wait_for(self.log.kv.delete(f"member.{self.member}"), 2.0)
        await self.log.close()

    # ------------------------------------------------------------------ following

    async def _follow(self) -> None:
        state = self.state
        reader = self.log.read(state.applied + 1)
        try:
            async for seq, ts, decision, body in reader:
                if seq:
                    paused = state.ledger.intake_paused
                    out = state.apply(seq, ts, decision, body)
                    if out:
                        self._outcomes_waiting.set()
                    if state.ledger.intake_paused != paused:
                        for cb in self._intake_listeners:
                            try:
                                cb(state.ledger.intake_paused)
                            except Exception:
                                log.exception("intake listener %r failed", cb)
                async with self._applied:
                    self._applied.notify_all()
        finally:
            await reader.aclose()

    async def _heartbeat(self) -> None:
        key = f"member.{self.member}"
        while True:
            value = orjson.dumps({"member": self.member, "host": socket.gethostname(), "pid": os.getpid(),
                                  "role": "decider" if self.leading else "standby", "applied": self.state.applied,
                                  "announced": self.announced_total, "at": time.time()})
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError):
                await asyncio.wait_for(self.log.kv.put(key, value), MEMBER_SECONDS)
            await asyncio.sleep(MEMBER_SECONDS)

    # ------------------------------------------------------------------ deciding

    async def _decide(self) -> None:
        seen_rev = 0
        seen_at = time.monotonic()
        kv = self.log.kv
        while True:
            await asyncio.sleep(self.lease_seconds / 5)
            try:
                try:
                    entry = await kv.get("lease")
                except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                    entry = None
                t_sent = time.monotonic()
                if entry is None or entry.value is None or not entry.value:
                    rev = await kv.create("lease", self._lease_value()) if entry is None else \
                        await kv.update("lease", self._lease_value(), last=entry.revision)
                elif entry.revision != seen_rev:
                    seen_rev, seen_at = entry.revision, time.monotonic()
                    continue
                elif time.monotonic() - seen_at < self._holder_lease(entry.value):
                    continue
                else:
                    log.warning("the decider lease (revision %d) was not renewed for %.0f s: taking over",
                                entry.revision, time.monotonic() - seen_at)
                    rev = await kv.update("lease", self._lease_value(), last=entry.revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyValueError):
                continue  # another process got it first
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                log.debug("lease check failed: %r", exc)
                continue
            try:
                await self._lead(rev, t_sent)
            except Fenced as exc:
                log.warning("stepping down: %s", exc)
            except _LeaseLost as exc:
                log.warning("stepping down: %s", exc)
            except JournalError as exc:  # the cluster did not acknowledge within the lease
                log.warning("stepping down: %s", exc)
            finally:
                if self.leading:
                    self._m_fenced.inc()
                self.leading = False
            seen_rev, seen_at = 0, time.monotonic()

    async def keep_told(self, told: float) -> None:
        """Keep the replies' progress (when the orders were made up to which every buyer has been told, on
        the log's clock) in the sale's bucket, for the next decider (:attr:`on_takeover`). Best effort: a
        value not kept makes a takeover tell some buyers again, never fewer."""
        with contextlib.suppress(TimeoutError, nats.errors.Error, nats.js.errors.Error):
            await asyncio.wait_for(self.log.kv.put("replies", orjson.dumps({"told_until": told,
                                                                             "member": self.member})), 2.0)

    async def _told_before(self) -> float | None:
        """The replies' progress the deciders before kept, or None."""
        try:
            entry = await asyncio.wait_for(self.log.kv.get("replies"), 2.0)
            told = orjson.loads(entry.value or b"{}").get("told_until")
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, orjson.JSONDecodeError,
                AttributeError) as exc:
            log.warning("cannot read the replies' progress of the deciders before (%r); their queued replies "
                        "are not told again", exc)
            return None
        return float(told) if isinstance(told, int | float) and not isinstance(told, bool) else None

    def _lease_value(self) -> bytes:
        return orjson.dumps({"member": self.member, "host": socket.gethostname(), "pid": os.getpid(),
                             "at": time.time(), "lease_seconds": self.lease_seconds})

    def _holder_lease(self, value: bytes) -> float:
        """How long this standby waits for the lease's holder to renew before taking over: its own
        ``lease_seconds``, or the holder's when that is longer. A machine configured with a shorter lease took
        over from a healthy decider renewing on a 60 s lease 6 s after it started (said once)."""
        try:
            theirs = orjson.loads(value).get("lease_seconds")
        except (orjson.JSONDecodeError, AttributeError):
            return self.lease_seconds
        if not isinstance(theirs, int | float) or isinstance(theirs, bool) or theirs == self.lease_seconds:
            return self.lease_seconds
        if not self._lease_differs_said:
            self._lease_differs_said = True
            log.warning("the decider runs with lease_seconds = %g and this process with %g: configure every "
                        "process of the sale alike; this one waits %g s before taking over", theirs,
                        self.lease_seconds, max(theirs, self.lease_seconds))
        return max(float(theirs), self.lease_seconds)

    async def _lead(self, rev: int, t_sent: float) -> None:
        state = self.state
        lease = _Lease(self.log, rev, t_sent, self.lease_seconds, self._lease_value())
        self._lease = lease
        self.leading = True
        self.takeovers += 1
        # Catch up with the log, then fence out the previous decider.
        while True:
            end = await self.log.last_seq()
            await self._wait_applied_within(end, lease)
            try:
                seq = await self.log.publish(self.log.names.decisions, orjson.dumps([js.TAKEOVER, self.member]),
                                             f"{self.member}-t-{rev}", expect_last=state.dec_last,
                                             patience=lease.left())
                break
            except Fenced:
                # The previous decider wrote after we caught up: read that too, then fence again.
                await lease.renew()
        await self._wait_applied_within(seq, lease)
        last_dec = seq
        floor = state.announced  # the last mark of the deciders before: announced already
        log.warning("deciding sale %s as %s from log seq %d (announced through %d by the previous decider)",
                    self.cfg.storage.sale, self.member, seq, state.announced)
        if self.on_takeover is not None:
            told = await self._told_before()
            # Nothing is taken from state.unannounced before the loop below: every order its outcomes name is
            # announced by this process; the orders made before are what the deciders before handed out.
            mine = {o.order for s, out in state.unannounced if s > floor for o in out if o.order is not None}
            refused: list[Outcome] = []
            if told is not None:
                pending = {id(o) for s, out in state.unannounced if s > floor for o in out}
                refused = [o for o in state.refused if o.ts > told and id(o) not in pending]
            try:
                self.on_takeover(told, mine, refused)
            except Exception:
                log.exception("takeover listener failed")
        n = 0
        # In doubt: what the previous deciders' last mark covered. Its decider wrote the mark before handing
        # those outcomes out and may have stopped in between: maybe never announced, and never again (an
        # outcome is announced at most once). What came after the last mark was never handed out: the loop
        # below announces it.
        first, last, k = state.last_batch
        if k:
            self._in_doubt(k, first, last)
        hold = state.ledger.hold_seconds > 0
        next_tick = time.monotonic() + TICK_SECONDS
        while True:
            await lease.renew_if_due()
            if hold and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_SECONDS
                due = state.ledger.next_expiry()
                if due is not None and due <= self._clock():
                    n += 1
                    last_dec = await self.log.publish(self.log.names.decisions, orjson.dumps([js.SWEEP]),
                                                      f"{self.member}-x-{rev}-{n}", expect_last=last_dec,
                                                      patience=lease.left())
            if state.unannounced:
                through = state.applied
                outs, first, last = state.take_unannounced(through, floor)
                if outs:
                    # Mark first (fenced: refused if another process took over), then, only while still the
                    # decider (checked with no await before the hand-off), hand them out: a stop in between
                    # loses this batch's announcement, it never repeats one.
                    n += 1
                    mark = orjson.dumps([js.MARK, through, len(outs)])
                    try:
                        last_dec = await self.log.publish(self.log.names.decisions, mark,
                                                          f"{self.member}-m-{rev}-{n}", expect_last=last_dec,
                                                          patience=lease.left())
                    except BaseException:
                        # Not acknowledged (stepping down, or stopping): if the mark is not in the log, these
                        # were never handed out, and whoever decides next (this process too, which took them
                        # out of its state) must announce them; if it is, the mark covers them (in doubt).
                        state.put_back()
                        raise
                    lease.check()
                    self._announce(outs, first, last)
            self._maybe_snapshot()
            self._outcomes_waiting.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._outcomes_waiting.wait(), timeout=0.25)
            await asyncio.sleep(MARK_INTERVAL)

    def _maybe_snapshot(self) -> None:
        """Start writing a snapshot of the sale's state when ``[storage] snapshot_events`` ledger events or
        ``snapshot_seconds`` (with events) have passed since the last one. The decider writes them (one writer
        is enough; a snapshot is a function of the log's prefix, so whoever writes it, it is right)."""
        if self._snapshot_task is not None and not self._snapshot_task.done():
            return
        st = self.cfg.storage
        events = self.state.ledger.seq - self._snapshot_ledger_seq
        if events <= 0 or (events < st.snapshot_events
                           and time.monotonic() - self._snapshot_at < st.snapshot_seconds):
            return
        self._snapshot_ledger_seq = self.state.ledger.seq
        self._snapshot_at = time.monotonic()
        data = self.state.snapshot_state()  # a copy, taken between two applies
        self._snapshot_task = asyncio.get_running_loop().create_task(
            self._write_snapshot(self.state.applied, data), name="snapshot")

    async def _write_snapshot(self, applied: int, data: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            body = await asyncio.to_thread(dumps_state, data)
            await self.log.snapshots.write(applied, SNAPSHOT_VERSION, body)
        except (JournalError, TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            self.snapshot_failures += 1
            log.warning("sale %s: the snapshot at log message %d was not written (%s); the log is whole "
                        "without it", self.cfg.storage.sale, applied, exc)
            return
        self.snapshots_written += 1
        self.snapshot_seq = applied
        log.info("sale %s: snapshot at log message %d (%d bytes, %.2f s)", self.cfg.storage.sale, applied,
                 len(body), time.perf_counter() - t0)

    async def _wait_applied_within(self, seq: int, lease: _Lease) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wait_applied(seq), timeout=min(1.0, max(0.05, lease.left())))
                return
            except TimeoutError:
                await lease.renew_if_due()

    def _in_doubt(self, k: int, first: int, through: int) -> None:
        self.in_doubt_total += k
        self._m_again.inc(k)
        log.warning("in doubt: %d outcomes of log messages %d-%d, the last batch the previous decider marked; "
                    "if it stopped between its mark and the hand-off they were not announced, and they are "
                    "not announced again (never twice); they are decided: see report or export",
                    k, first, through)

    def _announce(self, outs: list[Outcome], first: int, through: int) -> None:
        self.announced_total += len(outs)
        counts: dict[str, int] = {}
        for o in outs:
            counts[o.status] = counts.get(o.status, 0) + 1
        for status, k in counts.items():
            self._m_outcomes.inc(k, status=status)
        log.info("announced %d outcomes of log messages %d-%d", len(outs), first, through)
        for cb in self._listeners:
            try:
                cb(outs)
            except Exception:
                log.exception("outcome listener %r failed", cb)

    async def __aenter__(self) -> ClusterEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        role = "deciding" if self.leading else "standing by"
        return f"<ClusterEngine {self.cfg.storage.sale} {self.member} {role}: {self.state!r}>"


async def control_via_log(cfg: Config, c: Control, *, parse: ParseFn | None = None) -> list[Outcome]:
    """Apply host control ``c`` to a JetStream sale without a running process: publish it into the sale's
    log and return its outcomes, computed by replaying the log up to it (the decider, whichever process
    it is, announces them). Raises :class:`ControlError` when the ledger refuses it, :class:`JournalError`
    when the sale has no log or the cluster cannot be reached."""
    kind, args = control.record(c, cfg.catalogue)
    if parse is None:
        parse = importlib.import_module("livecart.core.parser").Parser.from_config(cfg).parse
    sale_log = await SaleLog.open(cfg.storage.servers, cfg.storage.sale)
    try:
        assert sale_log.header is not None
        await sale_log.check_parser(js.parser_json(cfg), keep=False)  # its outcomes come from a replay here
        seq = await sale_log.publish(sale_log.names.inputs, js.control_body(kind, args),
                                     f"ctl-{uuid.uuid4().hex}", patience=30.0)
        state = await js.start_state(sale_log, parse)
        state.expect(seq)
        reader = sale_log.read(state.applied + 1)
        try:
            async for s, ts, decision, body in reader:
                if s:
                    state.apply(s, ts, decision, body)
                if state.applied >= seq:
                    break
        finally:
            await reader.aclose()
    finally:
        await sale_log.close()
    result = state.results.pop(seq, [])
    if isinstance(result, ControlError):
        raise result
    return result


class _LeaseLost(JournalError):
    """The lease ran out (not renewed in time) or another process holds it now."""


class _Lease:
    """The decider lease as its holder sees it: valid until ``lease - margin`` after the last renewal sent."""

    def __init__(self, sale_log: SaleLog, rev: int, sent: float, seconds: float, value: bytes) -> None:
        self._log = sale_log
        self._value = value
        self.rev = rev
        self.seconds = seconds
        self.valid_until = sent + seconds - LEASE_MARGIN
        self.next_renewal = sent + seconds / 5

    def left(self) -> float:
        return self.valid_until - time.monotonic()

    def check(self) -> None:
        if time.monotonic() >= self.valid_until:
            raise _LeaseLost(f"the lease ran out {-self.left():.1f} s ago (this process was paused or cut off)")

    async def renew_if_due(self) -> None:
        self.check()
        if time.monotonic() >= self.next_renewal:
            await self.renew()

    async def renew(self) -> None:
        self.check()
        sent = time.monotonic()
        try:
            entry_rev = await asyncio.wait_for(
                self._log.kv.update("lease", self._value, last=self.rev),
                timeout=max(0.1, self.left()))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise _LeaseLost("another process holds the lease") from exc
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            log.debug("lease renewal failed (trying again): %r", exc)
            self.next_renewal = time.monotonic() + 0.25
            self.check()
            return
        self.rev = int(entry_rev)
        self.valid_until = sent + self.seconds - LEASE_MARGIN
        self.next_renewal = sent + self.seconds / 5
