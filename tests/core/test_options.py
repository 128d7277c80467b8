"""Product options (colour x size, docs/contract.md §1): config checks, the parser composing a variant."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.config import load, loads
from livecart.core.errors import ConfigError
from livecart.core.parser import Parser
from livecart.core.records import Intent, Item, Reason

HERE = Path(__file__).resolve().parent
HOODIE = HERE / "parser_hoodie.toml"


@pytest.fixture(scope="module")
def parser() -> Parser:
    return Parser.from_config(load(HOODIE))


@pytest.mark.parametrize(("text", "variant", "qty"), [
    ("A12 黑 L +2", "black-L", 2),
    ("黑色L码 +1", "black-L", 1),
    ("黑色 L码 卫衣 2件", "black-L", 2),
    ("L 黑 +1", "black-L", 1),
    ("sold A12 black large", "black-L", 1),
    ("I'll take the pink one in medium", "pink-M", 1),
    ("I'll take the pink one", "pink-M", 1),  # only one pink variant fits
    ("衛衣 黑色 M碼 x2", "black-M", 2),
    ("A12 large black x3", "black-L", 3),
])
def test_values_in_any_order_compose_the_variant(parser: Parser, text: str, variant: str, qty: int) -> None:
    assert parser.parse(text, "hoodie").items == (Item("hoodie", variant, qty),)


@pytest.mark.parametrize("text", ["A12 黑 +1", "I'll take the black one", "hoodie M x2", "要"])
def test_too_few_values_leave_the_variant_open(parser: Parser, text: str) -> None:
    got = parser.parse(text, "hoodie")
    assert got.intent is Intent.BUY
    assert [(i.sku, i.variant, i.reason) for i in got.items] == [("hoodie", None, None)]


def test_a_combination_the_product_lacks_is_not_available(parser: Parser) -> None:
    assert parser.parse("卫衣 粉 L +1", "hoodie").items == (Item("hoodie", None, 1, Reason.NOT_AVAILABLE),)


def test_two_values_of_one_option_are_two_items(parser: Parser) -> None:
    assert parser.parse("A12 黑M+1 粉M+2", None).items == (Item("hoodie", "black-M", 1), Item("hoodie", "pink-M", 2))


def test_values_alone_need_the_featured_product_when_they_are_one_character(parser: Parser) -> None:
    assert parser.parse("黑 L +1", "hoodie").items == (Item("hoodie", "black-L", 1),)
    assert parser.parse("黑 L +1", None).intent is Intent.NONE


def test_a_question_names_the_composed_variant(parser: Parser) -> None:
    assert parser.parse("卫衣黑色L码多少钱", None) == parser.parse("卫衣黑色L码多少钱", "hoodie")
    assert parser.parse("卫衣黑色L码多少钱", None).items == (Item("hoodie", "black-L", 0),)


def test_variant_aliases_still_work_beside_options() -> None:
    src = HOODIE.read_text(encoding="utf-8").replace('name = "pink-M"\n', 'name = "pink-M"\n  aliases = ["少女粉"]\n')
    p = Parser.from_config(loads(src, file="hoodie.toml"))
    assert p.parse("卫衣 少女粉 +1", None).items == (Item("hoodie", "pink-M", 1),)


ALIASES = ["黑", "黑色", "black", "粉", "粉色", "粉红", "粉紅", "pink", "M", "M码", "M碼", "medium", "L", "L码",
           "L碼", "large", "A12", "卫衣", "hoodie", "+1", "x2", "2件", "要", " ", "的", "one", "in"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALIASES), max_size=7), st.sampled_from(["hoodie", None]))
def test_a_composed_variant_always_exists_in_the_catalogue(parser: Parser, words: list[str],
                                                            featured: str | None) -> None:
    cat = parser.catalogue
    for item in parser.parse(" ".join(words), featured).items:
        if item.variant is not None:
            assert item.sku is not None
            product = cat.by_sku[item.sku]
            assert product.variant(item.variant) is not None


def _problems(src: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        loads(src, file="shop.toml")
    return [str(p) for p in e.value.problems]


def test_config_refuses_a_variant_without_a_value_of_every_option() -> None:
    src = HOODIE.read_text(encoding="utf-8").replace('options = { colour = "black", size = "L" }',
                                                     'options = { colour = "black" }')
    (msg,) = _problems(src)
    for part in ("shop.toml:", "variants[1].options.size", "'M', 'L'"):
        assert part in msg


def test_config_refuses_an_unknown_value_naming_what_is_expected() -> None:
    src = HOODIE.read_text(encoding="utf-8").replace('colour = "pink", size = "M"', 'colour = "pnk", size = "M"')
    (msg,) = _problems(src)
    for part in ("options.colour", "'pnk'", "'black', 'pink'"):
        assert part in msg


def test_config_refuses_two_variants_with_one_combination() -> None:
    src = HOODIE.read_text(encoding="utf-8").replace('colour = "pink", size = "M"', 'colour = "black", size = "M"')
    (msg,) = _problems(src)
    for part in ("'black-M' and 'pink-M'", "same options"):
        assert part in msg


def test_config_refuses_a_value_alias_twice_within_an_option() -> None:
    src = HOODIE.read_text(encoding="utf-8").replace('"粉红", "粉紅"', '"粉红", "黑色"')
    (msg,) = _problems(src)
    assert "'黑色' names two values of option 'colour'" in msg


def test_config_refuses_values_on_a_product_without_options() -> None:
    src = HOODIE.read_text(encoding="utf-8")
    start = src.index("options = [")
    end = src.index("]\n", src.index("large")) + 2
    msgs = _problems(src[:start] + src[end:])
    assert any("has no [products].options" in m for m in msgs)


def test_config_refuses_an_unknown_option_in_a_variant() -> None:
    src = HOODIE.read_text(encoding="utf-8").replace('colour = "pink", size = "M"',
                                                     'colour = "pink", size = "M", fit = "slim"')
    (msg,) = _problems(src)
    for part in ("options.fit", "unknown option", "colour, size"):
        assert part in msg
