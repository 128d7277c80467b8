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
import contextlib
import functools
import logging
import os
import shutil
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import crc32c
import orjson

from livecart.core.catalogue import Catalogue
from livecart.core.dedupe import ChunkKeys, key_hash, key_lines, key_text
from livecart.core.errors import ForeignDatabase, JournalDamaged, JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Outcome
from livecart.store.base import settled_early
from livecart.store.codec import (
    COMMENT,
    SNAPSHOT_VERSION,
    Entry,
    Header,
    Refusals,
    Row,
    catalogue_from_json,
    catalogue_json,
    paused_gc,
    rebuild_entries,
    resume,
    snapshot_parts,
    snapshot_report,
)
from livecart.store.lock import JournalLock, hold_existing, read_holder
from livecart.store.pace import Pacer, unpaced

log = logging.getLogger("livecart.journal")
_T = TypeVar("_T")

APPLICATION_ID = 0x4C564354  # "LVCT"
#: The journal format this livecart writes: 2 added batch checksums and snapshots (1 still opens).
SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"
#: WAL pages after which a commit checkpoints (SQLite's default is 1,000; see the module docstring).
WAL_CHECKPOINT_PAGES = 256

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE batches (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, ts REAL NOT NULL, body BLOB NOT NULL,
                      crc INTEGER);
CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, version INTEGER NOT NULL, crc INTEGER NOT NULL,
                        body BLOB NOT NULL);
CREATE TABLE dedupe_keys (no INTEGER NOT NULL, bucket INTEGER NOT NULL, keys TEXT NOT NULL);
CREATE UNIQUE INDEX dedupe_at ON dedupe_keys (no, bucket);
CREATE TABLE snapshot_pieces (seq INTEGER NOT NULL, no INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (seq, no));
CREATE VIEW events (seq, ts, kind, body) AS
    SELECT json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'), json_extract(e.value, '$[2]'),
           CAST(json_extract(e.value, '$[3]') AS BLOB)
    FROM batches, json_each(batches.body) AS e;
"""

# What a journal of schema 1 (before checksums and snapshots) needs to become schema 2. Its batches keep a
# NULL crc: nothing can vouch for them now, and the chain starts again (from 0) after them.
_MIGRATE_1_TO_2 = """
ALTER TABLE batches ADD COLUMN crc INTEGER;
CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, version INTEGER NOT NULL,
                                      crc INTEGER NOT NULL, body BLOB NOT NULL);
UPDATE meta SET value = '2' WHERE key = 'schema';
"""

# Inserts the batch only if the batch before it is the last one in the file: with two transactions queued
# at once (see SqliteStore._write_loop), one that follows a failed one must not leave a hole behind it.
_INSERT = ("INSERT INTO batches (first, last, ts, body, crc) SELECT ?, ?, ?, ?, ? "
           "WHERE coalesce((SELECT last FROM batches ORDER BY first DESC LIMIT 1), 0) = ?")

# Rows of ~1-2 KB: a rowid table packs them (a WITHOUT ROWID table, clustered on its key, left its pages a
# third full); the index finds a (chunk, bucket).
_DEDUPE_TABLE = ("CREATE TABLE IF NOT EXISTS dedupe_keys (no INTEGER NOT NULL, bucket INTEGER NOT NULL, "
                 "keys TEXT NOT NULL); CREATE UNIQUE INDEX IF NOT EXISTS dedupe_at ON dedupe_keys (no, bucket)")
# A snapshot of format 7 or later is stored in pieces (see SqliteStore._write_snapshot): the first in the
# snapshots row, the others here. Journals of format 2 written before it lack the table; a writer adds it.
_PIECES_TABLE = ("CREATE TABLE IF NOT EXISTS snapshot_pieces (seq INTEGER NOT NULL, no INTEGER NOT NULL, "
                 "body BLOB NOT NULL, PRIMARY KEY (seq, no))")
#: Bytes of one piece of a snapshot, each written in its own transaction: the journal's commits wait for one
#: piece at most (a 7.9 MB snapshot written in one transaction held them for 55 ms; at 1 MB a piece, a flash
#: sale's p99 per frame was 8.5-11.3 ms against 6.0-7.8 at 256 KB).
SNAPSHOT_PIECE = 1 << 18
_PUT_PIECE = "INSERT INTO snapshot_pieces (seq, no, body) VALUES (?, ?, ?)"
#: Seconds after the last append during which a store's background work is paced (see SqliteStore._pacer).
PACE_IDLE = 0.1
#: Parts of a snapshot's body this long or longer are pieces of their own, not copied (_encode_snapshot).
_OWN_PIECE = 1 << 16
#: The first snapshot format stored in pieces.
_PIECED = 7
#: Buckets of one index chunk (a key's bucket is the low bits of its CRC-32); bucket -1 holds the chunk's
#: first and last event and is written last, so a chunk with bucket -1 is whole (a chunk without it is
#: dropped and written again when the journal is opened: see :meth:`SqliteStore.attach`).
DEDUPE_BUCKETS = 1024
#: Buckets written per statement (its own transaction). The journal's commits share the connection's one
#: thread, in order, so they wait for at most one slice: a whole chunk (65,536 ids, ~2.9 MB) in one
#: statement took 18-42 ms alone and up to 150 ms beside a busy event loop, a stall of every commit behind it
#: once every 1.3 s at 50,000 comments/s (issue #17).
DEDUPE_SLICE = 32


@functools.cache
def _insert_rows(n: int) -> str:
    """The statement that writes ``n`` rows of the index (no, bucket, keys): bound as plain values, so the
    keys' text goes to SQLite as it is (a JSON object per slice cost an escape of every key's separators
    here and a parse of all of it on the writer's thread)."""
    return "INSERT OR REPLACE INTO dedupe_keys (no, bucket, keys) VALUES " + ", ".join(["(?, ?, ?)"] * n)
# Whether any row of chunks 0..n-1 in the key's bucket holds it: one seek per chunk, all in SQLite.
# Chunks lo up to hi - 1, oldest first: a replay sent again from its start (a restarted `replay` adapter)
# finds each old key a few chunks in; a false positive is asked of them all either way.
_LOOKUP = ("WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x + 1 < ?) "
           "SELECT 1 FROM c JOIN dedupe_keys ON no = c.x AND bucket = ? WHERE instr(keys, ?) > 0 LIMIT 1")

#: The adapters' positions in ``meta`` (keys ``position:<name>``; ``;`` follows ``:``), and how often kept ones
#: are written (seconds): a position lags the journal by about that, so a restart after a ``kill -9`` sends
#: again about that much of a source, recognised by id in the window of recent ids.
_POSITIONS = "SELECT substr(key, 10), value FROM meta WHERE key >= 'position:' AND key < 'position;'"
POSITION_EVERY = 1.0

_WHAT_TO_DO = ("`livecart journal verify {p}` shows every problem; `livecart journal repair {p}` keeps a backup "
               "copy and cuts the journal back to its last good batch")


def _chunk_slices(no: int, first: int, last: int, keys: Iterable[tuple[str, int]],
                  pause: Callable[[], None] = unpaced) -> list[list[Any]]:
    """Index chunk ``no`` as the parameters of one :func:`_insert_rows` statement per :data:`DEDUPE_SLICE`
    buckets: (no, bucket, its keys one a line) of each bucket in the slice, flat (a key's bucket is the low
    bits of its :func:`~livecart.core.dedupe.key_hash`). The last slice holds bucket -1 too, the chunk's
    first and last event. ``pause`` is called every few thousand keys (:class:`~livecart.store.pace.Pacer`)."""
    lines = (keys.lines(DEDUPE_BUCKETS, pause) if isinstance(keys, ChunkKeys)
             else key_lines(keys, DEDUPE_BUCKETS, pause))
    out: list[list[Any]] = []
    for start in range(0, DEDUPE_BUCKETS, DEDUPE_SLICE):
        part: list[Any] = []
        for b in range(start, start + DEDUPE_SLICE):
            text = lines.get(b)
            if text is not None:
                part += (no, b, text)
        if start + DEDUPE_SLICE >= DEDUPE_BUCKETS:
            part += (no, -1, f"{first} {last}")
        if part:
            out.append(part)
    return out


def _decode_positions(p: Path, rows: Iterable[Any]) -> dict[str, Any]:
    """The adapters' positions from their ``meta`` rows; one that is not JSON is left out, with a warning."""
    out: dict[str, Any] = {}
    for name, text in rows:
        try:
            out[str(name)] = orjson.loads(text)
        except (orjson.JSONDecodeError, TypeError):
            log.warning("journal %s: the kept position of adapter %s is not JSON (%r); it goes on from its "
                        "start", p, name, str(text)[:80])
    return out


def _timed_insert(con: sqlite3.Connection, params: tuple[Any, ...]) -> tuple[int, float, float, int]:
    """:data:`_INSERT` on the writer's thread, with when it started and ended there (for the trace)."""
    t0 = time.perf_counter()
    n = con.execute(_INSERT, params).rowcount
    return n, t0, time.perf_counter(), threading.get_native_id()


def _encode_snapshot(seq: int, state: dict[str, Any],
                     pause: Callable[[], None] = unpaced) -> tuple[int, int, list[bytes | memoryview]]:
    """The snapshot of ``state`` at ``seq`` as stored: the checksum of its body (what :func:`_snapshot_crc`
    gives for it), its size, and the body in pieces of at most :data:`SNAPSHOT_PIECE` bytes. A part of the
    body of :data:`_OWN_PIECE` bytes or more is a piece of its own (cut into views where it is longer than a
    piece), never copied; only runs of smaller parts are joined (joining the parts into pieces of exactly
    1 MB copied the body's JSON: +15 MB of peak memory at 10M comments). Safe to call on a worker thread;
    ``pause`` is called between steps of the encoding (:class:`~livecart.store.pace.Pacer`)."""
    parts = snapshot_parts(state, pause)
    crc = _pieces_crc(seq, SNAPSHOT_VERSION, parts)
    pieces: list[bytes | memoryview] = []
    held: list[memoryview] = []
    n = size = 0
    own = min(_OWN_PIECE, SNAPSHOT_PIECE)
    for part in parts:
        view = memoryview(part).cast("B")
        size += len(view)
        if held and (len(view) >= own or n + len(view) > SNAPSHOT_PIECE):
            pieces.append(b"".join(held))
            held, n = [], 0
        if len(view) >= own:
            pieces += [view[i:i + SNAPSHOT_PIECE] for i in range(0, len(view), SNAPSHOT_PIECE)]
        else:
            held.append(view)
            n += len(view)
    if held or not pieces:
        pieces.append(b"".join(held))
    return crc, size, pieces


#: What a batch read for a replay becomes once decoded (see SqliteStore._decoded).
_READ = (0, 0, 0, b"")
#: Entries a replay decodes at a time (SqliteStore._decoded). Decoding the whole tail first is the fastest
#: and takes the most memory; one batch at a time the least, but the replay was 30-50 % slower (251,000
#: events: 1.3-1.5 s whole, 2.0-2.2 s a batch at a time, 1.6-1.7 s 32,768 at a time).
DECODE_GROUP = 32768


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)`` with when it started and ended (on whichever thread runs it; for the trace)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, t0, time.perf_counter()


def batch_crc(first: int, last: int, body: bytes, prev: int) -> int:
    """The checksum of one batch, chained to the one before (``prev``; 0 for the first batch, or after a
    batch written before checksums). CRC-32C over the batch's seq range and its body, so a batch moved,
    dropped or edited breaks the chain at that batch."""
    return crc32c.crc32c(body, crc32c.crc32c(_RANGE.pack(first, last), prev))


_RANGE = struct.Struct("<qq")


def _carried_report(body: bytes | bytearray) -> dict[str, Any] | None:
    """The report a snapshot body carries; None when it carries none (written before snapshots did) or cannot
    be decoded (then restoring it fails too, and is passed over as a damaged snapshot is)."""
    with paused_gc():
        try:
            return snapshot_report(body)
        except orjson.JSONDecodeError:
            return None


#: Bytes a reader of the sale part alone checks at a time (see SqliteStore._read_snapshot).
_READ_SLICE = 1 << 20


def _body_slices(con: sqlite3.Connection, seq: int, pieced: bool) -> Iterator[bytes]:
    """The body of the snapshot at ``seq`` in order, a slice at a time: ``_READ_SLICE`` bytes of the row's
    body at a time, then (``pieced``: format 7 on) each of its other pieces. Inside the caller's read
    transaction."""
    with con.blobopen("snapshots", "body", seq, readonly=True) as blob:
        while piece := blob.read(_READ_SLICE):
            yield piece
    if pieced:
        for (piece,) in con.execute("SELECT body FROM snapshot_pieces WHERE seq = ? ORDER BY no", (seq,)):
            yield bytes(piece)


def _snapshot_crc(seq: int, version: int, body: bytes | bytearray) -> int:
    return _pieces_crc(seq, version, (body,))


def _pieces_crc(seq: int, version: int, pieces: Iterable[bytes | bytearray | memoryview]) -> int:
    """:func:`_snapshot_crc` of the body that ``pieces`` make, one after the other, without joining them."""
    crc = crc32c.crc32c(_RANGE.pack(seq, version))
    for piece in pieces:
        crc = crc32c.crc32c(piece, crc)
    return crc


class Chain:
    """Checks batches, read in file order, against their chained checksums and against each other's seq
    ranges. Raises :class:`JournalDamaged` naming the first bad batch and what to do."""

    def __init__(self, path: Path, *, prev_crc: int = 0, prev_last: int | None = None, number: int = 0) -> None:
        self.path = path
        self.crc = prev_crc
        self.last = prev_last  # None: the first batch read may start anywhere (a tail)
        self.number = number  # batches passed so far (the next one is number + 1)

    def check(self, first: int, last: int, body: bytes | str, crc: int | None) -> None:
        n = self.number + 1
        if not isinstance(body, bytes):  # someone stored text where livecart stores a blob: checked as its bytes
            body = str(body).encode()
        if (self.last is not None and first != self.last + 1) or last < first:
            raise JournalDamaged(
                f"{self.path}: batch {n} holds events {first}-{last}, but the batch before it ended at event "
                f"{self.last}: events are missing or repeated. " + _WHAT_TO_DO.format(p=self.path), n, first)
        if crc is None:
            self.crc = 0  # written before checksums: nothing to compare, the chain starts again after it
        else:
            want = batch_crc(first, last, body, self.crc)
            if want != crc:
                raise JournalDamaged(
                    f"{self.path}: batch {n} (events {first}-{last}) fails its checksum: it was changed after "
                    "it was written, or the disk damaged it. " + _WHAT_TO_DO.format(p=self.path), n, first)
            self.crc = crc
        self.last = last
        self.number = n


def _wal_problem(path: Path) -> str | None:
    """Why the WAL file beside ``path`` cannot be whole, or None. SQLite writes it in whole frames (a 32-byte
    header, then frames of 24 bytes + one page); a size between them means it was cut (a copy interrupted, a
    disk that lost its tail), and SQLite would silently drop the commits in the cut part."""
    wal = Path(str(path) + "-wal")
    try:
        size = wal.stat().st_size
        if size == 0:
            return None
        with open(wal, "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read {wal}: {exc.strerror or exc}"
    if len(head) < 32 or head[:4] not in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83"):
        return f"{wal} is not a whole SQLite WAL file ({size} bytes)"
    page = int.from_bytes(head[8:12], "big")
    if page < 512 or ((size - 32) % (page + 24) and not _torn_after_commit(path, head, size, page)):
        return f"{wal} is cut short: {size} bytes is not a whole number of {page + 24}-byte frames"
    return None


def _torn_after_commit(path: Path, head: bytes, size: int, page: int) -> bool:
    """Whether a WAL that ends in part of a frame was torn by its writer's death, past its last commit. A
    ``kill -9`` can stop a write between two pages of the page cache (a snapshot's blob spills frames into the
    WAL before its commit), and SQLite then drops the frames after the last commit, as after any crash: nothing
    committed is lost. The wal-index the writer leaves beside it (``-shm``) says where that commit is: both
    copies of its header agree, it is of this WAL (same salts), and its last committed frame is whole. A copy
    cut short has no index, or one whose last commit lies past the cut."""
    try:
        with open(str(path) + "-shm", "rb") as f:
            idx = f.read(96)
    except OSError:
        return False
    if len(idx) < 96 or idx[:48] != idx[48:] or idx[12] != 1 or idx[32:40] != head[16:24]:
        return False
    committed = int.from_bytes(idx[16:20], sys.byteorder)  # mxFrame, in the host's byte order
    return 32 + committed * (page + 24) <= size


def _writer_alive(path: Path) -> bool:
    """Whether a writer holds the journal now (a reader then leaves its WAL alone: it is being written).

    Read from what the holder wrote into the lock file, not by trying the lock: a reader that took the lock
    even for a moment could make a daemon starting at that instant fail as if a second writer ran."""
    pid = read_holder(path).get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # a writer killed with -9 leaves its lock file filled in; the lock itself is gone
    except PermissionError:
        return True
    return True


def _check_file(path: Path, *, check_wal: bool = True) -> bool:
    """Whether a journal exists at ``path``. Refuses, before SQLite touches it, a file that is not SQLite, an
    empty file, and (``check_wal``) a WAL file cut short.

    An empty file is never a journal livecart left behind (a journal is created under another name and
    renamed into place once it has its header), so it means the history was lost: refused, not restarted."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path}: {exc.strerror or exc}") from exc
    if not head:
        raise JournalDamaged(f"{path} is empty (0 bytes): a livecart journal never is, so its history was lost "
                             "(a failed copy or restore?). It was left untouched. Restore it from a backup, or "
                             "delete it to start a new sale.")
    if head != SQLITE_MAGIC:
        raise ForeignDatabase(f"{path} is not a livecart journal (not an SQLite database); "
                              "it was left untouched; set [storage] path to another file")
    if check_wal:
        problem = _wal_problem(path)
        if problem is not None:
            raise JournalDamaged(f"{problem}; the commits in it may be lost. It was left untouched. "
                                 + _WHAT_TO_DO.format(p=path))
    return True


def _create(path: Path, catalogue: Catalogue, hold_seconds: float, featured: str | None, created: float,
            recent: int = 0) -> None:
    """Write a new, empty journal at ``path``: built under a temporary name and renamed into place, so no
    crash leaves an empty or half-made file at ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript("BEGIN;" + _SCHEMA + f"PRAGMA application_id={APPLICATION_ID};COMMIT;")
        meta = {"app": "livecart", "schema": str(SCHEMA_VERSION), "catalogue": catalogue_json(catalogue),
                "hold_seconds": repr(float(hold_seconds)), "featured": featured or "", "created": repr(created),
                "dedupe_recent": str(int(recent))}
        con.execute("BEGIN")
        con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        con.execute("COMMIT")
    finally:
        con.close()  # the last connection: the WAL is checkpointed into the file and removed
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


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
        self._appended_at = -1e9  # time.monotonic() of the last append
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closed = False
        self._lock: JournalLock | None = None
        self._crc = 0  # checksum of the last batch handed to the connection (the chain's head)
        self.schema = SCHEMA_VERSION
        self._snapshot: asyncio.Task[None] | None = None
        self.snapshots_written = 0
        self.snapshot_failures = 0
        self.snapshot_fallbacks = 0
        self.last_snapshot_seconds = 0.0
        self.last_snapshot_seq = 0
        self.last_snapshot_at = 0.0  # epoch seconds it was written (0: none by this process)
        self.last_snapshot_bytes = 0
        self.rebuilt_from = (0, 0)
        self.batches = 0
        self.rows_written = 0
        self.last_batch_seconds = 0.0
        self.batch_seconds_total = 0.0
        self.largest_batch = 0
        self._reader: sqlite3.Connection | None = None  # answers the duplicate-id lookups (see attach)
        self._index_top = 0  # index chunks 0.._index_top-1 may be in the file
        self.index_chunks = 0
        self.index_failures = 0
        self.lookups = 0
        self._index_tasks: set[asyncio.Task[None]] = set()
        #: The adapters' positions as the journal was opened (:meth:`positions`), those kept since and not yet
        #: written, and the task that writes them.
        self._positions: dict[str, Any] = {}
        self._kept: dict[str, bytes] = {}
        self._kept_task: asyncio.Task[None] | None = None
        self.positions_written = 0
        self.position_failures = 0
        #: Set by the daemon's latency trace (livecart.runtime.trace): called with each transaction's timings,
        #: and with the background work on worker threads and on the writer's connection.
        self.on_commit: Callable[[int, int, float, float, float, float, float, int], None] | None = None
        self.on_work: Callable[[str, float, float], None] | None = None

    @classmethod
    async def open(cls, path: str | Path, *, catalogue: Catalogue | None = None, hold_seconds: float = 0.0,
                   featured: str | None = None, durability: str = "fsync", batch_max: int = 2048,
                   batch_delay: float = 0.002, readonly: bool = False, clock: Callable[[], float] = time.time,
                   lock: JournalLock | None = None, recent: int = 0) -> SqliteStore:
        """Open the journal at ``path``.

        Read-write takes the journal's writer lock (:mod:`livecart.store.lock`) before it touches anything,
        unless the caller holds it already and passes it as ``lock`` (the daemon, which takes it first of
        all); another writer raises :class:`~livecart.core.errors.JournalLocked`. A lock taken here is
        released by :meth:`close`; a lock passed in stays the caller's.

        Read-write (the default) creates the file when it does not exist, and then needs ``catalogue``;
        when it exists, ``catalogue`` and ``hold_seconds`` must match what it was started with (else
        :class:`JournalError`). ``readonly`` never creates or writes: a missing file is a
        :class:`JournalError`. A file that is not a livecart journal raises :class:`ForeignDatabase`.
        ``recent`` is the duplicate-id window (:mod:`livecart.core.dedupe`) a new journal is started with; a
        journal keeps the one it was started with.
        """
        if durability not in ("fsync", "os"):
            raise JournalError(f"durability must be 'fsync' or 'os', got {durability!r}")
        p = Path(path)
        own_lock = None
        if not readonly and lock is None:
            own_lock = lock = JournalLock.acquire(p, purpose="writer")
        try:
            # The file itself too, before SQLite opens it (through a hard link SQLite would use a WAL of
            # another name): a hard link is the same journal by another name. A new file is held once made.
            if lock is not None and not readonly:
                hold_existing(lock, p)
            j = await cls._open(p, catalogue, hold_seconds, featured, durability, batch_max, batch_delay, readonly,
                                clock, recent)
        except BaseException:
            if own_lock is not None:
                own_lock.release()
            raise
        if lock is not None and not readonly:
            try:
                lock.hold_file(p)
            except BaseException:
                await j.close()
                if own_lock is not None:
                    own_lock.release()
                raise
        j._lock = own_lock
        return j

    @classmethod
    async def _open(cls, p: Path, catalogue: Catalogue | None, hold_seconds: float, featured: str | None,
                    durability: str, batch_max: int, batch_delay: float, readonly: bool,
                    clock: Callable[[], float], recent: int = 0) -> SqliteStore:
        # A reader leaves the WAL of a running writer alone: it may be mid-write.
        exists = _check_file(p, check_wal=not readonly or not _writer_alive(p))
        if readonly and not exists:
            raise JournalError(f"no journal at {p} (has the stream run yet?)")
        if not exists:
            if catalogue is None:
                raise JournalError(f"no journal at {p} and no catalogue to start one with")
            try:
                _create(p, catalogue, hold_seconds, featured, clock(), recent)
            except (OSError, sqlite3.Error) as exc:
                raise JournalError(f"cannot create the journal {p}: {exc}") from exc
        uri = f"file:{p}?mode={'ro' if readonly else 'rw'}"
        try:
            db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {p}: {exc}") from exc
        try:
            header, last, schema = await cls._prepare(db, p, catalogue, hold_seconds, durability, readonly)
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise ForeignDatabase(f"{p} is damaged or not a livecart journal ({exc}); it was left untouched"
                                  ) from exc
        except BaseException:
            await db.close()
            raise
        j = cls(db, p, header, durability=durability, batch_max=batch_max, batch_delay=batch_delay,
                last_seq=last, readonly=readonly)
        j.schema = schema
        async with db.execute(_POSITIONS) as cur:
            j._positions = _decode_positions(p, await cur.fetchall())
        if not readonly:
            async with db.execute("SELECT crc FROM batches ORDER BY first DESC LIMIT 1") as cur:
                row = await cur.fetchone()
            j._crc = int(row[0]) if row and row[0] is not None else 0
        if not readonly:
            j._writer = asyncio.get_running_loop().create_task(j._write_loop(), name="journal-writer")
        return j

    @staticmethod
    async def _prepare(db: aiosqlite.Connection, p: Path, catalogue: Catalogue | None, hold_seconds: float,
                       durability: str, readonly: bool) -> tuple[Header, int, int]:
        async with db.execute("PRAGMA application_id") as cur:
            row = await cur.fetchone()
        app_id = int(row[0]) if row else 0
        if app_id != APPLICATION_ID:
            raise ForeignDatabase(
                f"{p} is an SQLite database of another application (application_id={app_id:#x}), not a "
                "livecart journal; it was left untouched; set [storage] path to another file")
        async with db.execute("SELECT key, value FROM meta") as cur:
            meta = {str(k): str(v) for k, v in await cur.fetchall()}
        if meta.get("app") != "livecart":
            raise ForeignDatabase(f"{p} carries livecart's application id but no livecart meta table; "
                                  "it was left untouched")
        try:
            schema = int(meta.get("schema", ""))
        except ValueError:
            raise ForeignDatabase(f"{p} has no readable format version (meta schema = "
                                  f"{meta.get('schema')!r}); it was left untouched") from None
        if schema > SCHEMA_VERSION:
            raise JournalError(f"{p} was written by a newer livecart (journal format {schema}; this livecart reads "
                               f"formats 1 to {SCHEMA_VERSION}). It was left untouched: upgrade livecart to "
                               "open it.")
        if schema < 1:
            raise ForeignDatabase(f"{p} has an unknown journal format {schema}; it was left untouched")
        if schema == 1 and not readonly:
            # Upgraded in place, in one transaction: the old batches stay as they are, new ones carry checksums.
            await db.executescript("BEGIN;" + _MIGRATE_1_TO_2 + "COMMIT;")
            log.info("journal %s: upgraded from format 1 to %d (checksums and snapshots from here on)", p,
                     SCHEMA_VERSION)
            schema = SCHEMA_VERSION
        header = Header(catalogue_from_json(meta["catalogue"]), meta["catalogue"], float(meta["hold_seconds"]),
                        meta["featured"] or None, float(meta["created"]), int(meta.get("dedupe_recent") or 0))
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
            await db.executescript(_DEDUPE_TABLE)  # journals of format 2 written before the index lack it
            await db.execute(_PIECES_TABLE)
            # The pieces of a snapshot whose last transaction a crash (or a failed write) never made.
            await db.execute("DELETE FROM snapshot_pieces WHERE seq NOT IN (SELECT seq FROM snapshots)")
        # The last batch's (batches follow one another: _INSERT appends after the last one only). max(last) read
        # every batch's row: 0.2 s at 10M comments with the file not in the page cache (after a machine's
        # restart), against 0.001 s so.
        async with db.execute("SELECT last FROM batches ORDER BY first DESC LIMIT 1") as cur:
            row = await cur.fetchone()
        return header, int(row[0]) if row else 0, schema

    @property
    def where(self) -> str:
        return str(self.path)

    async def entries(self, after: int = 0, chunk: int = 64) -> list[Entry]:
        """Every committed entry with ``seq > after``, decoded, in ``seq`` order. Every batch read is checked
        against its chained checksum (:class:`Chain`); a bad one raises :class:`JournalDamaged`."""
        return list(self._decoded(await self._batches(after, chunk), after))

    async def _batches(self, after: int = 0, chunk: int = 64) -> list[tuple[int, int, int, bytes]]:
        """The committed batches that hold entries with ``seq > after``, each checked against its chained
        checksum (:class:`Chain`; a bad one raises :class:`JournalDamaged`), as (batch number, first event,
        last event, body), not yet decoded: :meth:`_decoded` decodes them a group at a time."""
        out: list[tuple[int, int, int, bytes]] = []
        chain = await self._chain_before(after)
        crc_col = "crc" if self.schema >= 2 else "NULL"
        try:
            # From the batch that holds event after + 1 (a seek by rowid), not a scan of every batch's row.
            async with self._db.execute(f"SELECT first, last, body, {crc_col} FROM batches WHERE first >= "
                                        "coalesce((SELECT max(first) FROM batches WHERE first <= ?1), 0) "
                                        "AND last > ?1 ORDER BY first", (after,)) as cur:
                while True:
                    part = await cur.fetchmany(chunk)
                    if not part:
                        break
                    for first, last, body, crc in part:
                        chain.check(first, last, body, crc)
                        out.append((chain.number, first, last, body))
        except sqlite3.DatabaseError as exc:
            raise JournalDamaged(f"{self.path} is damaged ({exc}). " + _WHAT_TO_DO.format(p=self.path)) from exc
        if chain.last is not None and after == 0 and out and out[0][1] != 1:
            raise JournalDamaged(f"{self.path}: the first batch starts at event {out[0][1]}, not 1. "
                                 + _WHAT_TO_DO.format(p=self.path), 1, out[0][1])
        return out

    def _decoded(self, batches: list[tuple[int, int, int, bytes]], after: int,
                 counted: list[int] | None = None) -> Iterator[Entry]:
        """The entries with ``seq > after`` of ``batches`` (from :meth:`_batches`), decoded
        :data:`DECODE_GROUP` entries or so at a time, each batch let go of once decoded: a replay holds its tail
        as JSON (~130 bytes an event) and one group decoded (~700 bytes an event), not the whole tail decoded (a
        restart after a ``kill -9`` with 251,000 events to replay peaked at 310 MB, against the live run's
        140). ``counted[0]`` counts the entries given. Raises :class:`JournalDamaged` for a batch that cannot be
        decoded."""
        group: list[Entry] = []
        for i, (number, first, last, body) in enumerate(batches):
            batches[i] = _READ  # decoded: its body can go
            try:
                group += [(int(s), float(t), str(k), d) for s, t, k, d in orjson.loads(body) if s > after]
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                raise JournalDamaged(f"{self.path}: batch {number} (events {first}-{last}) cannot be read "
                                     f"({exc}). " + _WHAT_TO_DO.format(p=self.path), number, first) from exc
            del body
            if len(group) >= DECODE_GROUP or i == len(batches) - 1:
                if counted is not None:
                    counted[0] += len(group)
                yield from group
                group = []

    async def _chain_before(self, after: int) -> Chain:
        """A :class:`Chain` positioned after the batches that end at or before ``after``."""
        if after <= 0:
            return Chain(self.path, prev_last=0)
        crc_col = "crc" if self.schema >= 2 else "NULL"
        async with self._db.execute(f"SELECT last, {crc_col} FROM batches WHERE last <= ? ORDER BY first DESC "
                                    "LIMIT 1", (after,)) as cur:
            row = await cur.fetchone()
        async with self._db.execute("SELECT count(*) FROM batches WHERE last <= ?", (after,)) as cur:
            n = await cur.fetchone()
        if row is None:
            return Chain(self.path, prev_last=None, number=0)
        return Chain(self.path, prev_crc=int(row[1] or 0), prev_last=int(row[0]), number=int(n[0]) if n else 0)

    async def rows(self) -> list[Row]:
        """Every committed entry as a row with JSON bytes, in ``seq`` order (as the ``events`` view)."""
        return [(s, t, k, orjson.dumps(d)) for s, t, k, d in await self.entries()]

    async def rebuild(self, *, on_outcomes: Callable[[list[Outcome]], None] | None = None,
                      refusals: Refusals | None = None) -> Ledger:
        """The ledger the journal gives: its latest snapshot (checked) plus the entries after it (checked).

        A snapshot that fails its checksum or cannot be restored is passed over with a logged warning (counted
        in :attr:`snapshot_fallbacks`): the one before it is tried, then a full replay. Snapshots only save
        time; the entries are what holds the sale.

        With ``refusals``, the refusals of the entries after ``refusals.after`` are kept in it: when the
        latest snapshot holds entries after that time, the one before it is started from instead (the journal
        keeps two), replaying more; a refusal older than both snapshots is not kept (said in the log)."""
        ledger = await self._restore(on_outcomes, report=False, refusals=refusals)
        assert isinstance(ledger, Ledger)
        return ledger

    async def report(self) -> dict[str, Any]:
        """The journal's report (:meth:`Ledger.snapshot`'s shape): what its latest snapshot carries when no
        event follows it and it passes its checksum (a sale that has ended: no ledger is restored), else the
        report of :meth:`rebuild`'s ledger."""
        got = await self._restore(None, report=True)
        return got if isinstance(got, dict) else got.snapshot()

    async def _restore(self, on_outcomes: Callable[[list[Outcome]], None] | None, *,
                       report: bool, refusals: Refusals | None = None) -> Ledger | dict[str, Any]:
        """:meth:`rebuild`; with ``report``, the report the latest snapshot carries instead when it is at the
        last event (each snapshot's body is read once either way)."""
        try:
            async with contextlib.aclosing(self._snapshots()) as snapshots:
                async for seq, version, body, older in snapshots:
                    if refusals is not None and older and await self._after(seq, refusals.after):
                        continue  # it holds refusals to tell again: the one before it gives them
                    if version > SNAPSHOT_VERSION:
                        raise JournalError(f"{self.path}: the snapshot at event {seq} has format {version}; "
                                           f"this livecart reads up to {SNAPSHOT_VERSION}: upgrade livecart")
                    if body is None:
                        self._fall_back(seq, "it fails its checksum")
                        continue
                    if report and seq == self.last_seq:
                        carried = _carried_report(body)
                        if carried is not None:
                            self.rebuilt_from = (seq, 0)
                            return carried
                    if refusals is not None and await self._after(seq, refusals.after):
                        refusals.covered = False
                        log.warning("journal %s: the replies' progress (%.3f) is before both of the journal's "
                                    "snapshots: refusals decided between it and event %d, if any, are not "
                                    "told again, and orders changed then are told from when they were made",
                                    self.path, refusals.after, seq)
                    replayed = [0]
                    tail = self._decoded(await self._batches(after=seq), seq, replayed)
                    try:
                        ledger = resume(self.header, version, body, tail, on_outcomes=on_outcomes,
                                        dedupe=not self.readonly, refusals=refusals)
                    except JournalDamaged:
                        raise  # a batch of the tail, not the snapshot: no older snapshot has a better one
                    except JournalError as exc:
                        if on_outcomes is not None:
                            raise  # outcomes were passed on already: a second replay would repeat them
                        self._fall_back(seq, str(exc))
                        continue
                    self.rebuilt_from = (seq, replayed[0])
                    return ledger
            replayed = [0]
            ledger = rebuild_entries(self.header, self._decoded(await self._batches(), 0, replayed),
                                     on_outcomes=on_outcomes, refusals=refusals)
            self.rebuilt_from = (0, replayed[0])
            return ledger
        except sqlite3.DatabaseError as exc:
            raise ForeignDatabase(f"{self.path} is damaged ({exc})") from exc

    def _fall_back(self, seq: int, why: str) -> None:
        self.snapshot_fallbacks += 1
        log.warning("journal %s: the snapshot at event %d is not used (%s); starting from the one before it, or "
                    "from the first event. `livecart journal repair %s` drops it", self.path, seq, why, self.path)

    async def _snapshots(self) -> AsyncGenerator[tuple[int, int, bytes | bytearray | None, bool], None]:
        """The snapshots within the durable events, newest first: (seq, version, body; None when it fails its
        checksum, whether an older one follows). Each body is read when the one before it was not good
        enough."""
        if self.schema < 2:
            return
        async with self._db.execute("SELECT seq FROM snapshots WHERE seq <= ? ORDER BY seq DESC",
                                    (self.last_seq,)) as cur:
            seqs = [int(r[0]) for r in await cur.fetchall()]
        for i, seq in enumerate(seqs):
            got = await self._on_db_thread(self._read_snapshot, seq, self.readonly)
            if got is None:
                continue  # a writer beside this reader dropped it meanwhile
            version, good, body = got
            yield seq, version, body if good else None, i + 1 < len(seqs)

    async def _after(self, seq: int, t: float) -> bool:
        """Whether entry ``seq`` (so perhaps one before it) was made after ``t`` (the ledger's clock); True too
        when its batch cannot be read (the replay that follows says why)."""
        async with self._db.execute("SELECT body FROM batches WHERE first <= ?1 AND last >= ?1", (seq,)) as cur:
            row = await cur.fetchone()
        try:
            return bool(row is None or next(float(e[1]) for e in orjson.loads(row[0]) if e[0] == seq) > t)
        except (orjson.JSONDecodeError, StopIteration, TypeError, ValueError, IndexError):
            return True

    async def _on_db_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the connection's thread, queued behind what was asked of it before (aiosqlite runs
        every call that way; its ``_execute`` is how: the blob I/O of :mod:`sqlite3` has no aiosqlite method)."""
        result: _T = await self._db._execute(fn, *args)  # type: ignore[no-untyped-call]
        return result

    async def _in_turn_on_db_thread(self, steps: Sequence[Callable[[], object]]) -> bool:
        """Run ``steps`` in order on the connection's thread, each as its own call (its own transaction), with no
        trip to the event loop between two of them: after a step, the next runs at once unless other work is
        queued for the thread (a batch's commit), and then it is queued behind that work. So background work in
        many small transactions (a snapshot's pieces, an index chunk's slices) holds a commit up by one step at
        most, as before, but no longer waits for the event loop between steps. The event loop of a busy sale
        takes each result only between two batches' decisions (10-20 ms apart at 60,000 comments/s on a 2-core
        machine), so a snapshot of 48 pieces written one ``await`` a piece took 0.8-1.1 s, and a ``kill -9``
        then found up to ~100,000 more events since the last whole snapshot to replay at the restart. Returns
        False if the journal failed meanwhile (the steps not yet run are not run); raises what a step raised."""
        if not steps:
            return True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        tx = self._db._tx  # aiosqlite's queue of calls for its thread (0.20 on): (future, function) pairs

        def settle(value: bool | BaseException) -> None:
            if done.done():
                return
            if isinstance(value, BaseException):
                done.set_exception(value)
            else:
                done.set_result(value)

        def run(at: int) -> None:  # on the connection's thread
            try:
                while at < len(steps):
                    if self._failed is not None:
                        loop.call_soon_threadsafe(settle, False)
                        return
                    steps[at]()
                    at += 1
                    if at < len(steps) and not tx.empty():
                        # aiosqlite sets the future of each call it runs; this one is nobody's to await.
                        tx.put_nowait((loop.create_future(), functools.partial(run, at)))
                        return
                loop.call_soon_threadsafe(settle, True)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, not lost
                loop.call_soon_threadsafe(settle, exc)

        await self._on_db_thread(run, 0)
        return await done

    def _read_snapshot(self, seq: int, sale_only: bool) -> tuple[int, bool, bytes | bytearray] | None:
        """The version of the snapshot at ``seq``, whether its body passes its checksum, and the body (None:
        there is none), in one read transaction, on the connection's thread. A body of one piece (formats
        before 7) is read through SQLite's incremental blob I/O, straight from the pages into one bytes object
        (a SELECT first assembles the whole value in SQLite's memory, then Python copies it: at 10M comments
        two ~40 MB copies at once); one in pieces is read a piece at a time into one buffer of its size.

        ``sale_only`` (a reader that takes no comments: ``report``, ``export``): the body is checked whole, a
        slice at a time, but only its sale part, up to the first newline, is kept; the duplicate-id memory
        after it (~32 MB of a 42 MB body at 10M comments) is never held."""
        con = self._db._conn
        con.execute("BEGIN")
        try:
            row = con.execute("SELECT version, crc, length(body) FROM snapshots WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return None
            version, crc, first = int(row[0]), int(row[1]), int(row[2])
            pieced = version >= _PIECED
            if not sale_only:
                if not pieced:
                    with con.blobopen("snapshots", "body", seq, readonly=True) as blob:
                        body = blob.read()
                    return version, _snapshot_crc(seq, version, body) == crc, body
                (rest,) = con.execute("SELECT coalesce(sum(length(body)), 0) FROM snapshot_pieces WHERE seq = ?",
                                      (seq,)).fetchone()
                buf = bytearray(first + int(rest))
                at = 0
                for piece in _body_slices(con, seq, pieced):
                    buf[at:at + len(piece)] = piece
                    at += len(piece)
                return version, _snapshot_crc(seq, version, buf) == crc, buf
            got = crc32c.crc32c(_RANGE.pack(seq, version))
            head: list[bytes] = []
            whole = False  # the sale part is complete
            for piece in _body_slices(con, seq, pieced):
                got = crc32c.crc32c(piece, got)
                if not whole:
                    cut = piece.find(b"\n")
                    whole = cut >= 0
                    head.append(piece[:cut] if whole else piece)
            return version, got == crc, b"".join(head)
        finally:
            con.execute("COMMIT")

    # ------------------------------------------------------------------ snapshots

    async def snapshot_written(self) -> None:
        if self._snapshot is not None:
            await asyncio.gather(self._snapshot, return_exceptions=True)

    def _pacer(self) -> Pacer:
        """A :class:`~livecart.store.pace.Pacer` for one piece of background work (a snapshot's encoding, an
        index chunk's grouping): it paces the work while comments come in (an append in the last
        :data:`PACE_IDLE` seconds), and lets it run flat out otherwise (a clean stop waiting for its last
        snapshot would wait four times as long for it, with no decision to make meanwhile)."""
        return Pacer(busy=lambda: time.monotonic() - self._appended_at < PACE_IDLE)

    def checkpoint(self, seq: int, state: dict[str, Any]) -> bool:
        """Write ``state`` (the ledger at ``seq``, the last entry appended) as a snapshot row, in the background:
        encoded on a worker thread, inserted through the writer's connection once the batch holding ``seq``
        has committed (so it follows that batch in the file), in its own transaction. The two latest
        snapshots are kept. Returns False while the previous one is still being written."""
        if self._closed or self._failed is not None or self.readonly or self.schema < 2:
            return False
        if self._snapshot is not None and not self._snapshot.done():
            return False
        if seq != self._appended:
            raise ValueError(f"a snapshot must be taken at the last appended entry ({self._appended}), not {seq}")
        durable = self._waiters[-1][1] if self._waiters else None
        self._snapshot = task = asyncio.get_running_loop().create_task(self._write_snapshot(seq, state, durable),
                                                                       name="journal-snapshot")
        work = self.on_work
        if work is not None:  # encoding (on a worker thread) to the end of its insert (on the writer's connection)
            t0 = time.perf_counter()
            task.add_done_callback(lambda _: work("snapshot_write", t0, time.perf_counter()))
        return True

    async def _write_snapshot(self, seq: int, state: dict[str, Any], durable: asyncio.Future[None] | None) -> None:
        """Encode ``state`` on a worker thread, wait for the batch holding ``seq``, then write the body in pieces
        of :data:`SNAPSHOT_PIECE` bytes, each its own transaction on the writer's connection, so that a commit
        queued meanwhile waits for one piece, not for the whole body. The pieces after the first go into
        ``snapshot_pieces`` first; the last transaction inserts the ``snapshots`` row with the first piece and
        the checksum of the whole body, and drops all but the two latest snapshots: until it commits the
        snapshot does not exist for any reader, and a crash before it leaves pieces that the next writer
        deletes when it opens the journal."""
        t0 = time.perf_counter()
        try:
            crc, size, pieces = await asyncio.to_thread(_encode_snapshot, seq, state, self._pacer())
            del state
            if durable is not None:
                await asyncio.gather(durable, return_exceptions=True)
            if self.last_seq < seq or self._failed is not None:
                return  # the entries it describes never became durable
            # On the connection's own thread (aiosqlite runs every call there, in order), so a piece's
            # transaction never interleaves with a batch's: each is queued behind the commits before it.
            if not await self._in_turn_on_db_thread([functools.partial(self._put_piece, seq, no, pieces)
                                                     for no in range(1, len(pieces))]):
                return
            await self._on_db_thread(self._put_snapshot, seq, crc, pieces[0], len(pieces))
        except (sqlite3.Error, ValueError, TypeError, orjson.JSONEncodeError) as exc:
            self.snapshot_failures += 1
            log.warning("journal %s: the snapshot at event %d was not written (%s); the journal is whole "
                        "without it", self.path, seq, exc)
            return
        self.snapshots_written += 1
        self.last_snapshot_seconds = time.perf_counter() - t0
        self.last_snapshot_seq = seq
        self.last_snapshot_at = time.time()
        self.last_snapshot_bytes = size
        log.debug("journal %s: snapshot at event %d, %d bytes in %d piece(s), %.3f s", self.path, seq, size,
                  len(pieces), self.last_snapshot_seconds)

    def _put_piece(self, seq: int, no: int, pieces: list[bytes | memoryview]) -> None:
        """Piece ``no`` (1 on) of ``pieces``, the snapshot at ``seq``, in its own transaction; written, its
        memory goes. With the first, a snapshot already at ``seq`` (one a start passed over, written again on
        the way out) goes, so that no reader sees its row with new pieces. Runs on the connection's thread."""
        con = self._db._conn
        piece, pieces[no] = pieces[no], b""
        if no > 1:  # one statement, its own transaction (autocommit): BEGIN and COMMIT would cost two more waits
            # for the interpreter's lock on this thread, up to 5 ms each while the event loop decides
            con.execute(_PUT_PIECE, (seq, no, piece))
            return
        con.execute("BEGIN")
        try:
            con.execute("DELETE FROM snapshots WHERE seq = ?", (seq,))
            con.execute("DELETE FROM snapshot_pieces WHERE seq = ?", (seq,))
            con.execute(_PUT_PIECE, (seq, no, piece))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def _put_snapshot(self, seq: int, crc: int, first: bytes | memoryview, count: int) -> None:
        """Make the snapshot at ``seq`` (of ``count`` pieces, those after the first written already) exist: its
        row, holding the first piece, and the deletion of all but the two latest snapshots and of their pieces
        (and of any piece beyond ``count`` at ``seq``, an older body's), in one transaction. Runs on the
        connection's thread."""
        con = self._db._conn
        con.execute("BEGIN")
        try:
            con.execute("INSERT OR REPLACE INTO snapshots (seq, ts, version, crc, body) VALUES (?, ?, ?, ?, ?)",
                        (seq, time.time(), SNAPSHOT_VERSION, crc, first))
            con.execute("DELETE FROM snapshot_pieces WHERE seq = ? AND no >= ?", (seq, count))
            con.execute("DELETE FROM snapshots WHERE seq < (SELECT min(seq) FROM "
                        "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT 2))")
            con.execute("DELETE FROM snapshot_pieces WHERE seq NOT IN (SELECT seq FROM snapshots)")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ the duplicate-id index

    async def attach(self, ledger: Ledger) -> None:
        """Connect ``ledger``'s bounded duplicate-id memory (:mod:`livecart.core.dedupe`) to the journal's index:
        index every full chunk the index lacks (a crash came before its write) from the journal's entries,
        drop index chunks the ledger does not know (a journal cut back by ``repair``), and answer the ledger's
        "maybe seen" questions from here on. Nothing to do for a reader or a ledger that keeps every id."""
        dd = ledger.dedupe
        if dd is None or self.readonly:
            return
        present = {int(no) for (no,) in await self._db.execute_fetchall("SELECT DISTINCT no FROM dedupe_keys")}
        # Each chunk's edges row, found through the index by (no, bucket): a plain "WHERE bucket = -1" read the
        # whole table, 200 MB at 10M comments: 0.14 s with the file in the page cache, 3.7 s after a machine's
        # restart, against 0.01 s and 0.07 s so.
        rows = await self._db.execute_fetchall(
            f"SELECT no, keys FROM dedupe_keys WHERE bucket = -1 AND no IN ({','.join(map(str, sorted(present)))})"
        ) if present else []
        have = {int(no): str(v) for no, v in rows}
        good = {no for no, v in have.items() if no < len(dd.chunks) and v == f"{dd.chunks[no][0]} {dd.chunks[no][1]}"}
        # Any other chunk goes: one the ledger does not know, or one cut short by a crash between its slices.
        stale = sorted(present - good)
        if stale:
            await self._db.executemany("DELETE FROM dedupe_keys WHERE no = ?", [(no,) for no in stale])
        missing = [no for no in range(len(dd.chunks)) if no not in good]
        for no in missing:
            first, last = dd.chunks[no]
            keys = await self._chunk_keys(first, last)
            if len(keys) != dd.chunk:
                raise JournalError(f"{self.path}: events {first}-{last} hold {len(keys)} comments, not the "
                                   f"{dd.chunk} of a chunk of the duplicate-id index: the journal and its latest "
                                   "snapshot disagree. " + _WHAT_TO_DO.format(p=self.path))
            await self._write_chunk(no, first, last, keys)
        if missing:
            log.info("journal %s: indexed %d chunk(s) of older comment ids", self.path, len(missing))
        self._index_top = len(dd.chunks)
        self._reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        dd.lookup = self.lookup
        dd.keep = True

    async def _chunk_keys(self, first: int, last: int) -> set[tuple[str, int]]:
        """The keys (text, hash) of the comment entries from event ``first`` to ``last``."""
        keys: set[tuple[str, int]] = set()
        async with self._db.execute("SELECT body FROM batches WHERE last >= ? AND first <= ? ORDER BY first",
                                    (first, last)) as cur:
            async for (body,) in cur:
                for seq, _, kind, d in orjson.loads(body):
                    if first <= seq <= last and kind == COMMENT:
                        keys.add((key_text(d[0], d[1], d[2]), key_hash(d[0], d[1], d[2])))
        return keys

    def index_chunk(self, no: int, first: int, last: int, keys: Iterable[tuple[str, int]]) -> asyncio.Future[None]:
        """Write chunk ``no`` of the duplicate-id index (the keys of comment events ``first``..``last``) in the
        background; the future resolves once it is in the file (the ledger may then let its keys go)."""
        loop = asyncio.get_running_loop()
        if self._closed or self.readonly or self._failed is not None:
            fut: asyncio.Future[None] = loop.create_future()
            fut.set_exception(JournalError(f"the journal {self.path} is closed"))
            return fut
        task = loop.create_task(self._write_chunk(no, first, last, keys), name="journal-index")
        self._index_tasks.add(task)
        task.add_done_callback(self._index_tasks.discard)
        return task

    async def _write_chunk(self, no: int, first: int, last: int, keys: Iterable[tuple[str, int]]) -> None:
        try:
            work = self.on_work
            if work is None:
                payloads = await asyncio.to_thread(_chunk_slices, no, first, last, keys, self._pacer())
            else:
                payloads, a, b = await asyncio.to_thread(_timed, _chunk_slices, no, first, last, keys, self._pacer())
                work("index_chunk_encode", a, b)
            # One slice at a time: a commit queued meanwhile goes before the next slice.
            con = self._db._conn
            a = time.perf_counter()
            if not await self._in_turn_on_db_thread([functools.partial(con.execute, _insert_rows(len(p) // 3), p)
                                                     for p in payloads]):
                raise JournalError(f"the journal {self.path} failed before chunk {no} of its duplicate-id index "
                                   "was written")
            if work is not None:
                work("index_chunk_insert", a, time.perf_counter())
        except (sqlite3.Error, ValueError) as exc:
            self.index_failures += 1
            log.warning("journal %s: chunk %d of the duplicate-id index was not written (%s); its ids stay in "
                        "memory", self.path, no, exc)
            raise JournalError(f"cannot write the duplicate-id index of {self.path}: {exc}") from exc
        self._index_top = max(self._index_top, no + 1)
        self.index_chunks += 1

    def lookup(self, key: str, h: int, lo: int = 0, hi: int | None = None) -> bool:
        """Whether index chunks ``lo`` up to ``hi`` (exclusive; None: the last) hold ``key``
        (:func:`~livecart.core.dedupe.key_text`, whose :func:`~livecart.core.dedupe.key_hash` is ``h``).
        Synchronous: one B-tree seek per chunk, in SQLite, asked only for the rare key the ledger's filter
        cannot rule out."""
        self.lookups += 1
        top = self._index_top if hi is None else min(hi, self._index_top)
        if self._reader is None or top <= lo:
            return False
        bucket = h & (DEDUPE_BUCKETS - 1)
        # fetchall, not fetchone: a statement left unfinished keeps its read transaction open, and an open
        # read transaction stops the writer's checkpoints (the WAL would grow without end).
        rows = self._reader.execute(_LOOKUP, (max(lo, 0), top, bucket, f"\n{key}\n")).fetchall()
        return bool(rows)

    # ------------------------------------------------------------------ group commit

    @property
    def pending(self) -> int:
        return self._pending_rows

    def append(self, rows: Sequence[Entry]) -> asyncio.Future[None]:
        """Queue rows for the next batch; the future resolves once they are committed (durable as
        configured) or fails with :class:`JournalError`. Rows must come in ``seq`` order."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if settled_early(fut, rows, where=str(self.path), failed=self._failed,
                         closed=self._closed or self._writer is None, appended=self._appended):
            return fut
        self._appended = last = rows[-1][0]
        now = fut.get_loop().time()
        self._appended_at = time.monotonic()  # for the pacing of the background work (_pacer)
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
                blob = b"[" + b",".join([b[3] for b in batch]) + b"]"
                self._crc = crc = batch_crc(batch[0][0], batch[-1][1], blob, self._crc)
                task = loop.create_task(self._commit(batch, blob, crc, n, prev_last, prev, time.perf_counter()),
                                        name="journal-commit")
                prev_last = batch[-1][1]
                if prev is not None:
                    await asyncio.wait([prev])  # at most two queued: this one and the one before
                prev = task
        finally:
            if prev is not None:
                await asyncio.wait([prev])

    async def _commit(self, batch: list[tuple[int, int, float, bytes, int, float]], blob: bytes, crc: int,
                      n_rows: int, after: int, prev: asyncio.Task[None] | None, cut: float) -> None:
        """Write ``batch`` (``n_rows`` encoded rows) as one transaction (behind ``prev``'s), then resolve its
        waiters in order."""
        t0 = time.perf_counter()
        error: BaseException | None = None
        trace = self.on_commit
        params = (batch[0][0], batch[-1][1], batch[0][2], blob, crc, after)
        started = done = 0.0
        tid = 0
        try:
            # The connection is in autocommit mode, so this one statement is one transaction (and one
            # fsync under synchronous=FULL) and one trip to the worker thread: with BEGIN / COMMIT as
            # separate statements the writer waited three times behind the decisions on the event loop.
            if trace is None:
                rowcount = (await self._db.execute(_INSERT, params)).rowcount
            else:  # the same one trip, timed on the connection's thread
                rowcount, started, done, tid = await self._on_db_thread(_timed_insert, self._db._conn, params)
            if rowcount != 1:
                # The file's last batch is not the one this process wrote before this one: that one failed,
                # or another process wrote to the file behind the lock's back.
                error = JournalError("the journal's last batch is not the one this process wrote before it "
                                     "(another process wrote to the file, or the batch before failed)")
        except (sqlite3.Error, ValueError, TypeError) as exc:
            error = exc
        back = time.perf_counter()
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
        if trace is not None:
            trace(top, n_rows, cut, t0, started, done, back, tid)

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

    # ------------------------------------------------------------------ adapters' positions

    def positions(self) -> dict[str, Any] | None:
        """The adapters' positions kept in the journal (``meta`` rows ``position:<adapter name>``, JSON), as it
        was opened: where each adapter goes on from (:class:`livecart.plugin.Resume`)."""
        return dict(self._positions)

    def keep_position(self, name: str, position: Any) -> bool:
        """Keep ``position`` for adapter ``name``: written within :data:`POSITION_EVERY` seconds, or at close,
        behind the commits already queued (so never before the comments it follows are in the file). False
        for a read-only or closed journal, or a position JSON cannot carry (logged)."""
        if self.readonly or self._closed:
            return False
        try:
            self._kept[name] = orjson.dumps(position)
        except (orjson.JSONEncodeError, TypeError) as exc:
            log.warning("journal %s: the position of adapter %s cannot be kept (%s)", self.path, name, exc)
            return False
        if self._kept_task is None:
            self._kept_task = asyncio.get_running_loop().create_task(self._write_positions(POSITION_EVERY),
                                                                     name="journal-positions")
        return True

    async def _write_positions(self, after: float = 0.0) -> None:
        """Write the positions kept since the last time, ``after`` seconds from now: one statement, its own
        transaction, on the writer's connection behind the batches queued there. A failure is logged and
        counted, never fatal: the journal is whole without them (an adapter then goes on from an earlier
        position, and what it sends again is recognised by id)."""
        try:
            if after:
                await asyncio.sleep(after)
        finally:
            self._kept_task = None
        kept, self._kept = self._kept, {}
        if not kept or self._failed is not None:
            return
        values = ", ".join(["(?, ?)"] * len(kept))
        params = [v for name, text in kept.items() for v in (f"position:{name}", text.decode())]
        try:
            await self._db.execute(f"INSERT OR REPLACE INTO meta (key, value) VALUES {values}", params)
        except (sqlite3.Error, ValueError) as exc:
            self.position_failures += 1
            log.warning("journal %s: adapter positions not written (%s); a restart goes on from earlier ones",
                        self.path, exc)
            return
        self.positions_written += 1

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
        if self._kept_task is not None:  # written now, after the last batch
            self._kept_task.cancel()
            await asyncio.gather(self._kept_task, return_exceptions=True)
        if self._kept and not self.readonly:
            await self._write_positions()
        if self._snapshot is not None:
            await asyncio.gather(self._snapshot, return_exceptions=True)
        if self._index_tasks:
            await asyncio.gather(*self._index_tasks, return_exceptions=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        try:
            await self._db.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failed else self.durability)
        return (f"<Journal {self.path.name}: {state}, seq {self.last_seq}, {self.pending} pending, "
                f"{self.batches} batches>")


# --------------------------------------------------------------------------- verify and repair (offline)


@dataclass
class Inspection:
    """What :func:`inspect_file` found: the file's format and size, and its first problem (None if whole)."""

    path: Path
    schema: int = 0
    batches: int = 0
    events: int = 0
    unchecked: int = 0  # batches written before checksums (format 1)
    snapshots: int = 0
    problem: str | None = None
    #: The good prefix: batches before the first bad one, and the last event they hold.
    good_batches: int = 0
    good_events: int = 0
    bad_snapshots: list[int] = field(default_factory=list)
    #: Those of them that pass their checksum but lie past the good part (events a damaged batch held).
    late_snapshots: list[int] = field(default_factory=list)
    #: The last event of the last batch in the file, damaged or not.
    last_event: int = 0
    #: Snapshot rows so damaged that not even their event number reads (what each one holds, shortened).
    unreadable_snapshots: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.bad_snapshots and not self.unreadable_snapshots

    @property
    def carried(self) -> int | None:
        """The event of the latest whole snapshot that lies past a damaged batch, or None: then the sale as
        ``run``, ``report`` and ``export`` read it (that snapshot and the batches after it) does not need the
        damaged batch, and cutting back to the good prefix would drop acknowledged events."""
        return max(self.late_snapshots) if self.problem is not None and self.late_snapshots else None


def _whole_number(value: Any) -> int:
    """A column livecart stores as an integer, read from a file that may be damaged: a row whose bytes were
    changed can hand back text, a blob or a float there. Raises :class:`ValueError` naming what it holds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"an event number holds {value!r:.60}")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def inspect_file(path: str | Path, *, check_wal: bool | None = None) -> Inspection:
    """Read the whole journal at ``path`` (read-only) and check every batch and snapshot.

    Raises :class:`JournalError` (or a subclass) only when the file cannot be read as a journal at all (missing,
    empty, foreign); damage inside a readable journal is reported in the result."""
    p = Path(path)
    if not p.exists():
        raise JournalError(f"no journal at {p}")
    _check_file(p, check_wal=not _writer_alive(p) if check_wal is None else check_wal)
    rep = Inspection(p)
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ForeignDatabase(f"cannot open {p}: {exc}") from exc
    try:
        try:
            # One read transaction for all of it: beside a running writer, a snapshot committed between the
            # batches' scan and the snapshots' would lie past the events counted, and look damaged.
            con.execute("BEGIN")
            app_id = int(con.execute("PRAGMA application_id").fetchone()[0])
            meta = {str(k): str(v) for k, v in con.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            raise ForeignDatabase(f"{p} is damaged or not a livecart journal ({exc})") from exc
        if app_id != APPLICATION_ID or meta.get("app") != "livecart":
            raise ForeignDatabase(f"{p} is not a livecart journal (application_id={app_id:#x})")
        try:
            rep.schema = int(meta.get("schema", "0") or 0)
        except ValueError as exc:
            raise JournalDamaged(f"{p} is damaged: its format number cannot be read ({_short(exc)}). It was left "
                                 "untouched; restore it from a backup") from exc
        if rep.schema > SCHEMA_VERSION:
            raise JournalError(f"{p} was written by a newer livecart (journal format {rep.schema}; this livecart "
                               f"reads formats 1 to {SCHEMA_VERSION}); upgrade livecart to check it")
        chain = Chain(p, prev_last=0)
        crc_col = "crc" if rep.schema >= 2 else "NULL"
        try:
            for first, last, body, crc in con.execute(f"SELECT first, last, body, {crc_col} FROM batches "
                                                      "ORDER BY first"):
                rep.batches += 1
                with contextlib.suppress(TypeError, ValueError):
                    rep.last_event = max(rep.last_event, int(last))
                if rep.problem is not None:
                    continue
                try:
                    first, last = _whole_number(first), _whole_number(last)
                except ValueError as exc:  # the row's event numbers are themselves damaged
                    rep.problem = (f"batch {chain.number + 1} (after event {rep.good_events}) is damaged: its "
                                   f"event numbers cannot be read ({_short(exc)})")
                    continue
                try:
                    chain.check(first, last, body, crc)
                    orjson.loads(body)
                except JournalDamaged as exc:
                    # What to do is for the caller to say (verify and repair say it, knowing more).
                    rep.problem = str(exc).replace(" " + _WHAT_TO_DO.format(p=p), "")
                    continue
                except orjson.JSONDecodeError as exc:
                    rep.problem = f"batch {chain.number} (events {first}-{last}) cannot be read: {exc}"
                    continue
                except (TypeError, ValueError, OverflowError, struct.error) as exc:  # any other damaged content
                    rep.problem = (f"batch {chain.number + 1} (events {first}-{last}) is damaged and cannot be "
                                   f"read ({_short(exc)})")
                    continue
                rep.unchecked += crc is None
                rep.good_batches = chain.number
                rep.good_events = int(last)
        except sqlite3.DatabaseError as exc:
            rep.problem = (f"SQLite cannot read past batch {rep.good_batches} (event {rep.good_events}): {exc}")
        rep.events = rep.good_events
        if rep.schema >= 2:
            try:
                for seq, version, crc in con.execute("SELECT seq, version, crc FROM snapshots ORDER BY seq"
                                                     ).fetchall():
                    rep.snapshots += 1
                    try:
                        seq = _whole_number(seq)
                    except ValueError as exc:
                        rep.unreadable_snapshots.append(_short(exc))
                        continue
                    try:
                        version = _whole_number(version)
                        whole = _pieces_crc(seq, version, _body_slices(con, seq, version >= _PIECED)) == crc
                    except (sqlite3.Error, TypeError, ValueError, OverflowError, struct.error):
                        whole = False  # damaged past reading: as bad as a failed checksum
                    if not whole:
                        rep.bad_snapshots.append(int(seq))
                    elif seq > rep.good_events:  # whole, but of events the good part does not hold
                        rep.bad_snapshots.append(int(seq))
                        rep.late_snapshots.append(int(seq))
            except sqlite3.DatabaseError as exc:
                rep.problem = rep.problem or f"the snapshots cannot be read: {exc}"
    finally:
        con.close()
    return rep


@dataclass
class Repair:
    """What :func:`repair_file` did."""

    inspection: Inspection
    backup: Path | None = None
    kept_batches: int = 0
    kept_events: int = 0
    dropped_snapshots: int = 0
    #: The WAL was cut short: what its cut frames held is in the backup only (its batches are not counted).
    wal_cut: bool = False


class RepairRefused(JournalError):
    """``journal repair`` would drop events that a whole snapshot past the damage still carries."""


def repair_file(path: str | Path, *, clock: Callable[[], float] = time.time, cut: bool = False) -> Repair:
    """Cut the journal at ``path`` back to its last good batch, keeping the original as a backup.

    Takes the writer lock (:class:`~livecart.core.errors.JournalLocked` while a daemon runs). A whole journal
    is left as it is. Otherwise a new file is written with the good prefix (meta, every batch before the first
    bad one, the snapshots that check and lie within it), the original (and its WAL) is renamed to
    ``FILE.bak-YYYYmmddTHHMMSS`` (``-wal``), and the new file takes its place. A cut WAL is handled the same
    way: SQLite reads its whole frames, the rest stays in the backup. Raises :class:`JournalError` for a
    file that is not a livecart journal at all (nothing to keep).

    When a whole snapshot lies past the damaged batch (:attr:`Inspection.carried`), the sale as ``run``
    reads it is intact and the cut would drop events that were acknowledged: refused with
    :class:`RepairRefused`, nothing changed, unless ``cut`` is true."""
    p = Path(path)
    with JournalLock.acquire(p, purpose="journal repair") as held:
        if p.exists():
            held.hold_file(p)  # refused while a daemon writes it under another name (a hard link)
        wal = Path(str(p) + "-wal")
        try:
            insp = inspect_file(p, check_wal=True)
            wal_problem = None
        except JournalDamaged as exc:
            if "WAL" not in str(exc) and "-wal" not in str(exc):
                raise
            wal_problem = str(exc)
            insp = None
        result = Repair(insp or Inspection(p))
        if insp is not None and insp.ok:
            return result
        if insp is not None and insp.carried is not None and not cut:
            raise RepairRefused(
                f"{(insp.problem or '').rstrip('.')}. But the snapshot at event {insp.carried:,} is whole and "
                f"lies past it, and `livecart run`, `report` and `export` read the sale from that snapshot and the batches after "
                f"it: the sale is intact. Cutting back to the last good batch would drop events "
                f"{insp.good_events + 1:,}-{insp.last_event:,}, which were acknowledged to their senders. "
                f"Nothing was changed. To cut anyway (the dropped events stay in the backup copy), run "
                f"`livecart journal repair --cut {p}`.")
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock()))
        backup = p.with_name(f"{p.name}.bak-{stamp}")
        work = p.with_name(f".{p.name}.{os.getpid()}.repair")
        shutil.copy2(p, backup)
        if wal.exists():
            shutil.copy2(wal, Path(str(backup) + "-wal"))
        result.backup = backup
        if wal_problem is not None:
            # Read from the backup's copy with the WAL cut to its whole frames (SQLite then takes every
            # complete transaction in it); the original stays as it was in the backup.
            size = wal.stat().st_size
            head = wal.read_bytes()[:32]
            frame = int.from_bytes(head[8:12], "big") + 24 if len(head) == 32 else 0
            scratch = p.with_name(f".{p.name}.{os.getpid()}.read")
            shutil.copy2(p, scratch)
            whole = 32 + ((size - 32) // frame) * frame if frame and size >= 32 else 0
            with open(wal, "rb") as src, open(Path(str(scratch) + "-wal"), "wb") as dst:
                dst.write(src.read(whole))
            insp = inspect_file(scratch, check_wal=True)
            result.inspection = insp
            result.wal_cut = True
            source = scratch
        else:
            assert insp is not None
            source = p
        try:
            _copy_prefix(source, work, insp, result)
        except (sqlite3.Error, TypeError, ValueError, OverflowError, struct.error) as exc:
            _unlink(work, ("", "-wal", "-shm"))
            raise JournalDamaged(
                f"{p} cannot be repaired: its good part (batches 1-{insp.good_batches:,}, events "
                f"1-{insp.good_events:,}) cannot be copied out of it ({_short(exc)}). The journal was not changed; "
                f"a copy of it is kept as {backup}. Restore the journal from a backup of your own") from exc
        finally:
            if source != p:
                _unlink(source, ("", "-wal", "-shm", ".lock"))
        os.replace(work, p)
        _unlink(p, ("-wal", "-shm"))
        return result


def _unlink(path: Path, suffixes: tuple[str, ...]) -> None:
    """Remove ``path`` + each of ``suffixes`` ("" is the file itself) that exists."""
    for suffix in suffixes:
        Path(str(path) + suffix).unlink(missing_ok=True)


def _copy_prefix(source: Path, dest: Path, insp: Inspection, result: Repair) -> None:
    dest.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    out = sqlite3.connect(dest, isolation_level=None)
    try:
        out.execute("PRAGMA journal_mode=WAL")
        out.executescript("BEGIN;" + _SCHEMA + f"PRAGMA application_id={APPLICATION_ID};COMMIT;")
        out.execute("BEGIN")
        # Without the adapters' positions: the comments behind one may be among the batches cut.
        meta = {k: v for k, v in src.execute("SELECT key, value FROM meta") if not str(k).startswith("position:")}
        meta["schema"] = str(SCHEMA_VERSION)
        out.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        crc_col = "crc" if insp.schema >= 2 else "NULL"
        rows = src.execute(f"SELECT first, last, ts, body, {crc_col} FROM batches ORDER BY first "
                           "LIMIT ?", (insp.good_batches,))
        out.executemany("INSERT INTO batches (first, last, ts, body, crc) VALUES (?, ?, ?, ?, ?)", rows)
        result.kept_batches = insp.good_batches
        result.kept_events = insp.good_events
        if insp.schema >= 2:
            # Each snapshot that checked is copied on its own: one that SQLite cannot read back (its pages are
            # damaged) is dropped, as a bad one is - the kept batches carry the sale without it.
            try:
                seqs = [r[0] for r in src.execute("SELECT seq FROM snapshots ORDER BY seq").fetchall()]
            except sqlite3.DatabaseError:
                seqs = []
            kept = 0
            for seq in seqs:
                if not isinstance(seq, int) or seq > insp.good_events or seq in insp.bad_snapshots:
                    continue
                try:
                    row = src.execute("SELECT seq, ts, version, crc, body FROM snapshots WHERE seq = ?",
                                      (seq,)).fetchone()
                    pieces = (src.execute("SELECT seq, no, body FROM snapshot_pieces WHERE seq = ?",
                                          (seq,)).fetchall()
                              if row is not None and isinstance(row[2], int) and row[2] >= _PIECED else [])
                except sqlite3.DatabaseError:
                    continue
                if row is None or not isinstance(row[2], int):
                    continue
                out.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?)", row)
                out.executemany("INSERT INTO snapshot_pieces VALUES (?, ?, ?)", pieces)
                kept += 1
            result.dropped_snapshots = insp.snapshots - kept
        out.execute("COMMIT")
    finally:
        src.close()
        out.close()
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
