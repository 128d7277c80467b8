from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from livecart.adapters.youtube import (
    ErrorKind,
    Page,
    YouTubeAdapter,
    classify_error,
    item_to_comment,
    parse_page,
    quota_reset_delay,
)
from livecart.core.errors import FatalAdapterError, MalformedInput
from livecart.core.records import Comment
from livecart.plugin import Reply
from tests.adapters.fakes.fake_youtube import FakeYouTube, api_error, message, milestone, page, super_chat

CHAT = "chat-1"
FIXTURES = Path(__file__).parent / "fixtures"


class Sleeps:
    """An injected sleep: records what the adapter would wait, waits for nothing."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, d: float) -> None:
        self.calls.append(d)


def adapter(api_base: str, sleep: Sleeps, **extra: Any) -> YouTubeAdapter:
    opts: dict[str, Any] = {"api_base": api_base, "live_chat_id": CHAT, "api_key": "KEY", "access_token": "",
                            "include_history": False, "poll_floor": 1.0, "max_results": 2000, "timeout": 5.0,
                            "retry_initial": 5.0, "retry_max": 600.0}
    opts.update(extra)
    return YouTubeAdapter(opts, name="yt", sleep=sleep)


async def run(a: YouTubeAdapter) -> list[Comment]:
    """Every comment until the stream ends (offlineAt or liveChatEnded end it cleanly)."""
    try:
        return [c async for c in a]
    finally:
        await a.close()


# --- pure parts ---------------------------------------------------------------------------------------

def test_item_maps_to_a_comment() -> None:
    c = item_to_comment(message("m1", "SOLD honey 2", channel="UCx", name="Bo",
                                published="2024-05-01T10:00:00.5Z"), CHAT)
    assert c == Comment("youtube", CHAT, "m1", "UCx", "Bo", "SOLD honey 2", 1714557600.5)


def test_nanosecond_timestamps_and_offsets_parse() -> None:
    c = item_to_comment(message("m1", "x", published="2024-05-01T12:00:00.123456789+02:00"), CHAT)
    assert c is not None
    assert c.ts == pytest.approx(1714557600.123456)


def test_non_text_events_are_not_comments() -> None:
    assert item_to_comment(message("m1", "joined", kind="newSponsorEvent"), CHAT) is None


@pytest.mark.parametrize("item", [{"id": "x"}, "str", {"id": "x", "snippet": {"type": "textMessageEvent"}}])
def test_bad_items_raise_malformed_input(item: Any) -> None:
    with pytest.raises(MalformedInput):
        item_to_comment(item, CHAT)


def test_page_fields() -> None:
    assert parse_page(page([], "T2", 3500, "2024-05-01T11:00:00Z")) == Page((), "T2", 3.5, "2024-05-01T11:00:00Z")


@pytest.mark.parametrize(("status", "reason", "kind"), [
    (403, "quotaExceeded", ErrorKind.QUOTA),
    (403, "rateLimitExceeded", ErrorKind.RATE),
    (403, "dailyLimitExceeded", ErrorKind.QUOTA),
    (429, "", ErrorKind.RATE),
    (404, "", ErrorKind.ABSENT),
    (403, "liveChatEnded", ErrorKind.ENDED),
    (404, "liveChatNotFound", ErrorKind.FATAL),
    (400, "keyInvalid", ErrorKind.FATAL),
    (503, "backendError", ErrorKind.RETRY),
])
def test_errors_are_classified(status: int, reason: str, kind: ErrorKind) -> None:
    code, body = api_error(status, reason)
    assert classify_error(code, body) == kind


# --- the adapter against the fake API -----------------------------------------------------------------

async def test_history_is_skipped_pages_follow_tokens_and_offline_ends_the_stream() -> None:
    sleep = Sleeps()
    async with FakeYouTube([
        page([message("h1", "old +1"), message("h2", "old 鸡蛋")], "T1", 500),
        page([message("m1", "鸡蛋来两盒")], "T2", 3000),
        page([message("m2", "+1")], "T3", 2000, offline_at="2024-05-01T11:00:00Z"),
    ]) as fake:
        a = adapter(fake.api_base, sleep)
        got = await run(a)
    assert [c.id for c in got] == ["m1", "m2"]
    assert a.history_skipped == 2
    assert a.ended == "2024-05-01T11:00:00Z"
    tokens = [q.get("pageToken") for q, _ in fake.requests]
    assert tokens == [None, "T1", "T2"]
    assert fake.requests[0][0]["key"] == "KEY"
    assert fake.requests[0][0]["liveChatId"] == CHAT
    assert sleep.calls == [1.0, 3.0]   # max(pollingIntervalMillis, poll_floor) between polls


async def test_include_history_delivers_the_first_page() -> None:
    sleep = Sleeps()
    async with FakeYouTube([page([message("h1", "+1")], "T1", 0, offline_at="2024-05-01T11:00:00Z")]) as fake:
        got = await run(adapter(fake.api_base, sleep, include_history=True))
    assert [c.id for c in got] == ["h1"]


async def test_duplicates_across_pages_are_dropped() -> None:
    sleep = Sleeps()
    async with FakeYouTube([
        page([], "T1", 0),
        page([message("m1", "+1"), message("m2", "+2")], "T2", 0),
        page([message("m2", "+2"), message("m3", "+3")], "T3", 0),
    ]) as fake:
        a = adapter(fake.api_base, sleep)
        got = await run(a)
    assert [c.id for c in got] == ["m1", "m2", "m3"]
    assert a.stats.duplicates == 1


async def test_rate_limit_is_a_short_wait_and_resumes_from_the_same_page_token() -> None:
    sleep = Sleeps()
    async with FakeYouTube([
        page([], "T1", 0),
        api_error(403, "rateLimitExceeded"),
        api_error(403, "rateLimitExceeded"),
        page([message("m1", "+1")], "T2", 0),
    ]) as fake:
        a = adapter(fake.api_base, sleep, poll_floor=0.0, retry_initial=5.0)
        got = await run(a)
    assert [c.id for c in got] == ["m1"]
    assert (a.rate_limited, a.quota_errors, a.stats.reconnects) == (2, 0, 0)
    assert [q.get("pageToken") for q, _ in fake.requests] == [None, "T1", "T1", "T1", "T2"]
    assert [d for d in sleep.calls if d > 0] == [1.0, 2.0]   # short, doubling, far below the 600 s backoff


async def test_a_spent_daily_quota_waits_once_until_midnight_pacific() -> None:
    sleep = Sleeps()
    now = 1732989600.0  # 2024-11-30 10:00 PST
    async with FakeYouTube([page([], "T1", 0), api_error(403, "quotaExceeded", "youtube.quota"),
                            page([message("m1", "+1")], "T2", 0)]) as fake:
        a = YouTubeAdapter({"api_base": fake.api_base, "live_chat_id": CHAT, "api_key": "KEY",
                            "poll_floor": 0.0}, name="yt", sleep=sleep, clock=lambda: now)
        got = await run(a)
    assert [c.id for c in got] == ["m1"]
    assert a.quota_errors == 1
    assert [d for d in sleep.calls if d > 0] == [14 * 3600 + 60.0]   # to midnight PT, plus the margin
    # one try after the wait, from the same page token (the last request ends the chat)
    assert [q.get("pageToken") for q, _ in fake.requests] == [None, "T1", "T1", "T2"]


def test_quota_reset_is_midnight_pacific_across_daylight_saving() -> None:
    assert quota_reset_delay(1732989600.0) == 14 * 3600            # 10:00 PST -> 14 h
    assert quota_reset_delay(1710059400.0) == 22.5 * 3600          # 2024-03-10 00:30 PST: a 23-hour day
    assert quota_reset_delay(1720767600.0) == 24 * 3600            # 00:00 PDT exactly -> the next midnight


def test_super_chats_and_milestones_carry_words() -> None:
    c = item_to_comment(super_chat("s1", "A1 来两盒"), CHAT)
    assert c is not None
    assert (c.id, c.user, c.name, c.text) == ("s1", "UC77", "Kim", "A1 来两盒")
    m = item_to_comment(milestone("k1", "+1 honey"), CHAT)
    assert m is not None
    assert m.text == "+1 honey"
    assert item_to_comment(super_chat("s2", None), CHAT) is None   # paid, but no words to order from
    assert item_to_comment(milestone("k2", None), CHAT) is None


async def test_server_errors_are_retried() -> None:
    sleep = Sleeps()
    async with FakeYouTube([api_error(503, "backendError"), page([message("m1", "+1")], "T1", 0),
                            page([message("m2", "+2")], "T2", 0)]) as fake:
        a = adapter(fake.api_base, sleep)
        got = await run(a)
    assert [c.id for c in got] == ["m2"]   # m1 came on the first good page: history
    assert a.stats.reconnects == 1


async def test_malformed_pages_and_items_are_counted_and_polling_goes_on() -> None:
    sleep = Sleeps()
    async with FakeYouTube([
        page([], "T1", 0),
        b"{not json",
        page([{"id": "bad"}, message("m1", "+1")], "T2", 0),
    ]) as fake:
        a = adapter(fake.api_base, sleep)
        got = await run(a)
    assert [c.id for c in got] == ["m1"]
    assert a.stats.malformed_by_reason == {"bad_json": 1, "missing_field": 1}


async def test_bad_credentials_are_fatal() -> None:
    sleep = Sleeps()
    async with FakeYouTube([api_error(400, "keyInvalid")]) as fake:
        a = adapter(fake.api_base, sleep)
        with pytest.raises(FatalAdapterError, match="keyInvalid"):
            await run(a)
    assert len(fake.requests) == 1


async def test_access_token_goes_in_the_authorization_header() -> None:
    sleep = Sleeps()
    async with FakeYouTube([page([], "T1", 0, offline_at="2024-05-01T11:00:00Z")]) as fake:
        await run(adapter(fake.api_base, sleep, api_key="", access_token="ya29.tok"))
    query, headers = fake.requests[0]
    assert headers["Authorization"] == "Bearer ya29.tok"
    assert "key" not in query


async def test_no_credentials_is_refused_at_open() -> None:
    a = adapter("http://127.0.0.1:9", Sleeps(), api_key="")
    with pytest.raises(FatalAdapterError, match="api_key or access_token"):
        await a.open()
    await a.close()


# --- streamList, fallback, insert, replay ---------------------------------------------------------------------

async def test_stream_list_is_preferred_and_reopened_from_the_last_token() -> None:
    sleep = Sleeps()
    async with FakeYouTube([], streams=[
        [page([message("h1", "old")], "T1", 0), page([message("m1", "鸡蛋来两盒")], "T2", 0)],
        [page([message("m2", "+1"), super_chat("s1", "A1 x2")], "T3", 0, offline_at="2024-05-01T11:00:00Z")],
    ]) as fake:
        a = adapter(fake.api_base, sleep)
        got = await run(a)
    assert [c.id for c in got] == ["m1", "m2", "s1"]
    assert [q.get("pageToken") for q in fake.stream_requests] == [None, "T2"]
    assert fake.requests == []   # no list polling at all
    assert (a.streams, a.polls, a.history_skipped) == (2, 0, 1)


async def test_without_stream_list_it_falls_back_to_polling() -> None:
    sleep = Sleeps()
    async with FakeYouTube([page([], "T1", 0), page([message("m1", "+1")], "T2", 0,
                                                     offline_at="2024-05-01T11:00:00Z")]) as fake:
        a = adapter(fake.api_base, sleep)
        got = await run(a)
    assert [c.id for c in got] == ["m1"]
    assert (a.streaming, a.polls) == (False, 2)


async def test_forced_stream_mode_without_the_endpoint_is_fatal() -> None:
    async with FakeYouTube([]) as fake:
        with pytest.raises(FatalAdapterError):
            await run(adapter(fake.api_base, Sleeps(), mode="stream"))


async def test_a_stream_that_closes_empty_is_reopened_with_backoff() -> None:
    sleep = Sleeps()
    async with FakeYouTube([], streams=[[], [page([], "T1", 0)],
                                        [page([message("m1", "+1")], "T2", 0, offline_at="x")]]) as fake:
        a = adapter(fake.api_base, sleep, retry_initial=5.0)
        got = await run(a)
    assert [c.id for c in got] == ["m1"]
    assert a.stats.reconnects == 1
    assert 2.5 <= sleep.calls[0] <= 5.0


async def test_replies_are_inserted_with_the_oauth_token() -> None:
    async with FakeYouTube([]) as fake:
        a = adapter(fake.api_base, Sleeps(), api_key="", access_token="ya29.tok")
        await a.send_replies([Reply("@Ann reserved:\negg x2 " + "!" * 300)])
        fake.insert_status = 403
        await a.send_replies([Reply("again")])
        await a.close()
        keyed = adapter(fake.api_base, Sleeps())
        await keyed.send_replies([Reply("no token")])
        await keyed.close()
    query, body, auth = fake.inserted[0]
    assert query == {"part": "snippet"}
    assert auth == "Bearer ya29.tok"
    assert body["snippet"]["liveChatId"] == CHAT
    assert body["snippet"]["type"] == "textMessageEvent"
    text = body["snippet"]["textMessageDetails"]["messageText"]
    assert text.startswith("@Ann reserved: egg x2 !")
    assert len(text) == 200
    assert (a.stats.replies_sent, a.reply_failures) == (1, 1)
    assert (keyed.stats.errors, len(fake.inserted)) == (1, 2)


async def test_replay_of_a_recorded_session() -> None:
    """streamList responses as recorded (one line per connection) through the fake."""
    lines = [orjson.loads(x) for x in (FIXTURES / "youtube_session.jsonl").read_text().splitlines() if x.strip()]
    sleep = Sleeps()
    async with FakeYouTube([], streams=[ln["responses"] for ln in lines[1:]], chunk=13) as fake:
        a = adapter(fake.api_base, sleep)
        got = await run(a)
    assert [(c.id, c.user, c.text) for c in got] == [
        ("LCC.abc-002", "UCmeilin", "1号链接来两盒"),
        ("LCC.abc-003", "UCkim", "A1 x2 please"),
        ("LCC.abc-005", "UClee", "+1 honey"),
        ("LCC.abc-006", "UCtom", "cancel"),
    ]
    assert (a.history_skipped, a.stats.duplicates, a.ended) == (1, 1, "2024-11-30T07:00:00Z")
