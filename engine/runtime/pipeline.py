"""The engine: parser + ledger + journal behind one async interface (docs/contract.md §4, §6).

Decide, then write (STYLE 3): :meth:`Engine.submit` parses and decides a whole batch synchronously, with no
``await`` in between, queues the journal rows, and returns the outcomes only once the journal has committed
them. Many concurrent submits share one group commit. On open the ledger is rebuilt from the journal, so a
restart over the same input reproduces a run that never crashed: comments already journaled are recognised
by their key and skipped, the rest are decided again in the same order, from the same state.

If the journal fails, the engine stops acknowledging: every later call raises
:class:`~livecart.core.errors.JournalError` (the ledger in memory may be ahead of the file; that state was never
announced and is rebuilt from the file on the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import attrgetter
from types import TracebackType
from typing import Any

from livecart.core import control
from livecart.core.control import Control, Kind
from livecart.core.dedupe import Dedupe
from livecart.core.errors import JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import NOTHING, Comment, Intent, Outcome, Parsed, ParseResult
from livecart.core.settings import Config
from livecart.runtime.metrics import Registry
from livecart.runtime.trace import Trace
from livecart.store import codec as jr
from livecart.store.base import Store
from livecart.store.codec import Entry, Refusals
from livecart.store.lock import JournalLock
from livecart.store.sqlite import SqliteStore

log = logging.getLogger("livecart.engine")

_BUY = Intent.BUY
_CANCEL = Intent.CANCEL
_STATUS = attrgetter("status")
#: Results not given: every comment is parsed in :meth:`Engine.submit` (zip stops at the comments' end).
_UNPARSED: Iterable[None] = repeat(None)
_NO_ITEMS: list[Any] = []  # shared by every row without items; rows are only ever encoded, never changed

ParseFn = Callable[[str, str | None], ParseResult]
Listener = Callable[[Sequence[Outcome]], None]

#: Collector thresholds for a long-running sale (see :func:`tune_gc`). A young collection costs about
#: 0.2-0.4 us per young object, all of it a pause of the event loop: 2,000 keeps each pause well under a
#: millisecond (at 10,000 they were 3-6 ms, at 50,000 7-20 ms, each a share of the p99 of its own; issue #17,
#: ``LIVECART_TRACE``), and costs no more in total (the same young objects, scanned while still in the
#: cache); 1,250 young collections per middle one keeps the older generations scanned as rarely as before
#: (every 2.5M surviving allocations).
GC_THRESHOLDS = (2_000, 1_250, 100)
#: The interpreter's switch interval in the daemon (CPython's default is 5 ms). The journal's commits run on a
#: worker thread that needs the GIL to pick each one up and to hand its result back; while the event loop is
#: deciding, each of those waits up to this long (see :func:`tune_switching`).
SWITCH_INTERVAL = 0.001


def tune_gc() -> None:
    """Make the cyclic garbage collector fit a process holding a large, growing, acyclic heap (the ledger's
    orders). With CPython's defaults (700, 10, 10) the collector re-scans that heap so often that it took
    about 60% of the decision loop in ``bench/ledger_bench.py``; with these thresholds it is a few percent.
    Everything alive at the call (config, a rebuilt ledger) is frozen out of future scans. Process-wide, so
    only entry points (the daemon, benchmarks) call it, never the engine itself. It turns the collector on:
    an entry point may keep it off until here (``livecart run`` does, so the objects a restart restores are
    scanned once, by this collection, instead of also by every young collection while they are made).
    """
    gc.enable()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


#: Allocations of at least this many bytes get pages of their own from the OS, returned when freed (see
#: :func:`tune_malloc`).
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def tune_malloc() -> bool:
    """Have glibc's malloc give every block of :data:`MMAP_THRESHOLD` or more back to the OS when it is freed.

    By default glibc raises that threshold to the size of each large block freed (up to 32 MB): after the
    first snapshot freed its multi-MB buffers, later ones came from the heap, whose freed middle is never
    returned, so the process kept every snapshot's transient as resident memory (a 3M-comment run sat at
    250 MB between snapshots instead of 110-150 MB). Setting the threshold once turns that adjustment off.
    Process-wide, so only entry points call it, before the journal is opened. Returns False where the C
    library has no ``mallopt`` (not glibc): nothing changes there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols, the C library's among them
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def tune_switching() -> None:
    """Let a thread waiting for the GIL have it after :data:`SWITCH_INTERVAL` instead of 5 ms: the journal's
    writer thread (twice a commit) and background encodings (index chunks) then wait at most that long for
    the event loop, and the loop as long for them. The switch is forced only when a thread is waiting, so a
    lone busy loop pays nothing. Process-wide, so only the daemon's entry point calls it."""
    sys.setswitchinterval(SWITCH_INTERVAL)


class Engine:
    """Owns the parser, the ledger and the journal of one stream. Create with :meth:`open`."""

    def __init__(self, cfg: Config, ledger: Ledger, journal: Store, parse: ParseFn,
                 clock: Callable[[], float], metrics: Registry) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.journal = journal
        self._parse = parse
        self._clock = clock
        self._listeners: list[Listener] = []
        #: Called with :meth:`Ledger.again`'s outcomes when comments decided by an earlier process come back
        #: (the daemon answers their buyers again: the earlier process may have died before it could). None:
        #: duplicates are skipped without a word. Not an outcome listener: nothing is decided or journalled.
        self.on_again: Listener | None = None
        self.opened_at = clock()
        self._closed = False
        #: The daemon's latency trace (:mod:`livecart.runtime.trace`), when ``LIVECART_TRACE`` is set.
        self.trace: Trace | None = None
        self.metrics = metrics
        self._m_comments = metrics.counter("comments_total", "comments received by the engine")
        self._m_dupes = metrics.counter("duplicate_comments_total", "comments seen before, ignored")
        self._m_intents = metrics.counter("intents_total", "processed comments by parsed intent")
        self._m_outcomes = metrics.counter("outcomes_total", "durable outcomes by status")
        self._m_parse_errors = metrics.counter("parse_errors_total", "comments the parser failed on")
        self._m_listener_errors = metrics.counter("listener_errors_total", "outcome listeners that raised")
        batches = metrics.gauge("journal_batches", "journal transactions committed")
        latency = metrics.gauge("journal_batch_seconds", "duration of the last journal transaction")
        mean = metrics.gauge("journal_batch_seconds_mean", "mean duration of a journal transaction")

        snaps = metrics.gauge("journal_snapshots_written", "snapshots of the engine's state written by this process")
        snap_fail = metrics.gauge("journal_snapshot_failures", "snapshots that could not be written (logged)")
        snap_fallback = metrics.gauge("journal_snapshot_fallbacks",
                                      "damaged snapshots passed over at start (an older one or a full replay used)")
        snap_seq = metrics.gauge("journal_last_snapshot_seq", "event of the last snapshot written (0: none yet)")
        snap_age = metrics.gauge("journal_last_snapshot_age_seconds", "seconds since the last snapshot was written")
        snap_bytes = metrics.gauge("journal_last_snapshot_bytes", "size of the last snapshot written")
        snap_secs = metrics.gauge("journal_last_snapshot_seconds", "time to encode and write the last snapshot")
        dd_filter = metrics.gauge("dedupe_filter_ids", "comment ids that left the window, held by the filter")
        dd_memory = metrics.gauge("dedupe_memory_ids", "comment ids held exactly in memory")
        dd_maybes = metrics.gauge("dedupe_maybes", "new-looking ids the filter could not rule out (confirmed)")
        dd_old = metrics.gauge("dedupe_old_duplicates", "duplicates older than the window, recognised")
        dd_lookups = metrics.gauge("dedupe_lookups", "ids looked up in the journal's index")

        def collect() -> None:
            j = self.journal
            batches.set(j.batches)
            latency.set(j.last_batch_seconds)
            mean.set(j.batch_seconds_total / j.batches if j.batches else 0.0)
            snaps.set(j.snapshots_written)
            snap_fail.set(getattr(j, "snapshot_failures", 0))
            snap_fallback.set(getattr(j, "snapshot_fallbacks", 0))
            seq = getattr(j, "last_snapshot_seq", 0)
            snap_seq.set(seq)
            at = getattr(j, "last_snapshot_at", 0.0)
            snap_age.set(round(time.time() - at, 3) if at else 0.0)
            snap_bytes.set(getattr(j, "last_snapshot_bytes", 0))
            snap_secs.set(getattr(j, "last_snapshot_seconds", 0.0))
            dd = self.ledger.dedupe
            if dd is not None:
                dd_filter.set(dd.spilled)
                dd_memory.set(dd.in_memory)
                dd_maybes.set(dd.maybes)
                dd_old.set(dd.old_dupes)
                dd_lookups.set(getattr(j, "lookups", 0))

        metrics.collector(collect)

    @classmethod
    async def open(cls, cfg: Config, *, clock: Callable[[], float] = time.time, parse: ParseFn | None = None,
                   metrics: Registry | None = None, store: Store | None = None, lock: JournalLock | None = None,
                   told: float | None = None) -> Engine:
        """Open (or create) the stream's journal, rebuild the ledger from it, and return a ready engine.

        ``parse(text, featured)`` defaults to ``livecart.core.parser.Parser.from_config(cfg).parse``.
        ``store`` is an open store to use instead of the SQLite file of ``[storage] path`` (the engine owns it
        from here on and closes it). ``lock`` is the journal's writer lock when the caller took it already
        (see :meth:`livecart.store.sqlite.SqliteStore.open`). ``told`` is the replies' progress a previous
        run kept (:meth:`livecart.runtime.daemon.Daemon.told_until`): the refusals decided after it are kept in
        :attr:`untold_refusals`, for the daemon to tell again.
        Raises :class:`~livecart.core.errors.JournalError` / :class:`~livecart.core.errors.ForeignDatabase`.
        """
        if parse is None:
            # Imported by name: the parser is its own module and the engine needs it only here.
            parser_module = importlib.import_module("livecart.core.parser")
            parse = parser_module.Parser.from_config(cfg).parse
        hold = cfg.stream.hold_minutes * 60.0
        j: Store | SqliteStore
        if store is not None:
            j = store
        else:
            j = await SqliteStore.open(cfg.storage.path, catalogue=cfg.catalogue, hold_seconds=hold,
                                       featured=cfg.stream.featured, durability=cfg.storage.durability,
                                       batch_max=cfg.storage.batch_max,
                                       batch_delay=cfg.storage.batch_delay_ms / 1000.0, clock=clock,
                                       lock=lock, recent=cfg.storage.dedupe_window)
        refusals = Refusals(told) if told is not None else None
        try:
            replayed = await j.rebuild(refusals=refusals)
            await j.attach(replayed)
        except BaseException:
            await j.close()
            raise
        engine = cls(cfg, replayed, j, parse, clock, metrics or Registry())
        if refusals is not None:
            engine.untold_refusals = list(refusals.kept)
            engine.untold_names = refusals.names
            engine.untold_orders = list(refusals.orders)
            engine.replay_covered = refusals.covered
        engine._snap_seq = j.rebuilt_from[0]
        engine._snap_at = clock()
        # From here on the ledger reads the engine's clock, sampled once per call.
        engine._now = clock()
        replayed.clock = engine._read_now
        if replayed.seq:
            snap, tail = j.rebuilt_from
            log.info("journal %s: rebuilt %r at event %d (%s, then %d events replayed)", j.where, replayed,
                     replayed.seq, f"from the snapshot at event {snap}" if snap else "no snapshot", tail)
        return engine

    _now: float = 0.0
    #: The refusals decided after the replies' progress ``told`` given to :meth:`open`, oldest first.
    untold_refusals: list[Outcome] = []  # noqa: RUF012 (replaced, never changed in place)
    #: Their buyers' display names (user id -> name), from the journal's comments.
    untold_names: dict[str, str] = {}  # noqa: RUF012 (replaced, never changed in place)
    #: The orders made or changed after ``told`` (their ids, oldest change first), and whether the replay that
    #: found them and :attr:`untold_refusals` began before ``told`` (see :class:`~livecart.store.codec.Refusals`).
    untold_orders: list[str] = []  # noqa: RUF012 (replaced, never changed in place)
    replay_covered = True
    _snap_seq = 0  # seq of the last snapshot asked for
    snapshot_at_close = True  # whether close() writes a last snapshot (see close)
    _snap_at = 0.0  # when (engine clock)
    _snap_busy: asyncio.Future[None] | None = None  # the store is still writing the last snapshot asked for
    _snap_retry = 0  # seq before which a refused snapshot is not asked for again

    def _maybe_checkpoint(self, now: float) -> None:
        """Ask the store for a snapshot every ``[storage] snapshot_events`` events or ``snapshot_seconds``
        seconds (while events come in). Called right after an append, so the ledger is at the last appended
        entry; :meth:`Ledger.state` copies, the store encodes and writes in the background.

        While the last snapshot is still being written nothing is asked (the store would refuse it), and after
        a refusal not again for a sixteenth of ``snapshot_events``: each ask copies the state first (~5 ms of
        the event loop at 300,000 orders), and asking after every batch while a snapshot was being written
        was, in ``journal_bench`` at 3M comments, 37% of the run's time."""
        if self._snap_busy is not None:
            return
        seq = self.ledger.seq
        since = seq - self._snap_seq
        if since <= 0 or seq < self._snap_retry:
            return
        st = self.cfg.storage
        due = since >= st.snapshot_events or now - self._snap_at >= st.snapshot_seconds
        if not due:
            return
        t0 = time.perf_counter()
        state = self.ledger.state()
        if self.trace is not None:
            self.trace.state_taken(t0, time.perf_counter() - t0)
        if self.journal.checkpoint(seq, state):
            self._snap_seq = seq
            self._snap_at = now
            self._snap_busy = busy = asyncio.ensure_future(self.journal.snapshot_written())
            busy.add_done_callback(self._snapshot_done)
        else:
            self._snap_retry = seq + max(1, st.snapshot_events // 16)

    def _snapshot_done(self, _: asyncio.Future[None]) -> None:
        """The last snapshot is written (or failed): ask for the next at once if one is due (the events that
        came while it was written), not at the next batch, which may not come for a long time after a burst.
        Between two batches the ledger is at the last appended entry (a batch is decided and appended with no
        ``await`` between); a ledger ahead of a failed journal has nothing to snapshot (``ValueError``)."""
        self._snap_busy = None
        if not self._closed:
            with contextlib.suppress(ValueError):
                self._maybe_checkpoint(self._now)

    def _read_now(self) -> float:
        return self._now

    # ------------------------------------------------------------------ the hot path

    def add_listener(self, cb: Listener) -> None:
        """Call ``cb(outcomes)`` with each batch of outcomes once it is durable, in commit order. It must not
        block; an exception is logged and counted, never propagated."""
        self._listeners.append(cb)

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError("the engine is closed")

    async def submit(self, comments: Sequence[Comment], parsed: Parsed | None = None) -> list[Outcome]:
        """Parse and decide ``comments`` in order; return their outcomes once durable.

        A comment seen before is skipped (no outcome). A comment the parser fails on is logged, counted and
        processed as having no intent. Raises :class:`JournalError` if the journal cannot commit.

        ``parsed``: ``(featured, results)``, the comments parsed already by a parser of this catalogue under
        that featured product, one result a comment (None: not parsed), as the daemon's parsing process
        gives them (:mod:`livecart.runtime.parsework`). Used only while the ledger's featured product is
        still that one; otherwise the comments are parsed here.
        """
        self._check_open()
        ledger = self.ledger
        parse = self._parse
        self._now = now = self._clock()
        decide = ledger.decide
        featured = ledger.featured  # only a control changes it, never during this loop
        rows: list[Entry] = []
        append = rows.append
        outs: list[Outcome] = []
        again: list[Outcome] = []
        intents: dict[str, int] = {}
        seq = ledger.seq
        # What jr.comment_row builds, inlined: a function call per comment was ~10% of this loop. The row is
        # the same (tests/store compare the two); enums go in as their plain values (see comment_row).
        buy = _BUY
        cancel = _CANCEL
        no_items = _NO_ITEMS
        kind = jr.COMMENT
        # No cyclic collection while the batch is decided: its rows are alive until append() has encoded
        # them, and a young collection in between (every 2,000 objects, several per batch) scanned them all
        # and moved them to an older generation for nothing. The collection that comes after sees only what
        # outlives the batch (orders, outcomes, expiry entries): one batch's worth, a pause well under 2 ms.
        with jr.paused_gc():
            given: Iterable[ParseResult | None] = _UNPARSED
            if parsed is not None and parsed[0] == featured and len(parsed[1]) == len(comments):
                given = parsed[1]
            for c, pr in zip(comments, given, strict=False):  # given may be endless (_UNPARSED)
                # A duplicate is parsed too (a cache hit, mostly) and then recognised by the ledger, which leaves
                # seq alone: cheaper than asking the ledger twice for every comment, and duplicates are rare.
                if pr is None:
                    try:
                        pr = parse(c.text, featured)
                    except Exception as exc:  # a parser bug must not take the sale down
                        self._parse_failed(c, exc)
                        pr = NOTHING
                out = decide(c, pr)
                if ledger.seq == seq:
                    if self.on_again is not None:
                        again.extend(ledger.again(c, self.opened_at))
                    continue
                seq = ledger.seq
                intent = pr.intent
                if intent is buy or intent is cancel:
                    its = pr.items
                    if len(its) == 1:  # nearly always; no comprehension frame
                        i = its[0]
                        r = i.reason
                        items = [[i.sku, i.variant, i.qty, None if r is None else r._value_]]
                    else:
                        items = [[i.sku, i.variant, i.qty, None if i.reason is None else i.reason._value_]
                                 for i in its]
                    if out:
                        outs.extend(out)
                else:
                    items = no_items
                value = intent._value_
                append((seq, now, kind, [c.platform, c.room, c.id, c.user, value, items, c.name]))
                intents[value] = intents.get(value, 0) + 1
            dupes = len(comments) - len(rows)
            self._m_comments.inc(len(comments))
            if dupes:
                self._m_dupes.inc(dupes)
                if again and self.on_again is not None:
                    try:
                        self.on_again(again)
                    except Exception:
                        self._m_listener_errors.inc()
                        log.exception("announcing again the orders of resent comments failed")
            for intent_name, n in intents.items():
                self._m_intents.inc(n, intent=intent_name)
            done = self._append(rows, now)
            # Encoded by append: the row objects go now, before the collector is back on. The bound method
            # ``append`` holds the list too: with it alive, the young collection that the end of the pause
            # sets off scanned every row of the batch (~1,000 tuples and ~3,000 lists, nearly all of the ~4,200
            # objects it scanned) and moved them to an older generation.
            del rows, append
        if self.trace is not None:
            self.trace.decided(seq)
        return await self._settle(done, outs)

    async def submit_parsed(self, pairs: Sequence[tuple[Comment, ParseResult]]) -> list[Outcome]:
        """:meth:`submit` for comments parsed already (replays of parse results, benchmarks)."""
        self._check_open()
        ledger = self.ledger
        self._now = now = self._clock()
        decide = ledger.decide
        rows: list[Entry] = []
        outs: list[Outcome] = []
        row = jr.comment_row
        seq = ledger.seq
        with jr.paused_gc():  # as in submit()
            for c, pr in pairs:
                out = decide(c, pr)
                if ledger.seq != seq:  # not a duplicate
                    seq = ledger.seq
                    rows.append(row(seq, now, c, pr))
                    if out:
                        outs.extend(out)
            self._m_comments.inc(len(pairs))
            done = self._append(rows, now)
            del rows
        return await self._settle(done, outs)

    def _append(self, rows: list[Entry], now: float) -> asyncio.Future[None] | None:
        """Append ``rows`` to the journal (None when there are none); then hand the store the ledger's full
        chunks of old ids, seal the ledger's newest full segment of orders (:meth:`Ledger.seal_some`: a
        segment a batch, not all of them when a snapshot is due), and ask for a snapshot when one is due."""
        if not rows:
            return None
        done = self.journal.append(rows)
        dd = self.ledger.dedupe
        if dd is not None:
            if dd.fresh:
                self._hand_off(dd)
            if dd.forgetting:
                dd.forget_some()
        self.ledger.seal_some()
        self._maybe_checkpoint(now)
        return done

    def _hand_off(self, dd: Dedupe) -> None:
        """Give the store the chunks of old ids the ledger filled; the ledger lets each go once it is indexed
        (until then the ledger still answers for its ids, so none is ever out of reach)."""
        for no, first, last, keys in dd.take_fresh():
            fut = self.journal.index_chunk(no, first, last, keys)

            def done(f: asyncio.Future[None], no: int = no) -> None:
                if not f.cancelled() and f.exception() is None:
                    dd.indexed(no, gradual=True)  # its ids leave the sets a step per batch (_append)

            fut.add_done_callback(done)

    def _parse_failed(self, c: Comment, exc: Exception) -> None:
        n = self._m_parse_errors.get()
        self._m_parse_errors.inc()
        level = logging.ERROR if n == 0 else logging.DEBUG
        log.log(level, "parser failed on comment %s %.200r: %r (counted; the comment is taken as no intent)",
                c.key, c.text, exc)

    async def _commit(self, rows: list[Entry], outs: list[Outcome]) -> list[Outcome]:
        return await self._settle(self._append(rows, self._now), outs)

    async def _settle(self, done: asyncio.Future[None] | None, outs: list[Outcome]) -> list[Outcome]:
        """Wait for ``done`` (the journal's append, if any rows), then count and announce ``outs``."""
        if done is not None:
            await done
        if outs:
            # Counted in C (Counter over an iterator): a Python loop here cost ~0.15 us an outcome.
            for status, n in Counter(map(_STATUS, outs)).items():
                self._m_outcomes.inc(n, status=status)
            for cb in self._listeners:
                try:
                    cb(outs)
                except Exception:
                    self._m_listener_errors.inc()
                    log.exception("outcome listener %r failed", cb)
        return outs

    # ------------------------------------------------------------------ controls and time

    async def control(self, c: Control) -> list[Outcome]:
        """Apply a host control that changes the sale and return its outcomes once durable.

        The control becomes a journal record (:func:`livecart.core.control.record`) that
        :func:`livecart.core.control.apply` applies, the same function the journal's replay uses.
        Raises :class:`ControlError` for a control the ledger refuses (unknown sku or order) or one that
        changes nothing (``status``).
        """
        self._check_open()
        kind, args = control.record(c, self.cfg.catalogue)
        self._now = now = self._clock()
        out = control.apply(self.ledger, kind, args)
        return await self._commit([jr.control_row(self.ledger.seq, now, kind, args)], out)

    async def tick(self) -> list[Outcome]:
        """Expire the holds that are due; return the expiries and promotions once durable."""
        self._check_open()
        self._now = now = self._clock()
        out = self.ledger.expire_due()
        if not out:
            return []
        return await self._commit([jr.control_row(self.ledger.seq, now, Kind.EXPIRE, ())], out)

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """The ledger's state (docs/contract.md §5 report shape). Includes outcomes not yet durable."""
        return self.ledger.snapshot()

    async def flush(self) -> None:
        await self.journal.flush()

    async def close(self) -> None:
        """Commit what is pending and close the journal. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # A last snapshot, so the next start replays nothing (the store writes it before it closes), after the
        # one being written, if any: the store refuses a second meanwhile. Not when buyers refused since the
        # last one were not told (snapshot_at_close, see Daemon): only a replay of their comments gives their
        # refusals back to the next start (a refusal makes no order, so no snapshot holds it).
        if self.ledger.seq > self._snap_seq and self.snapshot_at_close:
            await self.journal.snapshot_written()
            with contextlib.suppress(ValueError):  # a ledger ahead of its failed journal: nothing to snapshot
                self.journal.checkpoint(self.ledger.seq, self.ledger.state())
        await self.journal.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Engine {self.cfg.stream.name!r}: {self.ledger!r} {self.journal!r}>"
