from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from livecart.adapters.douyin import DouyinAdapter, decode_comments, signature
from livecart.core.errors import FatalAdapterError, JournalError, MalformedInput
from livecart.core.records import Comment
from livecart.plugin import Batch
from tests.adapters.fakes.fake_douyin import DouyinPusher, FakeDouyinPlatform, comment, post_raw, sign
from tests.adapters.running import first_copies

FIXTURES = Path(__file__).parent / "fixtures"

SECRET = "s3cr3t"
GIFT_SECRET = "g1ft-s3cr3t"


def adapter(*, sleep: Any = asyncio.sleep, clock: Any = None, **extra: Any) -> DouyinAdapter:
    opts: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "path": "/douyin/live", "secret": SECRET,
                            "max_skew": 0.0, "queue_max": 1000, "retry_initial": 0.01, "retry_max": 0.05}
    opts.update(extra)
    if clock is None:
        return DouyinAdapter(opts, name="dy", sleep=sleep)
    return DouyinAdapter(opts, name="dy", sleep=sleep, clock=clock)


class Running:
    """The adapter's endpoint up, with a reader task pulling batches into ``got``."""

    def __init__(self, a: DouyinAdapter) -> None:
        self.a = a
        self.it: AsyncIterator[Sequence[Comment]] = a.batches()
        self.got: list[Comment] = []
        self.arrived = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DouyinPusher:
        self.task = asyncio.create_task(self._read())
        async with asyncio.timeout(10):
            await self.a.ready.wait()
        return DouyinPusher(f"http://127.0.0.1:{self.a.port}/douyin/live", SECRET)

    async def _read(self) -> None:
        async for batch in self.it:
            self.got.extend(batch)
            assert isinstance(batch, Batch)
            batch.settle()  # plays the engine: durable at once
            self.arrived.set()

    async def wait_for(self, n: int) -> list[Comment]:
        async with asyncio.timeout(10):  # safety bound only
            while len(self.got) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.got

    async def __aexit__(self, *exc: object) -> None:
        await self.a.close()
        assert self.task is not None
        async with asyncio.timeout(10):
            await self.task   # the stream ends cleanly on close


# --- pure parts -----------------------------------------------------------------------------------------

def test_signature_matches_the_platforms_worked_example() -> None:
    headers = {"x-nonce-str": "123456", "x-timestamp": "456789", "x-roomid": "268", "x-msg-type": "user_group"}
    assert signature(headers, "abc123你好", "123abc") == "GAkalGmhzqlUGQO/TgvMug=="
    assert sign(headers, "abc123你好".encode(), "123abc") == "GAkalGmhzqlUGQO/TgvMug=="


def test_payload_maps_to_comments_with_stable_platform_ids() -> None:
    body = b'[{"msg_id":"m-81","sec_openid":"u-42","content":"\xe9\xb8\xa1\xe8\x9b\x8b\xe6\x9d\xa5\xe4\xb8\xa4\xe7\x9b\x92","nickname":"Zhang","timestamp":1584250000123}]'
    comments, problems = decode_comments(body, "7312", "1584250000999")
    assert comments == [Comment("douyin", "7312", "m-81", "u-42", "Zhang", "鸡蛋来两盒", 1584250000.123)]
    assert problems == []


def test_items_without_text_or_id_are_problems_not_crashes() -> None:
    comments, problems = decode_comments(b'[{"msg_id":"a","sec_openid":"u"},{"content":"x"},3]', "1", "5")
    assert comments == []
    assert [p.reason for p in problems] == ["missing_field", "missing_field", "not_an_object"]
    with pytest.raises(MalformedInput):
        decode_comments(b"{oops", "1", "5")


# --- the adapter's endpoint, pushed to like the platform does ------------------------------------------

async def test_signed_push_is_answered_at_once_and_its_comments_come_out() -> None:
    a = adapter()
    r = Running(a)
    async with r as pusher:
        status, body = await pusher.push([comment("m1", "鸡蛋来两盒"), comment("m2", "+1", openid="sec-43")])
        got = await r.wait_for(2)
    assert status == 200
    assert body == b'{"err_no":0,"err_msg":"ok"}'
    assert [(c.id, c.room, c.user, c.text) for c in got] == [("m1", "7312", "sec-42", "鸡蛋来两盒"),
                                                            ("m2", "7312", "sec-43", "+1")]


async def test_a_push_is_answered_200_only_once_durable_and_503_when_not() -> None:
    a = adapter(ack_timeout=5.0)
    it = a.batches()
    first = asyncio.ensure_future(anext(it))   # starts the endpoint
    async with asyncio.timeout(10):
        await a.ready.wait()
    pusher = DouyinPusher(f"http://127.0.0.1:{a.port}/douyin/live", SECRET)
    answer = asyncio.ensure_future(pusher.push([comment("m0", "+1")]))
    batch = await asyncio.wait_for(first, 10)
    await asyncio.sleep(0.05)  # time for a wrong early answer; the batch is not settled
    assert not answer.done()
    assert isinstance(batch, Batch)
    batch.settle()
    assert (await answer)[0] == 200
    failing = asyncio.ensure_future(pusher.push([comment("m1", "+1")]))
    batch = await asyncio.wait_for(anext(it), 10)
    assert isinstance(batch, Batch)
    batch.settle(JournalError("disk full"))
    assert (await failing)[0] == 503
    await a.close()
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_commit_slower_than_ack_timeout_answers_503_before_the_platform_gives_up() -> None:
    a = adapter(ack_timeout=0.1)
    it = a.batches()
    first = asyncio.ensure_future(anext(it))
    async with asyncio.timeout(10):
        await a.ready.wait()
    pusher = DouyinPusher(f"http://127.0.0.1:{a.port}/douyin/live", SECRET)
    status, _ = await pusher.push([comment("m0", "+1")])
    assert status == 503
    await first
    await a.close()
    await it.aclose()  # type: ignore[attr-defined]


async def test_forged_and_tampered_pushes_are_refused_and_counted() -> None:
    a = adapter()
    r = Running(a)
    async with r as pusher:
        forged, _ = await pusher.push([comment("f1", "+1")], secret="guess")
        tampered, _ = await pusher.push([comment("f2", "+1")], tamper=b'[{"msg_id":"f2","content":"+99"}]')
        unsigned, _ = await pusher.push([comment("f3", "+1")], drop="x-signature")
        ok, _ = await pusher.push([comment("m1", "+1")])
        got = await r.wait_for(1)
    assert (forged, tampered, unsigned, ok) == (401, 401, 400, 200)
    assert [c.id for c in got] == ["m1"]
    assert a.forgeries == 2
    assert a.stats.malformed_by_reason == {"bad_signature": 2, "missing_header": 1}


async def test_a_redelivered_comment_is_processed_once() -> None:
    a = adapter()
    r = Running(a)
    async with r as pusher:
        await pusher.push([comment("m1", "+1")])
        again, _ = await pusher.push([comment("m1", "+1"), comment("m2", "+2")])
        got = await r.wait_for(3)
    assert again == 200
    assert [c.id for c in got] == ["m1", "m1", "m2"]  # the engine recognises the second m1 by its id
    assert a.stats.duplicates == 1


async def test_malformed_bodies_are_counted_and_other_types_ignored() -> None:
    a = adapter(secrets={"live_gift": GIFT_SECRET})
    r = Running(a)
    async with r as pusher:
        bad_json, _ = await pusher.push(None, raw=b"{not json")
        gift, _ = await pusher.push([{"msg_id": "g1", "gift_num": 1}], msg_type="live_gift", secret=GIFT_SECRET)
        partial, _ = await pusher.push([{"msg_id": "x"}, comment("m1", "+1")])
        got = await r.wait_for(1)
    assert (bad_json, gift, partial) == (200, 200, 200)
    assert [c.id for c in got] == ["m1"]
    assert a.ignored == 1
    assert a.stats.malformed_by_reason == {"bad_json": 1, "missing_field": 1}


async def test_stale_pushes_are_refused_when_a_skew_is_set() -> None:
    a = adapter(max_skew=60.0, clock=lambda: 1700000000.0)
    r = Running(a)
    async with r as pusher:
        stale, _ = await pusher.push([comment("m0", "+1")], timestamp_ms=1699990000000)
        fresh, _ = await pusher.push([comment("m1", "+1")], timestamp_ms=1700000010000)
        await r.wait_for(1)
    assert (stale, fresh) == (401, 200)


async def test_a_busy_port_is_retried_through_the_reconnect_loop() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]

    async def sleep(d: float) -> None:   # the retry delay: the old owner lets go of the port meanwhile
        holder.close()
        await asyncio.sleep(0)

    a = adapter(port=port, sleep=sleep)
    r = Running(a)
    async with r as pusher:
        status, _ = await pusher.push([comment("m1", "+1")])
        await r.wait_for(1)
    assert status == 200
    assert a.port == port
    assert a.stats.reconnects == 1


# --- issue #16: per-type secrets, task start/stop, safe defaults, replay -----------------------------------

def test_safe_defaults_loopback_and_a_five_minute_skew() -> None:
    assert DouyinAdapter.OPTIONS["host"].default == "127.0.0.1"
    assert DouyinAdapter.OPTIONS["max_skew"].default == 300.0


@pytest.mark.parametrize("opts", [{"secret": ""}, {"secret": "  "}, {},
                                  {"secret": "x", "secrets": {"live_gift": ""}},
                                  {"secrets": {"live_gift": "g"}}])
def test_an_empty_or_missing_comment_secret_is_refused_at_start(opts: dict[str, Any]) -> None:
    with pytest.raises(FatalAdapterError, match="secret"):
        DouyinAdapter(opts, name="dy")


def test_task_credentials_come_together() -> None:
    with pytest.raises(FatalAdapterError, match="room_id"):
        DouyinAdapter({"secret": "x", "app_id": "tt", "access_token": "t"}, name="dy")


async def test_each_message_type_is_verified_with_its_own_secret() -> None:
    a = adapter(secrets={"live_gift": GIFT_SECRET})
    r = Running(a)
    async with r as pusher:
        gift_with_comment_secret, _ = await pusher.push([{"msg_id": "g1"}], msg_type="live_gift")
        comment_with_gift_secret, _ = await pusher.push([comment("c1", "+1")], secret=GIFT_SECRET)
        like_no_secret, _ = await pusher.push([{"msg_id": "l1"}], msg_type="live_like")
        ok, _ = await pusher.push([comment("m1", "+1")])
        await r.wait_for(1)
    assert (gift_with_comment_secret, comment_with_gift_secret, like_no_secret, ok) == (401, 401, 401, 200)
    assert a.stats.malformed_by_reason == {"bad_signature": 2, "unknown_msg_type": 1}


async def test_a_three_year_old_push_is_refused_by_default() -> None:
    a = DouyinAdapter({"port": 0, "secret": SECRET}, name="dy")  # default max_skew, the real clock
    r = Running(a)
    async with r as pusher:
        old, body = await pusher.push([comment("m0", "+1")], timestamp_ms=int((time.time() - 3 * 365 * 86400) * 1000))
        fresh, _ = await pusher.push([comment("m1", "+1")], timestamp_ms=None)
        got = await r.wait_for(1)
    assert (old, fresh) == (401, 200)
    assert b"stale" in body
    assert [c.id for c in got] == ["m1"]


async def test_push_tasks_are_started_per_type_once_listening_and_stopped_on_close() -> None:
    secrets = {"live_comment": SECRET, "live_gift": GIFT_SECRET}
    async with FakeDouyinPlatform(secrets) as platform:
        a = adapter(secrets={"live_gift": GIFT_SECRET}, app_id="tt-app", access_token="tok-1", room_id="7312",
                    api_base=platform.api_base)
        r = Running(a)
        async with r:
            platform.push_url = f"http://127.0.0.1:{a.port}/douyin/live"
            assert set(platform.running) == {"live_comment", "live_gift"}
            assert a.tasks == platform.running
            s1, _ = await platform.push("live_comment", [comment("m1", "来两盒")])
            s2, _ = await platform.push("live_gift", [{"msg_id": "g1", "gift_num": 1}])
            with pytest.raises(LookupError):  # no task for likes: the platform pushes none
                await platform.push("live_like", [{"msg_id": "l1"}])
            got = await r.wait_for(1)
        assert (s1, s2) == (200, 200)
        assert [c.text for c in got] == ["来两盒"]
        assert platform.running == {}  # close stopped both tasks
        assert sorted(v for v, _ in platform.calls) == ["start", "start", "stop", "stop"]
        assert platform.calls[0][1] == {"roomid": "7312", "appid": "tt-app", "msg_type": "live_comment"}


async def test_a_refused_task_start_is_fatal_and_says_why() -> None:
    async with FakeDouyinPlatform({"live_comment": SECRET}) as platform:
        a = adapter(app_id="tt-app", access_token="wrong", room_id="7312", api_base=platform.api_base)
        with pytest.raises(FatalAdapterError, match="access_token is invalid"):
            async for _ in a.batches():
                pass
        await a.close()


async def test_replay_of_a_recorded_session() -> None:
    """Pushes as recorded (headers and body bytes, signed per type) replayed against the endpoint."""
    lines = [orjson.loads(x) for x in (FIXTURES / "douyin_session.jsonl").read_text().splitlines() if x.strip()]
    secrets = lines[0]["secrets"]
    a = adapter(secret=secrets["live_comment"], secrets={"live_gift": secrets["live_gift"]}, max_skew=300.0,
                clock=lambda: 1732950003.0)
    r = Running(a)
    async with r:
        url = f"http://127.0.0.1:{a.port}/douyin/live"
        statuses = [(await post_raw(url, p["headers"], p["body"].encode()))[0] for p in lines[1:]]
        got = await r.wait_for(4)
    assert statuses == [200, 200, 200]
    # The redelivered comment goes on to the engine (which processes a (platform, room, id) once).
    assert [(c.id, c.user, c.name, c.text, c.room) for c in first_copies(got)] == [
        ("7443210000000000001", "_000aBcD1", "小鱼儿", "1号链接来两盒", "7443200000000000000"),
        ("7443210000000000002", "_000eFgH2", "阿花", "A1+1", "7443200000000000000"),
        ("7443210000000000004", "_000iJkL3", "Tom", "取消", "7443200000000000000"),
    ]
    assert a.stats.duplicates == 1
    assert a.ignored == 1
