"""The scenario generator: deterministic, shaped like the issue says, and writes configs the loader accepts."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.bench.scenario import SCENARIOS, Scenario, buys, generate
from livecart.config import load
from livecart.core.records import Comment, Intent


@pytest.fixture(scope="module")
def flash() -> Scenario:
    return generate("flash", seed=3, scale=0.02)


def test_same_seed_gives_the_same_comments() -> None:
    a = generate("steady", seed=7, scale=0.01)
    b = generate("steady", seed=7, scale=0.01)
    assert a.comments == b.comments
    assert a.labels == b.labels


def test_another_seed_gives_other_comments() -> None:
    assert generate("flash", seed=1, scale=0.01).comments != generate("flash", seed=2, scale=0.01).comments


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'crash'"):
        generate("crash")


def test_nonpositive_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        generate("flash", scale=0)


def test_comments_arrive_in_ts_order_with_unique_keys(flash: Scenario) -> None:
    ts = [c.ts for c in flash.comments]
    assert ts == sorted(ts)
    assert len({c.key for c in flash.comments}) == len(flash.comments)


def test_flash_puts_five_buys_per_unit_inside_five_seconds(flash: Scenario) -> None:
    assert flash.flash is not None
    start, end = flash.flash
    assert end - start == pytest.approx(5.0)
    in_window = [lab for c, lab in buys(flash) if start <= c.ts <= end]
    stock = flash.product("egg-10").stock
    assert len(in_window) == pytest.approx(50_000 * 0.02, rel=0.01)
    assert len(in_window) == pytest.approx(5 * stock, rel=0.05)


def test_most_comments_are_not_buys(flash: Scenario) -> None:
    assert flash.buy_count < len(flash.comments) / 2


def test_buy_phrasing_is_varied(flash: Scenario) -> None:
    texts = {c.text for c, _ in buys(flash)}
    assert "+1" in texts
    assert any("号链接" in t for t in texts)
    assert any("鸡蛋" in t or "雞蛋" in t for t in texts)
    assert len(texts) > 50


def test_simulcast_spans_three_platforms_with_english_on_twitch() -> None:
    s = generate("simulcast", seed=1, scale=0.02)
    assert {c.platform for c in s.comments} == {"douyin", "bilibili", "twitch"}
    twitch_buys = [c.text for c, _ in buys(s) if c.platform == "twitch"]
    assert twitch_buys
    assert not [t for t in twitch_buys if re.search(r"[\u4e00-\u9fff]", t)]  # no Chinese on twitch


def test_steady_has_cancels_and_questions_but_no_flash_window() -> None:
    s = generate("steady", seed=1, scale=0.02)
    intents = {lab.intent for lab in s.labels}
    assert intents == {Intent.BUY, Intent.CANCEL, Intent.ASK, Intent.NONE}
    assert s.flash is None


def test_scale_scales_stock(flash: Scenario) -> None:
    assert flash.units["egg-10"] == (200, 40)
    assert generate("flash", seed=3, scale=1.0).units["egg-10"] == (10_000, 2_000)


def test_written_config_is_accepted_by_the_loader(flash: Scenario, tmp_path: Path) -> None:
    path = flash.write_config(tmp_path, adapters=[{"type": "replay", "path": "c.jsonl", "speed": 0}])
    cfg = load(path)
    assert cfg.stream.featured == "egg-10"
    assert cfg.storage.path == tmp_path / "livecart.db"
    assert cfg.catalogue.by_sku["egg-10"].stock == 200
    assert cfg.catalogue.by_link[3].variant("100g") is not None
    assert [a.type for a in cfg.adapters] == ["replay"]


def test_jsonl_round_trips_to_the_same_comments(flash: Scenario, tmp_path: Path) -> None:
    path = flash.write_jsonl(tmp_path / "c.jsonl")
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(flash.comments)
    assert tuple(Comment.from_mapping(orjson.loads(line)) for line in lines) == flash.comments


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(SCENARIOS)), seed=st.integers(0, 2**31), scale=st.floats(0.001, 0.01))
def test_every_buy_label_names_a_catalogue_item(name: str, seed: int, scale: float) -> None:
    s = generate(name, seed=seed, scale=scale)
    units = s.units
    for _, lab in buys(s):
        key = lab.sku if lab.variant is None else f"{lab.sku}/{lab.variant}"
        assert key in units
        assert lab.qty >= 1


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_parser_reads_every_generated_comment_as_labelled(name: str, tmp_path: Path) -> None:
    from livecart.core.parser import Parser

    s = generate(name, seed=11, scale=0.05)
    cfg = load(s.write_config(tmp_path))
    parser = Parser.from_config(cfg)
    wrong = []
    for c, lab in zip(s.comments, s.labels, strict=True):
        r = parser.parse(c.text, cfg.stream.featured)
        if lab.intent is Intent.BUY:
            ok = r.intent is Intent.BUY and [(i.sku, i.variant, i.qty) for i in r.items] == [
                (lab.sku, lab.variant, lab.qty)]
        elif lab.intent is Intent.CANCEL:
            ok = r.intent is Intent.CANCEL and [i.sku for i in r.items] == [lab.sku]
        else:
            ok = r.intent is lab.intent
        if not ok:
            wrong.append((c.text, lab, r))
    assert wrong == []


def test_chat_is_varied_not_a_handful_of_repeated_strings() -> None:
    s = generate("flash", seed=1, scale=0.1)
    assert len({c.text for c in s.comments}) > len(s.comments) / 10
