"""The webhook adapter against real HTTP requests on 127.0.0.1 (aiohttp's client). A :class:`Sink` plays the
engine: it takes the adapter's batches and settles them (durable), or holds them to show that no answer
comes before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from livecart.adapters.webhook import WebhookAdapter
from livecart.core.errors import FatalAdapterError, JournalError
from livecart.core.records import Comment
from livecart.plugin import Batch

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


class Sink:
    """Takes the adapter's batches from a task; settles each as durable unless ``hold`` (then kept)."""

    def __init__(self, ad: WebhookAdapter, *, hold: bool = False) -> None:
        self.ad = ad
        self.hold = hold
        self.got: list[Comment] = []
        self.held: list[Batch] = []
        self.more = asyncio.Event()
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        async for batch in self.ad.batches():
            self.got.extend(batch)
            assert isinstance(batch, Batch)
            if self.hold:
                self.held.append(batch)
            else:
                batch.settle()
            self.more.set()

    async def wait(self, n: int) -> list[Comment]:
        async with asyncio.timeout(DEADLINE):
            while len(self.got) < n:
                self.more.clear()
                await self.more.wait()
        return self.got

    def release(self, error: BaseException | None = None) -> None:
        for b in self.held:
            b.settle(error)
        self.held.clear()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def take(ad: WebhookAdapter, n: int) -> list[Comment]:
    """What a running Sink on ``ad`` has taken once it has ``n``."""
    return await SINKS[id(ad)].wait(n)


SINKS: dict[int, Sink] = {}


class Served:
    """``async with Served(options) as ad``: a webhook adapter with a settling Sink behind it."""

    def __init__(self, options: dict[str, Any], *, hold: bool = False) -> None:
        self.ad = WebhookAdapter(options, name="wh")
        self.hold = hold

    async def __aenter__(self) -> WebhookAdapter:
        await self.ad.open()
        self.sink = SINKS[id(self.ad)] = Sink(self.ad, hold=self.hold)
        return self.ad

    async def __aexit__(self, *exc: object) -> None:
        await self.sink.stop()
        SINKS.pop(id(self.ad), None)
        await self.ad.close()


async def post(http: aiohttp.ClientSession, url: str, body: bytes | str, **kw: Any) -> tuple[int, Any, Any]:
    async with http.post(url, data=body, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_answers_200_once_one_comment_or_an_array_is_durable(http: aiohttp.ClientSession) -> None:
    async with Served({"port": 0}) as ad:
        s1, b1, _ = await post(http, ad.url, orjson.dumps(c(1)))
        s2, b2, _ = await post(http, ad.url, orjson.dumps([c(2), c(3)]))
        got = await take(ad, 3)
    assert (s1, b1) == (200, {"accepted": 1, "rejected": []})
    assert (s2, b2) == (200, {"accepted": 2, "rejected": []})
    assert [x.id for x in got] == ["m-1", "m-2", "m-3"]
    assert got[0] == Comment("hook", "r1", "m-1", "u-1", "u-1", "+1", 1700000001.0)


async def test_bad_json_gets_400_saying_why_and_is_counted(http: aiohttp.ClientSession) -> None:
    async with Served({}) as ad:
        status, body, _ = await post(http, ad.url, b'{"text": ')
        assert status == 400
        assert body["error"].startswith("bad_json")
        status, body, _ = await post(http, ad.url, orjson.dumps(c(1, ts="noon")))
        assert status == 400
        assert "'ts' must be a finite number" in body["error"]
        assert ad.stats.malformed_by_reason == {"bad_json": 1, "bad_field": 1}
        assert len(ad.intake) == 0


async def test_an_array_keeps_its_good_comments_and_lists_the_bad_ones(http: aiohttp.ClientSession) -> None:
    async with Served({}) as ad:
        status, body, _ = await post(http, ad.url, orjson.dumps([c(1), {"text": "no user", "ts": 1}, 42, c(2)]))
        got = await take(ad, 2)
    assert status == 200
    assert body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "missing_field"), (2, "not_an_object")]
    assert [x.id for x in got] == ["m-1", "m-2"]


async def test_token_is_required_as_bearer_or_query(http: aiohttp.ClientSession) -> None:
    async with Served({"token": "t0k"}) as ad:
        s_none, _, h = await post(http, ad.url, orjson.dumps(c(1)))
        s_bad, _, _ = await post(http, ad.url, orjson.dumps(c(1)), headers={"Authorization": "Bearer nope"})
        s_hdr, _, _ = await post(http, ad.url, orjson.dumps(c(1)), headers={"Authorization": "Bearer t0k"})
        s_q, _, _ = await post(http, ad.url + "?token=t0k", orjson.dumps(c(2)))
        got = await take(ad, 2)
    assert (s_none, s_bad, s_hdr, s_q) == (401, 401, 200, 200)
    assert h["WWW-Authenticate"].startswith("Bearer")
    assert ad.stats.malformed_by_reason == {"bad_token": 2}
    assert [x.id for x in got] == ["m-1", "m-2"]


async def test_oversized_body_gets_413_declared_or_chunked(http: aiohttp.ClientSession) -> None:
    async with Served({"max_body": 1000}) as ad:
        big = orjson.dumps([c(i) for i in range(50)])
        status, body, _ = await post(http, ad.url, big)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 100):
                yield big[i:i + 100]

        async with http.post(ad.url, data=chunks()) as resp:  # no Content-Length: aiohttp counts as it reads
            chunked_status = resp.status
        ok, _, _ = await post(http, ad.url, orjson.dumps(c(1)))
        got = await take(ad, 1)
    assert (status, chunked_status, ok) == (413, 413, 200)
    assert "1000 bytes" in body["error"]
    assert ad.stats.malformed_by_reason == {"oversized": 2}
    assert [x.id for x in got] == ["m-1"]


async def test_no_answer_before_the_commit_and_200_after_it(http: aiohttp.ClientSession) -> None:
    async with Served({}, hold=True) as ad:
        sink = SINKS[id(ad)]
        answer = asyncio.ensure_future(post(http, ad.url, orjson.dumps([c(1), c(2)])))
        await sink.wait(2)
        await asyncio.sleep(0.05)  # time for a wrong early answer to arrive; the batch is not settled
        assert not answer.done()
        sink.release()
        status, body, _ = await asyncio.wait_for(answer, DEADLINE)
    assert (status, body) == (200, {"accepted": 2, "rejected": []})


async def test_a_failed_commit_answers_503_with_retry_after(http: aiohttp.ClientSession) -> None:
    async with Served({"retry_after": 2}, hold=True) as ad:
        sink = SINKS[id(ad)]
        answer = asyncio.ensure_future(post(http, ad.url, orjson.dumps(c(1))))
        await sink.wait(1)
        sink.release(JournalError("disk full"))
        status, body, headers = await asyncio.wait_for(answer, DEADLINE)
    assert status == 503
    assert headers["Retry-After"] == "2"
    assert "disk full" in body["error"]


async def test_a_commit_slower_than_ack_timeout_answers_503(http: aiohttp.ClientSession) -> None:
    async with Served({"ack_timeout": 0.1}, hold=True) as ad:
        status, body, _ = await post(http, ad.url, orjson.dumps(c(1)))
    assert status == 503
    assert "slow" in body["error"]
    # Not blamed on the journal alone: a host's pause looks the same from here (found from outside).
    assert "the host paused intake" in body["error"]
    assert ad.busy == 1


async def test_full_buffer_answers_503_with_retry_after_and_recovers(http: aiohttp.ClientSession) -> None:
    ad = WebhookAdapter({"max_pending": 3, "retry_after": 2}, name="wh")
    await ad.open()
    try:
        # Nobody takes anything yet: three requests fill the buffer and wait; the next ones are refused.
        waiting = [asyncio.ensure_future(post(http, ad.url, orjson.dumps(c(i)))) for i in range(3)]
        async with asyncio.timeout(DEADLINE):
            await ad.intake.arrived.reached(3)
        status, body, headers = await post(http, ad.url, orjson.dumps(c(9)))
        assert status == 503
        assert headers["Retry-After"] == "2"
        assert "buffer full" in body["error"]
        assert ad.busy == 1
        sink = Sink(ad)  # the consumer catches up ...
        assert [(await w)[0] for w in waiting] == [200, 200, 200]
        retry, _, _ = await post(http, ad.url, orjson.dumps(c(9)))  # ... and the sender's retry goes through
        got = await sink.wait(4)
        await sink.stop()
    finally:
        await ad.close()
    assert retry == 200
    assert sorted(x.id for x in got) == ["m-0", "m-1", "m-2", "m-9"]
    assert ad.stats.received == 4
    assert ad.stats.duplicates == 0  # a retry after a 503 is not a duplicate: nothing was kept


async def test_duplicate_deliveries_pass_through_and_are_counted(http: aiohttp.ClientSession) -> None:
    async with Served({}) as ad:
        for _ in range(3):
            await post(http, ad.url, orjson.dumps(c(1)))
        got = await take(ad, 3)
    assert [x.key for x in got] == [("hook", "r1", "m-1")] * 3
    assert ad.stats.duplicates == 2


async def test_only_post_on_the_configured_path(http: aiohttp.ClientSession) -> None:
    async with Served({"path": "/in"}) as ad:
        base = f"http://127.0.0.1:{ad.bound_port}"
        async with http.get(base + "/in") as r1, http.post(base + "/other", data=b"{}") as r2:
            assert (r1.status, r2.status) == (405, 404)


async def test_close_answers_503_to_requests_still_waiting_and_is_idempotent(http: aiohttp.ClientSession) -> None:
    ad = WebhookAdapter({}, name="wh")
    await ad.open()
    url = ad.url
    answer = asyncio.ensure_future(post(http, url, orjson.dumps([c(1), c(2)])))
    async with asyncio.timeout(DEADLINE):
        await ad.intake.arrived.reached(1)
    await ad.close()
    await ad.close()
    status, _, headers = await asyncio.wait_for(answer, DEADLINE)
    assert status == 503
    assert "Retry-After" in headers
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, url, orjson.dumps(c(3)))


def test_path_must_be_absolute() -> None:
    with pytest.raises(FatalAdapterError, match="path"):
        WebhookAdapter({"path": "comments"}, name="wh")
