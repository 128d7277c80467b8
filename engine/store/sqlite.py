"""The SQLite store: every ledger decision, persisted in one SQLite file before it is announced
(docs/contract.md §6). It implements :class:`livecart.store.base.Store`; what an entry is and how it replays
is :mod:`livecart.store.codec`.

The catalogue, hold time and initial featured product the journal was started with are kept in ``meta``,
so ``livecart report`` rebuilds the state from the file alone, and a restart with a different catalogue is
refused rather than silently deciding differently from what was announced.

Schema::

    meta(key TEXT PRIMARY KEY, value TEXT)      app, schema, catalogue, hold_seconds, featured, created
    batches(first INTEGER PRIMARY KEY, last INTEGER, ts REAL, body BLOB)
        one row per committed batch; body is a JSON array of [seq, ts, kind, data] entries
    VIEW events(seq, ts, kind, body)            one row per entry, for people and tools (sqlite3 CLI)

A batch is stored as one row because SQLite then does constant work per batch: the entries are encoded
by orjson in one call and the worker thread touches Python once per batch, not once per row (storing a row
per entry, even with ``executemany``, made the journal the bottleneck: see ``bench/ledger_bench.py``).

``PRAGMA application_id`` is set too, so ``file`` and other tools can tell a livecart journal. A file that
is not SQLite, is SQLite of another application, or is damaged raises :class:`ForeignDatabase` and is never
written to.

Durability (``PRAGMA journal_mode=WAL`` always):

* ``"fsync"`` -> ``synchronous=FULL``: each commit fsyncs the WAL before it returns; a committed batch
  survives a process crash *and* a power loss.
* ``"os"`` -> ``synchronous=NORMAL``: a commit returns once the WAL write is in the OS page cache; it
  survives a process crash (kill -9) but the last commits may be lost on a power loss or kernel panic. The
  database itself stays consistent either way (WAL syncs on checkpoint).

Group commit: :meth:`Journal.append` encodes its entries at once (so the caller's row objects can die
straight away rather than wait, GC-tracked, for their commit), queues the bytes and returns a future; one
writer task commits everything queued as one batch row in one transaction and resolves the futures of the
rows it committed.
A batch is cut at once when no transaction is in flight (the disk is idle: waiting would only add
latency); while one is in flight, rows gather until it completes, ``batch_max`` rows are waiting, or
``batch_delay`` has passed since the oldest of them arrived, whichever is first. So at low rates each
submit is committed straight away, and under load batches grow by themselves to what arrives during one
commit, never waiting longer than ``batch_delay``.

Checkpoints: the writer copies the WAL back into the database every ``WAL_CHECKPOINT_PAGES`` pages rather
than SQLite's default 1,000: the copy and its fsync run inside the commit that crosses the mark, and at
1,000 pages that commit took 6-9 ms every ~0.5 s at 50,000 comments/s (a p99 of its own). Smaller, more
frequent checkpoints cost the same in total and stall a commit for 1-3 ms. (A second connection
checkpointing concurrently was tried and was worse: on ext4 its fsync of the database stalled the writer's
WAL fsync for up to 20 ms.)
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiosqlite
import orjson

from livecart.core.catalogue import Catalogue
from livecart.core.errors import ForeignDatabase, JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Outcome
from livecart.store.codec import Entry, Header, Row, catalogue_from_json, catalogue_json, rebuild_entries
from livecart.store.lock import JournalLock

log = logging.getLogger("livecart.journal")

APPLICATION_ID = 0x4C564354  # "LVCT"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
#: WAL pages after which a commit checkpoints (SQLite's default is 1,000; see the module docstring).
WAL_CHECKPOINT_PAGES = 256

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE batches (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, ts REAL NOT NULL, body BLOB NOT NULL);
CREATE VIEW events (seq, ts, kind, body) AS
    SELECT json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'), json_extract(e.value, '$[2]'),
           CAST(json_extract(e.value, '$[3]') AS BLOB)
    FROM batches, json_each(batches.body) AS e;
"""

# Inserts the batch only if the batch before it is the last one in the file: with two transactions queued
# at once (see Journal._write_loop), one that follows a failed one must not leave a hole behind it.
_INSERT = ("INSERT INTO batches (first, last, ts, body) SELECT ?, ?, ?, ? "
           "WHERE coalesce((SELECT last FROM batches ORDER BY first DESC LIMIT 1), 0) = ?")



def _check_file(path: Path) -> bool:
    """Whether a journal exists at ``path``. Refuses, before SQLite touches it, a file that is not SQLite.

    An empty file counts as no journal (there is nothing in it to lose)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror or exc}") from exc
    if head and head != SQLITE_MAGIC:
        raise ForeignDatabase(f"{path} is not a livecart journal (not an SQLite database); "
                              "it was left untouched; set [storage] path to another file")
    return bool(head)


class SqliteStore:
    """One journal file. Open with :meth:`open` (creating it if allowed) and close with :meth:`close`.

    ``append`` is the hot path: call it from one event loop; the futures resolve in append order.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path, header: Header, *, durability: str,
                 batch_max: int, batch_delay: float, last_seq: int, readonly: bool) -> None:
        self._db = db
        self.path = path
        self.header = header
        self.durability = durability
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self.last_seq = last_seq  # highest seq committed
        self.readonly = readonly
        # Encoded rows waiting for a batch, in seq order: (first seq, last seq, first ts, JSON of the rows
        # without the enclosing brackets, row count, arrival). Rows are encoded as they are appended, so
        # the row objects die at once instead of living (as young GC-tracked objects) until their commit.
        self._pending: list[tuple[int, int, float, bytes, int, float]] = []
        self._pending_rows = 0
        self._appended = last_seq
        self._waiters: list[tuple[int, asyncio.Future[None], float]] = []  # (last seq, future, arrival)
        self._first_at = 0.0  # loop time the oldest pending row arrived
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closed = False
        self._lock: JournalLock | None = None
        self.batches = 0
        self.rows_written = 0
        self.last_batch_seconds = 0.0
        self.batch_seconds_total = 0.0
        self.largest_batch = 0

    @classmethod
    async def open(cls, path: str | Path, *, catalogue: Catalogue | None = None, hold_seconds: float = 0.0,
                   featured: str | None = None, durability: str = "fsync", batch_max: int = 2048,
                   batch_delay: float = 0.002, readonly: bool = False, clock: Callable[[], float] = time.time,
                   lock: JournalLock | None = None) -> SqliteStore:
        """Open the journal at ``path``.

        Read-write takes the journal's writer lock (:mod:`livecart.store.lock`) before it touches anything,
        unless the caller holds it already and passes it as ``lock`` (the daemon, which takes it first of
        all); another writer raises :class:`~livecart.core.errors.JournalLocked`. A lock taken here is
        released by :meth:`close`; a lock passed in stays the caller's.

        Read-write (the default) creates the file when it does not exist, and then needs ``catalogue``;
        when it exists, ``catalogue`` and ``hold_seconds`` must match what it was started with (else
        :class:`JournalError`). ``readonly`` never creates or writes: a missing file is a
        :class:`JournalError`. A file that is not a livecart journal raises :class:`ForeignDatabase`.
        """
        if durability not in ("fsync", "os"):
            raise JournalError(f"durability must be 'fsync' or 'os', got {durability!r}")
        p = Path(path)
        own_lock = None
        if not readonly and lock is None:
            own_lock = lock = JournalLock.acquire(p, purpose="writer")
        try:
            j = await cls._open(p, catalogue, hold_seconds, featured, durability, batch_max, batch_delay, readonly,
                                clock)
        except BaseException:
            if own_lock is not None:
                own_lock.release()
            raise
        j._lock = own_lock
        return j

    @classmethod
    async def _open(cls, p: Path, catalogue: Catalogue | None, hold_seconds: float, featured: str | None,
                    durability: str, batch_max: int, batch_delay: float, readonly: bool,
                    clock: Callable[[], float]) -> SqliteStore:
        exists = _check_file(p)
        if readonly and not exists:
            raise JournalError(f"no journal at {p} (has the stream run yet?)")
        if not exists and catalogue is None:
            raise JournalError(f"no journal at {p} and no catalogue to start one with")
        uri = f"file:{p}?mode={'ro' if readonly else 'rwc'}"
        try:
            db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {p}: {exc}") from exc
        try:
            header, last = await cls._prepare(db, p, exists, catalogue, hold_seconds, featured, durability,
                                              readonly, clock)
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise ForeignDatabase(f"{p} is damaged or not a livecart journal ({exc}); it was left untouched"
                                  ) from exc
        except BaseException:
            await db.close()
            raise
        j = cls(db, p, header, durability=durability, batch_max=batch_max, batch_delay=batch_delay,
                last_seq=last, readonly=readonly)
        if not readonly:
            j._writer = asyncio.get_running_loop().create_task(j._write_loop(), name="journal-writer")
        return j

    @staticmethod
    async def _prepare(db: aiosqlite.Connection, p: Path, exists: bool, catalogue: Catalogue | None,
                       hold_seconds: float, featured: str | None, durability: str, readonly: bool,
                       clock: Callable[[], float]) -> tuple[Header, int]:
        async with db.execute("PRAGMA application_id") as cur:
            row = await cur.fetchone()
        app_id = int(row[0]) if row else 0
        async with db.execute("SELECT count(*) FROM sqlite_schema") as cur:
            row = await cur.fetchone()
        n_objects = int(row[0]) if row else 0
        if app_id != APPLICATION_ID:
            if exists or n_objects:
                raise ForeignDatabase(
                    f"{p} is an SQLite database of another application (application_id={app_id:#x}), not a "
                    "livecart journal; it was left untouched; set [storage] path to another file")
            assert catalogue is not None
            if not readonly:
                await db.execute_fetchall("PRAGMA journal_mode=WAL")
                await db.executescript(
                    "BEGIN;" + _SCHEMA + f"PRAGMA application_id={APPLICATION_ID};COMMIT;")
                meta = {"app": "livecart", "schema": str(SCHEMA_VERSION), "catalogue": catalogue_json(catalogue),
                        "hold_seconds": repr(float(hold_seconds)), "featured": featured or "",
                        "created": repr(clock())}
                await db.execute("BEGIN")
                await db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                await db.execute("COMMIT")
        async with db.execute("SELECT key, value FROM meta") as cur:
            meta = {str(k): str(v) for k, v in await cur.fetchall()}
        if meta.get("app") != "livecart":
            raise ForeignDatabase(f"{p} carries livecart's application id but no livecart meta table; "
                                  "it was left untouched")
        if meta.get("schema") != str(SCHEMA_VERSION):
            raise JournalError(f"{p} is a livecart journal of schema {meta.get('schema')}; this livecart "
                               f"reads schema {SCHEMA_VERSION}")
        header = Header(catalogue_from_json(meta["catalogue"]), meta["catalogue"], float(meta["hold_seconds"]),
                        meta["featured"] or None, float(meta["created"]))
        if catalogue is not None and not readonly and (
                catalogue_json(catalogue) != header.catalogue_json or float(hold_seconds) != header.hold_seconds):
            raise JournalError(
                f"the journal {p} was started with a different catalogue or hold_minutes than the config "
                "now has; replaying it would not give the outcomes already announced. Start a new journal "
                "([storage] path) or change stock live (livecart ctl restock).")
        if not readonly:
            await db.execute_fetchall("PRAGMA journal_mode=WAL")
            await db.execute_fetchall(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'NORMAL'}")
            await db.execute_fetchall(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        async with db.execute("SELECT coalesce(max(last), 0) FROM batches") as cur:
            row = await cur.fetchone()
        return header, int(row[0]) if row else 0

    @property
    def where(self) -> str:
        return str(self.path)

    async def entries(self, after: int = 0, chunk: int = 64) -> list[Entry]:
        """Every committed entry with ``seq > after``, decoded, in ``seq`` order."""
        out: list[Entry] = []
        async with self._db.execute("SELECT body FROM batches WHERE last > ? ORDER BY first", (after,)) as cur:
            while True:
                part = await cur.fetchmany(chunk)
                if not part:
                    break
                for (body,) in part:
                    try:
                        out.extend((int(s), float(t), str(k), d) for s, t, k, d in orjson.loads(body)
                                   if s > after)
                    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                        raise ForeignDatabase(f"{self.path} holds a damaged batch ({exc})") from exc
        return out

    async def rows(self) -> list[Row]:
        """Every committed entry as a row with JSON bytes, in ``seq`` order (as the ``events`` view)."""
        return [(s, t, k, orjson.dumps(d)) for s, t, k, d in await self.entries()]

    async def rebuild(self, *, on_outcomes: Callable[[list[Outcome]], None] | None = None) -> Ledger:
        """A ledger rebuilt from every committed row."""
        try:
            return rebuild_entries(self.header, await self.entries(), on_outcomes=on_outcomes)
        except sqlite3.DatabaseError as exc:
            raise ForeignDatabase(f"{self.path} is damaged ({exc})") from exc

    # ------------------------------------------------------------------ group commit

    @property
    def pending(self) -> int:
        return self._pending_rows

    def append(self, rows: Sequence[Entry]) -> asyncio.Future[None]:
        """Queue rows for the next batch; the future resolves once they are committed (durable as
        configured) or fails with :class:`JournalError`. Rows must come in ``seq`` order."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failed is not None:
            fut.set_exception(JournalError(f"the journal {self.path} failed earlier: {self._failed}"))
            return fut
        if self._closed or self._writer is None:
            fut.set_exception(JournalError(f"the journal {self.path} is closed"))
            return fut
        if not rows:
            fut.set_result(None)
            return fut
        if rows[0][0] <= self._appended:
            fut.set_exception(ValueError(f"journal entries must come in seq order: {rows[0][0]} after "
                                         f"{self._appended}"))
            return fut
        self._appended = last = rows[-1][0]
        now = fut.get_loop().time()
        if not self._pending:
            self._first_at = now
        self._waiters.append((last, fut, now))
        # Pieces of at most batch_max rows, so that a batch can still be cut at batch_max.
        step = self.batch_max
        try:
            for i in range(0, len(rows), step):
                piece = rows[i:i + step] if len(rows) > step else rows
                self._pending.append((piece[0][0], piece[-1][0], piece[0][1], orjson.dumps(piece)[1:-1],
                                      len(piece), now))
                self._pending_rows += len(piece)
        except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
            # The ledger has decided these rows already: without them the file would have a hole, so the
            # journal stops acknowledging, as it does when a write fails.
            self._fail(exc)
            return fut
        self._wake.set()
        if self._pending_rows >= self.batch_max:
            self._full.set()
        return fut

    async def _write_loop(self) -> None:
        # Two transactions may be queued at the connection's worker thread at once: while batch k commits
        # and its result travels back to the event loop (which may be busy deciding for milliseconds),
        # batch k+1 is already waiting in the thread, so the disk never idles for the loop. Waiters are
        # still resolved in seq order, and a batch is inserted only after the one before it (_INSERT).
        loop = asyncio.get_running_loop()
        prev: asyncio.Task[None] | None = None
        prev_last = self.last_seq
        try:
            while self._failed is None:
                await self._wake.wait()
                if not self._pending:
                    self._wake.clear()
                    if self._closed:
                        return
                    continue
                if (prev is not None and not prev.done() and self._pending_rows < self.batch_max
                        and not self._closed and self.batch_delay > 0):
                    wait = self._first_at + self.batch_delay - loop.time()
                    if wait > 0:
                        full = loop.create_task(self._full.wait())
                        try:
                            await asyncio.wait((full, prev), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            full.cancel()
                if self._failed is not None:
                    return
                pending = self._pending
                k = 1
                n = pending[0][4]
                while k < len(pending) and n + pending[k][4] <= self.batch_max:
                    n += pending[k][4]
                    k += 1
                batch = pending[:k]
                del pending[:k]
                self._pending_rows -= n
                if self._pending_rows < self.batch_max:
                    self._full.clear()
                if pending:
                    self._first_at = pending[0][5]  # the oldest row left behind arrived with its piece
                task = loop.create_task(self._commit(batch, n, prev_last, prev), name="journal-commit")
                prev_last = batch[-1][1]
                if prev is not None:
                    await asyncio.wait([prev])  # at most two queued: this one and the one before
                prev = task
        finally:
            if prev is not None:
                await asyncio.wait([prev])

    async def _commit(self, batch: list[tuple[int, int, float, bytes, int, float]], n_rows: int, after: int,
                      prev: asyncio.Task[None] | None) -> None:
        """Write ``batch`` (``n_rows`` encoded rows) as one transaction (behind ``prev``'s), then resolve its
        waiters in order."""
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            blob = b"[" + b",".join([b[3] for b in batch]) + b"]"
            # The connection is in autocommit mode, so this one statement is one transaction (and one
            # fsync under synchronous=FULL) and one trip to the worker thread: with BEGIN / COMMIT as
            # separate statements the writer waited three times behind the decisions on the event loop.
            cur = await self._db.execute(_INSERT, (batch[0][0], batch[-1][1], batch[0][2], blob, after))
            if cur.rowcount != 1:
                error = JournalError("the batch before it was not written")
        except (sqlite3.Error, ValueError, TypeError) as exc:
            error = exc
        if prev is not None:
            await asyncio.wait([prev])
        if self._failed is not None:
            return  # the batch before failed, and with it every waiter, this batch's included
        if error is not None:
            self._fail(error)
            return
        dt = time.perf_counter() - t0
        self.batches += 1
        self.rows_written += n_rows
        self.last_batch_seconds = dt
        self.batch_seconds_total += dt
        self.largest_batch = max(self.largest_batch, n_rows)
        top = batch[-1][1]
        self.last_seq = top
        n = 0
        for end, fut, _ in self._waiters:
            if end > top:
                break
            n += 1
            if not fut.done():
                fut.set_result(None)
        del self._waiters[:n]

    def _fail(self, exc: BaseException) -> None:
        log.error("journal %s: write failed, nothing more will be acknowledged: %s", self.path, exc)
        self._failed = exc
        err = JournalError(f"cannot write the journal {self.path}: {exc}")
        for _, fut, _ in self._waiters:
            if not fut.done():
                fut.set_exception(err)
        self._waiters.clear()
        self._pending.clear()
        self._pending_rows = 0

    async def flush(self) -> None:
        """Wait until every row appended so far is committed."""
        if self._waiters:
            await asyncio.gather(*(f for _, f, _ in self._waiters))

    async def close(self) -> None:
        """Commit what is pending, then close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._full.set()
        self._wake.set()
        if self._writer is not None:
            try:
                await self._writer
            finally:
                self._writer = None
        try:
            await self._db.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failed else self.durability)
        return (f"<Journal {self.path.name}: {state}, seq {self.last_seq}, {self.pending} pending, "
                f"{self.batches} batches>")
