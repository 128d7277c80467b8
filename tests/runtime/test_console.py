"""The console's parts without a browser: sessions, the order search, deltas, the summary file."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.control import Control
from livecart.core.records import Outcome, Status
from livecart.runtime.console import FEED, Console, Sessions, find_orders, summary_html


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_session_is_valid_until_it_expires_and_only_under_the_same_token() -> None:
    clock = Clock()
    token = ["tok-1"]
    s = Sessions(lambda: token[0], clock=clock, lifetime=60)
    cookie = s.issue()
    nonce = s.nonce(cookie)
    assert nonce is not None
    assert s.csrf(nonce) != s.csrf(nonce + "x")
    clock.t += 59
    assert s.nonce(cookie) == nonce
    token[0] = "tok-2"  # a new token ends every session
    assert s.nonce(cookie) is None
    token[0] = "tok-1"
    clock.t += 2
    assert s.nonce(cookie) is None  # expired


def test_an_empty_token_never_logs_anyone_in() -> None:
    s = Sessions(lambda: "")
    assert not s.check_token("")
    assert s.nonce(s.issue()) is None


def rows() -> Iterator[dict[str, Any]]:
    base = {"sku": "egg", "variant": None, "qty": 1, "price": 1.0, "time": 0.0, "comment": None, "platform": None,
            "room": None}
    yield {**base, "order": "o-000001", "user": "u1", "status": "paid", "pay_by": None}
    yield {**base, "order": "o-000002", "user": "u2", "status": "reserved", "pay_by": 2000.0}
    yield {**base, "order": "o-000003", "user": "u1", "status": "reserved", "pay_by": 1500.0}
    yield {**base, "order": "o-000004", "user": "u3", "status": "presale", "pay_by": None}


NAMES = {"u1": "Tina", "u2": "王芳"}


def test_search_by_name_user_or_order_newest_first() -> None:
    assert [r["order"] for r in find_orders(rows(), NAMES, q="tina")["orders"]] == ["o-000003", "o-000001"]
    assert [r["order"] for r in find_orders(rows(), NAMES, q="王")["orders"]] == ["o-000002"]
    assert [r["order"] for r in find_orders(rows(), NAMES, q="O-000004")["orders"]] == ["o-000004"]
    assert [r["name"] for r in find_orders(rows(), NAMES, user="u3")["orders"]] == ["u3"]  # no name: the id


def test_an_order_is_named_by_its_own_buyer_name_shown_readably() -> None:
    named = [{**r, "name": n} for r, n in zip(rows(), ["张三", "  ", "Tina\u202e", None], strict=True)]
    found = {r["order"]: r["name"] for r in find_orders(iter(named), NAMES)["orders"]}
    # o-000001's own name wins over u1's latest (Tina); a blank one is the user id; an override is dropped.
    assert found == {"o-000001": "张三", "o-000002": "u2", "o-000003": "Tina", "o-000004": "u3"}
    assert [r["order"] for r in find_orders(iter(named), NAMES, q="张三")["orders"]] == ["o-000001"]


def test_unpaid_holds_come_soonest_pay_by_first() -> None:
    found = find_orders(rows(), NAMES, status="unpaid")
    assert [(r["order"], r["pay_by"]) for r in found["orders"]] == [("o-000003", 1500.0), ("o-000002", 2000.0)]
    assert find_orders(rows(), NAMES, status="unpaid", limit=1)["total"] == 2


class FakeHost:
    def __init__(self) -> None:
        self.names: dict[str, str] = {"u1": "Tina"}
        self.products = {"egg": {"stock": 10, "left": 10, "reserved": 0, "presale": 0, "cap": 0, "queue": 0,
                                 "paid": 0},
                         "tea/50g": {"stock": 5, "left": 5, "reserved": 0, "presale": 0, "cap": 0, "queue": 0,
                                     "paid": 0}}
        self.comments = 0
        self.orders = 0
        self.recent: list[Outcome] = []

    def snapshot(self) -> Mapping[str, Any]:
        return {"products": {k: dict(v) for k, v in self.products.items()}, "featured": "egg",
                "comments": self.comments, "orders": self.orders, "outcomes": {}}

    def buyer_name(self, user: str, order: str | None = None) -> str:
        return self.names.get(user, user)

    def order_rows(self) -> Iterator[dict[str, Any]]:
        return iter(())

    def presale_queue(self, key: str) -> list[dict[str, Any]]:
        return []

    def adapter_state(self) -> dict[str, dict[str, Any]]:
        return {"a": {"connected": True}}

    def is_paused(self) -> bool:
        return False

    async def handle_control(self, c: Control) -> Mapping[str, Any]:
        return {}

    def recent_orders(self, n: int) -> list[Outcome]:
        return self.recent[-n:]


CATALOGUE = Catalogue((Product("egg", "Eggs", price=2.5, stock=10),
                       Product("tea", "Tea", price=4.0, variants=(Variant("50g", stock=5),))))


def outcome(i: int, user: str = "u1") -> Outcome:
    return Outcome(f"m-{i}", user, f"o-{i:06d}", "egg", None, 1, Status.RESERVED, seq=i, ts=1000.0 + i)


def test_many_outcomes_make_one_delta_with_the_changed_figures_and_the_latest_feed_lines() -> None:
    host = FakeHost()
    console = Console(host, CATALOGUE, lambda: "t", stream="s", clock=Clock())
    assert console.delta() is not None  # the first look sends everything
    assert console.delta() is None  # nothing changed since
    console.record([outcome(i) for i in range(1, 5001)])
    host.products["egg"].update(left=0, reserved=10, paid=4)
    host.comments = host.orders = 5000
    d = console.delta()
    assert d is not None
    assert set(d["products"]) == {"egg"}
    assert d["products"]["egg"]["held"] == 6
    assert d["revenue"] == {"paid": 10.0, "held": 15.0}
    assert len(d["feed"]) == FEED  # the latest lines only, however many outcomes came
    assert d["feed"][-1]["order"] == "o-005000"
    assert d["feed"][-1]["name"] == "Tina"
    assert console.delta() is None


async def test_a_console_started_mid_sale_begins_its_feed_with_the_newest_orders_under_a_restart_line() -> None:
    host = FakeHost()
    host.recent = [outcome(i) for i in range(1, 101)]
    fresh = Console(host, CATALOGUE, lambda: "t", stream="s", clock=Clock())
    fresh.start()  # a first run: nothing in the journal, nothing to show
    assert fresh.full()["feed"] == []
    await fresh.close()
    host.comments, host.orders = 5000, 100  # the journal had a sale: a restart
    console = Console(host, CATALOGUE, lambda: "t", stream="s", clock=Clock())
    console.start()
    # A page that opens before the first tick gets these lines in that tick's delta, once (not also in its
    # full state: it showed the orders and the restart line twice).
    assert console.full()["feed"] == []
    d = console.delta()
    assert d is not None
    feed = d["feed"]
    assert len(feed) == FEED
    assert [f["order"] for f in feed[:-1]] == [f"o-{i:06d}" for i in range(101 - FEED + 1, 101)]
    assert feed[0]["name"] == "Tina"
    assert feed[0]["ts"] == 1000.0 + 101 - FEED + 1
    assert feed[-1]["kind"] == "restart"
    assert console.full()["feed"] == feed  # a page that opens later gets them in its full state
    await console.close()


def test_a_page_that_opens_between_two_ticks_gets_each_feed_line_once() -> None:
    host = FakeHost()
    console = Console(host, CATALOGUE, lambda: "t", stream="s", clock=Clock())
    console.record([outcome(1)])
    console.delta()
    console.record([outcome(2), outcome(3)])  # after the last tick: the next delta's
    shown = [f["order"] for f in console.full()["feed"]]
    d = console.delta()
    assert d is not None
    shown += [f["order"] for f in d["feed"]]
    assert shown == ["o-000001", "o-000002", "o-000003"]


def test_rates_are_measured_over_a_second() -> None:
    host, clock = FakeHost(), Clock()
    console = Console(host, CATALOGUE, lambda: "t", stream="s", clock=clock)
    console.delta()
    host.comments, host.orders = 3000, 200
    clock.t += 2.0
    d = console.delta()
    assert d is not None
    assert d["rates"] == [1500.0, 100.0]
    assert console.history == [[1002.0, 1500.0, 100.0]]


def test_the_summary_file_is_self_contained() -> None:
    host = FakeHost()
    host.products["egg"].update(left=2, reserved=8, paid=5, presale=3)
    console = Console(host, CATALOGUE, lambda: "t", stream="Spring </script> sale", language="en", clock=Clock())
    data = console.summary()
    egg = next(p for p in data["products"] if p["key"] == "egg")
    assert (egg["sold"], egg["paid"], egg["presale"], egg["revenue_paid"]) == (8, 5, 3, 12.5)
    html = summary_html(data)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing loaded from elsewhere
    assert "</script> sale" not in html  # the stream's name cannot end the inline script early
    assert "LivecartSummary.render" in html
    assert '"revenue_paid":12.5' in html
