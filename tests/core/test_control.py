"""The control model: parsing a host control, the sale's rules for it, and the one function applying it."""

from __future__ import annotations

import pytest

from livecart.core import control
from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.control import Control, ControlAction, Kind, parse_params
from livecart.core.errors import BadControl, ControlError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult, Status

EGG = Product("egg", "Eggs", stock=2, presale=4)
TEA = Product("tea", "Tea", variants=(Variant("50g", stock=1), Variant("100g", stock=1, presale=3)))
CAT = Catalogue((EGG, TEA))


def ledger() -> Ledger:
    return Ledger(CAT, hold_seconds=60, featured="egg", clock=lambda: 100.0)


def buy(led: Ledger, n: int, user: str, sku: str, qty: int, variant: str | None = None) -> None:
    led.decide(Comment("p", "r", f"m{n}", user, user, "", 100.0),
               ParseResult(Intent.BUY, (Item(sku, variant, qty),)))


def test_a_limit_on_a_variant_is_refused_when_parsed() -> None:
    with pytest.raises(BadControl, match="whole product"):
        parse_params("limit", ["tea/50g", "2"])
    with pytest.raises(BadControl, match="whole product"):
        parse_params("limit", ["tea", "50g", "2"])
    with pytest.raises(BadControl, match="whole product"):
        Control.from_json({"action": "limit", "sku": "tea", "variant": "50g", "qty": 2})
    assert "VARIANT" not in control.USAGE[ControlAction.LIMIT]


def test_presale_on_opens_with_the_configured_quantity() -> None:
    assert control.record(parse_params("presale", ["egg", "on"]), CAT) == (Kind.PRESALE, ["egg", None, 4])
    assert control.record(parse_params("presale", ["tea/100g", "on"]), CAT) == (Kind.PRESALE, ["tea", "100g", 3])
    assert control.record(parse_params("presale", ["egg", "7"]), CAT) == (Kind.PRESALE, ["egg", None, 7])
    assert control.record(parse_params("presale", ["egg", "off"]), CAT) == (Kind.PRESALE, ["egg", None, 0])


def test_presale_on_without_a_configured_quantity_is_refused() -> None:
    with pytest.raises(ControlError, match="tea/50g has no presale quantity"):
        control.record(parse_params("presale", ["tea/50g", "on"]), CAT)


@pytest.mark.parametrize(("target", "said"), [
    ("bamboo", "no product 'bamboo'"),  # was "bamboo has no presale quantity in the config; give one"
    ("tea", r"tea has variants \(50g, 100g\); name one"),
    ("tea/nosuch", "tea has no variant 'nosuch'"),
    ("egg/big", "egg has no variants"),
])
def test_presale_on_for_a_unit_that_does_not_exist_says_so(target: str, said: str) -> None:
    with pytest.raises(ControlError, match=said):
        control.record(parse_params("presale", [target, "on"]), CAT)


def test_status_is_not_a_record() -> None:
    with pytest.raises(ControlError, match="not journalled"):
        control.record(Control(ControlAction.STATUS), CAT)


@pytest.mark.parametrize(("action", "params"), [
    ("restock", ["egg", "3"]), ("presale", ["egg", "on"]), ("limit", ["egg", "1"]), ("feature", ["tea"]),
    ("pay", ["o-000001"]), ("cancel", ["o-000002"]), ("pause", []), ("resume", []),
])
def test_a_record_applied_to_a_copy_of_the_ledger_gives_the_same_state(action: str, params: list[str]) -> None:
    live, replayed = ledger(), ledger()
    for led in (live, replayed):
        buy(led, 1, "a", "egg", 1)
        buy(led, 2, "b", "egg", 2)  # 1 reserved, 1 presale
    kind, args = control.record(parse_params(action, params), CAT)
    # The record goes through the journal as JSON: lists, strings, numbers, booleans only.
    assert all(a is None or isinstance(a, str | int | bool) for a in args)
    out_live = control.apply(live, kind, args)
    out_replayed = control.apply(replayed, Kind(kind.value), list(args))
    assert out_live == out_replayed
    assert live.snapshot() == replayed.snapshot()


def test_restock_promotes_the_presale_queue() -> None:
    led = ledger()
    buy(led, 1, "a", "egg", 2)
    buy(led, 2, "b", "egg", 1)  # queued: egg has 2 in stock
    out = control.apply(led, *control.record(parse_params("restock", ["egg", "1"]), CAT))
    assert [(o.status, o.user) for o in out] == [(Status.PROMOTED, "b")]


def test_apply_refuses_a_comment_record() -> None:
    with pytest.raises(ValueError, match="not a control record"):
        control.apply(ledger(), Kind.COMMENT, [])
