"""The store interface: what the engine needs from wherever the journal lives (docs/contract.md §6).

Every backend (:class:`~livecart.store.sqlite.SqliteStore`, :class:`~livecart.store.memory.MemoryStore`,
:class:`~livecart.store.jsstore.JetStreamStore` on a NATS JetStream stream) implements :class:`Store` and
passes the same contract suite (``tests/store/test_contract.py``). The contract, which the engine relies on:

* **Entries, in order.** A store holds :data:`~livecart.store.codec.Entry` values, ``(seq, ts, kind, data)``,
  with ``seq`` strictly increasing from 1 and no gaps. :meth:`Store.append` refuses (with ``ValueError`` in its
  future) an entry whose ``seq`` is not above every entry appended before.
* **Durable, then resolved.** ``append`` returns at once with an awaitable that resolves once the entries are
  durable (as the store's durability setting defines it), or fails with
  :class:`~livecart.core.errors.JournalError`. Futures resolve in append order. After one failure every later
  append fails too: the ledger in memory is ahead of the store, and only a restart (which rebuilds from the
  store) may continue.
* **Read back as written.** :meth:`Store.entries` returns every durable entry after a ``seq``, decoded as JSON
  decodes it (tuples come back as lists). :meth:`Store.rebuild` returns the ledger those entries (and the
  latest snapshot, where the store keeps snapshots) give.
* **Header.** A store is opened for one catalogue, hold time and initial featured product (:class:`Header`);
  reopening it with another catalogue is refused.
* **Snapshots.** :meth:`Store.checkpoint` hands the store the ledger's :meth:`~livecart.core.ledger.Ledger.state`
  at ``seq`` (taken between two decisions, when every entry up to ``seq`` has been appended). The store writes
  it in the background once the entries up to ``seq`` are durable, never before; it must not delay
  :meth:`Store.append`. :meth:`Store.rebuild` then starts from the latest snapshot and replays only the entries
  after it: the ledger is the one a full replay gives (``tests/store/test_snapshot_props.py``). A snapshot
  that cannot be written is logged and counted, never fatal: the entries alone still rebuild the ledger.
* **Old duplicate ids.** A ledger with a bounded duplicate-id memory hands the store each full chunk of ids
  that left its window (:meth:`Store.index_chunk`) and asks :meth:`Store.lookup` about a key its filter
  cannot rule out; :meth:`Store.attach` rebuilds any chunk the store lost. A lookup must be exact: a key it
  does not hold is decided as new.
* **Adapters' positions.** A store may keep, per adapter name, where that adapter goes on from after a restart
  (:class:`livecart.plugin.Resume`): :meth:`Store.positions` gives them as the store was opened (None: it keeps
  none), :meth:`Store.keep_position` keeps a new one. A kept position is made durable after every entry
  appended before it, never ahead of them, and may lag them (the adapter then sends a little again).
* **Close** commits what is pending (snapshot included) and is idempotent; a closed store refuses appends.
* **One writer.** A store is written by the one process that opened it for writing. What a second writer
  meets depends on where the journal lives, and the contract only promises it is never silently merged: the
  SQLite file is locked by the daemon (:mod:`livecart.store.lock`); a log shared by several machines cannot
  be locked, so the JetStream store fences instead (each message names the one before it), and the first
  writer's next append fails once another has written. ``last_seq`` is the store's own view: what was durable
  when it was opened plus what it appended since.
* **Durable** is the backend's word: committed to the file (``durability`` says whether fsynced), in the
  memory space, or acknowledged by the stream (stored by a quorum of its replicas).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from livecart.core.errors import JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Outcome
from livecart.store.codec import Entry, Header, Refusals

OnOutcomes = Callable[[list[Outcome]], None]


@runtime_checkable
class Store(Protocol):
    """One stream's journal. See the module docstring for the contract."""

    header: Header
    #: Highest ``seq`` durable in the store.
    last_seq: int
    readonly: bool
    # Counters for the metrics endpoint.
    batches: int
    rows_written: int
    last_batch_seconds: float
    batch_seconds_total: float
    largest_batch: int
    snapshots_written: int
    #: What the last :meth:`rebuild` did: the snapshot's seq (0: none) and how many entries it replayed.
    rebuilt_from: tuple[int, int]

    @property
    def pending(self) -> int:
        """Entries appended and not yet durable."""
        ...

    @property
    def where(self) -> str:
        """Where the store lives, for messages and ``/api/state`` (a file path, a stream name)."""
        ...

    def append(self, rows: Sequence[Entry]) -> asyncio.Future[None]:
        """Queue ``rows`` (in ``seq`` order); the future resolves once they are durable. Never blocks."""
        ...

    async def entries(self, after: int = 0) -> list[Entry]:
        """Every durable entry with ``seq > after``, decoded, in ``seq`` order."""
        ...

    async def rebuild(self, *, on_outcomes: OnOutcomes | None = None, refusals: Refusals | None = None) -> Ledger:
        """The ledger the store's entries give: the latest snapshot plus the entries after it.
        ``on_outcomes`` sees the outcomes of the entries replayed (those after the snapshot); ``refusals``
        keeps the refusals of those after its time (a store may start from an older snapshot for them)."""
        ...

    def checkpoint(self, seq: int, state: dict[str, Any]) -> bool:
        """Write ``state`` (the ledger at ``seq``) as a snapshot once ``seq`` is durable. Returns False (and
        does nothing) while the previous snapshot is still being written, or when the store is closed or
        failed. Never blocks."""
        ...

    async def snapshot_written(self) -> None:
        """Wait until the snapshot being written, if any, is in the store or has failed (a clean stop asks
        for its last snapshot after this: :meth:`checkpoint` refuses while one is being written)."""
        ...

    async def attach(self, ledger: Ledger) -> None:
        """Connect ``ledger``'s bounded duplicate-id memory (:mod:`livecart.core.dedupe`) to the store, once
        it is rebuilt: index every full chunk of old ids the store lacks, and answer the ledger's "maybe seen"
        questions (:meth:`lookup`) from here on. Nothing to do for a reader or a ledger that keeps every id."""
        ...

    def index_chunk(self, no: int, first: int, last: int, keys: Iterable[tuple[str, int]]) -> asyncio.Future[None]:
        """Keep chunk ``no`` of old ids (the keys of comment events ``first``..``last``, as (text, hash):
        :func:`livecart.core.dedupe.key_text`, :func:`~livecart.core.dedupe.key_hash`) where :meth:`lookup` finds
        them; the future resolves once that is durable. Never blocks; ``keys`` may be read on another thread."""
        ...

    def lookup(self, key: str, h: int, lo: int = 0, hi: int | None = None) -> bool:
        """Whether one of the indexed chunks ``lo`` up to ``hi`` (exclusive; None: the last) holds ``key``
        (:func:`livecart.core.dedupe.key_text`; ``h`` its :func:`~livecart.core.dedupe.key_hash`). Synchronous
        and exact; asked only for the rare key the ledger's filter cannot rule out, of the chunks whose keys went
        into the filter segments that hold its bits."""
        ...

    def positions(self) -> dict[str, Any] | None:
        """The adapters' positions kept in the store, as it was opened (adapter name -> position); None where
        the store keeps none."""
        ...

    def keep_position(self, name: str, position: Any) -> bool:
        """Keep ``position`` (a JSON value) for adapter ``name``: durable after the entries appended before it,
        possibly a little later. False where the store keeps none, or is read-only or closed."""
        ...

    async def flush(self) -> None:
        """Wait until every entry appended so far is durable."""
        ...

    async def close(self) -> None:
        """Commit what is pending, then release the store. Idempotent."""
        ...


def settled_early(fut: asyncio.Future[None], rows: Sequence[Entry], *, where: str, failed: BaseException | None,
                  closed: bool, appended: int) -> bool:
    """The start of every :meth:`Store.append`: settle ``fut`` at once and return True when there is
    nothing to write (no rows) or the append is refused (the journal failed earlier, is closed or
    read-only, or the rows do not follow the last seq appended); else False."""
    if failed is not None:
        fut.set_exception(JournalError(f"the journal {where} failed earlier: {failed}"))
    elif closed:
        fut.set_exception(JournalError(f"the journal {where} is closed"))
    elif not rows:
        fut.set_result(None)
    elif rows[0][0] <= appended:
        fut.set_exception(ValueError(f"journal entries must come in seq order: {rows[0][0]} after {appended}"))
    else:
        return False
    return True


__all__ = ["OnOutcomes", "Store", "settled_early"]
