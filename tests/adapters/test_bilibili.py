from __future__ import annotations

import asyncio
import base64
import socket
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import brotli
import orjson
import pytest

from livecart.adapters.bilibili import (
    BilibiliAdapter,
    Op,
    danmaku_to_comment,
    decode_frame,
    encode_packet,
    heartbeat_popularity,
)
from livecart.core.errors import FatalAdapterError, MalformedInput
from livecart.core.records import Comment, stable_comment_id
from tests.adapters.fakes.fake_bilibili import (
    FakeBilibili,
    brotli_frame,
    danmu,
    message,
    packet,
    super_chat,
    zlib_frame,
)

FIXTURES = Path(__file__).parent / "fixtures"

ROOM = 21452505


def adapter(hosts: list[str], **extra: Any) -> BilibiliAdapter:
    opts: dict[str, Any] = {"room": ROOM, "hosts": hosts, "uid": 0, "token": "", "buvid": "",
                            "heartbeat_interval": 30.0, "auth_timeout": 5.0, "idle_timeout": 75.0,
                            "retry_initial": 0.01, "retry_max": 0.05}
    opts.update(extra)
    return BilibiliAdapter(opts, name="bili")


async def take(it: AsyncIterator[Sequence[Comment]], n: int) -> list[Comment]:
    """The next ``n`` comments (the fake's events make the wait short; the timeout is only a safety bound)."""


    got: list[Comment] = []
    async with asyncio.timeout(10):
        while len(got) < n:
            got.extend(await anext(it))
    return got


# --- the codec, values in / values out -------------------------------------------------------------------

def test_header_is_16_bytes_big_endian() -> None:
    raw = encode_packet(Op.HEARTBEAT, b"ab", ver=1, seq=9)
    assert raw[:16] == bytes.fromhex("00000012 0010 0001 00000002 00000009".replace(" ", ""))
    assert decode_frame(raw)[0].body == b"ab"


def test_several_packets_in_one_frame_are_all_decoded() -> None:
    frame = message({"cmd": "A"}) + message({"cmd": "B"}) + packet(3, (7).to_bytes(4, "big"), ver=1)
    ops = [(p.op, p.body) for p in decode_frame(frame)]
    assert ops == [(5, b'{"cmd":"A"}'), (5, b'{"cmd":"B"}'), (3, b"\x00\x00\x00\x07")]


@pytest.mark.parametrize("wrap", [zlib_frame, brotli_frame])
def test_compressed_bodies_hold_nested_packets(wrap: Any) -> None:
    frame = wrap(message({"cmd": "A"}), message({"cmd": "B"})) + message({"cmd": "C"})
    assert [orjson.loads(p.body)["cmd"] for p in decode_frame(frame)] == ["A", "B", "C"]


def test_heartbeat_reply_body_is_a_4_byte_int_not_json() -> None:
    assert heartbeat_popularity(b"\x00\x01\x00\x00") == 65536
    with pytest.raises(MalformedInput):
        heartbeat_popularity(b"\x01")


@pytest.mark.parametrize(("frame", "reason"), [
    (b"\x00\x00\x00\x20\x00\x10", "truncated"),
    (packet(5, b"xx")[:-1], "bad_header"),
    (packet(5, b"not zlib", ver=2), "bad_compression"),
    (packet(5, b"not brotli", ver=3), "bad_compression"),
    (packet(5, b"{}", ver=9), "bad_version"),
])
def test_malformed_frames_raise_malformed_input(frame: bytes, reason: str) -> None:
    with pytest.raises(MalformedInput) as info:
        decode_frame(frame)
    assert info.value.reason == reason


def test_zlib_bomb_is_refused() -> None:
    frame = packet(5, zlib.compress(b"\x00" * (8 << 20)), ver=2)
    with pytest.raises(MalformedInput, match="oversized"):
        decode_frame(frame)


def test_danmu_msg_maps_to_a_comment_with_the_message_id_from_extra() -> None:
    c = danmaku_to_comment(danmu("鸡蛋来两盒", 42, "张三", 1700000000123, id_str="abc123"), "7")
    assert c == Comment("bilibili", "7", "abc123", "42", "张三", "鸡蛋来两盒", 1700000000.123)


def test_danmu_msg_without_an_id_gets_the_stable_hash_and_cmd_suffix_is_ignored() -> None:
    c = danmaku_to_comment(danmu("+1", 42, "张三", 1700000000000, cmd="DANMU_MSG:4:0:2:2:2:0"), "7")
    assert c is not None
    assert c.id == stable_comment_id("bilibili", "7", "42", 1700000000.0, "+1")


def test_other_commands_are_not_comments() -> None:
    assert danmaku_to_comment({"cmd": "SEND_GIFT", "data": {}}, "7") is None
    with pytest.raises(MalformedInput):
        danmaku_to_comment({"cmd": "DANMU_MSG", "info": [[0]]}, "7")


# --- the adapter against the fake server ---------------------------------------------------------------

async def test_handshake_sends_auth_first_and_reads_brotli_danmaku() -> None:
    async with FakeBilibili() as fake:
        a = adapter([fake.url], uid=5, token="tok", buvid="BUV")
        it = a.batches()
        fake.send(brotli_frame(message(danmu("鸡蛋来两盒", 1, "a", 1700000000000, "m1")),
                               message({"cmd": "INTERACT_WORD", "data": {}}),
                               message(danmu("2号链接拍3", 2, "b", 1700000001000, "m2"))))
        got = await take(it, 2)
        await it.aclose()
        await a.close()
    assert [c.text for c in got] == ["鸡蛋来两盒", "2号链接拍3"]
    assert [c.id for c in got] == ["m1", "m2"]
    assert fake.auths == [{"uid": 5, "roomid": ROOM, "protover": 3, "platform": "web", "type": 2,
                           "key": "tok", "buvid": "BUV"}]


async def test_heartbeats_are_sent_and_the_int_reply_does_not_break_the_reader() -> None:
    async with FakeBilibili(popularity=98765) as fake:
        a = adapter([fake.url], heartbeat_interval=0.01)
        it = a.batches()
        first = await take_after(it, fake)
        await it.aclose()
        await a.close()
    assert first[0].text == "after heartbeat"
    assert fake.heartbeats >= 1
    assert a.heartbeats_sent >= 1
    assert a.heartbeat_replies >= 1
    assert a.popularity == 98765
    assert a.stats.malformed_total == 0


async def take_after(it: AsyncIterator[Sequence[Comment]], fake: FakeBilibili) -> list[Comment]:


    async def feed() -> None:
        await fake.heartbeat_seen.wait()  # the fake has answered a heartbeat; a danmaku follows on the wire
        fake.send(message(danmu("after heartbeat", 1, "a", 1700000000000, "hb")))

    task = asyncio.create_task(feed())
    try:
        return await take(it, 1)
    finally:
        await task


async def test_reconnects_after_a_drop_and_drops_the_redelivered_duplicate() -> None:
    async with FakeBilibili() as fake:
        a = adapter([fake.url])
        it = a.batches()
        fake.send(message(danmu("one", 1, "a", 1700000000000, "m1")))
        fake.send(None)  # the server drops the connection
        fake.send(zlib_frame(message(danmu("one", 1, "a", 1700000000000, "m1")),
                             message(danmu("two", 1, "a", 1700000002000, "m2"))))
        got = await take(it, 2)
        await it.aclose()
        await a.close()
    assert [c.id for c in got] == ["m1", "m2"]
    assert fake.connections == 2
    assert len(fake.auths) == 2
    assert a.stats.reconnects == 1
    assert a.stats.duplicates == 1


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}/sub"  # nothing listens there any more


async def test_fails_over_to_the_next_host() -> None:
    async with FakeBilibili() as fake:
        a = adapter([_dead_url(), fake.url])
        it = a.batches()
        fake.send(message(danmu("hi", 1, "a", 1700000000000, "m1")))
        got = await take(it, 1)
        await it.aclose()
        await a.close()
    assert got[0].text == "hi"
    assert a.host_failures == 1
    assert a.current_host == fake.url


async def test_malformed_frames_are_counted_and_the_stream_goes_on() -> None:
    async with FakeBilibili() as fake:
        a = adapter([fake.url])
        it = a.batches()
        fake.send(b"\x00\x00")                                       # truncated header
        fake.send(packet(5, b"{not json", ver=0))                    # bad JSON body
        fake.send(packet(5, b"garbage", ver=3))                      # bad brotli
        fake.send(message({"cmd": "DANMU_MSG", "info": "nope"}))     # wrong shape
        fake.send(packet(3, b"\x01", ver=1))                         # short heartbeat reply
        fake.send(message(danmu("ok", 1, "a", 1700000000000, "m9")))
        got = await take(it, 1)
        await it.aclose()
        await a.close()
    assert [c.text for c in got] == ["ok"]
    assert a.stats.malformed_by_reason == {"truncated": 2, "bad_json": 1, "bad_compression": 1,
                                           "missing_field": 1}


async def test_refused_auth_is_fatal_not_retried() -> None:
    async with FakeBilibili(auth_code=-101) as fake:
        a = adapter([fake.url])
        with pytest.raises(FatalAdapterError, match="auth refused"):
            async for _ in a.batches():
                pass
        await a.close()
    assert fake.connections == 1


def test_brotli_module_round_trips() -> None:
    assert brotli.decompress(brotli.compress(b"x")) == b"x"


# --- the awkward real shapes (issue #16) -------------------------------------------------------------------

HEARTBEAT_BODY = b"[object Object]"


def test_heartbeat_reply_with_the_echo_after_the_declared_length_is_one_packet() -> None:
    frame = packet(3, (1234).to_bytes(4, "big"), ver=1) + HEARTBEAT_BODY  # as the live servers send it
    [p] = decode_frame(frame)
    assert (p.op, heartbeat_popularity(p.body), p.body[4:]) == (3, 1234, HEARTBEAT_BODY)


def test_heartbeat_reply_with_the_echo_inside_the_declared_length_is_one_packet() -> None:
    [p] = decode_frame(packet(3, (7).to_bytes(4, "big") + HEARTBEAT_BODY, ver=1))
    assert heartbeat_popularity(p.body) == 7


def test_a_real_packet_after_a_heartbeat_reply_is_still_decoded() -> None:
    frame = packet(3, (7).to_bytes(4, "big"), ver=1) + message({"cmd": "X"})
    assert [p.op for p in decode_frame(frame)] == [3, 5]


def test_masked_viewer_is_refused_not_filed_as_user_0() -> None:
    with pytest.raises(MalformedInput) as info:
        danmaku_to_comment(danmu("+1", 0, "折***", 1700000000000, "m1"), "7")
    assert info.value.reason == "anonymous_buyer"
    assert "log" in info.value.detail  # says how to fix it


def test_super_chat_is_a_comment_with_its_own_id_space() -> None:
    c = danmaku_to_comment(super_chat(9001, 42, "张三", "3号链接来两件", 1700000100), "7")
    assert c == Comment("bilibili", "7", "sc-9001", "42", "张三", "3号链接来两件", 1700000100.0)
    assert danmaku_to_comment({"cmd": "SUPER_CHAT_MESSAGE_JPN", "data": {}}, "7") is None
    with pytest.raises(MalformedInput, match="anonymous_buyer"):
        danmaku_to_comment(super_chat(9002, 0, "折***", "+1", 1700000100), "7")


async def test_heartbeat_echo_from_the_server_is_not_malformed() -> None:
    async with FakeBilibili(popularity=555) as fake:
        a = adapter([fake.url], heartbeat_interval=0.01)
        it = a.batches()
        await take_after(it, fake)
        await it.aclose()
        await a.close()
    assert a.popularity == 555
    assert a.stats.malformed_total == 0


async def test_masked_viewers_are_counted_and_two_of_them_never_become_one_buyer() -> None:
    async with FakeBilibili() as fake:
        a = adapter([fake.url])
        it = a.batches()
        fake.send(brotli_frame(message(danmu("+1", 0, "折***", 1700000000000, "a1")),
                               message(danmu("取消", 0, "王***", 1700000001000, "a2")),
                               message(danmu("+1", 77, "李四", 1700000002000, "a3"))))
        got = await take(it, 1)
        await it.aclose()
        await a.close()
    assert [(c.user, c.text) for c in got] == [("77", "+1")]
    assert a.stats.malformed_by_reason == {"anonymous_buyer": 2}


async def test_auth_refused_by_a_bare_close_gives_up_after_auth_attempts() -> None:
    async with FakeBilibili(refuse_by_closing=True) as fake:
        a = adapter([fake.url], auth_attempts=3)
        with pytest.raises(FatalAdapterError, match="auth refused"):
            async for _ in a.batches():
                pass
        await a.close()
    assert fake.connections == 3


async def test_replay_of_a_recorded_session() -> None:
    """Server frames of a recorded session (tests/adapters/fixtures/bilibili_session.jsonl, base64 of the
    bytes on the wire) through the fake: the comments that come out and what is refused."""
    frames = [base64.b64decode(orjson.loads(line)["frame"])
              for line in (FIXTURES / "bilibili_session.jsonl").read_text().splitlines() if line.strip()]
    async with FakeBilibili() as fake:
        a = adapter([fake.url])
        it = a.batches()
        for f in frames:
            fake.send(f)
        got = await take(it, 4)
        await it.aclose()
        await a.close()
    assert [(c.id, c.user, c.name, c.text) for c in got] == [
        ("5f0e1a", "38291", "小鱼", "1号链接来两盒"),
        ("5f0e1b", "91823", "阿花", "A1+1"),
        ("sc-11235", "38291", "小鱼", "3号 黑色L 拍一件"),
        ("5f0e1d", "10293", "Tom", "取消"),
    ]
    assert a.heartbeat_replies >= 1  # the recorded reply (with its echo) counted, not malformed
    assert a.stats.malformed_by_reason == {"anonymous_buyer": 1}
    assert a.stats.duplicates == 1
