"""The webhook adapter against real HTTP requests on 127.0.0.1 (aiohttp's client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from livecart.adapters.webhook import WebhookAdapter
from livecart.core.errors import FatalAdapterError
from livecart.core.records import Comment

DEADLINE = 10.0  # a safety bound only


def c(i: int, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"platform": "hook", "room": "r1", "id": f"m-{i}", "user": f"u-{i}", "text": f"+{i}",
                         "ts": 1700000000.0 + i}
    d.update(kw)
    return d


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def take(ad: WebhookAdapter, n: int) -> list[Comment]:
    it = ad.batches()
    got: list[Comment] = []
    async with asyncio.timeout(DEADLINE):
        while len(got) < n:
            got.extend(await anext(it))
    return got


async def post(http: aiohttp.ClientSession, url: str, body: bytes | str, **kw: Any) -> tuple[int, Any, Any]:
    async with http.post(url, data=body, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_accepts_one_comment_or_an_array_with_202(http: aiohttp.ClientSession) -> None:
    async with WebhookAdapter({"port": 0}, name="wh") as ad:
        s1, b1, _ = await post(http, ad.url, orjson.dumps(c(1)))
        s2, b2, _ = await post(http, ad.url, orjson.dumps([c(2), c(3)]))
        got = await take(ad, 3)
    assert (s1, b1) == (202, {"accepted": 1, "rejected": []})
    assert (s2, b2) == (202, {"accepted": 2, "rejected": []})
    assert [x.id for x in got] == ["m-1", "m-2", "m-3"]
    assert got[0] == Comment("hook", "r1", "m-1", "u-1", "u-1", "+1", 1700000001.0)


async def test_bad_json_gets_400_saying_why_and_is_counted(http: aiohttp.ClientSession) -> None:
    async with WebhookAdapter({}, name="wh") as ad:
        status, body, _ = await post(http, ad.url, b'{"text": ')
        assert status == 400
        assert body["error"].startswith("bad_json")
        status, body, _ = await post(http, ad.url, orjson.dumps(c(1, ts="noon")))
        assert status == 400
        assert "'ts' must be a finite number" in body["error"]
        assert ad.stats.malformed_by_reason == {"bad_json": 1, "missing_field": 1}
        assert len(ad.intake) == 0


async def test_an_array_keeps_its_good_comments_and_lists_the_bad_ones(http: aiohttp.ClientSession) -> None:
    async with WebhookAdapter({}, name="wh") as ad:
        status, body, _ = await post(http, ad.url, orjson.dumps([c(1), {"text": "no user", "ts": 1}, 42, c(2)]))
        got = await take(ad, 2)
    assert status == 202
    assert body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "missing_field"), (2, "not_an_object")]
    assert [x.id for x in got] == ["m-1", "m-2"]


async def test_token_is_required_as_bearer_or_query(http: aiohttp.ClientSession) -> None:
    async with WebhookAdapter({"token": "t0k"}, name="wh") as ad:
        s_none, _, h = await post(http, ad.url, orjson.dumps(c(1)))
        s_bad, _, _ = await post(http, ad.url, orjson.dumps(c(1)), headers={"Authorization": "Bearer nope"})
        s_hdr, _, _ = await post(http, ad.url, orjson.dumps(c(1)), headers={"Authorization": "Bearer t0k"})
        s_q, _, _ = await post(http, ad.url + "?token=t0k", orjson.dumps(c(2)))
        got = await take(ad, 2)
    assert (s_none, s_bad, s_hdr, s_q) == (401, 401, 202, 202)
    assert h["WWW-Authenticate"].startswith("Bearer")
    assert ad.stats.malformed_by_reason == {"bad_token": 2}
    assert [x.id for x in got] == ["m-1", "m-2"]


async def test_oversized_body_gets_413_declared_or_chunked(http: aiohttp.ClientSession) -> None:
    async with WebhookAdapter({"max_body": 1000}, name="wh") as ad:
        big = orjson.dumps([c(i) for i in range(50)])
        status, body, _ = await post(http, ad.url, big)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 100):
                yield big[i:i + 100]

        async with http.post(ad.url, data=chunks()) as resp:  # no Content-Length: aiohttp counts as it reads
            chunked_status = resp.status
        ok, _, _ = await post(http, ad.url, orjson.dumps(c(1)))
        got = await take(ad, 1)
    assert (status, chunked_status, ok) == (413, 413, 202)
    assert "1000 bytes" in body["error"]
    assert ad.stats.malformed_by_reason == {"oversized": 2}
    assert [x.id for x in got] == ["m-1"]


async def test_full_buffer_answers_503_with_retry_after_and_recovers(http: aiohttp.ClientSession) -> None:
    async with WebhookAdapter({"max_pending": 3, "retry_after": 2}, name="wh") as ad:
        statuses = [(await post(http, ad.url, orjson.dumps(c(i))))[0] for i in range(5)]
        status, body, headers = await post(http, ad.url, orjson.dumps(c(9)))
        assert statuses == [202, 202, 202, 503, 503]
        assert status == 503
        assert headers["Retry-After"] == "2"
        assert "busy" in body["error"]
        assert ad.busy == 3
        assert len(ad.intake) == 3
        got = await take(ad, 3)  # the consumer catches up ...
        retry, _, _ = await post(http, ad.url, orjson.dumps(c(9)))  # ... and the sender's retry goes through
        got += await take(ad, 1)
    assert retry == 202
    assert [x.id for x in got] == ["m-0", "m-1", "m-2", "m-9"]
    assert ad.stats.received == 4
    assert ad.stats.duplicates == 0  # a retry after a 503 is not a duplicate: nothing was kept


async def test_duplicate_deliveries_pass_through_and_are_counted(http: aiohttp.ClientSession) -> None:
    async with WebhookAdapter({}, name="wh") as ad:
        for _ in range(3):
            await post(http, ad.url, orjson.dumps(c(1)))
        got = await take(ad, 3)
    assert [x.key for x in got] == [("hook", "r1", "m-1")] * 3
    assert ad.stats.duplicates == 2


async def test_only_post_on_the_configured_path(http: aiohttp.ClientSession) -> None:
    async with WebhookAdapter({"path": "/in"}, name="wh") as ad:
        base = f"http://127.0.0.1:{ad.bound_port}"
        async with http.get(base + "/in") as r1, http.post(base + "/other", data=b"{}") as r2:
            assert (r1.status, r2.status) == (405, 404)


async def test_close_ends_the_stream_after_draining_and_is_idempotent(http: aiohttp.ClientSession) -> None:
    ad = WebhookAdapter({}, name="wh")
    await ad.open()
    url = ad.url
    await post(http, url, orjson.dumps([c(1), c(2)]))
    it = ad.batches()
    await ad.close()
    await ad.close()
    async with asyncio.timeout(DEADLINE):
        got = [x async for batch in it for x in batch]
    assert [x.id for x in got] == ["m-1", "m-2"]
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, url, orjson.dumps(c(3)))


def test_path_must_be_absolute() -> None:
    with pytest.raises(FatalAdapterError, match="path"):
        WebhookAdapter({"path": "comments"}, name="wh")
