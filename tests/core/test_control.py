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


def test_a_keyed_control_is_applied_once_live_on_replay_and_from_a_snapshot() -> None:
    now = [100.0]
    led = Ledger(CAT, hold_seconds=60, clock=lambda: now[0])
    first = parse_params("restock", ["egg", "5"]).keyed("tap-00000001")
    kind, args = control.record(first, CAT)
    assert args == ["egg", None, 5, "tap-00000001"]  # the key is journalled after the arguments
    control.apply(led, kind, args)
    assert control.applied_before(led, first, CAT)
    seq = led.seq
    assert control.apply(led, kind, args) == []  # sent again: a no-op, but an event of the journal
    assert led.seq == seq + 1
    assert led.snapshot()["products"]["egg"]["stock"] == 7
    # The key is in the ledger's state, so a ledger restored from a snapshot knows it too.
    again = Ledger.restore(CAT, led.state(), clock=lambda: now[0])
    control.apply(again, kind, args)
    assert again.snapshot()["products"]["egg"]["stock"] == 7
    assert again.state() == led.state() | {"seq": led.seq + 1}
    # Another control with the same key is refused before it is applied; without a key it applies each time.
    with pytest.raises(ControlError, match=r"another control \(restock egg 5\)") as exc:
        control.applied_before(led, parse_params("restock", ["egg", "6"]).keyed("tap-00000001"), CAT)
    assert exc.value.code == "key_reused"
    for _ in range(2):
        control.apply(led, *control.record(parse_params("restock", ["egg", "5"]), CAT))
    assert led.snapshot()["products"]["egg"]["stock"] == 17
    # Keys are remembered for CONTROL_KEY_SECONDS.
    now[0] += 901
    assert not control.applied_before(led, first, CAT)
    control.apply(led, kind, args)
    assert led.snapshot()["products"]["egg"]["stock"] == 22


def test_the_ledger_keeps_the_newest_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from livecart.core import ledger as ledger_mod

    monkeypatch.setattr(ledger_mod, "CONTROL_KEYS", 3)
    led = ledger()
    for i in range(5):
        led.note_control(f"key-{i:06d}", "p", [f"o-{i}"])
    assert [k for k in (f"key-{i:06d}" for i in range(5)) if led.control_key(k)] == ["key-000002", "key-000003",
                                                                                      "key-000004"]


@pytest.mark.parametrize("key", ["short", "has space in it", "x" * 65, 12345678])
def test_a_bad_key_is_refused_when_parsed(key: object) -> None:
    with pytest.raises(BadControl, match="key"):
        Control.from_json({"action": "restock", "sku": "egg", "qty": 1, "key": key})
