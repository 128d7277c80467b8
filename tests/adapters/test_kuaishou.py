from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from livecart.adapters._codec import FieldMap
from livecart.adapters.kuaishou import DEFAULT_FIELDS, KuaishouAdapter, event_comments, signature
from livecart.core.errors import FatalAdapterError
from livecart.core.records import Comment
from tests.adapters.fakes.fake_kuaishou import FakeKuaishouTasks, comment, event, kwaisign, push
from tests.adapters.running import Running, first_copies

SECRET = "ks-s3cr3t"
FIXTURES = Path(__file__).parent / "fixtures"


def adapter(**extra: Any) -> KuaishouAdapter:
    opts: dict[str, Any] = {"port": 0, "app_secret": SECRET, "room_id": "ks-room-9", "retry_initial": 0.01}
    opts.update(extra)
    clock = opts.pop("clock", None)
    return KuaishouAdapter(opts, name="ks", **({"clock": clock} if clock else {}))


# --- pure parts ---------------------------------------------------------------------------------------------

def test_signature_is_hex_md5_of_body_then_secret() -> None:
    assert signature(b"abc", "123") == "e99a18c428cb38d5f260853678922e03"  # md5("abc123")
    body = b'{"message_id":"m","event":"TEST"}'
    assert signature(body, "abc") == kwaisign(body, "abc")
    assert len(signature(body, "abc")) == 32


def test_one_comment_per_push_takes_the_push_id_when_it_has_none() -> None:
    ev = event("push-1", comment(None, "来两盒", ts_ms=1732950000700), ts_ms=1732950000800)
    comments, problems = event_comments(ev, "r", FieldMap(DEFAULT_FIELDS))
    assert comments == [Comment("kuaishou", "r", "push-1", "f18a2b3c", "小鱼", "来两盒", 1732950000.7)]
    assert problems == []


def test_a_comment_without_a_user_is_a_problem_not_a_shared_buyer() -> None:
    ev = event("push-2", {"list": [comment("c1", "+1", open_id=""), comment("c2", "+1")]})
    comments, problems = event_comments(ev, "r", FieldMap(DEFAULT_FIELDS))
    assert [c.id for c in comments] == ["c2"]
    assert [p.reason for p in problems] == ["anonymous_buyer"]


@pytest.mark.parametrize("opts", [{"app_secret": ""}, {"app_secret": "   "}])
def test_an_empty_secret_is_refused_at_start(opts: dict[str, Any]) -> None:
    with pytest.raises(FatalAdapterError, match="app_secret"):
        adapter(**opts)


def test_safe_defaults() -> None:
    assert KuaishouAdapter.OPTIONS["host"].default == "127.0.0.1"
    assert KuaishouAdapter.OPTIONS["max_skew"].default == 300.0


# --- the endpoint -------------------------------------------------------------------------------------------

async def test_signed_push_answers_result_1_and_its_comment_comes_out() -> None:
    a = adapter()
    r = Running(a)
    async with r as url:
        status, body = await push(url, event("p1", comment("c1", "1号链接来两盒")), SECRET)
        got = await r.wait_for(1)
    assert (status, orjson.loads(body)) == (200, {"result": 1})
    assert [(c.id, c.room, c.user, c.text) for c in got] == [("c1", "ks-room-9", "f18a2b3c", "1号链接来两盒")]


async def test_forged_unsigned_stale_and_junk_pushes_are_refused_and_counted() -> None:
    a = adapter()
    r = Running(a)
    async with r as url:
        forged, _ = await push(url, event("p1", comment("c1", "+1")), "guess")
        unsigned, _ = await push(url, event("p2", comment("c2", "+1")), SECRET, drop_sign=True)
        stale, why = await push(url, event("p3", comment("c3", "+1"), ts_ms=int((time.time() - 86400) * 1000)),
                                SECRET)
        junk, _ = await push(url, None, SECRET, raw=b"{not json")
        ok, _ = await push(url, event("p4", comment("c4", "+1")), SECRET)
        got = await r.wait_for(1)
    assert (forged, unsigned, stale, junk, ok) == (401, 400, 401, 200, 200)
    assert b"stale" in why
    assert [c.id for c in got] == ["c4"]
    assert a.stats.malformed_by_reason == {"bad_signature": 1, "missing_header": 1, "stale": 1, "bad_json": 1}


async def test_the_console_test_event_and_other_events_are_answered_not_taken() -> None:
    a = adapter()
    r = Running(a)
    async with r as url:
        t, _ = await push(url, event("p0", {"test": "hi"}, name="TEST", ts_ms=0), SECRET)
        g, _ = await push(url, event("p1", {"gift_id": "g"}, name="live_gift"), SECRET)
        c, _ = await push(url, event("p2", comment("c1", "+1")), SECRET)
        await r.wait_for(1)
    assert (t, g, c) == (200, 200, 200)
    assert (a.tests, a.ignored) == (1, 1)


async def test_push_task_is_started_once_listening_and_stopped_on_close() -> None:
    async with FakeKuaishouTasks() as tasks:
        a = adapter(app_id="ks-app-1", access_token="ks-token", start_url=f"{tasks.base}/task/start",
                    stop_url=f"{tasks.base}/task/stop")
        r = Running(a)
        async with r as url:
            assert tasks.running == {("ks-room-9", "live_comment")}
            await push(url, event("p1", comment("c1", "+1")), SECRET)
            await r.wait_for(1)
        assert tasks.running == set()
        assert [v for v, _ in tasks.calls] == ["start", "stop"]


async def test_a_refused_task_start_is_fatal() -> None:
    async with FakeKuaishouTasks() as tasks:
        a = adapter(app_id="ks-app-1", access_token="wrong", start_url=f"{tasks.base}/task/start")
        with pytest.raises(FatalAdapterError, match="refused"):
            async with Running(a):
                pass
        await a.close()


async def test_replay_of_a_recorded_session() -> None:
    lines = [orjson.loads(x) for x in (FIXTURES / "kuaishou_session.jsonl").read_text().splitlines() if x.strip()]
    a = adapter(app_secret=lines[0]["app_secret"], clock=lambda: 1732950003.0)
    r = Running(a)
    statuses = []
    async with r as url:
        async with aiohttp.ClientSession() as s:
            for p in lines[1:]:
                async with s.post(url, data=p["body"].encode(), headers={"kwaisign": p["kwaisign"],
                                                                          "content-type": "application/json"}) as resp:
                    statuses.append(resp.status)
        got = await r.wait_for(3)
    assert statuses == [200] * 5
    assert len(got) == 3  # the redelivery goes on to the engine, which processes an id once
    assert [(c.id, c.user, c.name, c.text) for c in first_copies(got)] == [
        ("cmt-5501", "f18a2b3c", "小鱼", "1号链接来两盒"),
        ("cmt-5502", "9d8c7b6a", "阿花", "A1+1"),
    ]
    assert a.stats.malformed_by_reason == {"anonymous_buyer": 1}   # cmt-5503 names no buyer
    assert (a.tests, a.ignored, a.stats.duplicates) == (1, 1, 1)
