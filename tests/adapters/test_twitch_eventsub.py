from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from livecart.adapters.twitch_eventsub import TwitchEventSubAdapter, notification_to_comment
from livecart.core.errors import FatalAdapterError
from livecart.core.records import Comment
from livecart.plugin import Reply
from tests.adapters.fakes.fake_eventsub import FakeEventSub, chat

FIXTURES = Path(__file__).parent / "fixtures"


def adapter(f: FakeEventSub, **extra: Any) -> TwitchEventSubAdapter:
    opts: dict[str, Any] = {"url": f.url, "helix": f.helix, "client_id": "cid", "token": "user-token",
                            "broadcaster_id": "42", "user_id": "7", "channel": "tonggu_farm",
                            "retry_initial": 0.01, "retry_max": 0.05}
    opts.update(extra)
    return TwitchEventSubAdapter(opts, name="tw")


async def take(it: AsyncIterator[Sequence[Comment]], n: int) -> list[Comment]:
    got: list[Comment] = []
    async with asyncio.timeout(10):  # safety bound only
        while len(got) < n:
            got.extend(await anext(it))
    return got


def test_notification_maps_to_a_comment_with_nanosecond_time() -> None:
    c = notification_to_comment(chat("m-1", "A1 +1", ts="2024-11-30T06:00:00.123456789Z"), "tonggu_farm")
    assert c == Comment("twitch", "tonggu_farm", "m-1", "1001", "MeiLin", "A1 +1", 1732946400.123456)


async def test_subscribes_with_the_welcomed_session_and_reads_chat() -> None:
    async with FakeEventSub() as f:
        a = adapter(f)
        f.notify(chat("m-1", "来两盒"))
        f.keepalive()
        f.notify(chat("m-2", "+1", user_id="1002", name="Tom"))
        it = a.batches()
        got = await take(it, 2)
        await it.aclose()
        await a.close()
    assert [(c.id, c.user, c.text) for c in got] == [("m-1", "1001", "来两盒"), ("m-2", "1002", "+1")]
    [sub] = f.subscriptions
    assert sub == {"type": "channel.chat.message", "version": "1",
                   "condition": {"broadcaster_user_id": "42", "user_id": "7"},
                   "transport": {"method": "websocket", "session_id": "sess-1"}}
    assert a.keepalives == 1


async def test_session_reconnect_moves_without_resubscribing_and_drops_repeats() -> None:
    async with FakeEventSub() as f:
        a = adapter(f)
        f.notify(chat("m-1", "one", mid="n-1"))
        f.move()
        f.notify(chat("m-1", "one", mid="n-1"))   # delivered again on the new connection
        f.notify(chat("m-2", "two", mid="n-2"))
        it = a.batches()
        got = await take(it, 2)
        await it.aclose()
        await a.close()
    assert [c.id for c in got] == ["m-1", "m-2"]
    assert len(f.subscriptions) == 1
    assert (a.server_reconnects, a.stats.duplicates, a.stats.reconnects) == (1, 1, 0)


async def test_a_dropped_connection_or_silence_past_keepalive_means_a_new_session() -> None:
    async with FakeEventSub(keepalive=0.2) as f:
        a = adapter(f)
        it = a.batches()
        f.notify(chat("m-1", "one"))
        await take(it, 1)
        reader = asyncio.create_task(take(it, 1))  # keeps the adapter reading while nothing arrives
        async with asyncio.timeout(10):  # safety bound only
            # no keepalive arrives: after 1.5 x 0.2 s the adapter gives the connection up, subscribes anew
            await f.subscribed.reached(2)
        f.notify(chat("m-2", "two"))
        got = await reader
        await it.aclose()
        await a.close()
    assert [c.id for c in got] == ["m-2"]
    assert [s["transport"]["session_id"] for s in f.subscriptions][:2] == ["sess-1", "sess-2"]
    assert a.stats.reconnects >= 1


@pytest.mark.parametrize(("status", "words"), [(401, "invalid or expired"), (403, "user:read:chat")])
async def test_a_refused_subscription_is_fatal(status: int, words: str) -> None:
    async with FakeEventSub(subscribe_status=status) as f:
        a = adapter(f)
        with pytest.raises(FatalAdapterError, match=words):
            async for _ in a.batches():
                pass
        await a.close()


async def test_revocation_is_fatal() -> None:
    async with FakeEventSub() as f:
        a = adapter(f)
        f.revoke()
        with pytest.raises(FatalAdapterError, match="authorization_revoked"):
            async for _ in a.batches():
                pass
        await a.close()


async def test_replies_go_through_helix_as_threaded_replies() -> None:
    async with FakeEventSub() as f:
        a = adapter(f)
        c = notification_to_comment(chat("m-9", "+1"), "tonggu_farm")
        await a.send_replies([Reply("@MeiLin reserved\nA1 x1", c)])
        f.reply_drop = "duplicate message"
        await a.send_replies([Reply("again", c)])
        await a.close()
    assert f.replies[0] == {"broadcaster_id": "42", "sender_id": "7", "message": "@MeiLin reserved A1 x1",
                            "reply_parent_message_id": "m-9"}
    assert (a.stats.replies_sent, a.reply_failures) == (1, 1)


async def test_replay_of_a_recorded_session() -> None:
    lines = [orjson.loads(x) for x in (FIXTURES / "twitch_eventsub_session.jsonl").read_text().splitlines()
             if x.strip()]
    msgs = [m for m in lines if "metadata" in m]  # the first line is a note
    async with FakeEventSub() as f:
        a = adapter(f)
        for m in msgs:
            f.notify(m)
        it = a.batches()
        got = await take(it, 3)
        await it.aclose()
        await a.close()
    assert [(c.id, c.user, c.name, c.text) for c in got] == [
        ("b1f1c9a2-0001", "141981764", "MeiLin", "A1 +1"),
        ("b1f1c9a2-0002", "512390712", "tom_b", "鸡蛋来两盒"),
        ("b1f1c9a2-0004", "141981764", "MeiLin", "cancel"),
    ]
    assert (a.keepalives, a.stats.duplicates, a.stats.malformed_total) == (1, 1, 0)
