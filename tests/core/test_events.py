from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from livecart import config
from livecart.core.events import (
    Event,
    EventDetector,
    EventKind,
    detect,
    low_threshold,
    presale_caps,
    split_key,
)
from livecart.core.records import Outcome, Status

CATALOGUE = config.loads("""
[stream]
name = "t"
[[products]]
sku = "egg"
name = "Eggs"
stock = 100
presale = 5
[[products]]
sku = "tea"
name = "Tea"
  [[products.variants]]
  name = "50g"
  stock = 20
  presale = 2
""").catalogue


def snap(key: str = "egg", *, stock: int = 100, left: int = 100, presale: int = 0, **extra: Any
         ) -> dict[str, dict[str, Any]]:
    return {key: {"stock": stock, "left": left, "reserved": stock - left, "presale": presale, **extra}}


def presale_outcome(sku: str = "egg", variant: str | None = None, position: int = 1) -> Outcome:
    return Outcome("m-1", "u", "o-1", sku, variant, 1, Status.PRESALE, None, position, "p", "r", 0.0, 1)


def kinds(events: list[Event]) -> list[EventKind]:
    return [e.kind for e in events]


def test_sold_out_when_left_reaches_zero() -> None:
    events = detect(snap(left=3), snap(left=0))
    assert kinds(events) == [EventKind.SOLD_OUT]
    assert events[0].sku == "egg"
    assert events[0].to_dict()["left"] == 0


def test_sold_out_only_once() -> None:
    assert detect(snap(left=0), snap(left=0)) == []


def test_low_stock_crossing_ten_percent() -> None:
    events = detect(snap(left=10), snap(left=9))
    assert kinds(events) == [EventKind.LOW_STOCK]
    assert events[0].data["threshold"] == 10


def test_low_stock_not_repeated_below_threshold() -> None:
    assert detect(snap(left=9), snap(left=5)) == []


def test_dropping_straight_to_zero_is_sold_out_not_low_stock() -> None:
    assert kinds(detect(snap(left=50), snap(left=0))) == [EventKind.SOLD_OUT]


def test_configured_low_stock_threshold() -> None:
    assert kinds(detect(snap(left=60), snap(left=49), low_stock=50)) == [EventKind.LOW_STOCK]
    assert detect(snap(left=60), snap(left=51), low_stock=50) == []


def test_low_threshold_is_at_least_one() -> None:
    assert low_threshold(3) == 1
    assert low_threshold(101) == 11


def test_missing_before_counts_as_untouched() -> None:
    assert kinds(detect({}, snap(left=0))) == [EventKind.SOLD_OUT]


def test_variant_keys_split() -> None:
    events = detect(snap("tea/50g", stock=20, left=1), snap("tea/50g", stock=20, left=0))
    assert (events[0].sku, events[0].variant, events[0].key) == ("tea", "50g", "tea/50g")
    assert split_key("egg") == ("egg", None)


def test_presale_opened_on_first_presale_outcome() -> None:
    events = detect(snap(left=0), snap(left=0, presale=1), [presale_outcome()])
    assert kinds(events) == [EventKind.PRESALE_OPENED]


def test_presale_opened_needs_a_presale_outcome() -> None:
    assert detect(snap(left=0), snap(left=0, presale=1), []) == []


def test_presale_full_at_cap_from_catalogue_or_snapshot() -> None:
    caps = presale_caps(CATALOGUE)
    assert caps == {"egg": 5, "tea/50g": 2}
    assert kinds(detect(snap(left=0, presale=4), snap(left=0, presale=5), caps=caps)) == [EventKind.PRESALE_FULL]
    live = detect(snap(left=0, presale=4), snap(left=0, presale=5, presale_cap=8), caps=caps)
    assert live == []


def test_detector_reports_presale_opened_once_per_key() -> None:
    d = EventDetector(CATALOGUE)
    assert kinds(d.detect(snap(left=0), snap(left=0, presale=1), [presale_outcome()])) == [
        EventKind.PRESALE_OPENED]
    # The queue empties (promotions) and refills: not opened again.
    assert d.detect(snap(left=0, presale=0), snap(left=0, presale=1), [presale_outcome(position=1)]) == []
    assert d.counts[EventKind.PRESALE_OPENED] == 1
    assert "presale_opened 1" in repr(d)


def test_sold_out_and_presale_opened_in_one_batch() -> None:
    d = EventDetector(CATALOGUE)
    events = d.detect(snap(left=1), snap(left=0, presale=2), [presale_outcome()])
    assert kinds(events) == [EventKind.SOLD_OUT, EventKind.PRESALE_OPENED]


@given(st.lists(st.integers(0, 30), min_size=1, max_size=40))
def test_sold_out_fires_once_per_trip_to_zero(sales: list[int]) -> None:
    # Stock only goes down: however the sales are batched, sold_out fires at most once, and exactly once
    # if stock reaches zero.
    left = 100
    sold_out = 0
    low = 0
    for n in sales:
        new = max(0, left - n)
        ks = kinds(detect(snap(left=left), snap(left=new)))
        sold_out += ks.count(EventKind.SOLD_OUT)
        low += ks.count(EventKind.LOW_STOCK)
        left = new
    assert sold_out == (1 if left == 0 else 0)
    assert low <= 1


def test_a_queue_refilled_after_a_cancel_is_not_full_again_until_it_had_room() -> None:
    # Found from outside: in a flash sale each cancel freed one place in a full queue that the next buyer
    # took at once, and each refill logged presale_full again (207 events in one sale).
    d = EventDetector(config.loads("""
[stream]
name = "t"
[[products]]
sku = "egg"
name = "Eggs"
stock = 100
presale = 50
""").catalogue)
    full = snap(left=0, presale=50)
    assert kinds(d.detect(snap(left=0, presale=49), full)) == [EventKind.PRESALE_FULL]
    for _ in range(20):  # cancel one, refill one
        assert d.detect(full, snap(left=0, presale=49)) == []
        assert d.detect(snap(left=0, presale=49), full) == []
    # Real room (a tenth of the cap) and full again: news.
    assert d.detect(full, snap(left=0, presale=45)) == []
    assert kinds(d.detect(snap(left=0, presale=45), full)) == [EventKind.PRESALE_FULL]
    # A new cap from the host, reached: news too.
    assert kinds(d.detect(full, snap(left=0, presale=60, presale_cap=60))) == [EventKind.PRESALE_FULL]
    assert d.counts[EventKind.PRESALE_FULL] == 3


def test_sold_out_again_only_after_a_restock_or_real_room() -> None:
    d = EventDetector(CATALOGUE)
    assert kinds(d.detect(snap(left=1), snap(left=0))) == [EventKind.SOLD_OUT]
    assert d.detect(snap(left=0), snap(left=1)) == []  # a cancel freed one unit
    assert d.detect(snap(left=1), snap(left=0)) == []  # and the next buyer took it: not news
    assert d.detect(snap(left=0), snap(stock=110, left=10)) == []  # the host restocked 10
    assert kinds(d.detect(snap(stock=110, left=10), snap(stock=110, left=0))) == [EventKind.SOLD_OUT]
    assert d.counts[EventKind.SOLD_OUT] == 2


def test_a_small_queue_and_a_small_stock_do_not_flap_either() -> None:
    # Found from outside: with stock 3 and a queue of 4 (a village's sale), each cancel/rebuy said sold_out or
    # presale_full again, since a tenth of so little is one.
    d = EventDetector(config.loads("""
[stream]
name = "t"
[[products]]
sku = "egg"
name = "Eggs"
stock = 3
presale = 4
""").catalogue)
    assert kinds(d.detect(snap(stock=3, left=1), snap(stock=3, left=0))) == [EventKind.SOLD_OUT]
    assert kinds(d.detect(snap(stock=3, left=0, presale=3), snap(stock=3, left=0, presale=4))) == [
        EventKind.PRESALE_FULL]
    for _ in range(6):
        assert d.detect(snap(stock=3, left=0, presale=4), snap(stock=3, left=0, presale=3)) == []
        assert d.detect(snap(stock=3, left=0, presale=3), snap(stock=3, left=0, presale=4)) == []
        assert d.detect(snap(stock=3, left=0, presale=4), snap(stock=3, left=1, presale=4)) == []
        assert d.detect(snap(stock=3, left=1, presale=4), snap(stock=3, left=0, presale=4)) == []
    assert d.counts[EventKind.SOLD_OUT] == d.counts[EventKind.PRESALE_FULL] == 1
