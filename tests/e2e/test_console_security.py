"""The console's session and cross-site protection, from outside: ``livecart run`` as a process, plain HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from tests.e2e.console_sale import TOKEN, Sale, request
from tests.e2e.proc import wait_for

pytestmark = pytest.mark.slow

API_GETS = ["/console/api/events", "/console/api/orders", "/console/api/orders?q=u-1", "/console/api/queue?key=egg-10",
            "/console/api/summary"]
API_POSTS = {"/console/api/control": {"action": "restock", "sku": "egg-10", "qty": 5},
             "/console/api/pay": {"orders": ["o-000001"]}}


@pytest.fixture
def sale(tmp_path: Path) -> Iterator[Sale]:
    s = Sale(tmp_path / "sale", stock=40, language="en").start()
    try:
        s.say("u-1", "Tina", "鸡蛋来两盒")
        wait_for(lambda: s.state()["comments"] == 1, "the first comment")
        yield s
    finally:
        s.close()


def login(sale: Sale) -> tuple[str, str]:
    """``(cookie header, csrf token)`` of a fresh session."""
    status, headers, body = request(sale.url + "/console/login", method="POST", body={"token": TOKEN})
    assert status == 200, body
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    return cookie.split(";")[0], orjson.loads(body)["csrf"]


def test_no_data_and_no_change_without_the_session(sale: Sale) -> None:
    for path in API_GETS:
        status, _, body = request(sale.url + path)
        assert status == 401, path
        assert b"Tina" not in body
    for path, payload in API_POSTS.items():
        status, _, _ = request(sale.url + path, method="POST", body=payload)
        assert status == 401, path
    # A forged or tampered cookie is no session either.
    cookie, _ = login(sale)
    name, _, value = cookie.partition("=")
    expires, nonce, mac = value.split(".")
    for forged in (f"{int(expires) + 999}.{nonce}.{mac}", f"{expires}.other.{mac}", "1.2.3", "junk"):
        status, _, _ = request(sale.url + "/console/api/orders", headers={"Cookie": f"{name}={forged}"})
        assert status == 401, forged
    # The session endpoint says only that a login is needed.
    status, _, body = request(sale.url + "/console/api/session")
    assert (status, orjson.loads(body)) == (200, {"ok": False, "login": True})
    # The page itself carries no data and no token; it is all the page is without a session.
    status, headers, body = request(sale.url + "/")
    assert status == 200
    assert b"Tina" not in body
    assert TOKEN.encode() not in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert sale.state()["products"]["egg-10"]["stock"] == 40  # nothing changed


def test_a_wrong_token_gets_no_session(sale: Sale) -> None:
    for body in ({"token": "nope"}, {"token": ""}, {}, ["x"]):
        status, headers, _ = request(sale.url + "/console/login", method="POST", body=body)
        assert status == 401
        assert "Set-Cookie" not in headers


def test_a_forged_cross_site_post_is_refused(sale: Sale) -> None:
    cookie, csrf = login(sale)
    payload = API_POSTS["/console/api/control"]
    # With the cookie (as a browser would send it) but no CSRF token: a plain cross-site form post.
    status, _, body = request(sale.url + "/console/api/control", method="POST", body=payload,
                              headers={"Cookie": cookie, "Origin": "http://evil.example",
                                       "Sec-Fetch-Site": "cross-site"})
    assert status == 403, body
    # Even with a stolen CSRF token, another origin or a cross-site fetch is refused.
    for extra in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                  {"Sec-Fetch-Site": "same-site"}):
        status, _, body = request(sale.url + "/console/api/control", method="POST", body=payload,
                                  headers={"Cookie": cookie, "X-CSRF-Token": csrf, **extra})
        assert status == 403, (extra, body)
    # A wrong CSRF token from the right origin.
    status, _, _ = request(sale.url + "/console/api/pay", method="POST", body={"orders": ["o-000001"]},
                           headers={"Cookie": cookie, "X-CSRF-Token": "0" * 64, "Origin": sale.url})
    assert status == 403
    # A cross-site login (login CSRF) is refused too.
    status, headers, _ = request(sale.url + "/console/login", method="POST", body={"token": TOKEN},
                                 headers={"Origin": "http://evil.example"})
    assert status == 403
    assert "Set-Cookie" not in headers
    st = sale.state()
    assert st["products"]["egg-10"]["stock"] == 40
    assert st["outcomes"] == {"reserved": 1}
    assert 'livecart_console_refused_total{reason="cross_site"} 5' in sale.daemon.api("/metrics")
    # The same request from the page's own origin with the session's token is applied.
    status, _, body = request(sale.url + "/console/api/control", method="POST", body=payload,
                              headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": sale.url,
                                       "Sec-Fetch-Site": "same-origin"})
    assert status == 200, body
    assert sale.state()["products"]["egg-10"]["stock"] == 45


def test_status_endpoints_for_scripts_are_unchanged(sale: Sale) -> None:
    """/healthz, /metrics and /api/state still answer without a session, as before the console."""
    assert request(sale.url + "/healthz")[0] == 200
    status, _, body = request(sale.url + "/api/state")
    assert status == 200
    state = orjson.loads(body)
    assert state["products"]["egg-10"] == {"stock": 40, "left": 38, "reserved": 2, "presale": 0}
    assert TOKEN not in body.decode()
    assert request(sale.url + "/metrics")[0] == 200


def test_a_control_sent_again_with_its_idempotency_key_is_applied_once(sale: Sale) -> None:
    cookie, csrf = login(sale)
    url = sale.url + "/console/api/control"
    base = {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": sale.url, "Sec-Fetch-Site": "same-origin"}
    restock = {"action": "restock", "sku": "egg-10", "qty": 5}
    key = {**base, "Idempotency-Key": "k" * 32}
    # Eight at once with one key (a phone's retries racing): one is applied, the rest wait and get its answer.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: request(url, method="POST", body=restock, headers=key), range(8)))
    assert [a[0] for a in answers] == [200] * 8
    assert len({a[2] for a in answers}) == 1
    assert sum(a[1].get("Idempotent-Replayed") == "true" for a in answers) == 7
    assert sale.state()["products"]["egg-10"]["stock"] == 45
    # The key with another control is refused; a malformed key is refused; a new key applies again.
    status, _, body = request(url, method="POST", body={**restock, "qty": 6}, headers=key)
    assert status == 422, body
    status, _, body = request(url, method="POST", body=restock, headers={**base, "Idempotency-Key": "short"})
    assert status == 400, body
    status, headers, _ = request(url, method="POST", body=restock, headers={**base, "Idempotency-Key": "k" * 31})
    assert status == 200
    assert "Idempotent-Replayed" not in headers
    assert sale.state()["products"]["egg-10"]["stock"] == 50
    # Without the header, each request is its own control, as before.
    assert request(url, method="POST", body=restock, headers=base)[0] == 200
    assert sale.state()["products"]["egg-10"]["stock"] == 55
    metrics = sale.daemon.api("/metrics")
    assert 'livecart_controls_total{action="restock",result="replayed",transport="console"} 7' in metrics
    assert 'livecart_controls_total{action="restock",result="ok",transport="console"} 3' in metrics


def test_wrong_tokens_are_throttled_per_address(sale: Sale) -> None:
    url = sale.url + "/console/login"
    # Ten wrong guesses at once (each costs a second) use up the minute's allowance of this address.
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda i: request(url, method="POST", body={"token": f"guess-{i}"})[0], range(10)))
    assert codes == [401] * 10
    status, headers, body = request(url, method="POST", body={"token": "guess-11"})
    assert status == 429, body
    assert int(headers["Retry-After"]) >= 1
    assert b"too many wrong tokens" in body
    # The right token is refused too while throttled: a guesser cannot tell it found the token.
    assert request(url, method="POST", body={"token": TOKEN})[0] == 429
    assert 'livecart_console_refused_total{reason="throttled"} 2' in sale.daemon.api("/metrics")


def test_logout_ends_the_session_for_whoever_holds_its_cookie(sale: Sale) -> None:
    cookie, csrf = login(sale)
    headers = {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": sale.url, "Sec-Fetch-Site": "same-origin"}
    assert request(sale.url + "/console/api/orders", headers={"Cookie": cookie})[0] == 200
    status, resp_headers, _ = request(sale.url + "/console/logout", method="POST", body={}, headers=headers)
    assert status == 200
    assert "Max-Age=0" in resp_headers["Set-Cookie"] or "expires" in resp_headers["Set-Cookie"].lower()
    # The same cookie, kept (copied) by someone: refused now.
    assert request(sale.url + "/console/api/orders", headers={"Cookie": cookie})[0] == 401
    status, _, body = request(sale.url + "/console/api/control", method="POST",
                              body={"action": "restock", "sku": "egg-10", "qty": 1}, headers=headers)
    assert status == 401, body


def test_orders_come_in_pages_with_the_total(sale: Sale) -> None:
    sale.feed([{"platform": "douyin", "room": "7312", "id": f"p-{i}", "user": f"p{i}", "name": f"P{i}",
                "text": "鸡蛋来一盒", "ts": 1_700_000_100 + i} for i in range(30)])
    wait_for(lambda: sale.state()["comments"] == 31, "the comments")
    cookie, _ = login(sale)
    got: list[str] = []
    total = None
    for offset in range(0, 40, 12):
        status, _, body = request(f"{sale.url}/console/api/orders?limit=12&offset={offset}",
                                  headers={"Cookie": cookie})
        assert status == 200
        page = orjson.loads(body)
        total = page["total"]
        got += [o["order"] for o in page["orders"]]
    assert total == 31
    assert len(got) == len(set(got)) == 31
    # An offset past anything there is an empty page (a 24-digit one was a 500 and a traceback).
    status, _, body = request(f"{sale.url}/console/api/orders?offset=99999999999999999999999",
                              headers={"Cookie": cookie})
    assert status == 200, body
    assert orjson.loads(body)["orders"] == []
