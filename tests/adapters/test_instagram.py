from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from livecart.adapters.instagram import InstagramAdapter, handshake, payload_comments, signature
from livecart.core.errors import FatalAdapterError
from livecart.core.records import Comment
from tests.adapters.fakes.fake_instagram import deliver, hub_signature, live_comment, payload, subscribe
from tests.adapters.running import Running, first_copies

SECRET = "ig-app-s3cr3t"
TOKEN = "my-verify-token"
FIXTURES = Path(__file__).parent / "fixtures"


def adapter(**extra: Any) -> InstagramAdapter:
    opts: dict[str, Any] = {"port": 0, "app_secret": SECRET, "verify_token": TOKEN, "retry_initial": 0.01}
    opts.update(extra)
    return InstagramAdapter(opts, name="ig")


def test_signature_is_sha256_hmac_of_the_raw_body() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    assert signature(b"what do ya want for nothing?", "Jefe") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert signature(b"x", SECRET) == hub_signature(b"x", SECRET)


def test_handshake_echoes_the_challenge_only_for_subscribe_and_the_right_token() -> None:
    ok = {"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "42"}
    assert handshake(ok, TOKEN) == "42"
    assert handshake({**ok, "hub.verify_token": "nope"}, TOKEN) is None
    assert handshake({**ok, "hub.mode": "unsubscribe"}, TOKEN) is None
    assert handshake({"hub.mode": "subscribe", "hub.verify_token": TOKEN}, TOKEN) is None


def test_payload_maps_live_comments_and_skips_other_fields() -> None:
    p = payload(live_comment("c1", "A1 +1"), {"field": "comments", "value": {}}, ts=1732950000)
    comments, problems, other = payload_comments(p)
    assert comments == [Comment("instagram", "18020000000000001", "c1", "17841400000000001", "tonggu_fan",
                                "A1 +1", 1732950000.0)]
    assert (problems, other) == ([], 1)


def test_a_comment_without_from_id_is_refused_as_anonymous() -> None:
    comments, problems, _ = payload_comments(payload(live_comment("c1", "+1", user=None)))
    assert comments == []
    assert [p.reason for p in problems] == ["anonymous_buyer"]


@pytest.mark.parametrize("missing", ["app_secret", "verify_token"])
def test_secrets_are_required(missing: str) -> None:
    with pytest.raises(FatalAdapterError, match=missing):
        adapter(**{missing: ""})


async def test_subscription_handshake_over_http() -> None:
    a = adapter()
    async with Running(a) as url:
        good = await subscribe(url, TOKEN, "1158201444")
        bad = await subscribe(url, "guess")
    assert good == (200, "1158201444")
    assert bad[0] == 403
    assert a.handshakes == 1
    assert a.stats.malformed_by_reason == {"bad_handshake": 1}


async def test_signed_delivery_is_answered_and_its_comments_come_out() -> None:
    a = adapter()
    r = Running(a)
    async with r as url:
        status, body = await deliver(url, payload(live_comment("c1", "鸡蛋来两盒"), live_comment("c2", "+1")), SECRET)
        got = await r.wait_for(2)
    assert (status, body) == (200, b"EVENT_RECEIVED")
    assert [(c.id, c.text) for c in got] == [("c1", "鸡蛋来两盒"), ("c2", "+1")]


async def test_forged_unsigned_and_reserialised_bodies_are_refused() -> None:
    a = adapter()
    r = Running(a)
    async with r as url:
        forged, _ = await deliver(url, payload(live_comment("c1", "+1")), "guess")
        unsigned, _ = await deliver(url, payload(live_comment("c2", "+1")), SECRET, unsigned=True)
        # The signature covers the escaped bytes Meta sent; the same JSON re-serialised as UTF-8 must not pass.
        escaped = b'{"object":"instagram","entry":[{"id":"1","time":1,"changes":[]}],"x":"\\u9e21"}'
        raw_utf8 = '{"object":"instagram","entry":[{"id":"1","time":1,"changes":[]}],"x":"鸡"}'.encode()
        reserialised, _ = await deliver(url, None, SECRET, raw=raw_utf8, sig=hub_signature(escaped, SECRET))
        ok, _ = await deliver(url, payload(live_comment("c3", "+1")), SECRET)
        got = await r.wait_for(1)
    assert (forged, unsigned, reserialised, ok) == (401, 400, 401, 200)
    assert [c.id for c in got] == ["c3"]
    assert a.forgeries == 2


async def test_replay_of_a_recorded_session() -> None:
    lines = [orjson.loads(x) for x in (FIXTURES / "instagram_session.jsonl").read_text().splitlines() if x.strip()]
    head = lines[0]
    a = adapter(app_secret=head["app_secret"], verify_token=head["verify_token"])
    r = Running(a)
    statuses = []
    async with r as url:
        assert (await subscribe(url, head["verify_token"], "777"))[1] == "777"
        async with aiohttp.ClientSession() as s:
            for p in lines[1:]:
                async with s.post(url, data=p["body"].encode(), headers={
                        "X-Hub-Signature-256": p["signature"], "content-type": "application/json"}) as resp:
                    statuses.append(resp.status)
        got = await r.wait_for(5)
    assert statuses == [200] * 4
    assert len(got) == 5  # the redelivery goes on to the engine, which processes an id once
    assert [(c.id, c.user, c.name, c.text, c.room) for c in first_copies(got)] == [
        ("17990000000000001", "17841401111111111", "xiaoyu.eats", "A1 +1 please", "18030000000000042"),
        ("17990000000000002", "17841402222222222", "ahua", "鸡蛋来两盒", "18030000000000042"),
        ("17990000000000005", "17841403333333333", "tom_b", "cancel", "18030000000000042"),
    ]
    assert a.stats.malformed_by_reason == {"anonymous_buyer": 1}
    assert (a.ignored, a.stats.duplicates) == (1, 2)
