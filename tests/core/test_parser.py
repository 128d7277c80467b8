"""The comment parser, values in / values out: the labelled corpus, then one behaviour per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from livecart.config import load
from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.parser import MAX_ITEMS, Parser, cn_number, normalise
from livecart.core.records import NOTHING, Intent, Item, ParseResult, Reason
from livecart.core.settings import Config

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CORPUS = HERE / "parser_corpus.tsv"


@pytest.fixture(scope="module")
def sample() -> Config:
    return load(REPO / "config" / "sample.toml")


@pytest.fixture(scope="module")
def parsers(sample: Config) -> dict[str, Parser]:
    return {
        "sample": Parser.from_config(sample),
        "clothes": Parser.from_config(load(HERE / "parser_clothes.toml")),
    }


def _expected(spec: str) -> ParseResult:
    intent, *items = spec.split()
    out: list[Item] = []
    for it in items:
        head, _, reason = it.partition("!")
        prod, _, qty = head.rpartition(":")
        sku, _, variant = prod.partition("/")
        out.append(Item(None if sku == "-" else sku, variant or None, int(qty), Reason(reason) if reason else None))
    return ParseResult(Intent(intent), tuple(out))


def _corpus() -> list[tuple[str, str, str, str]]:
    rows = []
    for n, line in enumerate(CORPUS.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        featured, text, expected = line.split("\t")
        cfg, _, sku = featured.rpartition(":")
        rows.append((f"{n}", cfg or "sample", sku, text, expected))
    return [pytest.param(*r[1:], id=f"line{r[0]}") for r in rows]


CASES = _corpus()


def test_corpus_is_large_and_covers_every_intent() -> None:
    assert len(CASES) >= 400
    intents = {c.values[3].split()[0] for c in CASES}
    assert intents == {"buy", "cancel", "ask", "none"}


@pytest.mark.parametrize(("cfg", "featured", "text", "expected"), CASES)
def test_corpus(parsers: dict[str, Parser], cfg: str, featured: str, text: str, expected: str) -> None:
    parser = parsers[cfg]
    got = parser.parse(text, None if featured == "-" else featured)
    assert got == _expected(expected), f"{text!r} -> {got}"


def test_corpus_has_no_false_orders(parsers: dict[str, Parser]) -> None:
    """The costliest mistake: a line labelled not-buy that the parser reads as a buy."""
    false_orders = []
    for case in CASES:
        cfg, featured, text, expected = case.values
        if not expected.startswith("buy"):
            got = parsers[cfg].parse(text, None if featured == "-" else featured)
            if got.intent is Intent.BUY:
                false_orders.append(text)
    assert false_orders == []


# --- behaviours -------------------------------------------------------------------------------------


def test_bare_plus_one_off_makes_bare_numbers_chatter(sample: Config) -> None:
    p = Parser(sample.catalogue, bare_plus_one=False)
    for text in ("1", "+1", "+3", "扣1", "x2"):
        assert p.parse(text, "egg-10").intent is Intent.NONE, text


def test_bare_plus_one_off_keeps_verbal_buys(sample: Config) -> None:
    p = Parser(sample.catalogue, bare_plus_one=False)
    assert p.parse("要", "egg-10") == ParseResult(Intent.BUY, (Item("egg-10", None, 1),))
    assert p.parse("来两盒", "egg-10") == ParseResult(Intent.BUY, (Item("egg-10", None, 2),))
    assert p.parse("I'll take 2", "egg-10") == ParseResult(Intent.BUY, (Item("egg-10", None, 2),))
    assert p.parse("鸡蛋+1", "egg-10") == ParseResult(Intent.BUY, (Item("egg-10", None, 1),))


def test_a_line_pasted_over_and_over_is_no_order(parsers: dict[str, Parser]) -> None:
    p = parsers["sample"]
    assert len(p.parse("鸡蛋来两盒 " * MAX_ITEMS, "egg-10").items) == MAX_ITEMS
    assert p.parse("鸡蛋来两盒 " * (MAX_ITEMS + 1), "egg-10") == NOTHING
    assert p.parse("鸡蛋来两盒" * 400, "egg-10") == NOTHING  # 2,000 characters: 400 items before


def test_max_qty_is_configurable(sample: Config) -> None:
    p = Parser(sample.catalogue, max_qty=5)
    assert p.parse("鸡蛋5盒").items == (Item("egg-10", None, 5),)
    assert p.parse("鸡蛋6盒").items == (Item("egg-10", None, 6, Reason.BAD_QUANTITY),)
    assert p.parse("+6", "egg-10").intent is Intent.BUY


_REFUSED = [
    # 千 / 万 / 亿 numerals, digits of any length, exponents: above max_qty, refused rather than read as one.
    ("鸡蛋来一万盒", 10_000), ("鸡蛋来一千盒", 1000), ("鸡蛋来一亿盒", 100_000_000), ("鸡蛋来三千盒", 3000),
    ("鸡蛋来一千零一盒", 1001), ("要三万盒", 30_000), ("要两千五百盒", 2500), ("鸡蛋来两千", 2000),
    ("鸡蛋来100000000盒", 100_000_000), ("鸡蛋来12345盒", 12_345), ("鸡蛋来1万盒", 10_000),
    ("鸡蛋来1e9盒", 10**9), ("egg 1e9", 10**9), ("egg x1e9", 10**9), ("+1e9", 10**9),
    ("egg 1000000", 1_000_000), ("egg x100000", 100_000), ("SOLD A1 100000", 100_000),
    ("1号链接拍100000", 100_000), ("+99999999999", 99_999_999_999), ("+123456", 123_456),
    # negative and fractional: not a whole number of boxes to reserve
    ("egg x-1", -1), ("egg x-2", -2), ("鸡蛋来2.5盒", 0), ("鸡蛋来1.5盒", 0), ("egg x2.5", 0), ("鸡蛋x2.5", 0),
    ("鸡蛋来两个半", 0), ("鸡蛋来两盒半", 0),
]


@pytest.mark.parametrize(("text", "qty"), _REFUSED)
def test_a_quantity_it_cannot_take_is_refused_not_read_as_one(parsers: dict[str, Parser], text: str,
                                                              qty: int) -> None:
    got = parsers["sample"].parse(text, "egg-10")
    assert got == ParseResult(Intent.BUY, (Item("egg-10", None, qty, Reason.BAD_QUANTITY),)), got


def test_huge_quantities_are_capped_and_never_raise(parsers: dict[str, Parser]) -> None:
    from livecart.core.parser import QTY_CAP

    p = parsers["sample"]
    for text in ("鸡蛋来" + "1" * 1999 + "盒", "+" + "9" * 5000, "鸡蛋来一亿亿亿亿亿盒", "egg x9e9999"):
        got = p.parse(text, "egg-10")
        assert got == ParseResult(Intent.BUY, (Item("egg-10", None, QTY_CAP, Reason.BAD_QUANTITY),)), text


def test_big_numbers_that_are_no_quantity_stay_as_they_were(parsers: dict[str, Parser]) -> None:
    p = parsers["sample"]
    for text in ("13812345678", "鸡蛋 13812345678", "+8613812345678", "+5201314", "5201314", "+666666",
                 "+1111111", "+88888888", "egg 11111", "千万别买", "万岁", "十万火急", "一千零一夜", "鸡蛋3万元",
                 "三万块", "鸡蛋两盒半价", "等了两个半小时了", "鸡蛋2.5元一盒", "egg 2.5", "鸡蛋-1", "订单号123456789",
                 "鸡蛋500克", "2024.12.25"):
        assert p.parse(text, "egg-10").intent is not Intent.BUY, text
    assert p.parse("鸡蛋来2.0盒", "egg-10").items == (Item("egg-10", None, 2),)
    assert p.parse("千万要买鸡蛋", "egg-10").items == (Item("egg-10", None, 1),)  # 千万: "by all means"
    assert p.parse("鸡蛋还有一万盒吗", "egg-10").intent is Intent.ASK


def test_cn_number_reads_thousands_and_above() -> None:
    assert cn_number("一千") == 1000
    assert cn_number("两千五百") == 2500
    assert cn_number("一千零一") == 1001
    assert cn_number("三万") == 30_000
    assert cn_number("一亿") == 100_000_000
    assert cn_number("十万") == 100_000
    assert cn_number("九十九") == 99
    assert cn_number("一二") is None
    for word in ("千", "万", "亿"):
        assert cn_number(word) is None


def test_from_config_reads_stream_settings(tmp_path: Path) -> None:
    text = (REPO / "config" / "sample.toml").read_text(encoding="utf-8")
    text = text.replace("bare_plus_one = true", "bare_plus_one = false\nmax_qty = 3")
    cfg_path = tmp_path / "s.toml"
    cfg_path.write_text(text, encoding="utf-8")
    p = Parser.from_config(load(cfg_path))
    assert p.bare_plus_one is False
    assert p.max_qty == 3
    assert p.parse("+1", "egg-10").intent is Intent.NONE


def test_unknown_featured_sku_is_not_available(parsers: dict[str, Parser]) -> None:
    got = parsers["sample"].parse("+1", "no-such-sku")
    assert got == ParseResult(Intent.BUY, (Item(None, None, 1, Reason.NOT_AVAILABLE),))


def test_featured_argument_changes_only_implicit_buys(parsers: dict[str, Parser]) -> None:
    p = parsers["sample"]
    assert p.parse("+1", "honey-500").items == (Item("honey-500", None, 1),)
    assert p.parse("鸡蛋+1", "honey-500").items == (Item("egg-10", None, 1),)


def test_repeated_comment_gives_the_same_result(parsers: dict[str, Parser]) -> None:
    p = parsers["sample"]
    first = p.parse("鸡蛋来两盒", "egg-10")
    assert p.parse("鸡蛋来两盒", "egg-10") == first
    assert p.parse("+1", "egg-10") != p.parse("+1", "honey-500")


def test_cache_is_bounded(parsers: dict[str, Parser]) -> None:
    from livecart.core.parser import _CACHE_SIZE

    p = parsers["sample"]
    for k in range(2 * _CACHE_SIZE + 1_000):
        p.parse(f"鸡蛋{k % 90 + 1}盒 {k}", "egg-10")
    assert len(p._cache) <= _CACHE_SIZE
    assert len(p._cache_old) <= _CACHE_SIZE
    assert len(p._cache) + len(p._cache_old) > _CACHE_SIZE  # it did fill a generation and age it


def test_cache_keeps_lines_that_keep_coming_back(parsers: dict[str, Parser]) -> None:
    """A full generation ages into the old one; a line found there moves back instead of being recomputed."""
    from livecart.core import parser as parser_module

    p = Parser(parsers["sample"].catalogue)
    p.parse("+1", "egg-10")
    for k in range(parser_module._CACHE_SIZE):
        p.parse(f"one-off comment {k}", "egg-10")
    assert ("+1", "egg-10") in p._cache_old
    assert ("+1", "egg-10") not in p._cache
    p.parse("+1", "egg-10")
    assert ("+1", "egg-10") in p._cache


def test_long_comment_is_parsed(parsers: dict[str, Parser]) -> None:
    text = "主播好美" * 200 + " 鸡蛋来两盒"
    assert parsers["sample"].parse(text, "egg-10").items == (Item("egg-10", None, 2),)


def test_product_with_variants_named_without_one_has_null_variant(parsers: dict[str, Parser]) -> None:
    assert parsers["sample"].parse("菊花茶2").items == (Item("tea-chry", None, 2),)


def test_variant_code_names_product_and_variant() -> None:
    cat = Catalogue((Product("tee", "Tee", ("tee",), code="T1",
                             variants=(Variant("red", ("red",), 5, code="T1R"), Variant("blue", ("blue",), 5))),))
    p = Parser(cat)
    assert p.parse("SOLD T1R 2").items == (Item("tee", "red", 2),)
    assert p.parse("T1 blue +1").items == (Item("tee", "blue", 1),)


def test_catalogue_without_codes_reads_code_shapes_as_chatter() -> None:
    cat = Catalogue((Product("egg", "Eggs", ("eggs",)),))
    assert Parser(cat).parse("mp3 2", "egg").intent is Intent.NONE


def test_alias_added_to_catalogue_is_no_longer_chatter() -> None:
    """粉丝 is chatter until a catalogue sells something called 粉丝 (glass noodles)."""
    cat = Catalogue((Product("vermicelli", "Glass noodles", ("粉丝",)),))
    assert Parser(cat).parse("粉丝来两包").items == (Item("vermicelli", None, 2),)


def test_repr_shows_settings(parsers: dict[str, Parser]) -> None:
    r = repr(parsers["sample"])
    assert "5 products" in r
    assert "bare_plus_one=True" in r
    assert "max_qty=99" in r


@pytest.mark.parametrize(("text", "value"), [
    ("一", 1), ("两", 2), ("俩", 2), ("十", 10), ("十一", 11), ("二十", 20), ("二十五", 25), ("九十九", 99),
    ("一百", 100), ("百", 100), ("一二", None), ("十十", 20),
])
def test_cn_number(text: str, value: int | None) -> None:
    assert cn_number(text) == value


@pytest.mark.parametrize(("raw", "norm"), [
    ("ＨＯＮＥＹ　２", "honey 2"),
    ("雞蛋來兩盒", "鸡蛋来两盒"),
    ("１號鏈接", "1号链接"),
    ("鸡 蛋 2 盒", "鸡蛋 2 盒"),
    ("eggs×3", "eggsx3"),
    ("蜂蜜？", "蜂蜜?"),
])
def test_normalise(raw: str, norm: str) -> None:
    assert normalise(raw) == norm
