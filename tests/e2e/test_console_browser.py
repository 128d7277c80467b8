"""The host's console in real Chromium against ``livecart run`` as a process (docs/contract.md §8).

Each test runs its own daemon (WebSocket adapter in server mode, the console on a fixed status port so a
restarted daemon answers at the same address), drives the page through the hooks §8 promises (``data-sku``,
``data-field``, ``?lang=en``, "Restock" / "Quantity" / "Apply") and checks what the daemon says through
``/api/state``, ``/metrics`` and ``livecart report``. Every page records its requests and console messages:
no request may leave the daemon's address and no error may reach the console.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_sale import TOKEN, Sale, running_sale
from tests.e2e.proc import livecart, wait_for

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}


class Page:
    """A browser page on the console that records every request and every console error."""

    def __init__(self, browser: Any, sale: Sale, viewport: dict[str, int]) -> None:
        self.sale = sale
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.set_default_timeout(10_000)

    def open(self, query: str = "?lang=en") -> Any:
        self.page.goto(self.sale.url + "/" + query)
        return self.page

    def login(self, query: str = "?lang=en") -> Any:
        page = self.open(query)
        page.get_by_label("Control token" if "lang=en" in query else "控制口令").fill(TOKEN)
        page.get_by_role("button", name="Log in" if "lang=en" in query else "登录").click()
        page.locator('[data-sku="egg-10"]').wait_for()
        return page

    def field(self, key: str, name: str) -> Any:
        return self.page.locator(f'tr[data-sku="{key}"] [data-field="{name}"]')

    def wait_field(self, key: str, name: str, value: int, timeout: float = 10_000) -> None:
        self.field(key, name).filter(has_text=re.compile(rf"^{value}$")).wait_for(timeout=timeout)

    def check_clean(self) -> None:
        """Nothing but the daemon's own address was asked for; no console errors."""
        foreign = [u for u in self.requests if not u.startswith(self.sale.url + "/") and not u.startswith("data:")]
        assert foreign == []
        assert self.errors == []
        assert any("/console/api/events" in u for u in self.requests)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def sale(tmp_path: Path) -> Iterator[Sale]:
    yield from running_sale(tmp_path)


@pytest.fixture
def phone(chromium: Any, sale: Sale) -> Iterator[Page]:
    p = Page(chromium, sale, PHONE)
    yield p
    p.close()


@pytest.fixture
def laptop(chromium: Any, sale: Sale) -> Iterator[Page]:
    p = Page(chromium, sale, LAPTOP)
    yield p
    p.close()


def metric(sale: Sale, line: str) -> bool:
    return line in sale.daemon.api("/metrics")


def test_login_once_then_the_page_shows_the_sale_in_the_replies_language(sale: Sale, phone: Page) -> None:
    page = phone.open("")
    # Default language: [replies].language of the config (zh).
    page.get_by_label("控制口令").fill("wrong token")
    page.get_by_role("button", name="登录").click()
    page.get_by_text("口令不对").wait_for()
    assert page.locator('[data-sku="egg-10"]').count() == 0
    # The refused login is the one error the browser reports (a 401); nothing else so far.
    assert [e for e in phone.errors if "401" not in e] == []
    phone.errors.clear()
    page.get_by_label("控制口令").fill(TOKEN)
    page.get_by_role("button", name="登录").click()
    phone.wait_field("egg-10", "stock", 40)
    for key, stock in (("egg-10", 40), ("honey-500", 30), ("tea/50g", 10), ("tea/100g", 5), ("tea", 15)):
        phone.wait_field(key, "stock", stock)
        phone.wait_field(key, "left", stock)
        phone.wait_field(key, "reserved", 0)
        phone.wait_field(key, "presale", 0)
    html = page.content()
    assert TOKEN not in html
    assert all(TOKEN not in u for u in phone.requests)
    cookies = phone.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("livecart_session", True, "Strict")]
    # The session is remembered: a reload shows the board without asking again.
    page.reload()
    phone.wait_field("egg-10", "stock", 40)
    assert not page.locator("#login").is_visible()
    phone.check_clean()


def test_live_numbers_follow_a_fed_stream_and_a_durable_outcome_shows_within_a_second(
        sale: Sale, laptop: Page) -> None:
    laptop.login()
    sale.feed([{"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": f"u-{i}", "name": f"Buyer {i}",
                "text": "鸡蛋来两盒" if i % 2 else "菊花茶 50克 1", "ts": 1_700_000_000 + i} for i in range(30)])
    wait_for(lambda: sale.state()["comments"] == 30, "30 comments decided")
    state = sale.state()
    for key in ("egg-10", "tea/50g", "tea/100g", "honey-500"):
        for f in ("stock", "left", "reserved", "presale"):
            laptop.wait_field(key, f, state["products"][key][f], timeout=1_000)
    laptop.page.locator("#total-comments").filter(has_text="30").wait_for(timeout=1_000)
    # One more buy: once the daemon reports it (it is journalled before it is announced), the page has it
    # within a second.
    sale.say("late", "Late buyer", "蜂蜜要一瓶")
    wait_for(lambda: sale.state()["products"]["honey-500"]["reserved"] == 1, "the honey order")
    t0 = time.monotonic()
    laptop.wait_field("honey-500", "reserved", 1, timeout=1_000)
    assert time.monotonic() - t0 < 1.0
    laptop.page.get_by_role("button", name="Feed").click()
    laptop.page.locator("#feed-list li").filter(has_text="Late buyer").first.wait_for()
    laptop.page.locator("#feed-list li").filter(has_text="sold out").first.wait_for()  # tea/50g: a stream event
    # Host actions from any transport reach the feed: here `livecart ctl`.
    assert sale.daemon.ctl("restock", "honey-500", "5")[0] == 0
    laptop.page.locator("#feed-list li.k-control").filter(has_text="host · restock Wild honey 5").wait_for()
    laptop.page.get_by_role("button", name="Board").click()
    laptop.page.locator('[data-adapter="companion"]').filter(has_text="received 31").wait_for()
    laptop.check_clean()


def test_each_control_from_the_page_is_applied_and_journalled(sale: Sale, laptop: Page) -> None:
    page = laptop.login()
    # Restock: §8's "Restock" -> "Quantity" -> "Apply".
    row = page.locator('tr[data-sku="honey-500"]')
    row.get_by_role("button", name="Restock").click()
    page.get_by_label("Quantity").fill("12")
    page.get_by_role("button", name="Apply").click()
    laptop.wait_field("honey-500", "stock", 42)
    page.locator("#toast").filter(has_text="Applied").wait_for()
    # A variant row has its own restock.
    page.locator('tr[data-sku="tea/100g"]').get_by_role("button", name="Restock").click()
    page.get_by_label("Quantity").fill("3")
    page.get_by_role("button", name="Apply").click()
    laptop.wait_field("tea/100g", "stock", 8)
    laptop.wait_field("tea", "stock", 18)
    # Feature.
    row.get_by_role("button", name="Feature").click()
    page.locator("#featured").filter(has_text="Wild honey").wait_for()
    assert sale.state()["featured"] == "honey-500"
    # Presale: open with a cap, then close.
    row.get_by_role("button", name="Presale").click()
    page.get_by_label("Cap").fill("7")
    page.get_by_role("button", name="Open").click()
    page.locator('tr[data-sku="honey-500"] [data-cap]').filter(has_text="Cap 7").wait_for()
    row.get_by_role("button", name="Presale").click()
    page.get_by_role("button", name="Close").click()
    wait_for(lambda: sale.state()["products"]["honey-500"] and not page.locator(
        'tr[data-sku="honey-500"] [data-cap]').inner_text(), "the cap gone from the page")
    # Limit.
    row.get_by_role("button", name="Limit").click()
    assert row.locator("[data-limit]").inner_text() == "limit 3 each"  # the catalogue's, shown on the row
    page.get_by_label("Limit").fill("1")
    page.get_by_role("button", name="Apply").click()
    page.locator("#toast").filter(has_text="limit").wait_for()
    row.locator("[data-limit]").filter(has_text="limit 1 each").wait_for()  # the host's new one, live
    sale.say("lim", "Limited", "蜂蜜要两瓶")
    wait_for(lambda: sale.state()["outcomes"].get("rejected") == 1, "the over-limit buy rejected")
    # A control the daemon refuses is answered on the page with the reason: honey has no presale quantity
    # in the config, so opening its presale needs a cap.
    row.get_by_role("button", name="Presale").click()
    page.get_by_role("button", name="Open").click()
    page.locator("#toast.bad").filter(has_text="no presale quantity").wait_for()
    assert [e for e in laptop.errors if "409" not in e] == []  # the refusal's HTTP status, nothing else
    laptop.errors.clear()
    # Pause and resume.
    page.get_by_role("button", name="Pause").click()
    page.locator("#paused-flag").wait_for()
    assert sale.state()["paused"] is True
    page.get_by_role("button", name="Resume").click()
    page.locator("#paused-flag").wait_for(state="hidden")
    assert sale.state()["paused"] is False
    for action in ("restock", "feature", "presale", "limit", "pause", "resume"):
        assert metric(sale, f'livecart_controls_total{{action="{action}",result="ok",transport="console"}}')
    assert metric(sale, 'livecart_controls_total{action="presale",result="refused",transport="console"} 1')
    laptop.check_clean()
    # Journalled: the report, read from the journal after the daemon stopped, has them.
    assert sale.daemon.stop() == 0
    r = livecart("report", str(sale.cfg), "--json")
    assert r.returncode == 0, r.stderr
    assert '"honey-500":{"stock":42' in r.stdout
    assert '"tea/100g":{"stock":8' in r.stdout


def test_a_double_tap_or_a_lost_answer_applies_a_restock_once(sale: Sale, phone: Page) -> None:
    # Found from outside: a double tap on Apply restocked twice (restock adds), and with the daemon out of
    # reach the page said nothing ("Failed to fetch" in the console only).
    page = phone.login("?lang=en")
    row = page.locator('tr[data-sku="honey-500"]')
    row.get_by_role("button", name="Restock").click()
    page.get_by_label("Quantity").fill("10")
    page.get_by_role("button", name="Apply").dblclick()
    phone.wait_field("honey-500", "stock", 40)
    page.locator("#toast").filter(has_text="Applied").wait_for()
    # The answer is lost on the way back (the request reached the daemon, which applied it): the page says
    # so and keeps the form; tapped again, the same key makes the daemon give the first answer, not apply
    # it twice.
    lost: list[int] = []

    def lose_the_answer(route: Any) -> None:
        if not lost:
            lost.append(route.fetch().status)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route("**/console/api/control", lose_the_answer)
    row.get_by_role("button", name="Restock").click()
    page.get_by_label("Quantity").fill("5")
    page.get_by_role("button", name="Apply").click()
    page.locator("#toast.bad").filter(has_text="Cannot reach livecart").wait_for()
    assert lost == [200]
    wait_for(lambda: sale.state()["products"]["honey-500"]["stock"] == 45, "the first restock applied")
    page.get_by_role("button", name="Apply").click()  # the form is still open
    page.locator("#toast:not(.bad)").filter(has_text="Applied").wait_for()
    phone.wait_field("honey-500", "stock", 45)
    assert sale.state()["products"]["honey-500"]["stock"] == 45
    assert metric(sale, 'livecart_controls_total{action="restock",result="replayed",transport="console"} 1')
    assert metric(sale, 'livecart_controls_total{action="restock",result="ok",transport="console"} 2')
    assert [e for e in phone.errors if "INTERNET_DISCONNECTED" not in e and "Failed to load" not in e] == []


def test_orders_beyond_a_page_come_with_more_and_log_out_ends_the_session(sale: Sale, phone: Page) -> None:
    # Found from outside: the orders list stopped at 200 without a word; the page had no way to log out.
    assert sale.daemon.ctl("restock", "egg-10", "300")[0] == 0
    sale.feed([{"platform": "douyin", "room": "7312", "id": f"b-{i}", "user": f"b{i}", "name": f"Buyer {i}",
                "text": "蜂蜜来一瓶" if i < 30 else "鸡蛋来一盒", "ts": 1_700_000_000 + i} for i in range(250)])
    wait_for(lambda: sale.state()["comments"] == 250, "250 comments")
    page = phone.login("?lang=en")
    page.get_by_role("button", name="Orders").click()
    title = page.locator("#orders-title")
    title.filter(has_text="showing 200 of 250").wait_for()
    rows = page.locator("#orders-body tr")
    assert rows.count() == 200
    page.get_by_role("button", name="More").click()
    title.filter(has_text=re.compile(r"^\s*\d+ found$")).wait_for()
    total = int(title.inner_text().split()[0].replace(",", ""))
    assert rows.count() == total
    assert page.get_by_role("button", name="More").is_hidden()
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Control token").wait_for()
    page.reload()
    page.get_by_label("Control token").wait_for()  # the session is gone, not only the page
    assert phone.errors == []


def test_the_summary_reads_on_a_phone_and_says_when_its_timeline_begins(sale: Sale, phone: Page) -> None:
    # Found from outside: on a phone the summary table's header was a grid over plain rows (unreadable),
    # events showed raw codes (presale_full), and after a restart it showed no events without saying why.
    sale.feed([{"platform": "douyin", "room": "7312", "id": f"s-{i}", "user": f"s{i}", "name": f"S{i}",
                "text": "鸡蛋来五盒", "ts": 1_700_000_000 + i} for i in range(9)])
    wait_for(lambda: sale.state()["products"]["egg-10"]["left"] == 0, "eggs sold out")
    page = phone.login("?lang=en")
    page.get_by_role("button", name="Summary").click()
    page.locator("#summary li").filter(has_text="sold out  Free-range eggs").wait_for()
    row = page.locator('tr[data-summary="egg-10"]')
    assert row.evaluate("r => getComputedStyle(r).display") == "grid"
    assert row.locator("td").nth(2).get_attribute("data-label") == "Sold"
    assert page.locator("#summary .note").count() == 0  # the timeline is the whole sale's
    assert sale.daemon.stop() == 0
    sale.start()
    page.reload()
    page.get_by_role("button", name="Summary").click()
    page.locator("#summary .note").filter(has_text="livecart restarted").wait_for()
    assert [e for e in phone.errors if "ERR_CONNECTION_REFUSED" not in e and "Failed to load" not in e] == []


def test_orders_search_a_buyer_bulk_pay_cancel_and_the_presale_queue(sale: Sale, phone: Page) -> None:
    names = ["Tina", "Wang Fang", "Li Lei", "Zhao Min", "Chen Jing"]
    sale.feed([{"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": f"u-{i}", "name": names[i % 5],
                "text": "鸡蛋来五盒", "ts": 1_700_000_000 + i} for i in range(12)])
    wait_for(lambda: sale.state()["comments"] == 12, "12 comments decided")
    # 40 stock, 5 each: u-0..u-7 hold, u-8..u-11 queue for presale (cap 20).
    page = phone.login()
    page.get_by_role("button", name="Orders").click()
    page.get_by_label("Buyer name, user id or order id").fill("tina")
    page.get_by_role("button", name="Search").click()
    page.locator("#orders-title").filter(has_text="3 found").wait_for()
    assert sorted(page.locator("#orders-body tr").evaluate_all("rs => rs.map(r => r.dataset.order)")) == [
        "o-000001", "o-000006", "o-000011"]
    # By order id and by user id.
    page.get_by_label("Buyer name, user id or order id").fill("o-000004")
    page.get_by_role("button", name="Search").click()
    page.locator('#orders-body tr[data-order="o-000004"]').wait_for()
    page.locator("#orders-title").filter(has_text="1 found").wait_for()
    # A buyer's orders: click the name.
    page.locator('#orders-body tr[data-order="o-000004"]').get_by_role("button", name="Zhao Min").click()
    page.locator("#orders-title").filter(has_text="Orders of Zhao Min").wait_for()
    # Unpaid holds with their pay-by times, soonest first.
    page.get_by_role("button", name="Orders").click()
    page.get_by_label("Buyer name, user id or order id").fill("")
    page.get_by_label("Status").select_option("unpaid")
    page.get_by_role("button", name="Search").click()
    page.locator("#orders-title").filter(has_text="8 found").wait_for()
    pay_by = page.locator("#orders-body tr").first.locator("td").nth(6).inner_text()
    assert re.fullmatch(r"\d\d:\d\d:\d\d", pay_by)
    # Bulk pay three.
    for oid in ("o-000001", "o-000002", "o-000003"):
        page.get_by_label(f"Order {oid}").check()
    page.get_by_role("button", name="Mark selected paid").click()
    page.locator("#orders-title").filter(has_text="5 found").wait_for()
    page.get_by_role("button", name="Board").click()
    page.locator('tr[data-sku="egg-10"] [data-split]').filter(has_text="15 paid").wait_for()
    # Cancel one held order: its units go to the head of the presale queue.
    page.get_by_role("button", name="Orders").click()
    page.get_by_label("Status").select_option("unpaid")
    page.get_by_role("button", name="Search").click()
    # Cancelling asks first: a double tap only asks (a tired host's second tap on "Mark paid" landed on
    # "Cancel" once the row had re-rendered, and cancelled the order just paid); a tap after that does it.
    row = page.locator('#orders-body tr[data-order="o-000004"]')
    row.get_by_role("button", name="Cancel").dblclick()
    row.get_by_role("button", name="Cancel it?").wait_for()
    page.wait_for_timeout(700)  # the console's own rule: the second tap counts from 0.6 s on
    assert sale.state()["outcomes"].get("cancelled", 0) == 0
    row.get_by_role("button", name="Cancel it?").click()
    page.locator("#toast").filter(has_text="cancel o-000004").wait_for()
    # The presale queue of a product, in order.
    page.get_by_role("button", name="Board").click()
    page.locator('tr[data-sku="egg-10"]').get_by_role("button", name="Queue").click()
    page.locator("#orders-title").filter(has_text="Presale queue: Free-range eggs · 3").wait_for()
    rows = page.locator("#orders-body tr").evaluate_all(
        "rs => rs.map(r => [r.querySelector('[data-field=place]').textContent, r.dataset.order])")
    assert rows == [["1", "o-000010"], ["2", "o-000011"], ["3", "o-000012"]]
    st = sale.state()
    assert st["outcomes"]["paid"] == 3
    assert st["outcomes"]["cancelled"] == 1
    assert st["outcomes"]["promoted"] == 1
    # A double tap on "Mark paid" in "Unpaid holds" pays that one order: the paid row leaves the list, and the
    # buttons that move under the finger take no tap for half a second.
    page.get_by_role("button", name="Orders").click()
    page.get_by_label("Status").select_option("unpaid")
    page.get_by_role("button", name="Search").click()
    # The list of this search (o-000005..8 held, o-000009 promoted), not the one shown before it.
    page.locator("#orders-title").filter(has_text="5 found").wait_for()
    pay = page.locator("#orders-body tr").first.get_by_role("button", name="Mark paid")
    # Taps on a list that has settled: it follows the sale, and a refresh that moves rows disables their
    # buttons for half a second (what this checks), so wait until it has not changed for a second.
    page.evaluate("() => { window.__changed = Date.now(); new MutationObserver(() => { window.__changed = "
                  "Date.now(); }).observe(document.getElementById('orders-body'), {childList: true, subtree: true,"
                  " attributes: true}); }")
    page.wait_for_function("() => { const b = document.querySelector('#orders-body tr .acts button'); "
                           "return b && !b.disabled && Date.now() - window.__changed > 1000; }")
    box = pay.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(x, y)
    page.wait_for_timeout(400)  # a tired host's second tap
    page.mouse.click(x, y)
    wait_for(lambda: sale.state()["outcomes"]["paid"] == 4, "the first tap's payment")
    page.wait_for_timeout(1000)
    assert sale.state()["outcomes"]["paid"] == 4
    assert sale.state()["outcomes"]["cancelled"] == 1
    assert metric(sale, 'livecart_controls_total{action="pay",result="ok",transport="console"} 4')
    phone.check_clean()


def test_the_chinese_page_says_refusals_reasons_and_host_actions_in_chinese_with_product_names(
        sale: Sale, phone: Page) -> None:
    """A host running the sale in Chinese reads the daemon's refusals, the reasons of rejected buys and the
    host actions of the feed in Chinese, with product names instead of SKUs (they were English text and
    SKUs: "no presale quantity", "(limit)", "restock honey-500")."""
    sale.say("z1", "张三", "蜂蜜要五瓶")  # limit 3: 3 held, 2 refused over the limit
    sale.say("z2", "李四", "鸡蛋来两盒")
    wait_for(lambda: sale.state()["comments"] == 2, "2 comments decided")
    page = phone.login("")
    # The feed: product names and the reason in Chinese.
    page.get_by_role("button", name="动态").click()
    line = page.locator("#feed-list li").filter(has_text="超出限购")
    line.wait_for()
    assert "Wild honey" in line.inner_text()
    assert "honey-500" not in line.inner_text()
    # A refusal: honey has no presale quantity in the config.
    page.get_by_role("button", name="看板").click()
    row = page.locator('tr[data-sku="honey-500"]')
    row.get_by_role("button", name="预售").click()
    page.get_by_role("button", name="开启").click()
    page.locator("#toast.bad").filter(has_text="Wild honey 在配置里没有预售数量").wait_for()
    # A host action, said back in Chinese with the product's name, and in the feed.
    row.get_by_role("button", name="补货").click()
    page.get_by_label("数量").fill("5")
    page.get_by_role("button", name="确定").click()
    page.locator("#toast:not(.bad)").filter(has_text="已执行: 补货 Wild honey 5").wait_for()
    page.get_by_role("button", name="动态").click()
    page.locator("#feed-list li").filter(has_text="主播操作 · 补货 Wild honey 5").wait_for()
    # Bulk pay of an order cancelled meanwhile from another device, tapped before the list caught up (held
    # back here: the list follows the sale within about a second): the refusal names it and its status.
    page.get_by_role("button", name="订单").click()
    page.get_by_role("button", name="搜索").click()
    # Products by name in the orders table too.
    assert page.locator('#orders-body tr[data-order="o-000002"] td').nth(3).inner_text() == "Free-range eggs"
    stale = page.evaluate("() => fetch('/console/api/orders?q=&status=&limit=200').then(r => r.text())")
    page.route("**/console/api/orders*",
               lambda route: route.fulfill(status=200, content_type="application/json", body=stale))
    page.get_by_label("订单 o-000002").check()
    assert livecart("ctl", str(sale.cfg), "cancel", "o-000002").returncode == 0
    page.get_by_role("button", name="选中的标为已付").click()
    page.locator("#toast.bad").filter(has_text="订单 o-000002 是「已取消」，只有待付款的订单能标为已付").wait_for()
    page.unroute("**/console/api/orders*")
    # A buyer's orders are theirs on their platform: the same user id on Kuaishou is someone else.
    sale.feed([{"platform": "kuaishou", "room": "k9", "id": "k-1", "user": "z1", "name": "王五",
                "text": "鸡蛋来一盒", "ts": 1_700_000_100}])
    wait_for(lambda: sale.state()["orders"] == 3, "the Kuaishou order")
    page.get_by_role("button", name="搜索").click()
    page.locator('#orders-body tr[data-order="o-000001"]').get_by_role("button", name="张三").click()
    page.locator("#orders-title").filter(has_text="买家的订单：张三 1 条").wait_for()
    # Presale closed from ctl: the feed says closed, not just "presale".
    assert livecart("ctl", str(sale.cfg), "presale", "egg-10", "off").returncode == 0
    page.get_by_role("button", name="动态").click()
    page.locator("#feed-list li").filter(has_text="主播操作 · 预售 Free-range eggs 关闭").wait_for()
    assert [e for e in phone.errors if "409" not in e] == []


def test_the_orders_on_screen_follow_the_sale_keeping_the_search_and_the_ticked_boxes(
        sale: Sale, phone: Page) -> None:
    """The orders tab showed what the last tap asked for: a host waiting for a buyer's order to appear, or
    for a payment, had to tap Search again and again (and lost the boxes ticked for a bulk pay)."""
    sale.say("a1", "Tina", "鸡蛋来一盒")
    wait_for(lambda: sale.state()["orders"] == 1, "the first order")
    page = phone.login("?lang=en")
    page.get_by_role("button", name="Orders").click()
    page.get_by_label("Status").select_option("unpaid")
    page.get_by_role("button", name="Search").click()
    page.locator("#orders-title").filter(has_text="1 found").wait_for()
    page.get_by_label("Order o-000001").check()
    page.get_by_label("Buyer name, user id or order id").fill("nobody")  # typed, not searched
    sale.say("a2", "Wang Fang", "鸡蛋来两盒")
    page.locator('#orders-body tr[data-order="o-000002"]').wait_for(timeout=5_000)  # no tap
    page.locator("#orders-title").filter(has_text="2 found").wait_for()
    assert page.get_by_label("Order o-000001").is_checked()
    assert page.get_by_role("button", name="Mark selected paid").is_enabled()
    # A payment from elsewhere takes the order off the unpaid list by itself.
    assert sale.daemon.ctl("pay", "o-000002")[0] == 0
    page.locator('#orders-body tr[data-order="o-000002"]').wait_for(state="detached", timeout=5_000)
    phone.check_clean()


def test_the_open_page_reconnects_by_itself_after_a_daemon_restart(sale: Sale, laptop: Page) -> None:
    laptop.login()
    sale.say("a", "Ann", "鸡蛋来两盒")
    laptop.wait_field("egg-10", "reserved", 2)
    assert sale.daemon.stop() == 0
    laptop.page.locator("#conn.down").wait_for()
    sale.start()
    laptop.page.locator("#conn.ok").wait_for(timeout=15_000)
    sale.say("b", "Bo", "鸡蛋来三盒")
    laptop.wait_field("egg-10", "reserved", 5)
    assert not laptop.page.locator("#login").is_visible()  # the session outlived the daemon
    # The feed is not empty after the restart: the sale's orders so far, under a line saying so, then Bo's.
    laptop.page.get_by_role("button", name="Feed", exact=True).click()
    lines = laptop.page.locator("#feed-list li")
    lines.filter(has_text="Bo").wait_for()
    texts = lines.all_inner_texts()
    said = [i for i, t in enumerate(texts) if "livecart started again" in t]
    assert len(said) == 1, texts
    assert [i for i, t in enumerate(texts) if "Bo" in t] < said < [i for i, t in enumerate(texts) if "Ann" in t]
    foreign = [u for u in laptop.requests if not u.startswith(sale.url + "/")]
    assert foreign == []
    # While the daemon was down the browser logged failed connections; nothing else.
    assert all("ERR_CONNECTION_REFUSED" in e or "Failed to load resource" in e for e in laptop.errors)


HIDE = ("Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => '%s'});"
        "document.dispatchEvent(new Event('visibilitychange'))")


def test_tabs_in_the_background_let_go_of_their_stream_so_a_new_one_still_opens(sale: Sale, laptop: Page) -> None:
    # A browser opens at most six HTTP/1.1 connections to one host, and an open page's event stream holds one
    # for as long as it lives: six console tabs (a host who taps the link again and again) would leave a
    # seventh, and every tap on a control, waiting forever. A tab in the background lets go of its stream;
    # brought back, it connects again and shows the sale as it stands.
    first = laptop.login()
    first.get_by_role("button", name="Orders").click()
    first.locator("#orders-title").filter(has_text="0 found").wait_for()
    pages = [first]
    for _ in range(5):
        p = laptop.context.new_page()
        p.set_default_timeout(10_000)
        # Opened in the background (a middle-click on the link): hidden from the start, no event says so.
        p.add_init_script("Object.defineProperty(document, 'visibilityState', {get: () => 'hidden'})")
        p.goto(sale.url + "/?lang=en")
        p.locator("#conn.ok").wait_for()
        pages.append(p)
    first.evaluate(HIDE % "hidden")  # the first goes to the background after it was used
    time.sleep(4)  # the grace a tab gets before it lets go (a quick look at another app keeps the stream)
    seventh = laptop.context.new_page()
    seventh.goto(sale.url + "/?lang=en")
    seventh.locator("#conn.ok").wait_for()
    seventh.locator('tr[data-sku="honey-500"]').get_by_role("button", name="Restock").click()
    seventh.get_by_label("Quantity").fill("2")
    seventh.get_by_role("button", name="Apply").click()
    seventh.locator('tr[data-sku="honey-500"] [data-field="stock"]').filter(has_text=re.compile(r"^32$")).wait_for()
    sale.say("a", "Ann", "鸡蛋来两盒")
    wait_for(lambda: sale.state()["orders"] == 1, "Ann's order")
    time.sleep(1)  # and its line in the feed sent to the open tab
    # The first tab comes back: it connects again and has what happened while it was away (the orders it
    # shows too), then goes on live.
    first.evaluate(HIDE % "visible")
    first.locator("#conn.ok").wait_for()
    first.locator('#orders-body tr[data-order="o-000001"]').wait_for(timeout=5_000)
    first.get_by_role("button", name="Board").click()
    laptop.wait_field("honey-500", "stock", 32)
    laptop.wait_field("egg-10", "reserved", 2)
    sale.say("b", "Bo", "鸡蛋来三盒")
    laptop.wait_field("egg-10", "reserved", 5)
    laptop.check_clean()


@pytest.mark.parametrize("viewport", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_the_page_fits_phone_and_laptop_screens(sale: Sale, chromium: Any, viewport: dict[str, int],
                                                tmp_path: Path) -> None:
    comments = [{"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": f"u-{i}",
                 "name": ["Tina", "王芳", "Li Lei", "赵敏"][i % 4],
                 "text": ["鸡蛋来五盒", "菊花茶 50克 1", "蜂蜜要一瓶", "鸡蛋来两盒"][i % 4], "ts": 1_700_000_000 + i}
                for i in range(48)]
    for wave in range(4):  # paced over a few seconds, so the rate chart has a shape
        time.sleep(1.2)  # pacing the offered comments, not waiting for something to happen
        sale.feed(comments[wave * 12:(wave + 1) * 12])
    wait_for(lambda: sale.state()["comments"] == 48, "48 comments decided")
    for order in ("o-000001", "o-000002", "o-000003", "o-000005"):
        assert sale.daemon.ctl("pay", order)[0] == 0
    p = Page(chromium, sale, viewport)
    try:
        page = p.login()
        p.wait_field("honey-500", "reserved", sale.state()["products"]["honey-500"]["reserved"])
        out = Path(os.environ.get("LIVECART_SCREENSHOTS", str(tmp_path)))
        name = "phone" if viewport is PHONE else "laptop"
        for tab in ("Board", "Orders", "Charts"):
            page.get_by_role("button", name=tab, exact=True).click()
            if tab == "Orders":
                page.get_by_label("Status").select_option("unpaid")
                page.get_by_role("button", name="Search").click()
                page.locator("#orders-body tr").first.wait_for()
            # Nothing sticks out sideways: no horizontal scrolling on a phone, and every button of the header
            # is on the screen (Log out was past the right edge of the English tab bar at 390 px).
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            outside = page.evaluate("""() => [...document.querySelectorAll('header button')]
                .filter(b => b.offsetParent !== null)
                .filter(b => { const r = b.getBoundingClientRect(); return r.left < 0 || r.right > innerWidth; })
                .map(b => b.textContent)""")
            assert outside == []
            shot = out / f"console-{tab.lower()}-{name}.png"
            page.screenshot(path=str(shot), full_page=tab != "Orders")
            assert shot.stat().st_size > 10_000
        p.check_clean()
    finally:
        p.close()


def test_report_html_is_one_file_that_shows_the_summary_offline(sale: Sale, chromium: Any, tmp_path: Path) -> None:
    sale.feed([{"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": f"u-{i}", "name": f"Buyer {i}",
                "text": "鸡蛋来五盒", "ts": 1_700_000_000 + i} for i in range(10)])
    wait_for(lambda: sale.state()["comments"] == 10, "10 comments decided")
    assert sale.daemon.stop() == 0
    out = tmp_path / "summary.html"
    r = livecart("report", str(sale.cfg), "--html", str(out))
    assert r.returncode == 0, r.stderr
    context = chromium.new_context(viewport=LAPTOP)
    try:
        page = context.new_page()
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda q: requests.append(q.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        row = page.locator('tr[data-summary="egg-10"]')
        row.wait_for()
        # Stock 40, 8 buyers of 5 hold it all, 2 more queue for presale; the chart and events are drawn.
        cells = row.locator("td").evaluate_all("ts => ts.map(t => t.textContent)")
        assert cells[:6] == ["Free-range eggs", "40", "40", "0", "10", "0"]
        # Revenue paid and revenue held apart (their sum read as money taken): nothing paid, 40 held.
        assert cells[6:] == ["0.00", "1,196.00"], cells
        assert page.locator("svg.rates polyline").count() == 2
        assert page.locator("svg.sell rect").count() >= 2
        # The sell-through bars say what their colours are.
        assert page.locator("svg.sell + .legend span").all_text_contents() == ["已付", "待付", "剩余", "预售"]
        assert requests == [out.as_uri()]
        assert errors == []
    finally:
        context.close()
