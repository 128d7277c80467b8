"""The websocket adapter against real WebSocket peers on 127.0.0.1 (websockets' own server and client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.http11 import Request, Response

from livecart.adapters.websocket import BAD_TOKEN, WebSocketAdapter
from livecart.core.errors import FatalAdapterError, JournalError
from livecart.core.records import Comment
from livecart.plugin import Batch, Reply

DEADLINE = 10.0  # a safety bound only: every wait below ends as soon as its event happens


def c(i: int, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"platform": "web", "room": "r1", "id": f"m-{i}", "user": f"u-{i}", "text": f"+{i}",
                         "ts": 1700000000.0 + i}
    d.update(kw)
    return d


async def take(it: AsyncIterator[Sequence[Comment]], n: int) -> list[Comment]:
    got: list[Comment] = []
    async with asyncio.timeout(DEADLINE):
        while len(got) < n:
            got.extend(await anext(it))
    return got


Handler = Callable[[ServerConnection], Awaitable[None]]


async def feed(handler: Handler, **kw: Any) -> tuple[Server, str]:
    server = await serve(handler, "127.0.0.1", 0, **kw)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/feed"


def client(url: str, **opts: Any) -> WebSocketAdapter:
    return WebSocketAdapter({"mode": "client", "url": url, "reconnect_initial": 0.01, "reconnect_cap": 0.05,
                             **opts}, name="ws-test")


# -- client mode --------------------------------------------------------------------------------------------


async def test_client_reads_single_comments_and_arrays_in_order() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps(c(1)).decode())
        await ws.send(orjson.dumps([c(2), c(3)]))  # a binary frame holding an array
        await ws.send(orjson.dumps(c(4)).decode())
        await ws.wait_closed()

    server, url = await feed(handler)
    async with server, client(url) as ad:
        got = await take(ad.batches(), 4)
    assert [x.id for x in got] == ["m-1", "m-2", "m-3", "m-4"]
    assert got[0] == Comment("web", "r1", "m-1", "u-1", "u-1", "+1", 1700000001.0)
    assert ad.stats.received == 4


async def test_client_maps_fields_of_a_foreign_feed_and_converts_milliseconds() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"msg_id": 77, "content": "鸡蛋来两盒", "sender": {"uid": 42, "nick": "张三"},
                                    "time": 1700000000123}))
        await ws.wait_closed()

    server, url = await feed(handler)
    fields = {"id": "msg_id", "text": "content", "user": "sender.uid", "name": "sender.nick", "ts": "time"}
    async with server, client(url, fields=fields, ts_unit="ms", platform="kuaishou", room="99") as ad:
        [got] = await take(ad.batches(), 1)
    assert got == Comment("kuaishou", "99", "77", "42", "张三", "鸡蛋来两盒", 1700000000.123)


async def test_client_counts_malformed_frames_and_keeps_reading() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("{not json")
        await ws.send(orjson.dumps({"text": 5, "user": "u", "ts": 1}).decode())  # wrong field type
        await ws.send(orjson.dumps([c(1), "junk", c(2, ts="yesterday")]).decode())  # one good of three
        await ws.send("x" * 300)  # over max_frame, under the hard limit
        await ws.send(orjson.dumps(c(3)).decode())
        await ws.wait_closed()

    server, url = await feed(handler)
    async with server, client(url, max_frame=200) as ad:
        got = await take(ad.batches(), 2)
    assert [x.id for x in got] == ["m-1", "m-3"]
    assert ad.stats.malformed_by_reason == {"bad_json": 1, "bad_field": 2, "not_an_object": 1,
                                            "oversized": 1}
    assert ad.stats.reconnects == 0


async def test_client_reconnects_after_a_drop_mid_stream() -> None:
    sessions = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal sessions
        sessions += 1
        if sessions == 1:
            await ws.send(orjson.dumps(c(1)).decode())
            await ws.send(orjson.dumps(c(2)).decode())
            ws.transport.abort()  # no close frame: an abnormal drop
            return
        await ws.send(orjson.dumps(c(3)).decode())
        await ws.wait_closed()

    server, url = await feed(handler)
    async with server, client(url) as ad:
        got = await take(ad.batches(), 3)
    assert [x.id for x in got] == ["m-1", "m-2", "m-3"]
    assert ad.stats.reconnects == 1
    assert ad.connections.count == 2


async def test_client_ends_cleanly_when_the_feed_closes_normally() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps(c(1)).decode())
        await ws.close(1000, "stream over")

    server, url = await feed(handler)
    async with server, client(url) as ad:
        async with asyncio.timeout(DEADLINE):
            got = [x async for x in ad]
    assert [x.id for x in got] == ["m-1"]
    assert ad.stats.reconnects == 0


async def test_client_stops_on_a_bad_token_close_code_without_retrying() -> None:
    sessions = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal sessions
        sessions += 1
        await ws.close(BAD_TOKEN, "bad token")

    server, url = await feed(handler)
    async with server, client(url) as ad:
        with pytest.raises(FatalAdapterError, match="4001"):
            async with asyncio.timeout(DEADLINE):
                [x async for x in ad]
    assert sessions == 1


async def test_client_refused_handshake_is_fatal() -> None:
    def refuse(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(401, "no\n")

    async def handler(ws: ServerConnection) -> None:  # pragma: no cover - never reached
        await ws.wait_closed()

    server, url = await feed(handler, process_request=refuse)
    async with server, client(url) as ad:
        with pytest.raises(FatalAdapterError, match="401"):
            async with asyncio.timeout(DEADLINE):
                [x async for x in ad]


async def test_client_gives_up_after_max_attempts_against_a_dead_url() -> None:
    server, url = await feed(lambda ws: ws.wait_closed())
    server.close()
    await server.wait_closed()
    ad = client(url, max_attempts=3)
    with pytest.raises(Exception, match="gave up after 3"):
        async with asyncio.timeout(DEADLINE):
            [x async for x in ad]
    assert ad.stats.reconnects == 2


async def test_client_sends_its_token_and_replies_to_the_feed() -> None:
    seen_auth: list[str | None] = []
    replies: asyncio.Queue[str | bytes] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen_auth.append(ws.request.headers.get("Authorization"))
        await ws.send(orjson.dumps(c(1)).decode())
        async for msg in ws:
            await replies.put(msg)

    server, url = await feed(handler)
    async with server, client(url, token="s3cret") as ad:
        it = ad.batches()
        [comment] = await take(it, 1)
        await ad.send_replies([Reply("@u-1 got 1 box", comment=comment), Reply("thanks all")])
        async with asyncio.timeout(DEADLINE):
            frame = await replies.get()
    assert seen_auth == ["Bearer s3cret"]
    sent = orjson.loads(frame)
    assert [r["text"] for r in sent] == ["@u-1 got 1 box", "thanks all"]
    assert sent[0]["comment"]["id"] == "m-1"
    assert ad.stats.replies_sent == 2


def test_client_without_url_is_refused() -> None:
    with pytest.raises(FatalAdapterError, match="url"):
        WebSocketAdapter({"mode": "client"}, name="x")


# -- server mode --------------------------------------------------------------------------------------------


def server_adapter(**opts: Any) -> WebSocketAdapter:
    return WebSocketAdapter({"mode": "server", "port": 0, **opts}, name="ws-server")


async def test_server_accepts_comments_with_token_in_query_or_header() -> None:
    async with server_adapter(token="tok") as ad:
        base = f"ws://127.0.0.1:{ad.bound_port}"
        it = ad.batches()
        async with connect(f"{base}/?token=tok") as a:
            await a.send(orjson.dumps(c(1)).decode())
            got = await take(it, 1)
        async with connect(base, additional_headers={"Authorization": "Bearer tok"}) as b:
            await b.send(orjson.dumps([c(2), c(3)]).decode())
            got += await take(it, 2)
    assert [x.id for x in got] == ["m-1", "m-2", "m-3"]
    assert ad.stats.malformed_total == 0


async def next_ack(ws: Any) -> dict[str, Any]:
    """The next acknowledgement frame on ``ws`` (reply frames are JSON arrays and are skipped)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            msg = orjson.loads(await ws.recv())
            if isinstance(msg, dict) and msg.get("type") == "ack":
                return msg


async def test_server_acknowledges_messages_once_durable_naming_the_ids() -> None:
    async with server_adapter() as ad, connect(f"ws://127.0.0.1:{ad.bound_port}") as ws:
        it = ad.batches()
        await ws.send(orjson.dumps(c(1)).decode())
        [batch] = [await anext(it)]
        assert isinstance(batch, Batch)
        with pytest.raises(TimeoutError):  # not settled: no acknowledgement yet
            async with asyncio.timeout(0.1):
                await ws.recv()
        batch.settle()
        assert await next_ack(ws) == {"type": "ack", "frames": 1, "ids": ["m-1"]}
        # A malformed message sent after a good one is covered once the good one is durable.
        await ws.send(orjson.dumps([c(2), c(3)]).decode())
        second = await anext(it)
        await ws.send("{oops")
        await asyncio.sleep(0.05)  # the bad frame arrives while m-2/m-3 are not yet durable
        assert isinstance(second, Batch)
        second.settle()
        ack = await next_ack(ws)
        assert ack["ids"] == ["m-2", "m-3"]
        assert ack["frames"] == 3
        # With nothing pending, a malformed message is acknowledged at once (it will never be durable).
        await ws.send("[1,")
        assert await next_ack(ws) == {"type": "ack", "frames": 4, "ids": []}


async def test_server_closes_with_1011_when_a_batch_is_not_durable() -> None:
    async with server_adapter() as ad, connect(f"ws://127.0.0.1:{ad.bound_port}") as ws:
        it = ad.batches()
        await ws.send(orjson.dumps(c(1)).decode())
        batch = await anext(it)
        assert isinstance(batch, Batch)
        batch.settle(JournalError("disk full"))
        async with asyncio.timeout(DEADLINE):
            await ws.wait_closed()
    assert ws.close_code == 1011


@pytest.mark.parametrize("suffix", ["/", "/?token=wrong", "/?token=tokx"])
async def test_server_closes_a_peer_with_a_bad_token_with_code_4001(suffix: str) -> None:
    async with server_adapter(token="tok") as ad, connect(f"ws://127.0.0.1:{ad.bound_port}{suffix}") as ws:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(DEADLINE):
                await ws.recv()
        assert ws.close_code == BAD_TOKEN
        assert ad.stats.malformed_by_reason == {"bad_token": 1}
        assert ad.connections.count == 0


async def test_server_skips_malformed_and_oversized_frames_and_drops_only_a_giant_one() -> None:
    async with server_adapter(max_frame=100) as ad:
        url = f"ws://127.0.0.1:{ad.bound_port}"
        it = ad.batches()
        async with connect(url) as good, connect(url) as rogue:
            await good.send("[1, 2")
            await good.send("y" * 150)  # over max_frame: skipped, connection kept
            await rogue.send("z" * 1000)  # over 4 x max_frame: the protocol closes it with 1009
            with pytest.raises(ConnectionClosedError):
                async with asyncio.timeout(DEADLINE):
                    await rogue.recv()
            assert rogue.close_code == 1009
            await good.send(orjson.dumps(c(1)).decode())
            got = await take(it, 1)
    assert [x.id for x in got] == ["m-1"]
    assert ad.stats.malformed_by_reason == {"bad_json": 1, "oversized": 2}


async def test_server_passes_duplicates_through_with_stable_ids_and_counts_them() -> None:
    async with server_adapter() as ad, connect(f"ws://127.0.0.1:{ad.bound_port}") as ws:
        for i in (1, 2, 1, 1):
            await ws.send(orjson.dumps(c(i)).decode())
        got = await take(ad.batches(), 4)
    assert [x.id for x in got] == ["m-1", "m-2", "m-1", "m-1"]
    assert ad.stats.duplicates == 2


async def test_server_buffer_stays_bounded_for_a_slow_consumer_and_loses_nothing() -> None:
    n = 20_000  # far more than one socket read holds, so the server must stop reading to stay bounded
    async with server_adapter(max_pending=20) as ad, connect(f"ws://127.0.0.1:{ad.bound_port}") as ws:

        async def send_all() -> None:
            for i in range(n):
                await ws.send(orjson.dumps(c(i)).decode())

        sender = asyncio.create_task(send_all())
        intake = ad._intake
        assert intake is not None
        async with asyncio.timeout(DEADLINE):
            await intake.waits.reached(1)  # nobody consumes: the server has paused reading this peer
        it = ad.batches()
        got: list[Comment] = []
        async with asyncio.timeout(DEADLINE * 3):
            while len(got) < n:
                got.extend(await anext(it))
                await asyncio.sleep(0)  # a slow consumer: let the peer refill between batches
            await sender
    assert [x.id for x in got] == [f"m-{i}" for i in range(n)]
    # Bounded by max_pending plus what one socket read (at most 256 KiB) carries.
    smallest_frame = len(orjson.dumps(c(0))) + 6  # 2-byte header and 4-byte mask (RFC 6455 §5.2)
    assert intake.high_water <= 20 + (256 * 1024) // smallest_frame < n
    assert intake.waits.count >= 1
    assert ad.stats.received == n


async def test_server_broadcasts_replies_to_connected_peers() -> None:
    async with server_adapter() as ad:
        url = f"ws://127.0.0.1:{ad.bound_port}"
        async with connect(url) as a, connect(url) as b:
            await a.send(orjson.dumps(c(1)).decode())
            await b.send(orjson.dumps(c(2)).decode())
            await take(ad.batches(), 2)  # both peers are registered once their frames arrived
            await ad.send_replies([Reply("sold out, sorry")])
            async with asyncio.timeout(DEADLINE):
                ra, rb = await a.recv(), await b.recv()
    assert orjson.loads(ra) == orjson.loads(rb)
    assert orjson.loads(ra)[0]["text"] == "sold out, sorry"


async def test_server_close_ends_the_stream_and_is_idempotent() -> None:
    ad = server_adapter()
    await ad.open()
    it = ad.batches()
    async with connect(f"ws://127.0.0.1:{ad.bound_port}") as ws:
        await ws.send(orjson.dumps(c(1)).decode())
        await take(it, 1)
        await ad.close()
        await ad.close()
        with pytest.raises(StopAsyncIteration):
            await anext(it)
        async with asyncio.timeout(DEADLINE):
            await ws.wait_closed()
    assert ws.close_code == 1001
    assert ad.closed


async def test_server_port_in_use_is_a_clear_fatal_error() -> None:
    async with server_adapter() as first:
        second = server_adapter(port=first.bound_port)
        with pytest.raises(FatalAdapterError, match="cannot listen"):
            await second.open()


async def test_server_reassembles_fragmented_messages() -> None:
    async with server_adapter() as ad, connect(f"ws://127.0.0.1:{ad.bound_port}") as ws:
        text = orjson.dumps([c(1), c(2)]).decode()
        await ws.send([text[:10], text[10:50], text[50:]])  # one message in three frames (RFC 6455 §5.4)
        got = await take(ad.batches(), 2)
    assert [x.id for x in got] == ["m-1", "m-2"]


async def test_server_answers_a_plain_http_request_with_an_error_and_counts_it() -> None:
    async with server_adapter() as ad:
        reader, writer = await asyncio.open_connection("127.0.0.1", ad.bound_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(DEADLINE):
            status = await reader.readline()
            await reader.read()  # the server closes the connection after its answer
        writer.close()
        await writer.wait_closed()
    assert status.startswith(b"HTTP/1.1 4")
    assert ad.stats.malformed_by_reason == {"bad_handshake": 1}


async def test_server_drops_a_peer_that_stops_answering_pings() -> None:
    async with server_adapter(ping_interval=0.05) as ad:
        # A raw peer that completes the handshake and then never reads nor answers again.
        reader, writer = await asyncio.open_connection("127.0.0.1", ad.bound_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        async with asyncio.timeout(DEADLINE):
            assert (await reader.readline()).startswith(b"HTTP/1.1 101")
            await ad.connections.reached(1)
            while await reader.read(4096):  # pings arrive, unanswered, until the server cuts the connection
                pass
        writer.close()
        assert not ad.peers


def test_server_runs_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[str]:
        async with server_adapter(token="t") as ad, connect(f"ws://127.0.0.1:{ad.bound_port}/?token=t") as ws:
            await ws.send(orjson.dumps([c(1), c(2)]).decode())
            return [x.id for x in await take(ad.batches(), 2)]

    assert uvloop.run(main()) == ["m-1", "m-2"]


def test_many_replies_go_out_in_frames_a_companion_accepts() -> None:
    """A restart's announcement of 4,000 orders went out as one 1.4 MB frame; a companion with the usual
    1 MiB limit closed with 1009 and every reply in it was lost (counted sent)."""
    from livecart.adapters.websocket import REPLY_FRAME_BYTES, _reply_frames

    replies = [Reply(f"@买家{i} 已为您保留 土鸡蛋 10枚装 ×2，订单 o-{i:06d}，请在 21:30 前付款",
                     Comment("douyin", "7312", f"m-{i}", f"u{i}", f"买家{i}", "鸡蛋来两盒", 1.0), None)
               for i in range(4000)]
    frames = _reply_frames(replies)
    assert len(frames) > 1
    assert all(len(f) <= REPLY_FRAME_BYTES for f in frames)
    assert [r["text"] for f in frames for r in orjson.loads(f)] == [r.text for r in replies]
    assert _reply_frames(replies[:1]) == [orjson.dumps([orjson.loads(frames[0])[0]])]
    big = Reply("x" * (REPLY_FRAME_BYTES + 10), None, None)  # one larger than the limit: a frame of its own
    assert [len(orjson.loads(f)) for f in _reply_frames([replies[0], big, replies[1]])] == [1, 1, 1]
