"""The journal's codec: what one entry is, how it is encoded, and how entries replay into a ledger.

Pure (no I/O, no asyncio): every store (:mod:`livecart.store.sqlite`, :mod:`livecart.store.memory`, the
distributed one to come) writes and reads these same entries, so what they hold replays the same way.

What is stored is the ledger's *input*, one entry per state change, in the ledger's ``seq`` order: each
processed comment (its key, user, intent and parsed items), each expiry sweep that expired something, and
each host control (pay, cancel, restock, presale cap, limit, feature, pause), with the clock reading the
ledger used. The ledger is deterministic, so replaying the entries in order through a fresh ledger rebuilds
it exactly, outcomes, order ids and queue positions included; :func:`apply` is that replay step.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import math
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from livecart.core import control
from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.control import Kind
from livecart.core.errors import JournalError, LivecartError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, Outcome, ParseResult, Reason, Status
from livecart.store.pace import unpaced

#: One journal row as read back: (seq, ts, kind, body) with body the JSON bytes.
Row = tuple[int, float, str, bytes]
#: One journal row as appended: (seq, ts, kind, data) with data a JSON-serialisable value.
Entry = tuple[int, float, str, Any]

# The record kind of a comment as a plain string: orjson encodes a str faster than a StrEnum member.
COMMENT: str = Kind.COMMENT.value
_KINDS = frozenset(k.value for k in Kind)

_BUY = Intent.BUY
_CANCEL = Intent.CANCEL
_NO_ITEMS: list[Any] = []  # shared by every row without items; rows are only ever encoded, never changed



def comment_row(seq: int, ts: float, comment: Comment, parsed: ParseResult) -> Entry:
    """The entry recording that ``comment`` (parsed as ``parsed``) was processed as ledger event ``seq``."""
    # Enums are written as their plain string values: orjson encodes an Enum member by looking up its
    # ``value`` attribute, which made encoding a row about twice as slow; the JSON is the same.
    intent = parsed.intent
    if intent is _BUY or intent is _CANCEL:
        its = parsed.items
        if len(its) == 1:  # nearly always; no comprehension frame
            i = its[0]
            r = i.reason
            items = [[i.sku, i.variant, i.qty, None if r is None else r._value_]]
        else:
            items = [[i.sku, i.variant, i.qty, None if i.reason is None else i.reason._value_] for i in its]
    else:
        items = _NO_ITEMS
    return (seq, ts, COMMENT, [comment.platform, comment.room, comment.id, comment.user, intent._value_, items,
                               comment.name])


def control_row(seq: int, ts: float, kind: Kind, args: Sequence[Any]) -> Entry:
    """The entry recording a control record (:func:`livecart.core.control.record`) or an expiry sweep."""
    return (seq, ts, kind.value, list(args))


def apply(ledger: Ledger, kind: str, body: bytes) -> list[Outcome]:
    """Replay one journal row through ``ledger`` (whose clock must read the row's ``ts``).

    Raises :class:`JournalError` for a row this version cannot understand.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JournalError(f"journal row of kind {kind!r} is damaged: {exc}") from exc
    return apply_data(ledger, kind, data)


def apply_data(ledger: Ledger, kind: str, data: Any) -> list[Outcome]:
    """:func:`apply` for an entry's decoded ``data``."""
    if kind not in _KINDS:
        raise JournalError(f"journal row of unknown kind {kind!r} (written by a newer livecart?)")
    try:
        if kind == COMMENT:
            platform, room, cid, user, intent, raw = data[:6]
            name = data[6] if len(data) > 6 and isinstance(data[6], str) else user  # the buyer's display name
            # Journalled comments were new when decided: nothing older than the window is asked again.
            return ledger.decide(Comment(platform, room, cid, user, name, "", 0.0), _parsed(intent, raw), True)
        return control.apply(ledger, Kind(kind), data)
    except LivecartError as exc:
        raise JournalError(f"journal row of kind {kind!r} cannot be replayed: {exc}") from exc
    except (ValueError, TypeError, IndexError) as exc:
        raise JournalError(f"journal row of kind {kind!r} is damaged: {exc!r}") from exc


#: Parse results already rebuilt from rows, by the row's intent and items: a sale's rows name few distinct
#: items (a flash sale's are nearly all "1 of the featured product"), and building frozen ``Item`` and
#: ``ParseResult`` objects and converting their enums for every row was ~20 % of a replay. Both are immutable,
#: so rows share them, as comments share the parser's cached results. Bounded: emptied when full.
_PARSED: dict[tuple[Any, ...], ParseResult] = {}
_PARSED_MAX = 4096


def _parsed(intent: Any, raw: Any) -> ParseResult:
    """The parse result a comment row records (its intent value and item lists)."""
    if len(raw) == 1:  # nearly every row: one item, a flat key (hashing nested tuples cost ~5 % of a replay)
        key: tuple[Any, ...] = (intent, *raw[0])
    else:
        key = (intent, len(raw), *(x for item in raw for x in item))
    pr = _PARSED.get(key)
    if pr is None:
        pr = ParseResult(Intent(intent), tuple(Item(s, v, q, Reason(r) if r is not None else None)
                                               for s, v, q, r in raw))
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = pr
    return pr


def catalogue_json(catalogue: Catalogue) -> str:
    """What of a catalogue the ledger's decisions depend on, as canonical JSON."""
    return orjson.dumps([
        {"sku": p.sku, "name": p.name, "price": p.price, "stock": p.stock, "limit": p.limit,
         "presale": p.presale,
         "variants": [{"name": v.name, "stock": v.stock, "presale": v.presale, "price": v.price}
                      for v in p.variants]}
        for p in catalogue.products
    ], option=orjson.OPT_SORT_KEYS).decode()


def catalogue_from_json(text: str) -> Catalogue:
    return Catalogue(tuple(
        Product(p["sku"], p["name"], price=p["price"], stock=p["stock"], limit=p["limit"],
                presale=p["presale"],
                variants=tuple(Variant(v["name"], stock=v["stock"], presale=v["presale"], price=v["price"])
                               for v in p["variants"]))
        for p in orjson.loads(text)
    ))


@dataclass(frozen=True, slots=True)
class Header:
    """What a journal was started with (its ``meta`` table)."""

    catalogue: Catalogue
    catalogue_json: str
    hold_seconds: float
    featured: str | None
    created: float
    #: The duplicate-id window the journal was started with (``[storage] dedupe_window``; 0: every id kept in
    #: memory, as journals from before the window do). Fixed for the journal's life: a replay must spill the
    #: same ids the live run did.
    recent: int = 0


def rebuild(header: Header, rows: Iterable[Row], *,
            on_outcomes: Callable[[list[Outcome]], None] | None = None) -> Ledger:
    """A ledger with every row (body as JSON bytes) replayed, in order. Raises :class:`JournalError` on a
    gap in ``seq`` or a row that cannot be replayed."""
    return _rebuild(header, rows, apply, on_outcomes)


def rebuild_entries(header: Header, entries: Iterable[Entry], *,
                    on_outcomes: Callable[[list[Outcome]], None] | None = None,
                    refusals: Refusals | None = None) -> Ledger:
    """:func:`rebuild` for decoded entries; ``refusals`` keeps the refusals of those after its time."""
    return _rebuild(header, entries, apply_data, on_outcomes, refusals)


#: The most refusals a restart keeps to tell again (:class:`Refusals`): more than any reply queue holds.
REFUSALS_KEPT = 100_000
_REJECTED = Status.REJECTED


class Refusals:
    """The refusals (sold out, over the limit, nothing to cancel ...) a replay decides for entries after
    ``after`` (a time on the ledger's clock): what a restart tells the buyers again when the process before
    had not told them when it died (their replies were queued; the replies' progress says up to when every
    buyer was told). A refusal makes no order, so the ledger keeps none: only a replay can give them back.
    The newest :data:`REFUSALS_KEPT` are kept, and their buyers' display names (``names``: user id -> the
    name on the comment; an order's buyer is named by the order, a refused one by nothing else).

    ``orders`` keeps, the same way, the ids of the orders the outcomes after ``after`` made or changed
    (a cancel, a payment, a promotion of an order made long before): the restart tells their buyers where
    those orders stand. ``covered`` is False when the replay began after ``after`` (both of the journal's
    snapshots are later): then what came between is not in here."""

    __slots__ = ("after", "covered", "kept", "most", "names", "orders")

    def __init__(self, after: float, most: int = REFUSALS_KEPT) -> None:
        self.after = after
        self.most = most
        self.covered = True
        self.kept: deque[Outcome] = deque(maxlen=most)
        self.names: dict[str, str] = {}
        self.orders: dict[str, None] = {}

    def take(self, out: list[Outcome], data: Any) -> None:
        """Keep the refusals among ``out``, the outcomes of the entry whose data is ``data``, and the ids of
        the orders the others made or changed."""
        refused = [o for o in out if o.status is _REJECTED]
        if refused:
            self.kept.extend(refused)
            if type(data) is list and len(data) == 7 and type(data[6]) is str and data[6]:  # a comment row
                self.names[refused[0].user] = data[6]
        orders = self.orders
        for o in out:
            if o.order is not None:
                orders.pop(o.order, None)  # the newest change last
                orders[o.order] = None
        while len(orders) > self.most:
            del orders[next(iter(orders))]

    def clear(self) -> None:
        self.kept.clear()
        self.names.clear()
        self.orders.clear()


def _rebuild(header: Header, rows: Iterable[tuple[int, float, str, Any]],
             step: Callable[[Ledger, str, Any], list[Outcome]],
             on_outcomes: Callable[[list[Outcome]], None] | None, refusals: Refusals | None = None) -> Ledger:
    now = [header.created]
    ledger = Ledger(header.catalogue, hold_seconds=header.hold_seconds, featured=header.featured,
                    clock=lambda: now[0], recent=header.recent)
    return _replay(ledger, now, rows, step, on_outcomes, refusals)


def _replay(ledger: Ledger, now: list[float], rows: Iterable[tuple[int, float, str, Any]],
            step: Callable[[Ledger, str, Any], list[Outcome]],
            on_outcomes: Callable[[list[Outcome]], None] | None, refusals: Refusals | None = None) -> Ledger:
    if refusals is not None:
        refusals.clear()  # a replay tried again from an older snapshot keeps each refusal once
    after = refusals.after if refusals is not None else math.inf  # one comparison an entry, no call
    for seq, ts, kind, body in rows:
        now[0] = ts
        try:
            out = step(ledger, kind, body)
        except JournalError:
            raise
        except Exception as exc:  # a state the entry does not fit (a snapshot restored wrong, a foreign journal)
            raise JournalError(f"journal event {seq} ({kind}) does not replay onto the state before it "
                               f"({exc!r}); `livecart journal verify` checks the file") from exc
        if ledger.seq != seq:
            raise JournalError(f"journal is inconsistent at event {seq} (replay reached {ledger.seq}); "
                               "it was written by another catalogue or another version")
        if on_outcomes is not None and out:
            on_outcomes(out)
        if ts > after and out:
            refusals.take(out, body)  # type: ignore[union-attr]  # after is finite only with refusals
    return ledger


# --------------------------------------------------------------------------- snapshots

#: The snapshot format this livecart writes (the shape of :meth:`Ledger.state`, in JSON). 3 added the bounded
#: duplicate-id memory (``dedupe``, its arrays as base64); 1 (every id in ``seen``) still reads. A format-2
#: snapshot with a ``dedupe`` part had other filter masks (written for an hour of one day's development): it
#: is not restored (a start passes over it as over a damaged snapshot); one without reads as format 1. 4
#: keeps the first and last event of each chunk instead of every key's, and the window's keys in the filter
#: too (see :mod:`livecart.core.dedupe`); format 3 still reads. 5 writes orders and the expiry heap by
#: columns (a list per field, not per order: see :meth:`Ledger.state`); format 4 still reads. 6 seals the
#: fields an order never changes in parts of :data:`~livecart.core.ledger.ORDER_SEGMENT` orders, encoded once
#: and written again as they are, and keeps the expiry heap as rows again; formats 4 and 5 still read. 7 is
#: format 6's body, which the SQLite journal stores in pieces (``SqliteStore._write_snapshot``): a livecart
#: that reads up to 6 would find only the first, so it is told to upgrade instead; 6 still reads. A format-7
#: snapshot's orders may carry one more fixed column, ``name`` (the buyer's display name): one written before
#: it restores its orders without names (and a livecart that does not know the column passes it over).
SNAPSHOT_VERSION = 7
#: Most items of a list encoded by one orjson call: each call holds the GIL throughout, so a list of 400,000
#: deadlines (13 ms) encoded whole stopped the event loop for all of it.
_PIECE = 32768


def _b64(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} in a snapshot")


def _bracketed(pieces: Iterable[bytes | memoryview]) -> list[bytes | memoryview]:
    """A JSON list in pieces: ``[``, the items' JSON with ``,`` between them, ``]``."""
    parts: list[bytes | memoryview] = [b"["]
    for i, piece in enumerate(pieces):
        if i:
            parts.append(b",")
        parts.append(piece)
    parts.append(b"]")
    return parts


def _list_parts(values: list[Any], pause: Callable[[], None] = unpaced) -> list[bytes | memoryview]:
    """``values`` as JSON in pieces, :data:`_PIECE` items encoded a call, ``pause`` called after each."""
    if len(values) <= _PIECE:
        out: list[bytes | memoryview] = [orjson.dumps(values)]
        pause()
        return out

    def pieces() -> Iterator[memoryview]:
        for at in range(0, len(values), _PIECE):
            piece = memoryview(orjson.dumps(values[at:at + _PIECE]))[1:-1]
            pause()
            yield piece

    return _bracketed(pieces())


def _sealed_parts(sealed: list[Any], pause: Callable[[], None] = unpaced) -> list[bytes | memoryview]:
    """The sealed parts of a snapshot's orders (``msgspec.Raw``: JSON already) as a JSON list, in pieces that
    are the parts themselves, not copies (at 390,000 orders they are ~35 MB)."""
    if not all(isinstance(p, msgspec.Raw) for p in sealed):
        return _list_parts(sealed, pause)  # decoded already (a state read back from a snapshot)
    return _bracketed(memoryview(p) for p in sealed)


class _Spliced:
    """JSON in pieces: long parts of a value are encoded apart (:func:`_list_parts`) and go into the JSON of
    the rest as markers, with a nonce no text in the sale can guess, that :meth:`parts` then cuts out and
    replaces by the parts, so no part is copied again into one body."""

    def __init__(self) -> None:
        self._nonce = secrets.token_hex(8)
        self._held: dict[bytes, list[bytes | memoryview]] = {}

    def hold(self, parts: list[bytes | memoryview]) -> str:
        mark = f"\x00livecart {self._nonce} {len(self._held)}\x00"
        self._held[orjson.dumps(mark)] = parts
        return mark

    def parts(self, text: bytes) -> list[bytes | memoryview]:
        cuts = sorted((text.index(mark), mark) for mark in self._held)
        view = memoryview(text)
        out: list[bytes | memoryview] = []
        at = 0
        for where, mark in cuts:
            out.append(view[at:where])
            out.extend(self._held[mark])
            at = where + len(mark)
        out.append(view[at:])
        return out


def _json_parts(data: dict[str, Any], default: Callable[[Any], Any] | None,
                pause: Callable[[], None] = unpaced) -> list[bytes | memoryview]:
    """``data`` (a :meth:`Ledger.state`, or a dict holding one under ``ledger``) as JSON, in pieces: its long
    lists (the orders' columns and sealed parts, the expiry heap) encoded apart (:class:`_Spliced`), each
    call of orjson holding the GIL for at most :data:`_PIECE` items, ``pause`` called after each."""
    spliced = _Spliced()
    hold = spliced.hold

    def take(state: dict[str, Any]) -> dict[str, Any]:
        out = dict(state)
        orders = out.get("orders")
        if isinstance(orders, dict):
            out["orders"] = {k: hold(_sealed_parts(v, pause)) if k == "sealed" and isinstance(v, list)
                             else hold(_list_parts(v, pause)) if isinstance(v, list) else v
                             for k, v in orders.items()}
        elif isinstance(orders, list):
            out["orders"] = hold(_list_parts(orders, pause))
        if isinstance(out.get("expiry"), list):
            out["expiry"] = hold(_list_parts(out["expiry"], pause))
        return out

    ledger = data.get("ledger")
    data = {**data, "ledger": take(ledger)} if isinstance(ledger, dict) else take(data)
    text = orjson.dumps(data, default=default)
    pause()
    return spliced.parts(text)


def dumps_state(data: dict[str, Any]) -> bytes:
    """A dict holding a :meth:`Ledger.state` under ``ledger`` (a JetStream sale's snapshot) as JSON (arrays as
    base64). Safe to call on another thread."""
    return b"".join(_json_parts(data, _b64))


def encode_snapshot(state: dict[str, Any]) -> bytes:
    """A snapshot body: :meth:`Ledger.state` as JSON (:func:`snapshot_parts`, joined). Safe to call on another
    thread (the state is a copy)."""
    return b"".join(snapshot_parts(state))


#: The lists of the duplicate-id memory's state as long as its window (encoded apart, see snapshot_parts).
_DEDUPE_LONG = ("ids", "ring_rooms")


def snapshot_parts(state: dict[str, Any], pause: Callable[[], None] = unpaced) -> list[bytes | memoryview]:
    """A snapshot body in pieces, to be written one after the other (a store that can write a body piecewise
    never holds all of it at once). Safe to call on another thread (the state is a copy, or views of arrays that
    no longer change). ``pause`` is called after each call of the JSON encoder (a worker thread paces itself
    there: :class:`livecart.store.pace.Pacer`); the bytes are the same with or without it.

    The duplicate-id memory, when there is one, follows after a newline (JSON as orjson writes it holds
    none), so a reader that needs only the sale (``report``) skips it: its JSON with every ``bytes`` or
    ``memoryview`` value (the window's arrays, the filter's segments) replaced by ``{"$raw": i}``, a newline,
    the JSON list of their sizes, a newline, then the bytes themselves, raw (as base64 inside the JSON they
    cost a third more and two more copies of the filter at every snapshot); the raw pieces are the state's own
    objects, not copies. Its window's ids and their rooms are encoded apart, like the orders' columns."""
    dedupe = state.get("dedupe")
    if dedupe is None:
        return _json_parts(state, _b64, pause)
    rest = {k: v for k, v in state.items() if k != "dedupe"}
    blobs: list[bytes | memoryview] = []

    def raw(value: Any) -> dict[str, int]:
        if isinstance(value, bytes | memoryview):
            blobs.append(value)
            return {"$raw": len(blobs) - 1}
        raise TypeError(f"cannot encode {type(value).__name__} in a snapshot")

    body = _json_parts(rest, None, pause)
    spliced = _Spliced()
    if isinstance(dedupe, dict):
        dedupe = {k: spliced.hold(_list_parts(v, pause)) if k in _DEDUPE_LONG and isinstance(v, list) else v
                  for k, v in dedupe.items()}
    head = spliced.parts(orjson.dumps(dedupe, default=raw))
    pause()
    sizes = orjson.dumps([b.nbytes if isinstance(b, memoryview) else len(b) for b in blobs])
    return [*body, b"\n", *head, b"\n", sizes, b"\n", *blobs]


def decode_snapshot(body: bytes | bytearray, *, dedupe: bool = True) -> dict[str, Any]:
    """The state :func:`encode_snapshot` encoded; without its duplicate-id memory unless ``dedupe``. Raw parts
    come back as memoryviews of ``body`` (base64 strings, in a body written before raw parts, as they were)."""
    cut = body.find(b"\n")
    if cut < 0:
        state: dict[str, Any] = orjson.loads(body)
        return state
    state = orjson.loads(body[:cut])
    if not dedupe:
        return state
    second = body.find(b"\n", cut + 1)
    if second < 0:  # written with base64 inside the JSON
        state["dedupe"] = orjson.loads(body[cut + 1:])
        return state
    dd = orjson.loads(body[cut + 1:second])
    third = body.find(b"\n", second + 1)
    if third < 0:
        raise ValueError("the snapshot's raw parts have no sizes")
    sizes = orjson.loads(body[second + 1:third])
    view = memoryview(body)
    parts: list[memoryview] = []
    at = third + 1
    for n in sizes:
        parts.append(view[at:at + int(n)])
        at += int(n)
    if at != len(body):
        raise ValueError("the snapshot's raw parts do not add up to its size")

    def part(v: Any) -> Any:
        return parts[int(v["$raw"])] if isinstance(v, dict) else v

    if "seqs" in dd:  # format 3
        dd["seqs"] = part(dd["seqs"])
    dd["hashes"] = part(dd["hashes"])
    dd["filter"] = [[part(seg), n, cap] for seg, n, cap in dd["filter"]]
    state["dedupe"] = dd
    return state


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a while (a snapshot decoded and restored, a batch of comments
    decided and its rows encoded), as it was after.

    A restore allocates hundreds of thousands of acyclic objects at once (the decoded JSON, then an order
    object per order), and every young collection along the way scans them for nothing: restoring the 65,832
    orders of a 10M-comment sale took 198 ms of CPU with the collector on, 108 ms with it off. Nothing
    made in between is cyclic garbage; the pause ends before the tail is replayed."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def snapshot_report(body: bytes | bytearray) -> dict[str, Any] | None:
    """The report (:meth:`Ledger.snapshot`'s shape) a snapshot body carries, or None for a snapshot written
    before snapshots carried one. Raises ``orjson.JSONDecodeError`` for a body that is not a snapshot's."""
    cut = body.find(b"\n")
    state = orjson.loads(body if cut < 0 else body[:cut])
    report = state.get("report") if isinstance(state, dict) else None
    return report if isinstance(report, dict) else None


def resume(header: Header, version: int, body: bytes | bytearray, entries: Iterable[Entry], *,
           on_outcomes: Callable[[list[Outcome]], None] | None = None, dedupe: bool = True,
           refusals: Refusals | None = None) -> Ledger:
    """The ledger a snapshot (``version``, ``body``) and the entries after it give: what :func:`rebuild_entries`
    gives for all of them. Raises :class:`JournalError` for a snapshot of a newer format or one that does not
    fit the journal's catalogue. Without ``dedupe`` the ledger keeps the ids of the entries replayed only
    (no window, no filter): the same sale, for a reader that takes no comments (``report``, ``export``)."""
    if version > SNAPSHOT_VERSION:
        raise JournalError(f"the journal's latest snapshot has format {version}; this livecart reads up to "
                           f"{SNAPSHOT_VERSION}: upgrade livecart")
    now = [header.created]
    try:
        with paused_gc():
            state = decode_snapshot(body, dedupe=dedupe)
            if version == 2 and "dedupe" in state:
                raise ValueError("a format-2 snapshot's duplicate-id filter is not read by this livecart")
            ledger = Ledger.restore(header.catalogue, state, clock=lambda: now[0])
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
        raise JournalError(f"the journal's snapshot cannot be restored ({exc!r}); `livecart journal repair` "
                           "drops it") from exc
    window = ledger.dedupe.recent if ledger.dedupe is not None else 0
    if dedupe and window != header.recent:
        raise JournalError(f"the journal's snapshot has a duplicate-id window of {window}, the journal "
                           f"{header.recent}: it belongs to another journal")
    return _replay(ledger, now, entries, apply_data, on_outcomes, refusals)
