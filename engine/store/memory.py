"""The in-memory store: the :class:`~livecart.store.base.Store` contract with nothing on disk.

For tests (an engine with no file) and as the reference a new backend is compared with: it passes the same
contract suite as the SQLite store (``tests/store/test_contract.py``). "Durable" here means "in the
:class:`MemorySpace`", which outlives the store object, so a test can close a store and open the same space
again as it would reopen a file. Entries go through JSON on the way in, as they do in a file, so data the
SQLite store could not encode fails here the same way, and reads give what a file gives back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from livecart.core.catalogue import Catalogue
from livecart.core.dedupe import key_text
from livecart.core.errors import JournalError
from livecart.core.ledger import Ledger
from livecart.store.base import OnOutcomes, settled_early
from livecart.store.codec import (
    COMMENT,
    SNAPSHOT_VERSION,
    Entry,
    Header,
    Refusals,
    catalogue_from_json,
    catalogue_json,
    encode_snapshot,
    rebuild_entries,
    resume,
)


@dataclass
class MemorySpace:
    """Where a :class:`MemoryStore` keeps what it was given: what a file is to the SQLite store."""

    header: Header | None = None
    #: Encoded batches, as appended: (first seq, last seq, JSON array of entries).
    batches: list[tuple[int, int, bytes]] = field(default_factory=list)
    #: Snapshots, oldest first: (seq, format version, JSON of the ledger's state).
    snapshots: list[tuple[int, int, bytes]] = field(default_factory=list)
    #: The duplicate-id index: chunk number -> (first event, last event, keys).
    index: dict[int, tuple[int, int, frozenset[str]]] = field(default_factory=dict)
    #: The adapters' positions (adapter name -> JSON), as :meth:`MemoryStore.keep_position` kept them.
    positions: dict[str, bytes] = field(default_factory=dict)

    @property
    def last_seq(self) -> int:
        return self.batches[-1][1] if self.batches else 0


class MemoryStore:
    """A store whose "file" is a :class:`MemorySpace`. Open with :meth:`open`."""

    def __init__(self, space: MemorySpace, header: Header, *, readonly: bool) -> None:
        self.space = space
        self.header = header
        self.readonly = readonly
        self.last_seq = space.last_seq
        self._appended = self.last_seq
        self._inflight: list[asyncio.Future[None]] = []
        self._failed: BaseException | None = None
        self._closed = False
        self.batches = 0
        self.rows_written = 0
        self.last_batch_seconds = 0.0
        self.batch_seconds_total = 0.0
        self.largest_batch = 0
        self.snapshots_written = 0
        self.rebuilt_from = (0, 0)
        self.lookups = 0
        self._snapshot: asyncio.Task[None] | None = None
        self._positions = {name: orjson.loads(text) for name, text in space.positions.items()}

    @classmethod
    async def open(cls, space: MemorySpace | None = None, *, catalogue: Catalogue | None = None,
                   hold_seconds: float = 0.0, featured: str | None = None, readonly: bool = False,
                   clock: Callable[[], float] = time.time, recent: int = 0, **_ignored: Any) -> MemoryStore:
        """Open ``space`` (a new one by default), starting it with ``catalogue`` when it is empty.

        The same rules as :meth:`livecart.store.sqlite.SqliteStore.open`: an empty space opened read-only, or
        without a catalogue, is a :class:`JournalError`; a catalogue or hold time other than the one the space
        was started with is refused. Other keywords (durability, batching) mean nothing here.
        """
        space = MemorySpace() if space is None else space
        if space.header is None:
            if readonly:
                raise JournalError("no journal in this memory space (has the stream run yet?)")
            if catalogue is None:
                raise JournalError("no journal in this memory space and no catalogue to start one with")
            cj = catalogue_json(catalogue)
            space.header = Header(catalogue_from_json(cj), cj, float(hold_seconds), featured, clock(), int(recent))
        header = space.header
        if catalogue is not None and not readonly and (
                catalogue_json(catalogue) != header.catalogue_json or float(hold_seconds) != header.hold_seconds):
            raise JournalError("the journal was started with a different catalogue or hold_minutes")
        return cls(space, header, readonly=readonly)

    @property
    def where(self) -> str:
        return f"memory:{id(self.space):#x}"

    @property
    def pending(self) -> int:
        return self._appended - self.last_seq

    def append(self, rows: Sequence[Entry]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if settled_early(fut, rows, where=self.where, failed=self._failed, closed=self._closed or self.readonly,
                         appended=self._appended):
            return fut
        try:
            blob = orjson.dumps(rows)
        except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
            self._fail(exc, fut)
            return fut
        first, last = rows[0][0], rows[-1][0]
        self._appended = last
        self._inflight.append(fut)
        # Durable "later", as with a file: the caller's decisions come first, the future resolves on the
        # next turn of the loop, in append order.
        loop.call_soon(self._commit, first, last, blob, len(rows), fut)
        return fut

    def _commit(self, first: int, last: int, blob: bytes, n: int, fut: asyncio.Future[None]) -> None:
        if self._failed is not None:
            return
        self.space.batches.append((first, last, blob))
        self.last_seq = last
        self.batches += 1
        self.rows_written += n
        self.largest_batch = max(self.largest_batch, n)
        self._inflight.remove(fut)
        if not fut.done():
            fut.set_result(None)

    def _fail(self, exc: BaseException, fut: asyncio.Future[None]) -> None:
        self._failed = exc
        err = JournalError(f"cannot write the journal {self.where}: {exc}")
        for f in [*self._inflight, fut]:
            if not f.done():
                f.set_exception(err)
        self._inflight.clear()

    async def entries(self, after: int = 0) -> list[Entry]:
        out: list[Entry] = []
        for _, last, blob in self.space.batches:
            if last > after:
                out.extend((int(s), float(t), str(k), d) for s, t, k, d in orjson.loads(blob) if s > after)
        return out

    async def rebuild(self, *, on_outcomes: OnOutcomes | None = None, refusals: Refusals | None = None) -> Ledger:
        snaps = [sn for sn in self.space.snapshots if sn[0] <= self.last_seq]
        if not snaps:
            tail = await self.entries()
            self.rebuilt_from = (0, len(tail))
            return rebuild_entries(self.header, tail, on_outcomes=on_outcomes, refusals=refusals)
        seq, version, body = snaps[-1]
        tail = await self.entries(after=seq)
        self.rebuilt_from = (seq, len(tail))
        return resume(self.header, version, body, tail, on_outcomes=on_outcomes, refusals=refusals)

    async def attach(self, ledger: Ledger) -> None:
        dd = ledger.dedupe
        if dd is None or self.readonly:
            return
        index = self.space.index
        for no in [no for no, (a, b, _) in index.items() if no >= len(dd.chunks) or dd.chunks[no] != (a, b)]:
            del index[no]
        for no, (first, last) in enumerate(dd.chunks):
            if no not in index:
                keys = {key_text(d[0], d[1], d[2]) for s, _, k, d in await self.entries(after=first - 1)
                        if s <= last and k == COMMENT}
                if len(keys) != dd.chunk:
                    raise JournalError(f"events {first}-{last} hold {len(keys)} comments, not a chunk's {dd.chunk}")
                index[no] = (first, last, frozenset(keys))
        dd.lookup = self.lookup
        dd.keep = True

    def index_chunk(self, no: int, first: int, last: int, keys: Iterable[tuple[str, int]]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed or self.readonly:
            fut.set_exception(JournalError(f"the journal {self.where} is closed"))
            return fut
        self.space.index[no] = (first, last, frozenset(k for k, _ in keys))
        fut.set_result(None)
        return fut

    def positions(self) -> dict[str, Any] | None:
        return dict(self._positions)

    def keep_position(self, name: str, position: Any) -> bool:
        # In the space at once: appends are durable there as soon as they are taken, so the comments before the
        # position are too.
        if self._closed or self.readonly:
            return False
        self.space.positions[name] = orjson.dumps(position)
        return True

    def lookup(self, key: str, h: int, lo: int = 0, hi: int | None = None) -> bool:
        self.lookups += 1
        return any(key in keys for no, (_, _, keys) in self.space.index.items()
                   if lo <= no and (hi is None or no < hi))

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
        self._snapshot = asyncio.get_running_loop().create_task(self._write_snapshot(seq, state, durable))
        return True

    async def _write_snapshot(self, seq: int, state: dict[str, Any], durable: list[asyncio.Future[None]]) -> None:
        body = encode_snapshot(state)
        if durable:
            await asyncio.gather(*durable, return_exceptions=True)
        if self.last_seq < seq:
            return  # the entries it describes never became durable
        self.space.snapshots.append((seq, SNAPSHOT_VERSION, body))
        del self.space.snapshots[:-2]
        self.snapshots_written += 1

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

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failed else "open")
        return f"<MemoryStore {self.where}: {state}, seq {self.last_seq}, {self.pending} pending>"
