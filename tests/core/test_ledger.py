"""The ledger's rules, values in / values out, with an injected clock."""

from __future__ import annotations

import pytest

from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.errors import ControlError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, Outcome, ParseResult, Reason, Status

EGG = Product("egg", "Eggs", stock=10, limit=5, presale=4, price=29.9)
RICE = Product("rice", "Rice", stock=3)
TEA = Product("tea", "Tea", price=38, variants=(Variant("50g", stock=2), Variant("100g", stock=1, presale=2)))
CAT = Catalogue((EGG, RICE, TEA))


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


_n = 0


def comment(user: str = "u1", cid: str | None = None, platform: str = "douyin", room: str = "r1") -> Comment:
    global _n
    _n += 1
    return Comment(platform, room, cid or f"m-{_n}", user, user, "text", 0.0)


def buy(*items: Item) -> ParseResult:
    return ParseResult(Intent.BUY, items)


def cancel(*items: Item) -> ParseResult:
    return ParseResult(Intent.CANCEL, items)


def make(cat: Catalogue = CAT, hold: float = 0.0, clock: Clock | None = None) -> Ledger:
    featured = "egg" if "egg" in cat.by_sku else None
    return Ledger(cat, hold_seconds=hold, featured=featured, clock=clock or Clock())


def brief(outs: list[Outcome]) -> list[tuple[str, int, str | None, int | None]]:
    return [(o.status.value, o.qty, o.reason.value if o.reason else None, o.position) for o in outs]


def test_reserve_while_stock_lasts() -> None:
    led = make()
    out = led.decide(comment("a"), buy(Item("rice", qty=2)))
    assert brief(out) == [("reserved", 2, None, None)]
    assert out[0].order == "o-000001"
    assert led.snapshot()["products"]["rice"]["left"] == 1


def test_partial_fill_without_presale_rejects_the_rest_sold_out() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("rice", qty=2)))
    out = led.decide(comment("b"), buy(Item("rice", qty=3)))
    assert brief(out) == [("reserved", 1, None, None), ("rejected", 2, "sold_out", None)]


def test_partial_fill_goes_to_presale_with_positions() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("egg", qty=5)))
    led.decide(comment("b"), buy(Item("egg", qty=4)))
    out = led.decide(comment("c"), buy(Item("egg", qty=3)))
    assert brief(out) == [("reserved", 1, None, None), ("presale", 2, None, 1)]
    out = led.decide(comment("d"), buy(Item("egg", qty=1)))
    assert brief(out) == [("presale", 1, None, 2)]


def test_presale_beyond_cap_is_sold_out() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("egg", qty=5)))
    led.decide(comment("b"), buy(Item("egg", qty=5)))
    out = led.decide(comment("c"), buy(Item("egg", qty=5)))
    assert brief(out) == [("presale", 4, None, 1), ("rejected", 1, "sold_out", None)]
    assert led.snapshot()["products"]["egg"]["presale"] == 4


def test_variant_presale_cap_is_per_variant() -> None:
    led = make()
    out = led.decide(comment("a"), buy(Item("tea", "100g", 4)))
    assert brief(out) == [("reserved", 1, None, None), ("presale", 2, None, 1), ("rejected", 1, "sold_out", None)]
    assert led.snapshot()["products"]["tea/50g"]["left"] == 2


def test_limit_across_comments_rejects_the_excess() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("egg", qty=4)))
    out = led.decide(comment("a"), buy(Item("egg", qty=3)))
    assert brief(out) == [("reserved", 1, None, None), ("rejected", 2, "limit", None)]
    out = led.decide(comment("a"), buy(Item("egg", qty=1)))
    assert brief(out) == [("rejected", 1, "limit", None)]


def test_limit_is_applied_before_the_stock_check() -> None:
    # limit 5, nothing held, 7 asked, 3 left, presale 4: 3 reserved + 2 presale + 2 over the limit.
    led = make()
    led.decide(comment("x"), buy(Item("egg", qty=5)))
    led.decide(comment("y"), buy(Item("egg", qty=2)))
    out = led.decide(comment("a"), buy(Item("egg", qty=7)))
    assert brief(out) == [("reserved", 3, None, None), ("presale", 2, None, 1), ("rejected", 2, "limit", None)]


def test_cancelled_units_free_the_limit() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("egg", qty=5)))
    led.decide(comment("a"), cancel())
    assert brief(led.decide(comment("a"), buy(Item("egg", qty=5)))) == [("reserved", 5, None, None)]


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (Item("egg", qty=0, reason=Reason.BAD_QUANTITY), "bad_quantity"),
        (Item(None, qty=1, reason=Reason.UNKNOWN_PRODUCT), "unknown_product"),
        (Item("egg", qty=1, reason=Reason.NOT_AVAILABLE), "not_available"),
        (Item(None, qty=1), "not_available"),
        (Item("nope", qty=1), "unknown_product"),
        (Item("tea", None, 1), "needs_variant"),
        (Item("tea", "1kg", 1), "not_available"),
        (Item("rice", "big", 1), "not_available"),
        (Item("rice", qty=0), "bad_quantity"),
        (Item("rice", qty=-2), "bad_quantity"),
    ],
)
def test_rejections(item: Item, reason: str) -> None:
    led = make()
    out = led.decide(comment("a"), buy(item))
    assert brief(out) == [("rejected", item.qty, reason, None)]
    assert all(p["reserved"] == 0 for p in led.snapshot()["products"].values())


def test_every_item_of_a_comment_gets_an_outcome() -> None:
    led = make()
    out = led.decide(comment("a"), buy(Item("rice", qty=1), Item("tea", "50g", 2), Item("nope")))
    assert [(o.sku, o.status.value) for o in out] == [("rice", "reserved"), ("tea", "reserved"),
                                                      ("nope", "rejected")]
    assert out[1].variant == "50g"


def test_ask_and_none_give_no_outcome_but_count_as_processed() -> None:
    led = make()
    assert led.decide(comment("a"), ParseResult(Intent.ASK, (Item("egg"),))) == []
    assert led.decide(comment("a"), ParseResult(Intent.NONE)) == []
    assert led.snapshot()["comments"] == 2


def test_a_comment_seen_twice_is_processed_once() -> None:
    led = make()
    c = comment("a", cid="m-same")
    assert len(led.decide(c, buy(Item("rice")))) == 1
    assert led.decide(c, buy(Item("rice"))) == []
    # The key is (platform, room, id): the same id in another room is another comment.
    assert len(led.decide(comment("a", cid="m-same", room="r2"), buy(Item("rice")))) == 1
    assert led.snapshot()["comments"] == 2
    assert led.snapshot()["products"]["rice"]["reserved"] == 2


def test_outcome_carries_comment_platform_room_and_clock() -> None:
    clock = Clock(1234.5)
    led = make(clock=clock)
    c = comment("a", platform="bilibili", room="99")
    (o,) = led.decide(c, buy(Item("rice")))
    assert (o.comment, o.user, o.platform, o.room, o.ts) == (c.id, "a", "bilibili", "99", 1234.5)
    assert o.seq == led.seq == 1


def test_cancel_without_items_cancels_the_latest_order_and_returns_stock() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("rice", qty=1)))
    led.decide(comment("a"), buy(Item("egg", qty=2)))
    out = led.decide(comment("a"), cancel())
    assert [(o.status.value, o.order, o.sku, o.qty) for o in out] == [("cancelled", "o-000002", "egg", 2)]
    assert led.snapshot()["products"]["egg"]["left"] == 10


def test_cancel_naming_a_product_cancels_that_products_latest_order() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("rice", qty=1)))
    led.decide(comment("a"), buy(Item("egg", qty=2)))
    out = led.decide(comment("a"), cancel(Item("rice")))
    assert [(o.status.value, o.order) for o in out] == [("cancelled", "o-000001")]


def test_cancel_with_nothing_to_cancel_is_rejected_not_available() -> None:
    led = make()
    assert brief(led.decide(comment("a"), cancel())) == [("rejected", 0, "not_available", None)]
    led.decide(comment("b"), buy(Item("rice")))
    assert brief(led.decide(comment("a"), cancel(Item("rice")))) == [("rejected", 1, "not_available", None)]
    assert brief(led.decide(comment("a"), cancel(Item("zzz")))) == [("rejected", 1, "unknown_product", None)]


def test_cancel_returns_stock_to_the_presale_queue_first() -> None:
    cat = Catalogue((Product("rice", "Rice", stock=3, presale=5),))
    led = make(cat)
    led.decide(comment("a"), buy(Item("rice", qty=3)))
    led.decide(comment("b"), buy(Item("rice", qty=1)))  # presale #1
    led.decide(comment("c"), buy(Item("rice", qty=1)))  # presale #2
    out = led.decide(comment("a"), cancel())
    assert [(o.status.value, o.user, o.qty) for o in out] == [
        ("cancelled", "a", 3), ("promoted", "b", 1), ("promoted", "c", 1)]
    snap = led.snapshot()["products"]["rice"]
    assert (snap["left"], snap["reserved"], snap["presale"]) == (1, 2, 0)
    # The queue is empty again, so the unit left is open for sale.
    assert brief(led.decide(comment("d"), buy(Item("rice"))))[0][0] == "reserved"


def test_partial_promotion_splits_the_head_order_and_keeps_its_place() -> None:
    cat = Catalogue((Product("rice", "Rice", stock=1, presale=10),))
    led = make(cat)
    led.decide(comment("a"), buy(Item("rice", qty=1)))  # o-000001 reserved
    led.decide(comment("b"), buy(Item("rice", qty=3)))  # o-000002 presale 3
    led.decide(comment("c"), buy(Item("rice", qty=1)))  # o-000003 presale 1
    out = led.restock("rice", None, 2)
    assert [(o.status.value, o.user, o.order, o.qty) for o in out] == [("promoted", "b", "o-000004", 2)]
    assert led.order("o-000002")["qty"] == 1  # type: ignore[index]
    assert led.order("o-000002")["status"] == "presale"  # type: ignore[index]
    # While the queue is not empty, new buyers queue behind it even though the restock arrived.
    assert brief(led.decide(comment("d"), buy(Item("rice")))) == [("presale", 1, None, 3)]
    out = led.restock("rice", None, 5)
    assert [(o.user, o.order, o.qty) for o in out] == [("b", "o-000002", 1), ("c", "o-000003", 1),
                                                       ("d", "o-000005", 1)]
    assert led.snapshot()["products"]["rice"] == {"stock": 8, "left": 2, "reserved": 6, "presale": 0,
                                                   "cap": 10, "queue": 0, "paid": 0}


def test_cancelling_a_presale_order_frees_presale_room_not_stock() -> None:
    cat = Catalogue((Product("rice", "Rice", stock=0, presale=2),))
    led = make(cat)
    led.decide(comment("a"), buy(Item("rice", qty=2)))
    assert brief(led.decide(comment("b"), buy(Item("rice")))) == [("rejected", 1, "sold_out", None)]
    led.decide(comment("a"), cancel())
    assert brief(led.decide(comment("b"), buy(Item("rice")))) == [("presale", 1, None, 1)]


def test_unpaid_hold_expires_and_goes_to_the_queue() -> None:
    clock = Clock(0.0)
    cat = Catalogue((Product("rice", "Rice", stock=1, presale=5),))
    led = make(cat, hold=60, clock=clock)
    led.decide(comment("a"), buy(Item("rice")))
    clock.now = 30
    led.decide(comment("b"), buy(Item("rice")))
    assert led.expire_due() == []
    clock.now = 60
    out = led.expire_due()
    assert [(o.status.value, o.user, o.order) for o in out] == [("expired", "a", "o-000001"),
                                                                ("promoted", "b", "o-000002")]
    # The promoted order gets a fresh hold from the moment of promotion.
    clock.now = 119
    assert led.expire_due() == []
    clock.now = 120
    assert [o.status.value for o in led.expire_due()] == ["expired"]
    assert led.snapshot()["products"]["rice"]["left"] == 1


def test_paid_orders_do_not_expire() -> None:
    clock = Clock(0.0)
    led = make(hold=10, clock=clock)
    (o,) = led.decide(comment("a"), buy(Item("rice")))
    assert o.order is not None
    assert [x.status for x in led.pay(o.order)] == [Status.PAID]
    clock.now = 100
    assert led.expire_due() == []
    assert led.snapshot()["products"]["rice"]["reserved"] == 1


def test_hold_zero_never_expires() -> None:
    clock = Clock(0.0)
    led = make(hold=0, clock=clock)
    led.decide(comment("a"), buy(Item("rice")))
    clock.now = 1e9
    assert led.expire_due() == []


def test_pay_needs_a_held_order() -> None:
    led = make()
    with pytest.raises(ControlError, match="no order"):
        led.pay("o-999999")
    (o,) = led.decide(comment("a"), buy(Item("rice")))
    assert o.order is not None
    led.cancel_order(o.order)
    with pytest.raises(ControlError, match="cancelled"):
        led.pay(o.order)


def test_host_cancel_of_a_paid_order_returns_stock() -> None:
    led = make()
    (o,) = led.decide(comment("a"), buy(Item("rice", qty=3)))
    assert o.order is not None
    led.pay(o.order)
    out = led.cancel_order(o.order)
    assert [x.status for x in out] == [Status.CANCELLED]
    assert led.snapshot()["products"]["rice"]["left"] == 3
    with pytest.raises(ControlError, match="already cancelled"):
        led.cancel_order(o.order)


def test_restock_opens_sale_again() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("rice", qty=3)))
    assert led.restock("rice", None, 2) == []
    assert brief(led.decide(comment("b"), buy(Item("rice", qty=2)))) == [("reserved", 2, None, None)]
    assert led.snapshot()["products"]["rice"]["stock"] == 5


def test_set_presale_while_live() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("rice", qty=3)))
    led.set_presale("rice", None, 2)
    assert brief(led.decide(comment("b"), buy(Item("rice", qty=3)))) == [("presale", 2, None, 1),
                                                                         ("rejected", 1, "sold_out", None)]
    led.set_presale("rice", None, 0)
    assert brief(led.decide(comment("c"), buy(Item("rice")))) == [("rejected", 1, "sold_out", None)]
    assert led.snapshot()["products"]["rice"]["presale"] == 2  # queued orders keep their place


def test_set_limit_while_live() -> None:
    led = make()
    led.set_limit("rice", 1)
    assert brief(led.decide(comment("a"), buy(Item("rice", qty=2)))) == [("reserved", 1, None, None),
                                                                         ("rejected", 1, "limit", None)]
    led.set_limit("rice", 0)
    assert brief(led.decide(comment("a"), buy(Item("rice", qty=1)))) == [("reserved", 1, None, None)]


def test_limit_counts_all_variants_of_a_product() -> None:
    cat = Catalogue((Product("tea", "Tea", limit=2, variants=(Variant("s", stock=5), Variant("l", stock=5))),))
    led = make(cat)
    led.decide(comment("a"), buy(Item("tea", "s", 1)))
    assert brief(led.decide(comment("a"), buy(Item("tea", "l", 2)))) == [("reserved", 1, None, None),
                                                                         ("rejected", 1, "limit", None)]


def test_feature_changes_the_featured_product() -> None:
    led = make()
    assert led.featured == "egg"
    led.feature("rice")
    assert led.featured == "rice"
    assert led.snapshot()["featured"] == "rice"
    led.feature(None)
    assert led.featured is None


@pytest.mark.parametrize(
    "call",
    [
        lambda led: led.restock("nope", None, 1),
        lambda led: led.restock("rice", None, 0),
        lambda led: led.restock("rice", None, -3),
        lambda led: led.restock("tea", None, 1),
        lambda led: led.restock("tea", "2kg", 1),
        lambda led: led.restock("rice", "big", 1),
        lambda led: led.set_presale("rice", None, -1),
        lambda led: led.set_limit("nope", 1),
        lambda led: led.set_limit("rice", -1),
        lambda led: led.feature("nope"),
        lambda led: led.cancel_order("o-000042"),
    ],
)
def test_invalid_controls_raise_control_error_and_change_nothing(call: object) -> None:
    led = make()
    before = (led.snapshot(), led.seq)
    with pytest.raises(ControlError):
        call(led)  # type: ignore[operator]
    assert (led.snapshot(), led.seq) == before


def test_order_ids_are_sequential_and_deterministic() -> None:
    a, b = make(), make()
    for led in (a, b):
        led.decide(comment("x", cid="1"), buy(Item("rice"), Item("egg", qty=2)))
        led.decide(comment("y", cid="2"), buy(Item("tea", "50g")))
    assert list(a.orders()) == list(b.orders())
    assert [o["order"] for o in a.orders()] == ["o-000001", "o-000002", "o-000003"]


def test_report_shape() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("rice", qty=5)))
    snap = led.snapshot()
    assert snap["comments"] == 1
    assert snap["outcomes"] == {"rejected": 1, "reserved": 1}
    assert snap["products"]["rice"] == {"stock": 3, "left": 0, "reserved": 3, "presale": 0, "cap": 0, "queue": 0, "paid": 0}
    assert set(snap["products"]) == {"egg", "rice", "tea/50g", "tea/100g"}


def test_repr_shows_the_state() -> None:
    led = make()
    led.decide(comment("a"), buy(Item("rice", qty=2)))
    r = repr(led)
    assert r.startswith("<Ledger 4 units: ")
    assert "14 left, 2 held, 0 presale, 1 orders, 1 comments" in r


def test_orders_and_units_show_their_state_in_repr() -> None:
    cat = Catalogue((Product("egg", "Eggs", stock=3, presale=2),))
    led = Ledger(cat, hold_seconds=60, clock=lambda: 100.0)
    led.decide(Comment("p", "r", "m-1", "u-1", "u-1", "", 100.0),
               ParseResult(Intent.BUY, (Item("egg", None, 4),)))
    held = led._orders["o-000001"]
    assert repr(held) == "<Order o-000001 u-1 egg x3 reserved, due 160>"
    assert repr(held.unit) == "<Unit egg: 0 left of 3, 1/2 presale queued in 1 orders>"


def test_paid_units_follow_pay_and_cancel_and_orders_detail_gives_pay_by() -> None:
    led = Ledger(Catalogue((Product("rice", "Rice", stock=5),)), clock=lambda: 1000.0, hold_seconds=60)
    first = led.decide(comment("u1", "a"), buy(Item("rice", qty=2)))[0].order
    second = led.decide(comment("u2", "b"), buy(Item("rice", qty=1)))[0].order
    assert first is not None
    assert second is not None
    led.pay(first)
    assert led.snapshot()["products"]["rice"]["paid"] == 2
    rows = {r["order"]: r for r in led.orders_detail()}
    assert rows[first]["pay_by"] is None  # paid: nothing to pay by
    assert rows[second]["pay_by"] == 1060.0
    led.cancel_order(first)
    assert led.snapshot()["products"]["rice"] == {"stock": 5, "left": 4, "reserved": 1, "presale": 0, "cap": 0,
                                                  "queue": 0, "paid": 0}


def test_one_products_figures_are_those_of_the_snapshot() -> None:
    led = make()
    led.decide(comment("u1", "c1"), buy(Item("egg", None, 3), Item("tea", "50g", 2)))
    led.decide(comment("u2", "c2"), buy(Item("tea", "100g", 2)))
    products = led.snapshot()["products"]
    assert {k: led.product(k) for k in products} == products
    assert led.product("tea") is None  # a product with variants has figures per variant only
    assert led.product("nope") is None


def test_again_says_where_each_order_of_a_comment_stands_now_once_and_only_for_older_orders() -> None:
    clock = Clock(1000.0)
    led = make(hold=600.0, clock=clock)
    a, b, c = comment("a"), comment("b"), comment("c")
    led.decide(a, buy(Item("egg", qty=5)))  # o-000001 held until 1600
    led.decide(b, buy(Item("egg", qty=4)))  # o-000002 held
    led.decide(c, buy(Item("egg", qty=3)))  # o-000003 held x1, o-000004 presale x2 (place 1)
    led.pay("o-000002")
    clock.now = 1400.0  # the restart
    late = comment("d")
    led.decide(late, buy(Item("rice", qty=1)))  # made after the restart: never announced again
    led.decide(comment("e"), buy(Item("rice", qty=9)))  # 2 held, 7 refused: only the order comes back
    out = led.again(c, before=1200.0)
    assert [(o.order, o.status.value, o.qty, o.position, o.ts) for o in out] == [
        ("o-000003", "reserved", 1, None, 1000.0), ("o-000004", "presale", 2, 1, 1000.0)]
    assert {o.comment for o in out} == {c.id}
    assert all(o.seq == led.seq for o in out)
    assert led.again(c, before=1200.0) == []  # once
    assert [(o.order, o.status.value) for o in led.again(b, before=1200.0)] == [("o-000002", "paid")]
    assert led.again(late, before=1200.0) == []
    assert led.again(comment("never"), before=1200.0) == []
    # A hold that ran out (deadline 1600) is left to the expiry sweep, which announces it.
    clock.now = 1700.0
    assert led.again(a, before=1200.0) == []
    # Nothing changed: five comments and one pay decided, as before.
    assert led.seq == 6
    assert led.snapshot()["outcomes"] == {"paid": 1, "presale": 1, "rejected": 1, "reserved": 5}


def test_again_since_gives_the_orders_made_in_a_span_oldest_first_each_once() -> None:
    clock = Clock(1000.0)
    led = make(hold=600.0, clock=clock)
    led.decide(comment("a"), buy(Item("egg", qty=1)))  # o-000001 at 1000: told before the crash
    clock.now = 1010.0
    b = comment("b")
    led.decide(b, buy(Item("egg", qty=2)))  # o-000002 at 1010: its reply was still queued
    led.decide(comment("c"), buy(Item("rice", qty=1)))  # o-000003 at 1010
    clock.now = 1100.0  # the restart; then a new order
    led.decide(comment("d"), buy(Item("rice", qty=1)))  # o-000004, this process's own
    out = led.again_since(1005.0, before=1050.0)
    assert [(o.order, o.status.value, o.user) for o in out] == [("o-000002", "reserved", "b"),
                                                                ("o-000003", "reserved", "c")]
    assert led.again(b, before=1050.0) == []  # told already: a resend of its comment adds nothing
    assert led.again_since(1005.0, before=1050.0) == []
    # A new decider of a JetStream sale leaves out the orders it announces itself.
    assert [o.order for o in led.again_since(1005.0, before=2000.0, exclude={"o-000004"})] == []
    assert [o.order for o in led.again_since(1005.0, before=2000.0)] == ["o-000004"]




def test_latest_gives_the_newest_orders_as_they_stand_now_at_the_time_each_was_made() -> None:
    clock = Clock(1000.0)
    led = make(hold=600.0, clock=clock)
    led.decide(comment("a"), buy(Item("egg", qty=1)))  # o-000001: left out (n = 4)
    clock.now = 1010.0
    led.decide(comment("b"), buy(Item("rice", qty=3)))  # o-000002: paid below
    clock.now = 1020.0
    led.decide(comment("c"), buy(Item("egg", qty=5)))  # o-000003: cancelled below
    clock.now = 1030.0
    led.decide(comment("d"), buy(Item("tea", "100g", qty=1)))  # o-000004: the last one in stock, held
    led.decide(comment("e"), buy(Item("tea", "100g", qty=1)))  # o-000005: presale, place 1
    led.pay("o-000002")
    led.cancel_order("o-000003")
    told = led._told.copy()
    out = led.latest(4)
    assert [(o.order, o.user, o.status.value, o.position, o.ts) for o in out] == [
        ("o-000002", "b", "paid", None, 1010.0), ("o-000003", "c", "cancelled", None, 1020.0),
        ("o-000004", "d", "reserved", None, 1030.0), ("o-000005", "e", "presale", 1, 1030.0)]
    assert led._told == told  # not the once-only memory of again()
    assert len(led.latest(10)) == 5
    assert led.latest(0) == []
