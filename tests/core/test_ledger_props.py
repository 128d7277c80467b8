"""Invariants of the ledger over random sequences of buys, cancels, expiries, restocks, payments, replays."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult, Status

CAT = Catalogue((
    Product("egg", "Eggs", stock=4, limit=5, presale=8),
    Product("rice", "Rice", stock=2),
    Product("tea", "Tea", variants=(Variant("s", stock=1, presale=5), Variant("l", stock=3))),
))
UNITS = [("egg", None), ("rice", None), ("tea", "s"), ("tea", "l")]
USERS = ["a", "b", "c", "d"]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


_buy = st.tuples(st.just("buy"), st.sampled_from(USERS), st.sampled_from(UNITS),
                st.one_of(st.integers(1, 2), st.integers(-1, 6)))
op = st.one_of(
    _buy, _buy, _buy,  # buys dominate a live sale; weighting them builds queues worth serving
    st.tuples(st.just("cancel"), st.sampled_from(USERS), st.sampled_from([None, "egg", "tea"])),
    st.tuples(st.just("tick"), st.floats(0, 40)),
    st.tuples(st.just("restock"), st.sampled_from(UNITS), st.integers(1, 4)),
    st.tuples(st.just("pay"), st.integers(1, 30)),
    st.tuples(st.just("hostcancel"), st.integers(1, 30)),
    st.tuples(st.just("replay"), st.integers(0, 50)),
)


def _check(led: Ledger, caps: dict[str, int]) -> None:
    snap = led.snapshot()["products"]
    orders = list(led.orders())
    for key, p in snap.items():
        assert 0 <= p["reserved"] <= p["stock"], key
        assert 0 <= p["presale"] <= caps[key], key
        if led.queue(key):
            assert p["left"] == 0, f"{key}: open stock while the queue waits"
        held = sum(o["qty"] for o in orders if _key(o) == key and o["status"] in ("reserved", "paid"))
        queued = sum(o["qty"] for o in orders if _key(o) == key and o["status"] == "presale")
        assert (held, queued) == (p["reserved"], p["presale"]), key
        assert led.queue(key) == sorted(led.queue(key)), "queue out of FIFO order"


def _key(o: dict[str, Any]) -> str:
    return o["sku"] if o["variant"] is None else f"{o['sku']}/{o['variant']}"


@settings(max_examples=500, deadline=None)
@given(st.lists(op, max_size=60))
def test_invariants_hold_over_random_sequences(ops: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    led = Ledger(CAT, hold_seconds=30, featured="egg", clock=clock)
    caps = {"egg": 8, "rice": 0, "tea/s": 5, "tea/l": 0}
    sent: list[tuple[Comment, ParseResult]] = []
    for n, o in enumerate(ops):
        kind = o[0]
        if kind == "buy":
            _, user, (sku, variant), qty = o
            c = Comment("p", "r", f"m{n}", user, user, "", 0.0)
            item = Item(sku, variant, qty)
            out = led.decide(c, ParseResult(Intent.BUY, (item,)))
            sent.append((c, ParseResult(Intent.BUY, (item,))))
            assert out, "a buy item got no outcome"
            assert sum(x.qty for x in out) == qty, "outcome quantities do not add up to the item's"
            assert all(x.comment == c.id for x in out)
            assert [x for x in out if x.status is Status.PROMOTED] == []
        elif kind == "cancel":
            _, user, sku = o
            c = Comment("p", "r", f"m{n}", user, user, "", 0.0)
            pr = ParseResult(Intent.CANCEL, () if sku is None else (Item(sku),))
            before = {k: led.queue(k) for k in caps}
            out = led.decide(c, pr)
            sent.append((c, pr))
            assert len([x for x in out if x.comment == c.id]) == 1
            _check_promotions(before, out)
        elif kind == "tick":
            clock.now += o[1]
            before = {k: led.queue(k) for k in caps}
            _check_promotions(before, led.expire_due())
        elif kind == "restock":
            _, (sku, variant), qty = o
            key = sku if variant is None else f"{sku}/{variant}"
            before = {k: led.queue(k) for k in caps}
            _check_promotions(before, led.restock(sku, variant, qty))
            assert not led.queue(key) or led.snapshot()["products"][key]["left"] == 0
        elif kind in ("pay", "hostcancel"):
            oid = f"o-{o[1]:06d}"
            info = led.order(oid)
            if info is None:
                continue
            if kind == "pay" and info["status"] == "reserved":
                assert [x.status for x in led.pay(oid)] == [Status.PAID]
            elif kind == "hostcancel" and info["status"] in ("reserved", "presale", "paid"):
                before = {k: led.queue(k) for k in caps}
                _check_promotions(before, led.cancel_order(oid))
        elif kind == "replay" and sent:
            c, pr = sent[o[1] % len(sent)]
            seq = led.seq
            snap = led.snapshot()
            assert led.decide(c, pr) == []
            assert (led.seq, led.snapshot()) == (seq, snap)
        _check(led, caps)


def _check_promotions(before: dict[str, list[str]], out: list[Any]) -> None:
    """Promotions of a unit take its queue from the head, in order."""
    for key, queue in before.items():
        sku, _, variant = key.partition("/")
        promoted = [x for x in out if x.status is Status.PROMOTED and x.sku == sku and (x.variant or "") == variant]
        originals = [x.order for x in promoted if x.order in queue]
        cancelled = {x.order for x in out if x.status is Status.CANCELLED}
        remaining = [q for q in queue if q not in cancelled]
        assert originals == remaining[: len(originals)], "the presale queue was not served in order"
