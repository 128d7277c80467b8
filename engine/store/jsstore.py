"""A journal in a NATS JetStream stream: the :class:`~livecart.store.base.Store` contract on a replicated log.

One journal ``NAME`` is a stream ``LIVECART_J_<NAME>`` with one subject, ``livecart.<NAME>.journal``, and a
KV bucket ``livecart_j_<NAME>`` holding its ``header`` (catalogue, hold time, first featured product,
created; reopening with another catalogue is refused, as with a file) and its snapshots
(:class:`~livecart.store.jetstream.Snapshots`: chunked, so a snapshot of any size fits JetStream's value
limit). What the stream holds is exactly what the SQLite journal's ``batches`` table holds: one message per
append (cut in parts of at most :data:`MESSAGE_BYTES`), its body the JSON array of ``[seq, ts, kind, data]``
entries (:mod:`livecart.store.codec`), so the two replay alike.

* **Durable** means acknowledged by the stream: stored by a quorum of its ``replicas`` (on each node as the
  server's ``sync_interval`` says; docs/distributed-mode.md asks for ``always``).
* **One writer.** Every message is published with ``Nats-Expected-Last-Subject-Sequence`` = the journal's
  last message as this store knows it, and a ``Nats-Msg-Id`` naming its seq range. A resend after a lost
  acknowledgement is recognised by the id and stored once; a second writer on the same journal makes the
  first one's next append fail (the log's equivalent of the journal file's lock), and a store that fails
  stays failed, as the contract says.
* **Reading after a seq** finds the first message holding it by bisection over the stream (``O(log n)``
  direct reads), then reads on in order with a pull consumer.

This is the store of one decider writing a journal it owns, like the SQLite file. The multi-process sale of
``[storage] backend = "jetstream"`` (:mod:`livecart.runtime.cluster`) logs the ledger's *inputs* from every
ingest process instead, on the subjects of :mod:`livecart.store.jetstream`, and keeps its snapshots with the
same :class:`~livecart.store.jetstream.Snapshots`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js import api

from livecart.core.catalogue import Catalogue
from livecart.core.errors import JournalError
from livecart.core.ledger import Ledger
from livecart.store.base import OnOutcomes, settled_early
from livecart.store.codec import (
    SNAPSHOT_VERSION,
    Entry,
    Header,
    Refusals,
    catalogue_json,
    encode_snapshot,
    rebuild_entries,
    resume,
)
from livecart.store.jetstream import (
    DUPLICATE_WINDOW,
    PUBLISH_TIMEOUT,
    RETRY_SECONDS,
    WRONG_LAST_SEQUENCE,
    Snapshots,
    _transient,
    connect,
    header_from_json,
    header_json,
    retry,
)

log = logging.getLogger("livecart.jsstore")

#: Largest body of one journal message; a longer append is cut in parts (the server's payload limit is 1 MB).
MESSAGE_BYTES = 512 * 1024
#: How long an append is resent while the cluster does not acknowledge it before the store fails (s).
PATIENCE = 30.0


@dataclass(frozen=True, slots=True)
class JournalNames:
    """The JetStream names of one journal."""

    name: str

    @property
    def stream(self) -> str:
        return f"LIVECART_J_{self.name}"

    @property
    def subject(self) -> str:
        return f"livecart.{self.name}.journal"

    @property
    def bucket(self) -> str:
        return f"livecart_j_{self.name}"


def _parts(rows: Sequence[Entry]) -> list[tuple[int, int, bytes]]:
    """``rows`` encoded as one or more message bodies of at most :data:`MESSAGE_BYTES` (a single entry
    larger than that stays whole: the server refuses it if it is over its limit, and the store fails)."""
    blob = orjson.dumps(rows)
    if len(blob) <= MESSAGE_BYTES or len(rows) == 1:
        return [(rows[0][0], rows[-1][0], blob)]
    half = len(rows) // 2
    return _parts(rows[:half]) + _parts(rows[half:])


class JetStreamStore:
    """A journal in a JetStream stream. Open with :meth:`open`."""

    def __init__(self, nc: Any, names: JournalNames, servers: Sequence[str], header: Header, kv: Any, *,
                 readonly: bool, last_seq: int, last_msg: int) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.names = names
        self.servers = tuple(servers)
        self.header = header
        self.kv = kv
        self.snapshots = Snapshots(kv)
        self.readonly = readonly
        self.last_seq = last_seq
        self._appended = last_seq
        self._last_msg = last_msg  # stream seq of the journal's last message (fencing)
        self._queue: asyncio.Queue[tuple[list[tuple[int, int, bytes]], int, asyncio.Future[None]]] = \
            asyncio.Queue()
        self._inflight: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._snapshot: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closed = False
        self.batches = 0
        self.rows_written = 0
        self.last_batch_seconds = 0.0
        self.batch_seconds_total = 0.0
        self.largest_batch = 0
        self.snapshots_written = 0
        self.snapshot_failures = 0
        self.retries = 0
        self.rebuilt_from = (0, 0)

    @classmethod
    async def open(cls, servers: Sequence[str], name: str, *, replicas: int = 1,
                   catalogue: Catalogue | None = None, hold_seconds: float = 0.0, featured: str | None = None,
                   readonly: bool = False, clock: Callable[[], float] = time.time, connect_timeout: float = 5.0,
                   **_ignored: Any) -> JetStreamStore:
        """Open journal ``name`` in the cluster at ``servers``, starting it with ``catalogue`` when it is new.

        The rules of :meth:`livecart.store.sqlite.SqliteStore.open`: a journal that does not exist opened
        read-only, or without a catalogue, is a :class:`JournalError`; a catalogue or hold time other than
        the one it was started with is refused. Other keywords (durability, batching) mean nothing here."""
        names = JournalNames(name)
        nc = await connect(servers, f"livecart journal {name}", connect_timeout)
        try:
            return await cls._prepare(nc, names, servers, replicas, catalogue, hold_seconds, featured, readonly,
                                      clock)
        except BaseException:
            with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                await nc.close()
            raise

    @classmethod
    async def _prepare(cls, nc: Any, names: JournalNames, servers: Sequence[str], replicas: int,
                       catalogue: Catalogue | None, hold_seconds: float, featured: str | None, readonly: bool,
                       clock: Callable[[], float]) -> JetStreamStore:
        js = nc.jetstream()
        where = f"jetstream:{names.stream}"
        try:
            kv = await retry(lambda: js.key_value(names.bucket))
        except nats.js.errors.BucketNotFoundError:
            if readonly:
                raise JournalError(f"no journal {where} in the cluster (has the stream run yet?)") from None
            if catalogue is None:
                raise JournalError(f"no journal {where} in the cluster and no catalogue to start one with") \
                    from None
            kv = await retry(lambda: js.create_key_value(api.KeyValueConfig(
                bucket=names.bucket, history=1, replicas=replicas, storage=api.StorageType.FILE)))
        try:
            header = header_from_json((await retry(lambda: kv.get("header"))).value)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            if readonly or catalogue is None:
                raise JournalError(f"no journal {where} in the cluster (has the stream run yet?)") from None
            mine = Header(catalogue, catalogue_json(catalogue), float(hold_seconds), featured, clock())
            try:
                await retry(lambda: kv.create("header", header_json(mine)))
                header = mine
            except nats.js.errors.KeyWrongLastSequenceError:  # another process started it first
                header = header_from_json((await retry(lambda: kv.get("header"))).value)
        if catalogue is not None and not readonly and (
                catalogue_json(catalogue) != header.catalogue_json or float(hold_seconds) != header.hold_seconds):
            raise JournalError(f"the journal {where} was started with a different catalogue or hold_minutes")
        try:
            await retry(lambda: js.stream_info(names.stream))
        except nats.js.errors.NotFoundError:
            if readonly:
                raise JournalError(f"no journal {where} in the cluster (has the stream run yet?)") from None
            cfg = api.StreamConfig(name=names.stream, subjects=[names.subject], num_replicas=replicas,
                                   storage=api.StorageType.FILE, duplicate_window=DUPLICATE_WINDOW,
                                   retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.NEW)
            await retry(lambda: js.add_stream(cfg))
        try:
            last = await retry(lambda: js.get_last_msg(names.stream, names.subject))
            rows = orjson.loads(last.data)
            last_seq, last_msg = int(rows[-1][0]), int(last.seq)
        except nats.js.errors.NotFoundError:
            last_seq = last_msg = 0
        except (orjson.JSONDecodeError, IndexError, TypeError, ValueError) as exc:
            raise JournalError(f"the journal {where} ends with a damaged message: {exc!r}") from exc
        return cls(nc, names, servers, header, kv, readonly=readonly, last_seq=last_seq, last_msg=last_msg)

    @property
    def where(self) -> str:
        return f"jetstream:{self.names.stream}@{','.join(self.servers)}"

    @property
    def pending(self) -> int:
        return self._appended - self.last_seq

    # ------------------------------------------------------------------ appending

    def append(self, rows: Sequence[Entry]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if settled_early(fut, rows, where=self.where, failed=self._failed, closed=self._closed or self.readonly,
                         appended=self._appended):
            return fut
        try:
            parts = _parts(rows)
        except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
            self._fail(exc, fut)
            return fut
        self._appended = rows[-1][0]
        self._inflight.append(fut)
        self._queue.put_nowait((parts, len(rows), fut))
        if self._writer is None:
            self._writer = loop.create_task(self._write(), name="jetstream-journal-writer")
        return fut

    async def _write(self) -> None:
        while True:
            parts, n, fut = await self._queue.get()
            if self._failed is not None:
                continue
            t0 = time.perf_counter()
            try:
                for first, last, body in parts:
                    self._last_msg = await self._publish(first, last, body)
                    self.last_seq = last
            except (JournalError, nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                self._fail(exc, fut)
                continue
            dt = time.perf_counter() - t0
            self.batches += 1
            self.rows_written += n
            self.largest_batch = max(self.largest_batch, n)
            self.last_batch_seconds = dt
            self.batch_seconds_total += dt
            self._inflight.remove(fut)
            if not fut.done():
                fut.set_result(None)

    async def _publish(self, first: int, last: int, body: bytes) -> int:
        headers = {"Nats-Msg-Id": f"{self.names.name}-{first}-{last}",
                   "Nats-Expected-Last-Subject-Sequence": str(self._last_msg)}
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                ack = await self.js.publish(self.names.subject, body, timeout=PUBLISH_TIMEOUT, headers=dict(headers))
                return int(ack.seq)
            except nats.js.errors.APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise JournalError(f"another process wrote to the journal {self.where} "
                                       f"({exc.description}); this one stops") from exc
                if not _transient(exc):
                    raise JournalError(f"the cluster refused a journal message: {exc!r}") from exc
            except (TimeoutError, nats.errors.Error) as exc:
                if isinstance(exc, (nats.errors.MaxPayloadError, nats.errors.BadSubjectError)):
                    raise JournalError(f"cannot publish a journal message: {exc!r}") from exc
            if time.monotonic() > deadline:
                raise JournalError(f"the cluster did not acknowledge a journal message for {PATIENCE:.0f} s")
            self.retries += 1
            await asyncio.sleep(RETRY_SECONDS)

    def _fail(self, exc: BaseException, fut: asyncio.Future[None]) -> None:
        self._failed = exc
        err = exc if isinstance(exc, JournalError) else JournalError(f"cannot write the journal {self.where}: "
                                                                     f"{exc}")
        for f in [*self._inflight, fut]:
            if not f.done():
                f.set_exception(err)
        self._inflight.clear()
        log.error("journal %s failed: %s", self.where, err)

    # ------------------------------------------------------------------ reading

    async def _message(self, seq: int) -> list[list[Any]]:
        msg = await retry(lambda: self.js.get_msg(self.names.stream, seq))
        rows: list[list[Any]] = orjson.loads(msg.data)
        return rows

    async def entries(self, after: int = 0) -> list[Entry]:
        info = await retry(lambda: self.js.stream_info(self.names.stream))
        end = int(info.state.last_seq)
        if end == 0 or after >= self.last_seq:
            return []
        # The first message whose last entry is above `after` (messages hold increasing seq ranges).
        lo, hi = 1, end
        while lo < hi:
            mid = (lo + hi) // 2
            if int((await self._message(mid))[-1][0]) > after:
                hi = mid
            else:
                lo = mid + 1
        out: list[Entry] = []
        async for rows in self._read(lo, end):
            out.extend((int(s), float(t), str(k), d) for s, t, k, d in rows if s > after)
        return out

    async def _read(self, start: int, end: int) -> Any:
        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
                                 ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0, num_replicas=1,
                                 mem_storage=True)
        sub = await retry(lambda: self.js.pull_subscribe(self.names.subject, stream=self.names.stream,
                                                         config=cfg))
        nxt = start
        try:
            while nxt <= end:
                try:
                    msgs = await sub.fetch(min(256, end - nxt + 1), timeout=2.0)
                except nats.errors.TimeoutError as exc:
                    raise JournalError(f"reading the journal {self.where} stalled at message {nxt}") from exc
                for m in msgs:
                    seq = int(m.metadata.sequence.stream)
                    if seq != nxt:
                        raise JournalError(f"reading the journal {self.where}: message {seq} after {nxt - 1}")
                    nxt += 1
                    yield orjson.loads(m.data)
        finally:
            with contextlib.suppress(TimeoutError, nats.errors.Error):
                await sub.unsubscribe()

    async def rebuild(self, *, on_outcomes: OnOutcomes | None = None, refusals: Refusals | None = None) -> Ledger:
        snap = await self.snapshots.latest(at_most=self.last_seq)
        if snap is None:
            tail = await self.entries()
            self.rebuilt_from = (0, len(tail))
            return rebuild_entries(self.header, tail, on_outcomes=on_outcomes, refusals=refusals)
        seq, version, body = snap
        tail = await self.entries(after=seq)
        self.rebuilt_from = (seq, len(tail))
        return resume(self.header, version, body, tail, on_outcomes=on_outcomes, refusals=refusals)

    # ------------------------------------------------------------------ snapshots

    async def attach(self, ledger: Ledger) -> None:
        """Nothing to do: a JetStream journal keeps every comment id in memory (its header's window is 0), so its
        ledger never asks about old ids."""
        if ledger.dedupe is not None:
            raise JournalError(f"the journal {self.where} keeps no index of old comment ids")

    def index_chunk(self, no: int, first: int, last: int, keys: Iterable[tuple[str, int]]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_exception(JournalError(f"the journal {self.where} keeps no index of old comment ids"))
        return fut

    def lookup(self, key: str, h: int, lo: int = 0, hi: int | None = None) -> bool:
        return False

    def positions(self) -> dict[str, Any] | None:
        """None: the stream keeps no adapter positions (each process's adapters start from their sources'
        own points: a durable consumer, a companion re-sending what was not acknowledged)."""
        return None

    def keep_position(self, name: str, position: Any) -> bool:
        return False

    async def snapshot_written(self) -> None:
        if self._snapshot is not None:
            await asyncio.gather(self._snapshot, return_exceptions=True)

    def checkpoint(self, seq: int, state: dict[str, Any]) -> bool:
        if self._closed or self._failed is not None or self.readonly:
            return False
        if self._snapshot is not None and not self._snapshot.done():
            return False
        if seq != self._appended:
            raise ValueError(f"a snapshot must be taken at the last appended entry ({self._appended}), not {seq}")
        durable = list(self._inflight)
        self._snapshot = asyncio.get_running_loop().create_task(self._write_snapshot(seq, state, durable),
                                                                name="jetstream-journal-snapshot")
        return True

    async def _write_snapshot(self, seq: int, state: dict[str, Any], durable: list[asyncio.Future[None]]) -> None:
        body = await asyncio.to_thread(encode_snapshot, state)
        if durable:
            await asyncio.gather(*durable, return_exceptions=True)
        if self.last_seq < seq or self._failed is not None:
            return  # the entries it describes never became durable
        try:
            await self.snapshots.write(seq, SNAPSHOT_VERSION, body)
        except (JournalError, TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            self.snapshot_failures += 1
            log.warning("journal %s: the snapshot at event %d was not written (%s); the journal is whole "
                        "without it", self.where, seq, exc)
            return
        self.snapshots_written += 1

    # ------------------------------------------------------------------ closing

    async def flush(self) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._snapshot is not None:
            await asyncio.gather(self._snapshot, return_exceptions=True)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
            await self.nc.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failed else "open")
        return f"<JetStreamStore {self.where}: {state}, seq {self.last_seq}, {self.pending} pending>"
