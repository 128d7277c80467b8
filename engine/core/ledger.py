"""The reservation ledger: who gets which unit, decided in memory (docs/contract.md §4).

No I/O, no asyncio, no clock calls of its own: values in, outcomes out. The clock is injected and read once
per call, so a journal can record that instant and replay the same call later with the same result.

Rules (each one is tested in ``tests/core/test_ledger.py``):

* A *unit* is what holds stock: a product, or one variant of a product that has variants (``"sku/variant"``).
* A buy item is checked in this order: ``reason`` set by the parser -> rejected with it; no sku ->
  ``not_available``; sku not in the catalogue -> ``unknown_product``; variants exist but none named ->
  ``needs_variant``; a variant the product does not have, or a variant named for a product without variants
  -> ``not_available``; quantity below 1 -> ``bad_quantity``.
* **Limit first.** ``limit`` counts the units one buyer holds of a product across all its variants in active
  orders (reserved, paid, presale); cancelled and expired orders free it. The part of a quantity above what
  the buyer may still hold is rejected ``limit``; the rest goes on to the stock check. So with limit 5, 4
  held, 3 asked and 1 unit left: 1 ``reserved`` and 2 ``rejected: limit``.
* **Reserve, then presale, then sold out.** Open stock is reserved first; the remainder is queued as presale
  while the unit's queued presale units stay within its ``presale`` cap (the cap bounds units queued at any
  moment); beyond it ``rejected: sold_out``. Presale ``position`` is the order's 1-based place in the unit's
  FIFO queue when it joined.
* **Returned stock serves the queue first.** Stock that comes back (a cancel, an expiry, a restock) goes to
  the head of the unit's presale queue. An order that fits whole is ``promoted`` (it becomes a held
  reservation with a fresh hold). An order larger than what came back is split: the units that came back
  become a new order (``promoted``, new order id), the rest keeps the original order id at the head of the
  queue. Hence the invariant: a unit with a non-empty queue has no open stock.
* A hold not paid within ``hold_seconds`` expires (:meth:`Ledger.expire_due`); 0 means never.
* A cancel comment cancels the buyer's latest active (reserved or presale) order, or, per named product,
  the latest active order of that product (and variant, if named); with nothing to cancel the item is
  ``rejected: not_available``. Quantities in a cancel comment are ignored: the whole order is cancelled.
  Paid orders are cancelled only by the host (:meth:`Ledger.cancel_order`).
* Only a held (reserved) order can be paid.
* A comment key ``(platform, room, id)`` seen before yields no outcome and changes nothing.

Every call that changes state (including a comment with no buy/cancel intent, which still counts as
processed) advances :attr:`Ledger.seq`; a journal that stores each such call with its clock reading and
replays them in ``seq`` order rebuilds the same ledger.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from itertools import chain, islice, repeat
from typing import Any
from zlib import crc32

import msgspec

from livecart.core.catalogue import Catalogue, Product
from livecart.core.dedupe import MASK_SHIFT, Dedupe, holds
from livecart.core.errors import ControlError
from livecart.core.records import Comment, Intent, Item, Outcome, ParseResult, Reason, Status, make_outcome

_RESERVED = Status.RESERVED
_PRESALE = Status.PRESALE
_REJECTED = Status.REJECTED
_CANCELLED = Status.CANCELLED
_EXPIRED = Status.EXPIRED
_PROMOTED = Status.PROMOTED
_PAID = Status.PAID
_BUY = Intent.BUY
_SOLD_OUT = Reason.SOLD_OUT
_LIMIT = Reason.LIMIT
_CANCEL = Intent.CANCEL
_STATUS = {s.value: s for s in Status}  # a dict lookup: Status(value) is an Enum call, ~30x slower
#: The fields of an order in a snapshot, in the order _Order takes them (see Ledger.state).
_ORDER_FIELDS = ("id", "user", "unit", "qty", "status", "comment", "platform", "room", "created", "deadline")
#: The fields an order never changes once made; the others (qty, status, deadline) can change. ``name`` (the
#: buyer's display name on the comment that made the order) is read apart from them: snapshots written before
#: it was kept have no such column.
_FIXED = ("id", "user", "unit", "comment", "platform", "room", "created")
#: Orders per sealed part of a snapshot (format 6, see Ledger.state); a module global so tests can make it small.
ORDER_SEGMENT = 4096
#: Keyed host controls the ledger remembers (Ledger.control_key): the newest this many, applied within the
#: last CONTROL_KEY_SECONDS. A control sent again with its key (a tap that got no answer, ``ctl`` retrying
#: after the daemon died) comes within seconds or minutes.
CONTROL_KEYS = 1024
CONTROL_KEY_SECONDS = 900.0
#: The statuses of an order whose units count towards its buyer's limit (Ledger._held).
_ACTIVE = frozenset((Status.RESERVED, Status.PRESALE, Status.PAID))
_INT = frozenset((int,))
_STR = frozenset((str,))
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def _fixed_columns(orders: list[_Order]) -> dict[str, list[Any]]:
    """The fields of ``orders`` that never change, a list per field."""
    return {"id": [o.id for o in orders], "user": [o.user for o in orders],
            "unit": [o.unit.key for o in orders], "comment": [o.comment for o in orders],
            "platform": [o.platform for o in orders], "room": [o.room for o in orders],
            "created": [o.created for o in orders], "name": [o.name for o in orders]}


def _sealed_part(orders: list[_Order]) -> msgspec.Raw:
    """One sealed segment of orders: their fixed fields (:func:`_fixed_columns`) encoded as JSON once."""
    return msgspec.Raw(_encode(_fixed_columns(orders)))


class _Unit:
    """Stock of one product or variant. Mutable, internal."""

    __slots__ = ("key", "sku", "variant", "stock", "reserved", "paid", "cap", "queued", "queue", "price")

    def __init__(self, sku: str, variant: str | None, stock: int, cap: int, price: float) -> None:
        self.key = sku if variant is None else f"{sku}/{variant}"
        self.sku = sku
        self.variant = variant
        self.stock = stock
        self.reserved = 0  # units held or paid
        self.paid = 0  # of which paid
        self.cap = cap
        self.queued = 0  # presale units queued
        self.queue: dict[str, _Order] = {}  # FIFO: insertion order, O(1) removal
        self.price = price

    def __repr__(self) -> str:
        return (f"<Unit {self.key}: {self.stock - self.reserved:,} left of {self.stock:,}, "
                f"{self.queued:,}/{self.cap:,} presale queued in {len(self.queue)} orders>")


class _Order:
    """One order: a reservation or a presale entry. Mutable, internal."""

    __slots__ = ("id", "user", "unit", "qty", "status", "comment", "platform", "room", "created", "deadline",
                 "name")

    def __init__(self, oid: str, user: str, unit: _Unit, qty: int, status: Status, comment: str | None,
                 platform: str | None, room: str | None, created: float, name: str | None) -> None:
        self.id = oid
        self.user = user
        self.unit = unit
        self.qty = qty
        self.status = status
        self.comment = comment
        self.platform = platform
        self.room = room
        self.created = created
        self.deadline = 0.0
        #: The buyer's display name on the comment that made the order (None: not known, e.g. an order
        #: restored from a snapshot written before names were kept).
        self.name = name

    def __repr__(self) -> str:
        due = f", due {self.deadline:.0f}" if self.status is Status.RESERVED and self.deadline else ""
        return f"<Order {self.id} {self.user} {self.unit.key} x{self.qty} {self.status.value}{due}>"

    def as_dict(self) -> dict[str, Any]:
        u = self.unit
        return {"order": self.id, "user": self.user, "sku": u.sku, "variant": u.variant, "qty": self.qty,
                "status": self.status.value, "price": u.price, "time": self.created, "comment": self.comment,
                "platform": self.platform, "room": self.room}


def _unit_figures(u: _Unit) -> dict[str, Any]:
    return {"stock": u.stock, "left": u.stock - u.reserved, "reserved": u.reserved, "presale": u.queued,
            "cap": u.cap, "queue": len(u.queue), "paid": u.paid}


class Ledger:
    """Decides outcomes for parsed comments and host controls. See the module docstring for the rules.

    ``hold_seconds`` is how long a reservation may stay unpaid (0 = forever); ``featured`` is the sku a
    bare "+1" buys (the parser reads it from :attr:`featured`); ``clock`` returns epoch seconds.
    Invalid host controls raise :class:`~livecart.core.errors.ControlError` and change nothing.
    """

    def __init__(self, catalogue: Catalogue, *, clock: Callable[[], float], hold_seconds: float = 0.0,
                 featured: str | None = None, recent: int = 0) -> None:
        # ``clock`` comes first of the keywords: mypyc (LIVECART_COMPILE=1) cannot describe a required
        # keyword after defaulted ones.
        self.clock = clock  # public: a journal replay swaps in recorded times
        self.hold_seconds = float(hold_seconds)
        self._products: dict[str, Product] = dict(catalogue.by_sku)
        self._units: dict[str, _Unit] = {}
        self._plain: dict[str, _Unit] = {}  # sku -> unit, products without variants
        self._variants: dict[str, dict[str, _Unit]] = {}  # sku -> variant name -> unit
        self._limits: dict[str, int] = {}
        for p in catalogue.products:
            self._limits[p.sku] = p.limit
            if p.variants:
                vs = self._variants[p.sku] = {}
                for v in p.variants:
                    u = _Unit(p.sku, v.name, v.stock, v.presale, v.price if v.price is not None else p.price)
                    vs[v.name] = self._units[u.key] = u
            else:
                u = _Unit(p.sku, None, p.stock, p.presale, p.price)
                self._plain[p.sku] = self._units[u.key] = u
        if featured is not None and featured not in self._products:
            raise ControlError(f"featured product {featured!r} is not in the catalogue")
        self._featured = featured
        # Comment ids seen, per (platform, room). Sets of strings, not of (platform, room, id) tuples: a tuple
        # per comment is one more object for the cyclic GC to scan until it untracks it, and in a flash sale
        # those tuples alone triggered a young collection (~7 ms) every 50,000 comments.
        self._seen: dict[tuple[str, str], set[str]] = {}
        # The set of the last (platform, room) decided, which is nearly always the next one's too.
        self._seen_platform = ""
        self._seen_room = ""
        self._seen_ri = 0
        #: With ``recent`` > 0 the seen ids are bounded (:mod:`livecart.core.dedupe`): the last ``recent`` exactly,
        #: older ones in a filter confirmed through the store. 0: every id stays in memory.
        self.dedupe: Dedupe | None = Dedupe(recent) if recent > 0 else None
        if self.dedupe is not None:
            self._seen = self.dedupe.sets
        self._seen_ids = self._room_ids("", "")
        self._orders: dict[str, _Order] = {}
        self._by_user: dict[str, list[_Order]] = {}
        # sku -> user -> units in active orders (per sku, so a buy needs no (user, sku) key object)
        self._held: dict[str, dict[str, int]] = {p.sku: {} for p in catalogue.products}
        self._expiry: list[tuple[float, int, str]] = []
        self._next_order = 1
        self._counts: dict[Status, int] = {}
        # The fixed fields of the first len(_sealed) * ORDER_SEGMENT orders, encoded as JSON once (state()).
        self._sealed: list[msgspec.Raw] = []
        # (platform, room, comment id) -> the orders it made, of orders made before a time (see again()).
        self._by_comment: dict[tuple[str | None, str | None, str], list[_Order]] | None = None
        self._told: set[str] = set()  # orders again() / again_since() have given once
        self.seq = 0
        self.comments = 0
        #: True while the host has paused intake (journalled, so a restart comes back paused too).
        self.intake_paused = False
        # Keyed controls applied: key -> (when, record kind, record arguments), oldest first (control_key).
        self._control_keys: dict[str, tuple[float, str, list[Any]]] = {}

    # ------------------------------------------------------------------ reading

    @property
    def featured(self) -> str | None:
        return self._featured

    def seen(self, key: tuple[str, str, str]) -> bool:
        """Whether a comment with this ``(platform, room, id)`` has been processed."""
        if self.dedupe is not None:
            return self.dedupe.contains(key[0], key[1], key[2])
        ids = self._seen.get((key[0], key[1]))
        return ids is not None and key[2] in ids

    def _room_ids(self, platform: str, room: str) -> set[str]:
        if self.dedupe is not None:
            self._seen_ri, ids = self.dedupe.room(platform, room)
            self.dedupe.switch(self._seen_ri)
        else:
            got = self._seen.get((platform, room))
            if got is None:
                got = self._seen[(platform, room)] = set()
            ids = got
        self._seen_platform = platform
        self._seen_room = room
        self._seen_ids = ids
        return ids

    def order(self, order_id: str) -> dict[str, Any] | None:
        o = self._orders.get(order_id)
        return None if o is None else o.as_dict()

    def name_of(self, user: str) -> str | None:
        """The display name ``user`` gave on the comment of their latest order, or None (no order, or an order
        restored from a snapshot that kept no names). Survives a restart: it is part of the orders, so
        replies and the console name a buyer after a crash as before it."""
        mine = self._by_user.get(user)
        if mine:
            for o in reversed(mine):
                if o.name:
                    return o.name
        return None

    def again(self, c: Comment, before: float) -> list[Outcome]:
        """The orders that comment ``c`` made before ``before`` (a time on this ledger's clock), as outcomes
        that say where each stands now (held, with its pay-by time; queued, with its place; paid, cancelled,
        expired), each order once per ledger (:meth:`again_since` included): what a restarted daemon tells a
        buyer whose comment comes back (resent because the previous process died before acknowledging it,
        so perhaps before announcing its outcome). Decides nothing and changes nothing but this once-only
        memory; outcomes that made no order (refusals) are not kept, so none come back. A hold that has run
        out is left to the expiry sweep, which announces it. ``seq`` is the ledger's current one."""
        index = self._by_comment
        if index is None:  # built at the first resend: the orders restored from the journal, once
            index = self._by_comment = {}
            for o in self._orders.values():
                if o.comment is not None and o.created < before:
                    index.setdefault((o.platform, o.room, o.comment), []).append(o)
        found = index.pop((c.platform, c.room, c.id), None)
        out: list[Outcome] = []
        if found:
            now = self.clock()
            for o in found:
                self._tell(o, now, out)
        return out

    def again_since(self, after: float, before: float, exclude: Container[str] = ()) -> list[Outcome]:
        """:meth:`again` for every order made after ``after`` and before ``before``, oldest first, but those
        in ``exclude``: what a restarted daemon (or a new decider of a JetStream sale) announces at once when
        the last one kept, in the replies' progress, that it had not yet told the buyers of orders made after
        ``after`` (their replies were queued when it died)."""
        news: list[_Order] = []
        for o in reversed(self._orders.values()):
            if o.created <= after:
                break  # orders are made in time order: the rest are older
            if o.created < before and o.id not in exclude:
                news.append(o)
        out: list[Outcome] = []
        now = self.clock()
        for o in reversed(news):
            self._tell(o, now, out)
        return out

    def again_of(self, orders: Iterable[str]) -> list[Outcome]:
        """:meth:`again` for the orders of these ids (those the replay after the replies' progress made or
        changed: a cancel, a payment, a promotion of an order made before it), as they stand now; an order
        told already by :meth:`again_since` or :meth:`again` is not told twice."""
        out: list[Outcome] = []
        now = self.clock()
        for oid in orders:
            o = self._orders.get(oid)
            if o is not None:
                self._tell(o, now, out)
        return out

    def latest(self, n: int) -> list[Outcome]:
        """The ``n`` newest orders, oldest first, as outcomes that say where each stands now (held, queued with
        its place, paid, cancelled, expired) at the time it was made: what the host's console lists when a
        daemon starts on a sale that has orders already. Changes nothing (not the once-only memory of
        :meth:`again`)."""
        if n <= 0:
            return []
        newest: list[_Order] = []
        for o in reversed(self._orders.values()):
            newest.append(o)
            if len(newest) >= n:
                break
        return [self._standing(o, o.created) for o in reversed(newest)]

    def _tell(self, o: _Order, now: float, out: list[Outcome]) -> None:
        told = self._told
        if o.id in told:
            return
        told.add(o.id)
        if o.status is _RESERVED and o.deadline and o.deadline <= now:
            return  # ran out while no one was there to be told: the next sweep expires and announces it
        # A held order's pay-by time is its deadline: the reply computes it from ts + the hold.
        out.append(self._standing(o, o.deadline - self.hold_seconds if o.status is _RESERVED and o.deadline
                                  else o.created))

    def _standing(self, o: _Order, ts: float) -> Outcome:
        """Order ``o`` as an outcome that says where it stands now (a queued one with its place), at ``ts``."""
        u = o.unit
        place = list(u.queue).index(o.id) + 1 if o.status is _PRESALE and o.id in u.queue else None
        return make_outcome(o.comment, o.user, o.id, u.sku, u.variant, o.qty, o.status, None, place,
                            o.platform, o.room, ts, self.seq)

    def order_made(self, order_id: str) -> float | None:
        """When order ``order_id`` was made (this ledger's clock), or None for no such order."""
        o = self._orders.get(order_id)
        return None if o is None else o.created

    def order_name(self, order_id: str) -> str | None:
        """The display name on the comment that made order ``order_id`` (None: no such order, or no name kept).
        Names the buyer of that very order, even when the same user id has ordered under another name since
        (two platforms' ids can be alike; a viewer can rename)."""
        o = self._orders.get(order_id)
        return None if o is None else o.name

    def users(self) -> Iterator[str]:
        """The user ids that have made orders, first order first."""
        return iter(self._by_user)

    def queue(self, key: str) -> list[str]:
        """Order ids in the presale queue of unit ``key`` ("sku" or "sku/variant"), head first."""
        u = self._units.get(key)
        return [] if u is None else list(u.queue)

    def orders(self) -> Iterator[dict[str, Any]]:
        """Every order ever created, in creation order, as export rows (order, user, sku, variant, qty,
        status, price, time, comment, platform, room). A promoted order reads ``reserved``: promotion is
        an event, not a state."""
        for o in self._orders.values():
            yield o.as_dict()

    def orders_detail(self) -> Iterator[dict[str, Any]]:
        """:meth:`orders` rows plus ``pay_by`` (epoch seconds a held order must be paid by; None when it is
        not held or holds never expire) and ``name`` (:meth:`order_name`), for the host's console."""
        for o in self._orders.values():
            row = o.as_dict()
            row["pay_by"] = o.deadline if o.status is _RESERVED and o.deadline else None
            row["name"] = o.name
            yield row

    def snapshot(self) -> dict[str, Any]:
        """The state in the shape of docs/contract.md §5's report, plus ``featured``, ``orders`` and per-unit
        ``cap``, ``queue`` (orders waiting) and ``paid`` (of ``reserved``, the units paid)."""
        products = {u.key: _unit_figures(u) for u in self._units.values()}
        return {"comments": self.comments, "outcomes": {s.value: n for s, n in sorted(self._counts.items())},
                "products": products, "featured": self._featured, "orders": len(self._orders)}

    def product(self, key: str) -> dict[str, Any] | None:
        """The figures of unit ``key`` ("sku" or "sku/variant") as :meth:`snapshot` gives them under
        ``products``, or None; without building the others (the daemon asks after every durable batch)."""
        u = self._units.get(key)
        return None if u is None else _unit_figures(u)

    # ------------------------------------------------------------------ checkpoints

    def seal_some(self) -> None:
        """Seal the oldest full segment of orders not sealed yet, if there is one (see :meth:`state`). The daemon
        calls it after each batch, so that the segments are encoded a few milliseconds apart as they fill, not
        all together by the next :meth:`state`, on the event loop, at the moment a snapshot is due (at 4,096
        orders a segment, each costs ~1 ms; a snapshot after 200,000 orders met ~50 of them at once). Only
        the newest orders are read, backwards from the end, so a call costs what its segment does; a ledger
        more than two segments behind (just restored: a restore keeps none) leaves them to :meth:`state`, which
        seals all it finds full, as it did before this method."""
        step = ORDER_SEGMENT
        n = len(self._orders)
        done = len(self._sealed) * step
        behind = n - done
        if behind < step or behind >= 2 * step:
            return
        oldest = list(islice(reversed(self._orders.values()), behind - step, behind))  # newest first
        oldest.reverse()
        self._sealed.append(_sealed_part(oldest))

    def state(self) -> dict[str, Any]:
        """Everything that decides the next outcome, as plain data (str, int, float, None, lists, dicts) that
        JSON carries unchanged: :meth:`restore` of it gives a ledger that decides exactly as this one.

        Meant for snapshots taken between two decisions: it copies (so the caller may encode it on another
        thread while this ledger goes on; the duplicate-id filter's full segments, which never change again,
        are read-only views instead); the only encoding it does is the sealing of orders (below). Orders
        appear in creation order, a unit's presale queue head first, the expiry heap as it is (stale entries
        included: they decide nothing, but keep the heap's order, which does).

        Orders go by columns (snapshot format 6). The fields an order never changes are sealed: every
        ``ORDER_SEGMENT`` orders, encoded as JSON once (a ``msgspec.Raw``, which the store writes as it is) and
        given again to every later snapshot; the rest of them (``tail``) and the fields that can change
        (``qty``, ``status``, ``deadline``, a list each over all orders) are read every time. Reading every
        field of every order at every snapshot (format 5) cost ~240 ms of the event loop at 390,000 orders,
        and encoding it another ~120 ms with the GIL held. The expiry heap is a copy of its list of tuples.
        The units each buyer holds of each product are not in it: :meth:`restore` adds them up from the
        orders that are not over (copying and encoding them cost ~17 ms a snapshot at 257,000 buyers).
        A list per order, not per field (format 4), made hundreds of thousands of containers at once, and the
        first collection after each snapshot scanned them all with the event loop stopped."""
        every = list(self._orders.values())
        step = ORDER_SEGMENT
        sealed = self._sealed
        done = len(sealed) * step
        if done > len(every):  # pragma: no cover - orders are never removed; a guard, not a path
            sealed.clear()
            done = 0
        full = len(every) // step * step
        for at in range(done, full, step):
            sealed.append(_sealed_part(every[at:at + step]))
        orders = {"sealed": list(sealed), "tail": _fixed_columns(every[full:]),
                  "qty": [o.qty for o in every], "status": [o.status._value_ for o in every],
                  "deadline": [o.deadline for o in every]}
        state: dict[str, Any] = {
            "seq": self.seq, "comments": self.comments, "next_order": self._next_order,
            "featured": self._featured, "paused": self.intake_paused, "hold_seconds": self.hold_seconds,
            "limits": dict(self._limits),
            "units": [[u.key, u.stock, u.reserved, u.cap, u.queued, list(u.queue)] for u in self._units.values()],
            "orders": orders,
            "expiry": list(self._expiry),
            "counts": {st._value_: n for st, n in self._counts.items()},
            # What a report reads when no event follows the snapshot (a sale that has ended): derived from the
            # rest, never restored from.
            "report": self.snapshot(),
        }
        if self._control_keys:
            state["controls"] = [[key, t, kind, list(args)] for key, (t, kind, args) in self._control_keys.items()]
        if self.dedupe is not None:
            state["dedupe"] = self.dedupe.state()
        else:
            state["seen"] = [[platform, room, list(ids)] for (platform, room), ids in self._seen.items()]
        return state

    @classmethod
    def restore(cls, catalogue: Catalogue, state: dict[str, Any], *, clock: Callable[[], float]) -> Ledger:
        """The ledger :meth:`state` described, for ``catalogue`` (the one it was started with). Raises
        ``KeyError`` / ``ValueError`` / ``TypeError`` for data that is not such a state."""
        led = cls(catalogue, clock=clock, hold_seconds=float(state["hold_seconds"]))
        led.seq = int(state["seq"])
        led.comments = int(state["comments"])
        led._next_order = int(state["next_order"])
        featured = state["featured"]
        if featured is not None and featured not in led._products:
            raise ValueError(f"featured product {featured!r} is not in the catalogue")
        led._featured = featured
        led.intake_paused = bool(state["paused"])
        led._limits.update({str(k): int(v) for k, v in state["limits"].items()})
        units = led._units
        for key, stock, reserved, cap, queued, _ in state["units"]:
            u = units[key]
            u.stock, u.reserved, u.cap, u.queued = int(stock), int(reserved), int(cap), int(queued)
        orders = led._orders
        by_user = led._by_user
        rows = state["orders"]
        names: Iterable[str | None] = ()
        if isinstance(rows, dict):  # format 5 or 6: by columns
            if "sealed" in rows:  # format 6: the fixed fields in parts (JSON text when not decoded yet)
                parts = [_decode(p) if isinstance(p, msgspec.Raw | bytes | str) else p for p in rows["sealed"]]
                parts.append(rows["tail"])
                rows = {**{name: list(chain.from_iterable(p[name] for p in parts)) for name in _FIXED},
                        "qty": rows["qty"], "status": rows["status"], "deadline": rows["deadline"]}
                # A part sealed before names were kept has none: its buyers are named by their user ids.
                names = chain.from_iterable(p.get("name") or repeat(None, len(p["id"])) for p in parts)
            rows = zip(*(rows[name] for name in _ORDER_FIELDS), strict=True)
        names = chain(names, repeat(None))
        for (oid, user, key, qty, status, comment, platform, room, created, deadline), name in zip(rows, names, strict=False):
            if name is not None and not isinstance(name, str):
                raise TypeError(f"order {oid!r}: its buyer's name is {type(name).__name__}, not a string")
            o = _Order(oid, user, units[key], int(qty), _STATUS[status], comment, platform, room, float(created),
                       name)
            o.deadline = float(deadline)
            orders[oid] = o
            if o.status is Status.PAID:  # paid units are derived from the orders, not stored twice
                o.unit.paid += o.qty
            mine = by_user.get(user)
            if mine is None:
                by_user[user] = [o]
            else:
                mine.append(o)
        for key, *_, queue in state["units"]:
            u = units[key]
            for oid in queue:
                u.queue[oid] = orders[oid]
        if "held" in state:  # formats 1-5
            for sku, held in state["held"].items():
                h = dict(held)  # as decoded (str keys, int values); converted only if it is not (~40x slower)
                if not set(map(type, h.values())) <= _INT or not set(map(type, h)) <= _STR:
                    h = {str(k): int(v) for k, v in h.items()}
                led._held[sku] = h
        else:  # format 6: a buyer's units of a product are those of their orders that are not over
            for o in orders.values():
                if o.status in _ACTIVE:
                    h = led._held[o.unit.sku]
                    h[o.user] = h.get(o.user, 0) + o.qty
        ex = state["expiry"]
        if isinstance(ex, dict):  # format 5: by columns (4 and 6: rows)
            ex = zip(ex["deadline"], ex["n"], ex["order"], strict=True)
        led._expiry = [(float(d), int(n), str(oid)) for d, n, oid in ex]
        heapq.heapify(led._expiry)  # already a heap when it was taken; this only guards a hand-made state
        led._counts = {Status(k): int(v) for k, v in state["counts"].items()}
        # Keyed controls (none in a snapshot written before they were kept, or when none was keyed).
        led._control_keys = {str(key): (float(t), str(kind), list(args)) for key, t, kind, args in
                             state.get("controls", ())}
        if "dedupe" in state:
            led.dedupe = Dedupe.restore(state["dedupe"])
            led._seen = led.dedupe.sets
        else:  # no "seen" either: a reader that skipped the duplicate-id memory (it takes no comments)
            led._seen = {(platform, room): set(ids) for platform, room, ids in state.get("seen", ())}
        led._room_ids("", "")
        return led

    def __repr__(self) -> str:
        left = sum(u.stock - u.reserved for u in self._units.values())
        held = sum(u.reserved for u in self._units.values())
        pre = sum(u.queued for u in self._units.values())
        return (f"<Ledger {len(self._units)} units: {left:,} left, {held:,} held, {pre:,} presale, "
                f"{len(self._orders):,} orders, {self.comments:,} comments, featured={self._featured}>")

    # ------------------------------------------------------------------ comments

    def decide(self, comment: Comment, parsed: ParseResult, new: bool = False) -> list[Outcome]:
        """Outcomes for one parsed comment: one or more per item of a buy or cancel (quantities of a buy
        item's outcomes add up to its quantity), ``[]`` for any other intent or a comment seen before.
        ``new``: the caller knows the comment was not seen (a journal replay), so nothing older than the
        window is asked."""
        if comment.room == self._seen_room and comment.platform == self._seen_platform:
            ids = self._seen_ids
        else:
            ids = self._room_ids(comment.platform, comment.room)
        cid = comment.id
        if cid in ids:
            return []
        dd = self.dedupe
        if dd is not None:
            # Dedupe.admit's work for a key that the filter rules out at once and that makes no step, inlined
            # (a method call per comment was ~5% of this method); any other key goes through admit. The ring's
            # last room run is this room's: _room_ids switched the dedupe to it.
            ring = dd.ring
            if len(ring) + 1 >= dd.next_step:
                if not dd.admit(self._seen_ri, cid, self.seq + 1, not new):
                    return []
            elif dd.filtering:
                try:
                    b = cid.encode()
                except UnicodeEncodeError:
                    b = cid.encode("utf-8", "surrogatepass")
                h = crc32(b, dd.room_crc[self._seen_ri])
                seg = dd.seg
                i = h & dd.top
                w = seg[i]
                m = dd.masks[h >> MASK_SHIFT]
                x = w | m
                # Maybe seen: admit asks. A replay's key is new (and probing the older segments, megabytes
                # apart, was ~15 % of a replay at 10M comments): its bits go in as a new key's.
                if not new and (x == w or (dd.older and holds(dd.older, h, m))):
                    if not dd.admit(self._seen_ri, cid, self.seq + 1, True):
                        return []
                else:
                    seg[i] = x
                    dd.hashes.append(h)
                    ring.append(cid)
            else:
                ring.append(cid)
        ids.add(cid)
        self.seq += 1
        self.comments += 1
        intent = parsed.intent
        if intent is _BUY:
            now = self.clock()
            out: list[Outcome] = []
            for item in parsed.items:
                self._buy(comment, item, now, out)
        elif intent is _CANCEL:
            now = self.clock()
            out = self._cancel_comment(comment, parsed.items, now)
        else:
            return []
        counts = self._counts
        for o in out:
            s = o.status  # a StrEnum: keys compare and print as the contract's strings
            counts[s] = counts.get(s, 0) + 1
        return out

    def _reject(self, c: Comment, item: Item, qty: int, reason: Reason, now: float) -> Outcome:
        return make_outcome(c.id, c.user, None, item.sku, item.variant, qty, _REJECTED, reason, None,
                            c.platform, c.room, now, self.seq)

    def _buy(self, c: Comment, item: Item, now: float, out: list[Outcome]) -> None:
        qty = item.qty
        if item.reason is not None:
            out.append(self._reject(c, item, qty, item.reason, now))
            return
        sku = item.sku
        if sku is None:
            out.append(self._reject(c, item, qty, Reason.NOT_AVAILABLE, now))
            return
        unit = self._plain.get(sku)
        if unit is None:
            vs = self._variants.get(sku)
            if vs is None:
                out.append(self._reject(c, item, qty, Reason.UNKNOWN_PRODUCT, now))
                return
            if item.variant is None:
                out.append(self._reject(c, item, qty, Reason.NEEDS_VARIANT, now))
                return
            unit = vs.get(item.variant)
            if unit is None:
                out.append(self._reject(c, item, qty, Reason.NOT_AVAILABLE, now))
                return
        elif item.variant is not None:
            out.append(self._reject(c, item, qty, Reason.NOT_AVAILABLE, now))
            return
        if qty < 1:
            out.append(self._reject(c, item, qty, Reason.BAD_QUANTITY, now))
            return
        over = 0
        hk = self._held[sku]
        limit = self._limits[sku]
        if limit:
            held = hk.get(c.user, 0)
            allowed = limit - held if held < limit else 0
            if qty > allowed:
                over = qty - allowed
                qty = allowed
        if qty:
            free = unit.stock - unit.reserved
            if free > 0 and not unit.queue:
                take = qty if qty <= free else free
                o = self._new_order(c, unit, hk, take, _RESERVED, now)
                unit.reserved += take  # _hold, inlined on the hot path
                if self.hold_seconds > 0:
                    o.deadline = deadline = now + self.hold_seconds
                    heapq.heappush(self._expiry, (deadline, self._next_order, o.id))
                out.append(make_outcome(c.id, c.user, o.id, sku, item.variant, take, _RESERVED, None, None,
                                        c.platform, c.room, now, self.seq))
                qty -= take
            if qty:
                room = unit.cap - unit.queued
                if room > 0:
                    take = qty if qty <= room else room
                    o = self._new_order(c, unit, hk, take, _PRESALE, now)
                    unit.queue[o.id] = o
                    unit.queued += take
                    out.append(make_outcome(c.id, c.user, o.id, sku, item.variant, take, _PRESALE, None,
                                            len(unit.queue), c.platform, c.room, now, self.seq))
                    qty -= take
                if qty:
                    # A flash sale's commonest outcome: one struct, built in C, nothing else allocated.
                    out.append(make_outcome(c.id, c.user, None, sku, item.variant, qty, _REJECTED, _SOLD_OUT,
                                            None, c.platform, c.room, now, self.seq))
        if over:
            out.append(make_outcome(c.id, c.user, None, sku, item.variant, over, _REJECTED, _LIMIT, None,
                                    c.platform, c.room, now, self.seq))

    def _new_order(self, c: Comment, unit: _Unit, hk: dict[str, int], qty: int, status: Status, now: float
                   ) -> _Order:
        """A new order of ``qty`` units of ``unit`` for ``c``'s buyer; ``hk`` is ``self._held[unit.sku]``."""
        n = self._next_order
        self._next_order = n + 1
        user = c.user
        o = _Order(f"o-{n:06d}", user, unit, qty, status, c.id, c.platform, c.room, now, c.name)
        self._orders[o.id] = o
        user_orders = self._by_user.get(user)
        if user_orders is None:
            self._by_user[user] = [o]
        else:
            user_orders.append(o)
        hk[user] = hk.get(user, 0) + qty
        return o

    def _hold(self, o: _Order, now: float) -> None:
        o.unit.reserved += o.qty
        if self.hold_seconds > 0:
            o.deadline = now + self.hold_seconds
            heapq.heappush(self._expiry, (o.deadline, self._next_order, o.id))

    def _cancel_comment(self, c: Comment, items: tuple[Item, ...], now: float) -> list[Outcome]:
        mine = self._by_user.get(c.user, ())
        out: list[Outcome] = []
        if not items:
            target = next((o for o in reversed(mine) if o.status is _RESERVED or o.status is _PRESALE), None)
            if target is None:
                out.append(make_outcome(c.id, c.user, None, None, None, 0, _REJECTED, Reason.NOT_AVAILABLE, None,
                                        c.platform, c.room, now, self.seq))
            else:
                out.append(self._outcome(target, _CANCELLED, now, c.id))
                self._release(target, _CANCELLED, now, out)
            return out
        for item in items:
            if item.reason is not None:
                out.append(self._reject(c, item, item.qty, item.reason, now))
                continue
            if item.sku is not None and item.sku not in self._products:
                out.append(self._reject(c, item, item.qty, Reason.UNKNOWN_PRODUCT, now))
                continue
            target = None
            for o in reversed(mine):
                if (o.status is _RESERVED or o.status is _PRESALE) and (item.sku is None or o.unit.sku == item.sku) \
                        and (item.variant is None or o.unit.variant == item.variant):
                    target = o
                    break
            if target is None:
                out.append(self._reject(c, item, item.qty, Reason.NOT_AVAILABLE, now))
            else:
                out.append(self._outcome(target, _CANCELLED, now, c.id))
                self._release(target, _CANCELLED, now, out)
        return out

    # ------------------------------------------------------------------ state changes

    def _outcome(self, o: _Order, status: Status, now: float, comment: str | None = None) -> Outcome:
        u = o.unit
        return make_outcome(comment, o.user, o.id, u.sku, u.variant, o.qty, status, None, None, o.platform,
                            o.room, now, self.seq)

    def _release(self, o: _Order, status: Status, now: float, out: list[Outcome]) -> None:
        """End an active or paid order (cancelled / expired); its units go back (to the queue first)."""
        u = o.unit
        was = o.status
        o.status = status
        self._held[u.sku][o.user] -= o.qty
        if was is _PRESALE:
            del u.queue[o.id]
            u.queued -= o.qty
        else:
            u.reserved -= o.qty
            if was is _PAID:
                u.paid -= o.qty
            self._promote(u, now, out)

    def _promote(self, u: _Unit, now: float, out: list[Outcome]) -> None:
        """Give open stock of ``u`` to its presale queue, head first (see the module docstring)."""
        free = u.stock - u.reserved
        while free > 0 and u.queue:
            head = next(iter(u.queue.values()))
            if head.qty <= free:
                del u.queue[head.id]
                u.queued -= head.qty
                head.status = _RESERVED
                self._hold(head, now)
                free -= head.qty
                out.append(self._outcome(head, _PROMOTED, now))
            else:
                # Split: the units that came back become their own order; the rest keeps its place.
                n = self._next_order
                self._next_order = n + 1
                part = _Order(f"o-{n:06d}", head.user, u, free, _RESERVED, head.comment, head.platform,
                              head.room, now, head.name)
                self._orders[part.id] = part
                self._by_user[head.user].append(part)
                head.qty -= free
                u.queued -= free
                self._hold(part, now)
                out.append(self._outcome(part, _PROMOTED, now))
                free = 0

    def _count(self, out: list[Outcome]) -> list[Outcome]:
        counts = self._counts
        for o in out:
            s = o.status
            counts[s] = counts.get(s, 0) + 1
        return out

    def next_expiry(self) -> float | None:
        """The earliest hold deadline still in the expiry heap (it may belong to an order paid since), or
        None: whoever sweeps need not call :meth:`expire_due` before then."""
        return self._expiry[0][0] if self._expiry else None

    def expire_due(self) -> list[Outcome]:
        """Expire every unpaid hold whose deadline has passed; their stock goes to the queue first.

        Advances :attr:`seq` only when something expired (so a journal need not record idle ticks)."""
        now = self.clock()
        heap = self._expiry
        if not heap or heap[0][0] > now:
            return []
        out: list[Outcome] = []
        while heap and heap[0][0] <= now:
            deadline, _, oid = heapq.heappop(heap)
            o = self._orders[oid]
            if o.status is not _RESERVED or o.deadline != deadline:
                continue  # paid, cancelled, or re-held since
            if not out:
                # The first real expiry makes this a state change. A sweep that only drops stale entries
                # (orders paid or cancelled since) must not advance seq: the engine journals no row for it.
                self.seq += 1
            out.append(self._outcome(o, _EXPIRED, now))
            self._release(o, _EXPIRED, now, out)
        return self._count(out)

    def _get_order(self, order: str) -> _Order:
        o = self._orders.get(order)
        if o is None:
            raise ControlError(f"no order {order!r}", "no_order", order=order)
        return o

    def pay(self, order: str) -> list[Outcome]:
        """Mark a held order paid: it no longer expires. Raises ControlError unless it is held."""
        o = self._get_order(order)
        if o.status is not _RESERVED:
            raise ControlError(f"order {order} is {o.status.value}; only a held (reserved) order can be paid",
                               "not_held", order=order, status=o.status.value)
        now = self.clock()
        self.seq += 1
        o.status = _PAID
        o.unit.paid += o.qty
        return self._count([self._outcome(o, _PAID, now)])

    def cancel_order(self, order: str) -> list[Outcome]:
        """Cancel an order by id (held, presale or paid), returning its stock. Raises ControlError when the
        order does not exist or has already ended."""
        o = self._get_order(order)
        if o.status is not _RESERVED and o.status is not _PRESALE and o.status is not _PAID:
            raise ControlError(f"order {order} is already {o.status.value}", "already", order=order,
                               status=o.status.value)
        now = self.clock()
        self.seq += 1
        out = [self._outcome(o, _CANCELLED, now)]
        self._release(o, _CANCELLED, now, out)
        return self._count(out)

    def _unit(self, sku: str, variant: str | None) -> _Unit:
        if sku not in self._products:
            raise ControlError(f"no product {sku!r}; known: {', '.join(sorted(self._products))}", "no_product",
                               sku=sku)
        if variant is None:
            u = self._plain.get(sku)
            if u is None:
                names = ", ".join(self._variants[sku])
                raise ControlError(f"{sku} has variants ({names}); name one", "has_variants", sku=sku,
                                   variants=names)
            return u
        vs = self._variants.get(sku)
        if vs is None:
            raise ControlError(f"{sku} has no variants", "no_variants", sku=sku)
        u = vs.get(variant)
        if u is None:
            raise ControlError(f"{sku} has no variant {variant!r}; known: {', '.join(vs)}", "no_variant", sku=sku,
                               variant=variant)
        return u

    def restock(self, sku: str, variant: str | None, qty: int) -> list[Outcome]:
        """Add ``qty`` (>= 1) units; they serve the presale queue first. Returns the promotions."""
        u = self._unit(sku, variant)
        if isinstance(qty, bool) or not isinstance(qty, int) or qty < 1:
            raise ControlError(f"restock quantity must be a whole number of 1 or more, got {qty!r}",
                               "bad_quantity", value=repr(qty))
        now = self.clock()
        self.seq += 1
        u.stock += qty
        out: list[Outcome] = []
        self._promote(u, now, out)
        return self._count(out)

    def set_presale(self, sku: str, variant: str | None, cap: int) -> list[Outcome]:
        """Change the presale cap of a unit (0 = no presale). Orders already queued keep their place even
        when the new cap is below what is queued; new presale waits until the queue is below the cap."""
        u = self._unit(sku, variant)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ControlError(f"presale cap must be a whole number of 0 or more, got {cap!r}", "bad_cap",
                               value=repr(cap))
        self.seq += 1
        u.cap = cap
        return []

    def limits(self) -> dict[str, int]:
        """Each product's per-buyer limit (0: none), as set by the catalogue or the host since."""
        return dict(self._limits)

    def set_limit(self, sku: str, limit: int) -> list[Outcome]:
        """Change the per-buyer limit of a product (0 = none). Units already held are not taken back."""
        if sku not in self._products:
            raise ControlError(f"no product {sku!r}; known: {', '.join(sorted(self._products))}", "no_product",
                               sku=sku)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ControlError(f"limit must be a whole number of 0 or more, got {limit!r}", "bad_limit",
                               value=repr(limit))
        self.seq += 1
        self._limits[sku] = limit
        return []

    def control_key(self, key: str) -> tuple[str, list[Any]] | None:
        """The control record (kind, arguments) applied with ``key``, if one was within
        :data:`CONTROL_KEY_SECONDS` and is among the last :data:`CONTROL_KEYS` keyed ones
        (:func:`livecart.core.control.apply` uses it to apply a keyed control once)."""
        seen = self._control_keys.get(key)
        if seen is None or seen[0] < self.clock() - CONTROL_KEY_SECONDS:
            return None
        return seen[1], seen[2]

    def note_control(self, key: str, kind: str, args: Sequence[Any]) -> None:
        """Remember that the control record ``kind``, ``args`` was applied with ``key``, now."""
        keys = self._control_keys
        now = self.clock()
        keys.pop(key, None)
        keys[key] = (now, kind, list(args))
        while len(keys) > CONTROL_KEYS or keys[next(iter(keys))][0] < now - CONTROL_KEY_SECONDS:
            del keys[next(iter(keys))]

    def pause_intake(self, paused: bool) -> list[Outcome]:
        """Record that the host paused (or resumed) intake. No stock moves; the daemon stops taking comments
        while :attr:`intake_paused` is set, and a ledger rebuilt from the journal remembers it."""
        self.seq += 1
        self.intake_paused = paused
        return []

    def feature(self, sku: str | None) -> list[Outcome]:
        """Make ``sku`` the product a bare "+1" buys (None: no product)."""
        if sku is not None and sku not in self._products:
            raise ControlError(f"no product {sku!r}; known: {', '.join(sorted(self._products))}", "no_product",
                               sku=sku)
        self.seq += 1
        self._featured = sku
        return []
