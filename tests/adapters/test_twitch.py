from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from livecart.adapters.twitch import (
    SlidingWindow,
    TwitchAdapter,
    format_privmsg,
    parse_line,
    privmsg_to_comment,
    unescape_tag_value,
)
from livecart.core.errors import AdapterError, FatalAdapterError, MalformedInput
from livecart.core.records import Comment
from livecart.plugin import Reply
from tests.adapters.fakes.fake_twitch import FakeTwitch, privmsg

CHAN = "tonggu"


def adapter(url: str, **extra: Any) -> TwitchAdapter:
    opts: dict[str, Any] = {"url": url, "channel": CHAN, "nick": "LiveCartBot", "token": "oauth:good",
                            "reply_limit": 20, "reply_window": 30.0, "idle_timeout": 60.0,
                            "retry_initial": 0.01, "retry_max": 0.05}
    opts.update(extra)
    return TwitchAdapter(opts, name="tw")


async def take(it: AsyncIterator[Sequence[Comment]], n: int) -> list[Comment]:
    got: list[Comment] = []
    async with asyncio.timeout(10):  # safety bound only; the fake's frames arrive at once
        while len(got) < n:
            got.extend(await anext(it))
    return got


def pm(text: str, msg_id: str, ts_ms: int = 1700000000123, login: str = "ronni", user_id: str = "42",
       display: str | None = None) -> str:
    return privmsg(CHAN, login, text, msg_id=msg_id, user_id=user_id, ts_ms=ts_ms, display=display) + "\r\n"


# --- the codec ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "value"), [
    ("plain", "plain"),
    (r"a\sb\:c\\d", "a b;c\\d"),
    (r"line\rone\ntwo", "line\rone\ntwo"),
    (r"odd\xescape", "oddxescape"),
    ("trailing\\", "trailing"),
])
def test_tag_values_are_unescaped(raw: str, value: str) -> None:
    assert unescape_tag_value(raw) == value


def test_a_tagged_privmsg_parses_into_tags_prefix_command_and_params() -> None:
    msg = parse_line(privmsg(CHAN, "ronni", "SOLD honey 2 :)", msg_id="abc", user_id="7", ts_ms=5,
                             display="Ron Ni"))
    assert msg.command == "PRIVMSG"
    assert msg.params == ("#tonggu", "SOLD honey 2 :)")
    assert msg.nick == "ronni"
    assert msg.tags["display-name"] == "Ron Ni"
    assert msg.tags["user-type"] == ""


def test_ping_and_reconnect_lines_parse() -> None:
    assert parse_line("PING :tmi.twitch.tv").params == ("tmi.twitch.tv",)
    assert parse_line(":tmi.twitch.tv RECONNECT").command == "RECONNECT"


@pytest.mark.parametrize("line", ["@a=b", ":prefix-only", "   ", "x" * 9000])
def test_junk_lines_raise_malformed_input(line: str) -> None:
    with pytest.raises(MalformedInput):
        parse_line(line)


def test_privmsg_maps_to_a_comment() -> None:
    c = privmsg_to_comment(parse_line(privmsg(CHAN, "ronni", "+1", msg_id="m-1", user_id="42",
                                              ts_ms=1700000000123, display="Ronni")), CHAN)
    assert c == Comment("twitch", CHAN, "m-1", "42", "Ronni", "+1", 1700000000.123)


def test_action_text_is_unwrapped() -> None:
    c = privmsg_to_comment(parse_line(privmsg(CHAN, "r", "\x01ACTION wants 2\x01", msg_id="m", user_id="1",
                                              ts_ms=1)), CHAN)
    assert c.text == "wants 2"


def test_reply_line_is_flattened_tagged_and_cut_to_500() -> None:
    assert format_privmsg("c", "a\r\nb", "m-1") == "@reply-parent-msg-id=m-1 PRIVMSG #c :a b"
    assert len(format_privmsg("c", "x" * 900).split(" :", 1)[1]) == 500


def test_sliding_window_allows_limit_then_waits_for_the_oldest_to_expire() -> None:
    w = SlidingWindow(20, 30.0)
    for i in range(20):
        assert w.wait_time(float(i)) == 0.0
        w.record(float(i))
    assert w.wait_time(19.0) == pytest.approx(11.0)   # the first went at t=0 -> free at t=30
    assert w.wait_time(30.0) == 0.0


# --- the adapter against the fake server ---------------------------------------------------------------

async def test_handshake_requests_caps_logs_in_joins_and_reads_several_lines_per_frame() -> None:
    async with FakeTwitch() as fake:
        a = adapter(fake.url)
        it = a.batches()
        fake.send(pm("鸡蛋来两盒", "m1") + pm("SOLD honey 2", "m2", login="bob", user_id="43"))
        got = await take(it, 2)
        await it.aclose()
        await a.close()
    assert fake.received[:4] == ["CAP REQ :twitch.tv/tags twitch.tv/commands", "PASS oauth:good",
                                 "NICK livecartbot", "JOIN #tonggu"]
    assert [(c.id, c.user, c.text) for c in got] == [("m1", "42", "鸡蛋来两盒"), ("m2", "43", "SOLD honey 2")]


async def test_ping_is_answered_with_pong() -> None:
    async with FakeTwitch() as fake:
        a = adapter(fake.url)
        it = a.batches()
        fake.send("PING :tmi.twitch.tv\r\n" + pm("+1", "m1"))
        await take(it, 1)
        async with asyncio.timeout(10):
            await fake.pong_seen.wait()
        await it.aclose()
        await a.close()
    assert fake.pongs == ["PONG :tmi.twitch.tv"]
    assert a.pings_answered == 1


async def test_reconnect_command_reconnects_rejoins_and_drops_duplicates_by_id() -> None:
    async with FakeTwitch() as fake:
        a = adapter(fake.url)
        it = a.batches()
        fake.on_join[1] = [pm("one", "m1") + ":tmi.twitch.tv RECONNECT\r\n"]
        fake.on_join[2] = [pm("one", "m1") + pm("two", "m2")]   # the new connection replays m1
        got = await take(it, 2)
        await it.aclose()
        await a.close()
    assert [c.id for c in got] == ["m1", "m2"]
    assert a.server_reconnects == 1
    assert a.stats.duplicates == 1
    assert fake.connections == 2
    assert [line for line in fake.received if line.startswith("JOIN")] == ["JOIN #tonggu", "JOIN #tonggu"]


async def test_malformed_lines_are_counted_and_the_stream_goes_on() -> None:
    async with FakeTwitch() as fake:
        a = adapter(fake.url)
        it = a.batches()
        no_ts = pm("x", "m0").replace("tmi-sent-ts=1700000000123;", "")
        fake.send("@only=tags\r\n:prefix-only\r\n" + no_ts + pm("ok", "m1"))
        got = await take(it, 1)
        await it.aclose()
        await a.close()
    assert [c.text for c in got] == ["ok"]
    assert a.stats.malformed_by_reason == {"bad_line": 2, "missing_field": 1}


async def test_a_refused_login_is_fatal() -> None:
    async with FakeTwitch() as fake:
        a = adapter(fake.url, token="oauth:wrong")
        with pytest.raises(FatalAdapterError, match="login refused"):
            async for _ in a.batches():
                pass
        await a.close()
    assert fake.connections == 1


async def test_replies_go_out_as_privmsg_within_the_rate_limit() -> None:
    now = [1000.0]
    slept: list[float] = []

    async def sleep(d: float) -> None:  # an injected clock: waiting advances time, nothing really sleeps
        slept.append(d)
        now[0] += d
        await asyncio.sleep(0)

    async with FakeTwitch() as fake:
        opts: dict[str, Any] = {"url": fake.url, "channel": CHAN, "nick": "bot", "token": "oauth:good",
                                "reply_limit": 3, "reply_window": 30.0, "idle_timeout": 60.0,
                                "retry_initial": 0.01, "retry_max": 0.05}
        a = TwitchAdapter(opts, name="tw", clock=lambda: now[0], sleep=sleep)
        it = a.batches()
        consumer = asyncio.create_task(take(it, 1))
        async with asyncio.timeout(10):
            await a.joined.wait()
        buyer = Comment("twitch", CHAN, "m-9", "42", "ronni", "SOLD honey 2", 1.0)
        await a.send_replies([Reply(f"@ronni reserved #{i}", comment=buyer) for i in range(5)])
        async with asyncio.timeout(10):
            while len(fake.privmsgs) < 5:
                fake.privmsg_seen.clear()
                if len(fake.privmsgs) < 5:
                    await fake.privmsg_seen.wait()
        fake.send(pm("done", "m1"))
        await consumer
        await it.aclose()
        await a.close()
    assert fake.privmsgs[0] == "@reply-parent-msg-id=m-9 PRIVMSG #tonggu :@ronni reserved #0"
    assert slept == [30.0]   # three at t=1000, then one wait for the window, then the last two
    assert a.stats.replies_sent == 5
    assert a.queued_replies == 0


async def test_anonymous_login_cannot_reply_and_says_so() -> None:
    a = TwitchAdapter({"url": "ws://127.0.0.1:9", "channel": CHAN, "nick": "justinfan1", "token": "",
                       "reply_limit": 20, "reply_window": 30.0, "idle_timeout": 60.0, "retry_initial": 0.01,
                       "retry_max": 0.05}, name="tw")
    with pytest.raises(AdapterError, match="no token configured"):  # the reply queue counts it failed, not sent
        await a.send_replies([Reply("hi")])
    assert a.stats.errors == 1
    assert a.queued_replies == 0


def test_class_advertises_twitchs_reply_limit() -> None:
    assert (TwitchAdapter.can_reply, TwitchAdapter.reply_limit, TwitchAdapter.reply_window) == (True, 20, 30.0)


async def test_replay_of_a_recorded_session() -> None:
    """IRC frames as recorded (tests/adapters/fixtures/twitch_irc_session.jsonl) through the fake server."""
    path = Path(__file__).parent / "fixtures" / "twitch_irc_session.jsonl"
    lines = [orjson.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    async with FakeTwitch() as fake:
        a = adapter(fake.url)
        for ln in lines[1:]:
            fake.send(ln["frame"])
        it = a.batches()
        got = await take(it, 4)
        await it.aclose()
        await a.close()
    assert [(c.id[-4:], c.user, c.name, c.text) for c in got] == [
        ("d05f", "512390712", "MeiLin", "A1 +1"),
        ("0002", "600111222", "Tom B", "鸡蛋来两盒"),
        ("0003", "700333444", "Ana", "3号\u3000黑色\tL 拍一件"),
        ("0004", "512390712", "MeiLin", "cancel"),
    ]
    assert (a.stats.duplicates, a.pings_answered, a.stats.malformed_total) == (1, 1, 0)
