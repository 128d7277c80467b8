"""``livecart demo``: the generated stream, the run on a virtual clock, the journal it leaves behind."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from livecart.cli import demo
from livecart.config import load, loads
from livecart.core.control import Control, ControlAction
from livecart.core.parser import Parser
from livecart.core.records import Comment, Intent
from livecart.runtime.pipeline import Engine
from livecart.store.journal import Journal


@pytest.fixture(scope="module")
def scenario() -> demo.Scenario:
    return demo.generate()


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("cfg")
    (d / "demo.toml").write_text(demo.demo_config_text(), encoding="utf-8")
    return load(d / "demo.toml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One whole demo run, flat out, in plain mode; its directory and what it printed."""
    d = tmp_path_factory.mktemp("demo")
    # From a folder outside the checkout, as a user runs it: in the checkout's root `engine/` is importable
    # under its folder name too, which once hid a lookup of the bundled config under that name.
    proc = subprocess.run([sys.executable, "-m", "livecart.cli.main", "demo", "--plain", "--speed", "0", "--dir", str(d)],
                          capture_output=True, text=True, encoding="utf-8", timeout=120, check=False, cwd=d)
    assert proc.returncode == 0, proc.stderr
    return d, proc.stdout


@pytest.fixture(scope="module")
def report(finished: tuple[Path, str]) -> dict[str, Any]:
    """``livecart report --json`` over the demo's journal."""
    proc = subprocess.run([sys.executable, "-m", "livecart.cli.main", "report", str(finished[0] / demo.CONFIG_NAME),
                           "--json"], capture_output=True, text=True, encoding="utf-8", timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def orders(finished: tuple[Path, str]) -> list[dict[str, str]]:
    """The demo's CSV export, one row per order."""
    raw = (finished[0] / demo.EXPORT_NAME).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM, for spreadsheets
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))


# ------------------------------------------------------------------------------------------ the config


def test_bundled_config_is_a_valid_stream_config(demo_cfg: Any) -> None:
    assert demo_cfg.stream.featured == "egg-10"
    assert demo_cfg.stream.hold_minutes > 0
    assert demo_cfg.storage.path.name == "demo.db"
    assert [a.type for a in demo_cfg.adapters] == ["replay"]
    assert demo_cfg.catalogue.by_sku["egg-10"].stock == 1000  # 1,000 boxes of 10: the 10,000 eggs
    assert demo_cfg.catalogue.by_sku["egg-10"].presale == 0  # the host opens the presale live


# ------------------------------------------------------------------------------------------ the stream


def test_stream_is_the_same_for_the_same_seed(scenario: demo.Scenario) -> None:
    again = demo.generate()
    assert again == scenario
    assert demo.generate(demo.SEED + 1).comments != scenario.comments


def test_stream_has_a_few_thousand_comments_in_time_order_with_unique_keys(scenario: demo.Scenario) -> None:
    cs = scenario.comments
    assert 3000 <= len(cs) <= 10000
    assert len({c.key for c in cs}) == len(cs)
    ts = [c.ts for c in cs]
    assert ts == sorted(ts)
    assert scenario.start <= ts[0]
    assert ts[-1] < scenario.start + scenario.duration
    assert {c.platform for c in cs} == {"douyin", "youtube"}


def test_stream_mixes_chatter_questions_buys_and_cancels(scenario: demo.Scenario, demo_cfg: Any) -> None:
    parse = Parser.from_config(demo_cfg).parse
    feature_at = [(h.ts, h.control.sku) for h in scenario.host if h.control.action is ControlAction.FEATURE]
    intents: Counter[Intent] = Counter()
    skus: Counter[str | None] = Counter()
    for c in scenario.comments:
        featured = max((f for f in feature_at if f[0] <= c.ts), default=(0.0, "egg-10"))[1]
        pr = parse(c.text, featured)
        intents[pr.intent] += 1
        skus.update(i.sku for i in pr.items if pr.intent is Intent.BUY)
    n = len(scenario.comments)
    assert intents[Intent.NONE] / n > 0.3  # mostly chatter
    assert intents[Intent.ASK] / n > 0.05
    assert 0.3 < intents[Intent.BUY] / n < 0.6
    assert intents[Intent.CANCEL] > 20
    assert set(demo_cfg.catalogue.by_sku) <= set(skus)
    assert skus[None] > 0  # a few unknown links


@pytest.mark.parametrize("qty", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("sku", ["egg-10", "noodle-5kg", "tea-chry", "honey-1kg", "bamboo", "hoodie"])
def test_every_buy_phrase_buys_what_it_means(demo_cfg: Any, sku: str, qty: int) -> None:
    """The generator's phrase tables and the parser agree: a buy phrase buys its product and quantity."""
    parse = Parser.from_config(demo_cfg).parse
    bare = {"tea-chry": demo.BARE_SIZED + demo.BARE_SIZED_EN,
            "hoodie": demo.BARE_OPTIONS + demo.BARE_OPTIONS_EN}.get(sku, demo.BARE_ZH + demo.BARE_EN)
    for template in demo.NAMED_ZH[sku] + demo.NAMED_EN[sku] + bare:
        if "{cn}" in template and qty not in demo._CN:
            continue
        text = template.format(n=qty, cn=demo._CN.get(qty, ""), m=demo._MEASURE[sku])
        pr = parse(text, sku)
        assert pr.intent is Intent.BUY, text
        assert [i.sku for i in pr.items] == [sku], text
        if "{n}" in template or "{cn}" in template:
            assert pr.items[0].qty == qty, text
        if sku == "tea-chry" and template != "菊花茶要{n}":
            assert pr.items[0].variant in ("50g", "100g"), text
        if sku == "hoodie":  # every hoodie phrase names a colour and a size
            assert pr.items[0].variant in ("black-M", "black-L", "pink-M", "pink-L"), text


def test_chatter_questions_and_cancels_parse_as_such(demo_cfg: Any) -> None:
    parse = Parser.from_config(demo_cfg).parse
    for text in demo.CHATTER_ZH + demo.CHATTER_EN:
        assert parse(text, "egg-10").intent is Intent.NONE, text
    for text in demo.ASK_ZH + demo.ASK_EN:
        assert parse(text, "egg-10").intent is Intent.ASK, text
    for template in demo.CANCEL_ZH + demo.CANCEL_EN:
        assert parse(template.format(a="鸡蛋"), "egg-10").intent is Intent.CANCEL, template


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_any_seed_gives_ordered_unique_comments(seed: int) -> None:
    sc = demo.generate(seed, duration=600.0)
    ts = [c.ts for c in sc.comments]
    assert ts == sorted(ts)
    assert len({c.key for c in sc.comments}) == len(sc.comments)
    assert all(c.text for c in sc.comments)


# ------------------------------------------------------------------------------------------ the whole run


def test_demo_sells_out_the_eggs_into_presale(finished: tuple[Path, str], report: dict[str, Any],
                                              orders: list[dict[str, str]]) -> None:
    eggs = report["products"]["egg-10"]
    assert eggs["left"] == 0
    assert eggs["presale"] > 0
    assert any(r["product"] == "egg-10" and r["status"] == "presale" for r in orders)
    assert report["outcomes"]["promoted"] > 0  # returned and restocked eggs served the queue
    out = finished[1]
    assert "土鸡蛋 10枚装: sold out" in out
    assert "土鸡蛋 10枚装: presale opened" in out


def test_demo_expires_holds_takes_payments_and_cancels(report: dict[str, Any],
                                                       orders: list[dict[str, str]]) -> None:
    o = report["outcomes"]
    assert o["expired"] > 0
    assert o["paid"] > o["expired"]
    assert o["cancelled"] > 0
    assert o["rejected"] > 0
    statuses = Counter(r["status"] for r in orders)
    assert statuses["expired"] > 0
    assert statuses["paid"] > 0
    assert statuses["cancelled"] > 0


def test_demo_never_oversells(finished: tuple[Path, str], report: dict[str, Any],
                              orders: list[dict[str, str]]) -> None:
    cfg = load(finished[0] / demo.CONFIG_NAME)
    held: Counter[str] = Counter()
    for r in orders:
        if r["status"] in ("reserved", "paid"):
            held[r["product"] + (f"/{r['variant']}" if r["variant"] else "")] += int(r["qty"])
    restocked = {"egg-10": sum(int(h.control.qty or 0) for h in demo.generate().host
                               if h.control.action is ControlAction.RESTOCK)}
    for key, p in report["products"].items():
        assert p["left"] >= 0, key
        assert p["reserved"] == held[key], key
        assert p["reserved"] + p["left"] == p["stock"], key
        sku, _, variant = key.partition("/")
        product = cfg.catalogue.by_sku[sku]
        v = product.variant(variant) if variant else None
        initial = v.stock if v is not None else product.stock
        assert p["stock"] == initial + restocked.get(key, 0), key


def test_demo_processes_every_comment_once(finished: tuple[Path, str], report: dict[str, Any]) -> None:
    assert report["comments"] == len(demo.generate().comments)
    lines = (finished[0] / demo.COMMENTS_NAME).read_text(encoding="utf-8").splitlines()
    assert len(lines) == report["comments"]


def test_demo_summary_agrees_with_the_report(finished: tuple[Path, str], report: dict[str, Any]) -> None:
    """The summary the demo printed is the journal's state, not the run's own counters."""
    out = finished[1]
    for status, n in report["outcomes"].items():
        assert re.search(rf"^\s*{status}\s+{n:,}\s*$", out, re.M), status
    assert f"{report['comments']:,} comments processed" in out


def test_demo_writes_a_csv_export_with_a_bom(finished: tuple[Path, str], orders: list[dict[str, str]]) -> None:
    d, out = finished
    assert len(orders) > 1000
    assert orders[0]["order"] == "o-000001"
    assert any(r["name"] != r["buyer"] for r in orders)  # display names, Chinese ones included
    assert str(d / demo.EXPORT_NAME) in out


def test_demo_tells_where_the_journal_is_and_how_to_look_again(finished: tuple[Path, str]) -> None:
    d, out = finished
    assert str(d / "demo.db") in out
    assert f"livecart report {d / demo.CONFIG_NAME}" in out
    assert "livecart export" in out
    assert "[100%]" in out  # the plain progress lines reached the end
    assert out.count("[") < 80  # a few lines, not one per step


def test_demo_refuses_a_directory_that_holds_a_demo_journal(finished: tuple[Path, str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from livecart.cli.main import main
    assert main(["demo", "--plain", "--speed", "0", "--dir", str(finished[0])]) == 1
    said = capsys.readouterr()
    assert "already holds a demo journal" in said.err
    assert "writing" not in said.out  # refused before it says where it writes


def test_demo_refuses_a_negative_speed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(dir=str(tmp_path), speed=-1.0, plain=True)
    assert demo.main(args) == 2
    assert "--speed" in capsys.readouterr().err
    assert not (tmp_path / "demo.db").exists()


# ------------------------------------------------------------------------------------------ pacing and view


class FakeWall:
    """A wall clock that moves only when the run sleeps."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


async def test_run_paces_sale_time_by_speed_and_the_live_view_renders(tmp_path: Path) -> None:
    sc = demo.generate(7, duration=300.0)
    cfg = load(demo.prepare(tmp_path, sc))
    wall = FakeWall()
    run = demo.DemoRun(cfg, sc, speed=100.0, wall=wall, sleep=wall.sleep)
    engine = await Engine.open(cfg, clock=lambda: run.now)
    try:
        await run.run(engine)
    finally:
        await engine.close()
    assert wall.t - 100.0 == pytest.approx(3.0)  # 300 sale seconds at 100x
    assert run.comments_done == len(sc.comments)
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)
    console.print(demo.live_renderable(run))
    frame = console.file.getvalue()  # type: ignore[attr-defined]
    for name in ("土鸡蛋 10枚装", "菊花茶 100g", "presale queue", "latest replies to buyers", "stream events",
                 "comments/s", "orders/s"):
        assert name in frame
    assert any(r.startswith("@") for r in run.replies)


# ------------------------------------------------------------------------------------------ the ledger fix


SMALL = """
[stream]
name = "t"
featured = "egg"
hold_minutes = 1
[storage]
path = "{path}"
durability = "os"
[[products]]
sku = "egg"
name = "Eggs"
aliases = ["egg"]
stock = 5
"""


async def test_a_sweep_over_paid_holds_only_keeps_the_journal_replayable(tmp_path: Path) -> None:
    """A paid order leaves a stale expiry entry; the tick that drops it changes nothing, so it must not
    advance the ledger's seq (the engine journals no row for it) or the journal has a gap."""
    cfg = loads(SMALL.format(path=tmp_path / "j.db"), base_dir=tmp_path)
    now = [1000.0]
    engine = await Engine.open(cfg, clock=lambda: now[0])
    out = await engine.submit([Comment("p", "r", "1", "u", "u", "+1", 1000.0)])
    await engine.control(Control(ControlAction.PAY, order=out[0].order))
    now[0] = 1000.0 + 120
    assert await engine.tick() == []
    await engine.submit([Comment("p", "r", "2", "v", "v", "+1", 1120.0)])
    await engine.close()
    j = await Journal.open(tmp_path / "j.db", readonly=True)
    try:
        ledger = await j.rebuild()
    finally:
        await j.close()
    assert ledger.snapshot()["products"]["egg"]["reserved"] == 2
