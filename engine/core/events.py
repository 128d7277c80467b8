"""Stream events for hooks and the host: sold out, low stock, presale opened, presale full.

Pure: events are derived from two ledger snapshots (before and after a batch of durable outcomes) and the
outcomes themselves. A snapshot has the shape of docs/contract.md §5's report ``products`` object::

    {"egg-10": {"stock": 10000, "left": 12, "reserved": 9988, "presale": 0},
     "tea-chry/50g": {"stock": 300, ...}}

(variants keyed ``"sku/variant"``). An entry may also carry ``presale_cap`` (units that may be queued),
overriding the catalogue's, so a cap changed live by a host control is honoured.

Rules, per product or variant key:

* ``sold_out``: ``left`` goes from above 0 to 0.
* ``low_stock``: ``left`` goes from at or above the threshold to below it, but not to 0 (that is sold out).
  The threshold is ``[status].low_stock`` units, or 10% of ``stock`` (at least 1) when that is 0.
* ``presale_opened``: the first presale outcome of the key (``presale`` was 0 before the batch).
  :class:`EventDetector` reports it once per key per stream, even if the queue empties and refills.
* ``presale_full``: ``presale`` reaches the key's cap (``presale_cap``, else the catalogue's ``presale``).

:class:`EventDetector` says ``sold_out`` and ``presale_full`` once per key until they mean something new: in
a flash sale a cancel frees one unit (or one place in the queue) that the next buyer takes at once, and
each refill is not news (one sale logged 207 events, most of them one queue refilling). A key is armed again
when it has room again (``left`` back at the low-stock threshold, the queue a tenth below its cap, two at
least either way) or when the host changed it (a restock raised ``stock``, a new cap).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from livecart.core.catalogue import Catalogue
from livecart.core.records import Outcome, Status

Snapshot = Mapping[str, Mapping[str, Any]]


class EventKind(StrEnum):
    SOLD_OUT = "sold_out"
    LOW_STOCK = "low_stock"
    PRESALE_OPENED = "presale_opened"
    PRESALE_FULL = "presale_full"


@dataclass(frozen=True, slots=True)
class Event:
    """One stream event. ``data`` holds the key's figures after the batch (stock, left, presale ...)."""

    kind: EventKind
    sku: str
    variant: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.sku if self.variant is None else f"{self.sku}/{self.variant}"

    def to_dict(self) -> dict[str, Any]:
        """What a hook receives as ``data`` (``sku``, ``variant`` and the figures), JSON-ready."""
        return {**self.data, "kind": self.kind.value, "sku": self.sku, "variant": self.variant}


def split_key(key: str) -> tuple[str, str | None]:
    """``"tea-chry/50g"`` -> ``("tea-chry", "50g")``; ``"egg-10"`` -> ``("egg-10", None)``."""
    sku, sep, variant = key.partition("/")
    return (sku, variant) if sep else (sku, None)


def outcome_key(o: Outcome) -> str | None:
    if o.sku is None:
        return None
    return o.sku if o.variant is None else f"{o.sku}/{o.variant}"


def presale_caps(catalogue: Catalogue) -> dict[str, int]:
    """The catalogue's presale cap of every product and variant key."""
    caps: dict[str, int] = {}
    for p in catalogue.products:
        if p.variants:
            for v in p.variants:
                caps[f"{p.sku}/{v.name}"] = v.presale
        else:
            caps[p.sku] = p.presale
    return caps


def low_threshold(stock: int, low_stock: int = 0) -> int:
    """Units below which a key is low: ``low_stock`` when set, else 10% of ``stock`` rounded up (at least 1)."""
    if low_stock > 0:
        return low_stock
    return max(1, math.ceil(stock * 0.10))


def _int(entry: Mapping[str, Any] | None, name: str, default: int = 0) -> int:
    if entry is None:
        return default
    v = entry.get(name, default)
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


def detect(before: Snapshot, after: Snapshot, outcomes: Iterable[Outcome] = (), *,
           caps: Mapping[str, int] | None = None, low_stock: int = 0) -> list[Event]:
    """The events a batch caused, comparing the ``before`` and ``after`` snapshots (module docstring).

    A key missing from ``before`` counts as untouched (``left == stock``, nothing queued). ``caps`` gives the
    presale cap per key where the snapshot has no ``presale_cap``. Events come in snapshot order, per key in
    the order sold_out / low_stock, presale_opened, presale_full.
    """
    presale_keys = {k for o in outcomes if o.status is Status.PRESALE and (k := outcome_key(o)) is not None}
    events: list[Event] = []
    for key, a in after.items():
        b = before.get(key)
        stock = _int(a, "stock")
        left_a = _int(a, "left")
        left_b = _int(b, "left", stock) if b is not None else stock
        pre_a = _int(a, "presale")
        pre_b = _int(b, "presale")
        sku, variant = split_key(key)
        data = dict(a)
        if left_b > 0 and left_a <= 0:
            events.append(Event(EventKind.SOLD_OUT, sku, variant, data))
        else:
            threshold = low_threshold(stock, low_stock)
            if 0 < left_a < threshold <= left_b:
                events.append(Event(EventKind.LOW_STOCK, sku, variant, {**data, "threshold": threshold}))
        if key in presale_keys and pre_b == 0:
            events.append(Event(EventKind.PRESALE_OPENED, sku, variant, data))
        cap = _int(a, "presale_cap", (caps or {}).get(key, 0))
        if cap > 0 and pre_b < cap <= pre_a:
            events.append(Event(EventKind.PRESALE_FULL, sku, variant, {**data, "presale_cap": cap}))
    return events


class EventDetector:
    """:func:`detect` with the catalogue's caps and the memory that makes ``presale_opened`` once per key.

    Assign :attr:`caps` entries when a host control changes a presale cap.
    """

    def __init__(self, catalogue: Catalogue, *, low_stock: int = 0) -> None:
        self.caps = presale_caps(catalogue)
        self.low_stock = low_stock
        self.opened: set[str] = set()
        #: Keys whose sold_out / presale_full was said, with the stock / cap it was said at.
        self.sold_out: dict[str, int] = {}
        self.full: dict[str, int] = {}
        self.counts: dict[EventKind, int] = dict.fromkeys(EventKind, 0)

    def detect(self, before: Snapshot, after: Snapshot, outcomes: Iterable[Outcome] = ()) -> list[Event]:
        self._rearm(after)
        out: list[Event] = []
        for e in detect(before, after, outcomes, caps=self.caps, low_stock=self.low_stock):
            if e.kind is EventKind.PRESALE_OPENED:
                if e.key in self.opened:
                    continue
                self.opened.add(e.key)
            elif e.kind is EventKind.SOLD_OUT:
                if e.key in self.sold_out:
                    continue
                self.sold_out[e.key] = _int(e.data, "stock")
            elif e.kind is EventKind.PRESALE_FULL:
                if e.key in self.full:
                    continue
                self.full[e.key] = _int(e.data, "presale_cap")
            self.counts[e.kind] += 1
            out.append(e)
        return out

    def _rearm(self, after: Snapshot) -> None:
        """Forget a said sold_out / presale_full whose key has room again or was changed by the host."""
        for key, said_stock in list(self.sold_out.items()):
            a = after.get(key)
            if a is None:
                continue
            stock = _int(a, "stock")
            # Room for two at least: one unit a cancel freed and the next buyer took is not news.
            if stock > said_stock or _int(a, "left") >= max(2, low_threshold(stock, self.low_stock)):
                del self.sold_out[key]
        for key, said_cap in list(self.full.items()):
            a = after.get(key)
            if a is None:
                continue
            cap = _int(a, "presale_cap", self.caps.get(key, 0))
            if cap != said_cap or _int(a, "presale") <= cap - max(2, cap // 10):
                del self.full[key]

    def __repr__(self) -> str:
        seen = ", ".join(f"{k.value} {n}" for k, n in self.counts.items())
        return f"<EventDetector: {seen}; presale open on {len(self.opened)} keys>"
