from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from livecart.adapters._codec import SseDecoder, SseEvent
from livecart.adapters.facebook import FacebookAdapter, classify_error, to_comment
from livecart.core.errors import FatalAdapterError, MalformedInput
from livecart.core.records import Comment
from livecart.plugin import Reply
from tests.adapters.fakes.fake_facebook import FakeGraph, fb_comment, sse

FIXTURES = Path(__file__).parent / "fixtures"
VIDEO = "1900000000000001"


def adapter(graph: FakeGraph, **extra: Any) -> FacebookAdapter:
    opts: dict[str, Any] = {"live_video_id": VIDEO, "access_token": "page-token", "stream_base": graph.base,
                            "graph_base": graph.base, "retry_initial": 0.01, "retry_max": 0.05}
    opts.update(extra)
    return FacebookAdapter(opts, name="fb")


async def take(it: AsyncIterator[Sequence[Comment]], n: int) -> list[Comment]:
    got: list[Comment] = []
    async with asyncio.timeout(10):  # safety bound only
        while len(got) < n:
            got.extend(await anext(it))
    return got


# --- the SSE parser (WHATWG event-stream rules), values in / values out --------------------------------------

def test_sse_events_dispatch_on_a_blank_line_and_join_data_lines() -> None:
    d = SseDecoder()
    assert d.feed(b"data: a\ndata:b\n") == []
    assert d.feed(b"\n") == [SseEvent("message", "a\nb", "")]


def test_sse_line_ends_crlf_cr_and_lf_and_a_crlf_split_across_chunks() -> None:
    d = SseDecoder()
    assert d.feed(b"data: x\r") == []
    assert d.feed(b"\n\r\ndata: y\r\r") == [SseEvent("message", "x", ""), SseEvent("message", "y", "")]


def test_sse_comments_ids_event_types_and_retry() -> None:
    d = SseDecoder()
    evs = d.feed(b": keep-alive\n\nid: 7\nevent: ping\ndata: {}\nretry: 2500\n\ndata: z\n\nid\ndata: w\n\n")
    assert evs == [SseEvent("ping", "{}", "7"), SseEvent("message", "z", "7"), SseEvent("message", "w", "")]
    assert d.retry_ms == 2500
    d.feed(b"retry: 1x\n\nid: a\x00b\n\n")
    assert (d.retry_ms, d.last_id) == (2500, "")


def test_sse_an_event_split_mid_line_across_chunks() -> None:
    d = SseDecoder()
    assert d.feed(b'data: {"a":') == []
    assert d.feed(b"1}\n\n") == [SseEvent("message", '{"a":1}', "")]


def test_sse_overlong_line_is_refused() -> None:
    with pytest.raises(MalformedInput, match="oversized"):
        SseDecoder(max_line=10).feed(b"data: " + b"x" * 20)


def test_comment_mapping_and_hidden_commenters() -> None:
    c = to_comment(fb_comment("v_1", "来两盒", created="2024-11-30T06:00:00+0000"), VIDEO)
    assert c == Comment("facebook", VIDEO, "v_1", "10229000000000001", "Mei Lin", "来两盒", 1732946400.0)
    with pytest.raises(MalformedInput) as info:
        to_comment(fb_comment("v_2", "+1", uid=None), VIDEO)
    assert info.value.reason == "anonymous_buyer"


def test_error_classes() -> None:
    assert classify_error(400, {"error": {"code": 190}}) is False
    assert classify_error(400, {"error": {"code": 100}}) is False
    assert classify_error(400, {"error": {"code": 17}}) is True
    assert classify_error(503, None) is True


# --- against the fake Graph ----------------------------------------------------------------------------------

async def test_stream_comments_with_the_documented_query() -> None:
    async with FakeGraph() as g:
        a = adapter(g, comment_rate="ten_per_second")
        g.play(sse(fb_comment("v_1", "+1")), b": ping\n\n", sse(fb_comment("v_2", "A1 x2", uid="102", name="Tom")))
        it = a.batches()
        got = await take(it, 2)
        await it.aclose()
        await a.close()
    assert [(c.id, c.user, c.text) for c in got] == [("v_1", "10229000000000001", "+1"), ("v_2", "102", "A1 x2")]
    assert g.requests[0]["comment_rate"] == "ten_per_second"
    assert g.requests[0]["fields"] == "from{name,id},message,created_time,id"


async def test_reconnects_with_last_event_id_and_drops_what_it_already_had() -> None:
    async with FakeGraph() as g:
        a = adapter(g)
        g.play(sse(fb_comment("v_1", "one"), ident="e1"), sse(fb_comment("v_2", "two"), ident="e2"))
        g.play(sse(fb_comment("v_2", "two"), ident="e2"), sse(fb_comment("v_3", "three"), ident="e3"))
        it = a.batches()
        got = await take(it, 3)
        await it.aclose()
        await a.close()
    assert [c.id for c in got] == ["v_1", "v_2", "v_3"]
    assert g.requests[1].get("Last-Event-ID") == "e2"
    assert (a.stats.duplicates, a.stats.reconnects, a.stream_ends) == (1, 1, 1)


async def test_a_bad_token_is_fatal_and_says_so() -> None:
    async with FakeGraph() as g:
        a = adapter(g, access_token="expired")
        with pytest.raises(FatalAdapterError, match="invalid or expired"):
            async for _ in a.batches():
                pass
        await a.close()
    assert len(g.requests) == 1


async def test_rate_limit_errors_are_retried() -> None:
    async with FakeGraph() as g:
        a = adapter(g)
        g.error = (400, {"error": {"message": "Application request limit reached", "code": 4}})
        it = a.batches()

        async def lift() -> None:
            await g.arrived.reached(2)
            g.error = None
            g.play(sse(fb_comment("v_1", "+1")))

        lifter = asyncio.create_task(lift())
        got = await take(it, 1)
        await lifter
        await it.aclose()
        await a.close()
    assert [c.id for c in got] == ["v_1"]
    assert a.stats.reconnects >= 2


async def test_bad_events_are_counted_and_the_stream_goes_on() -> None:
    async with FakeGraph() as g:
        a = adapter(g)
        g.play(b"data: {not json\n\n", sse([1, 2]), sse(fb_comment("v_0", "+1", uid=None)),
               sse({"id": "v_9", "from": {"id": "1"}, "created_time": "2024-11-30T06:00:00+0000"}),
               sse(fb_comment("v_1", "ok")))
        it = a.batches()
        got = await take(it, 1)
        await it.aclose()
        await a.close()
    assert [c.id for c in got] == ["v_1"]
    assert a.stats.malformed_by_reason == {"bad_json": 1, "not_an_object": 1, "anonymous_buyer": 1,
                                           "missing_field": 1}


async def test_replies_are_posted_under_the_buyers_comment() -> None:
    async with FakeGraph() as g:
        a = adapter(g)
        c = to_comment(fb_comment(f"{VIDEO}_77", "+1"), VIDEO)
        await a.send_replies([Reply("@Mei Lin reserved: eggs x1", c), Reply("Eggs are sold out")])
        g.reply_error = (400, {"error": {"message": "(#200) Permissions error", "code": 200}})
        await a.send_replies([Reply("again", c)])
        await a.close()
    assert g.replies == [(f"{VIDEO}_77", "@Mei Lin reserved: eggs x1"), (VIDEO, "Eggs are sold out")]
    assert (a.stats.replies_sent, a.reply_failures, a.stats.errors) == (2, 1, 1)


async def test_replay_of_a_recorded_session() -> None:
    lines = [orjson.loads(x) for x in (FIXTURES / "facebook_session.jsonl").read_text().splitlines() if x.strip()]
    async with FakeGraph() as g:
        a = adapter(g)
        for conn in lines[1:]:
            g.play(*(chunk.encode() for chunk in conn["chunks"]))
        it = a.batches()
        got = await take(it, 4)
        await it.aclose()
        await a.close()
    assert [(c.id.rsplit("_", 1)[1], c.user, c.text) for c in got] == [
        ("800001", "10229000000000001", "1号链接来两盒"),
        ("800002", "10229000000000002", "A1 +1"),
        ("800004", "10229000000000003", "how much is shipping?"),
        ("800005", "10229000000000002", "cancel"),
    ]
    assert a.stats.malformed_by_reason == {"anonymous_buyer": 1}
    assert (a.stats.duplicates, a.connections) == (1, 2)
