"""``bilibili``: live danmaku over Bilibili's WebSocket ("信息流") protocol.

Protocol (SocialSisterYi/bilibili-API-collect ``live/message_stream.md``; xfgryujk/blivedm ``ws_base.py``):

* Every packet starts with a 16-byte big-endian header: packet length (u32, header included), header length
  (u16, always 16), protocol version (u16), operation (u32), sequence (u32). One WebSocket binary frame may
  carry several packets back to back.
* Protocol versions: 0 = JSON body, 1 = a raw int body (heartbeat reply / auth), 2 = the body is a zlib stream
  of further packets, 3 = the body is a brotli stream of further packets.
* Operations: 2 heartbeat (client, every 30 s), 3 heartbeat reply (body: a 4-byte big-endian popularity
  count, *not* JSON, then the client's heartbeat body echoed back; the live servers put the echo after the
  4 bytes and count it in the frame but not always in the packet length, so it may trail the packet), 5 message (a JSON command such as ``DANMU_MSG``), 7 auth (client, the first packet,
  body JSON ``{"uid", "roomid", "protover", "platform", "type", "key", "buvid"}``), 8 auth reply
  (``{"code": 0}`` on success, ``-101`` for a bad token).
* ``DANMU_MSG`` (the ``cmd`` may carry a ``:suffix``): ``info[0][4]`` the send time in ms, ``info[1]`` the
  text, ``info[2][0]`` / ``info[2][1]`` uid and name, and on current servers ``info[0][15].extra`` a JSON
  string whose ``id_str`` is the message's id.
* ``SUPER_CHAT_MESSAGE``: ``data.id``, ``data.uid``, ``data.message``, ``data.price`` (yuan),
  ``data.start_time`` (s), ``data.user_info.uname``. A paid, pinned message: a buyer's words like any other.
  (``SUPER_CHAT_MESSAGE_JPN`` repeats it translated and is ignored.)
* Since 2023 a connection that is not logged in sees viewers masked after a few minutes: ``uid`` 0 and a
  name such as ``折***``. Such a comment names no buyer that can be told apart from another, so it is refused
  (counted as ``anonymous_buyer``) rather than filed under a shared user "0": one stranger's "cancel" must
  not cancel another's order, and strangers must not share a per-buyer limit. Log in (``uid``, ``token``,
  ``buvid``; README) to see buyers.

The codec (:func:`encode_packet`, :func:`decode_frame`, :func:`danmaku_to_comment`) is pure; the adapter
is the thin shell around a ``websockets`` client, with host failover and the shared reconnect loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

import brotli
import orjson
import websockets
from websockets.asyncio.client import ClientConnection, connect

from livecart.adapters._codec import RecentKeys, admit, load_json, with_defaults
from livecart.adapters.reconnect import Backoff, reconnecting
from livecart.core.errors import FatalAdapterError, MalformedInput, RetryableError
from livecart.core.records import Comment
from livecart.plugin import Adapter, AdapterStats, Option, check_more_than_zero

HEADER = struct.Struct(">IHHII")
HEADER_LEN = HEADER.size  # 16
#: A packet (or a decompressed body) larger than this is refused rather than inflated.
MAX_PACKET = 4 << 20
#: Nested compression deeper than this is refused (a packet of packets of packets ... is an attack).
MAX_DEPTH = 2


class Op(IntEnum):
    HEARTBEAT = 2
    HEARTBEAT_REPLY = 3
    MESSAGE = 5
    AUTH = 7
    AUTH_REPLY = 8


class Ver(IntEnum):
    JSON = 0
    INT = 1
    ZLIB = 2
    BROTLI = 3


_VERSIONS = frozenset(int(v) for v in Ver)
_OPS = frozenset(int(o) for o in Op)


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded (innermost) packet."""

    op: int
    ver: int
    body: bytes
    seq: int = 1


def encode_packet(op: int, body: bytes = b"", *, ver: int = Ver.INT, seq: int = 1) -> bytes:
    """One packet: the 16-byte header then ``body``."""
    return HEADER.pack(HEADER_LEN + len(body), HEADER_LEN, ver, op, seq) + body


def _inflate(ver: int, body: bytes) -> bytes:
    try:
        if ver == Ver.ZLIB:
            d = zlib.decompressobj()
            inflated = d.decompress(body, MAX_PACKET)
            if d.unconsumed_tail:
                raise MalformedInput("oversized", f"zlib body inflates past {MAX_PACKET} bytes")
            return inflated
        out: bytes = brotli.decompress(body)
    except (zlib.error, brotli.error) as exc:
        raise MalformedInput("bad_compression", f"protocol version {ver} body does not decompress: {exc}",
                             body[:64]) from exc
    if len(out) > MAX_PACKET:
        raise MalformedInput("oversized", f"brotli body inflates to {len(out)} bytes")
    return out


def _packet_starts(data: bytes, pos: int) -> bool:
    """Whether a well-formed packet header (of a known operation) starts at ``pos``."""
    if len(data) - pos < HEADER_LEN:
        return False
    length, hlen, ver, op, _ = HEADER.unpack_from(data, pos)
    return (hlen == HEADER_LEN and HEADER_LEN <= length <= len(data) - pos and ver in _VERSIONS
            and op in _OPS)


def decode_frame(data: bytes, _depth: int = 0) -> list[Packet]:
    """Every innermost packet in one WebSocket frame, compressed bodies unpacked (protover 2 and 3).

    Raises :class:`MalformedInput` for a truncated or inconsistent header, a bad compressed body, or an
    unknown protocol version; the frame is then dropped as a whole.
    """
    out: list[Packet] = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < HEADER_LEN:
            raise MalformedInput("truncated", f"{n - pos} bytes left, a header needs {HEADER_LEN}", data[pos:pos + 32])
        length, hlen, ver, op, seq = HEADER.unpack_from(data, pos)
        if hlen < HEADER_LEN or length < hlen or pos + length > n:
            raise MalformedInput("bad_header", f"packet length {length}, header length {hlen}, "
                                 f"{n - pos} bytes available", data[pos:pos + 32])
        body = data[pos + hlen:pos + length]
        pos += length
        if op == Op.HEARTBEAT_REPLY and pos < n and not _packet_starts(data, pos):
            # The echoed heartbeat body trails the popularity count beyond the declared length: it belongs
            # to this packet, not to a next one.
            body += data[pos:]
            pos = n
        if ver in (Ver.ZLIB, Ver.BROTLI) and op == Op.MESSAGE:
            if _depth >= MAX_DEPTH:
                raise MalformedInput("bad_header", "compressed packets nested too deep")
            out.extend(decode_frame(_inflate(ver, body), _depth + 1))
        elif ver in (Ver.JSON, Ver.INT, Ver.ZLIB, Ver.BROTLI):
            out.append(Packet(op, ver, body, seq))
        else:
            raise MalformedInput("bad_version", f"unknown protocol version {ver}", data[:32])
    return out


def heartbeat_popularity(body: bytes) -> int:
    """The popularity count of a heartbeat reply: its first four bytes, big-endian (the body is not JSON).

    What follows the four bytes is the client's heartbeat body echoed back, and is ignored.
    """
    if len(body) < 4:
        raise MalformedInput("truncated", f"heartbeat reply body is {len(body)} bytes, expected 4", body)
    return int.from_bytes(body[:4], "big")


def auth_body(room: int, *, uid: int = 0, token: str = "", buvid: str = "", protover: int = Ver.BROTLI) -> bytes:
    """The JSON body of the auth packet (operation 7)."""
    body: dict[str, Any] = {"uid": uid, "roomid": room, "protover": protover, "platform": "web", "type": 2}
    if token:
        body["key"] = token
    if buvid:
        body["buvid"] = buvid
    return orjson.dumps(body)


def _message_id(meta: list[Any]) -> str | None:
    # info[0][15] is "mode_info"; its "extra" is a JSON *string* holding id_str on current servers.
    if len(meta) <= 15 or not isinstance(meta[15], dict):
        return None
    extra = meta[15].get("extra")
    if isinstance(extra, str):
        try:
            extra = orjson.loads(extra)
        except orjson.JSONDecodeError:
            return None
    if isinstance(extra, dict):
        ident = extra.get("id_str")
        if isinstance(ident, str) and ident:
            return ident
    return None


#: Why a masked viewer's comment is refused (logged once, then counted).
ANONYMOUS_DETAIL = ("uid 0 (a masked viewer such as '折***'): Bilibili hides viewers from connections that are "
                    "not logged in; the comment is refused so that strangers are never merged into one buyer. "
                    "Set uid, token and buvid from a logged-in session (README, bilibili)")


def _uid(value: Any) -> str | None:
    """A viewer's uid as a string, or None when the viewer is masked (0, empty, missing)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    if isinstance(value, str) and value.strip() not in ("", "0"):
        return value.strip()
    return None


def danmaku_to_comment(command: Any, room: str) -> Comment | None:
    """The comment in one decoded command (``DANMU_MSG`` or ``SUPER_CHAT_MESSAGE``), or None for others.

    Raises :class:`MalformedInput` for a command whose fields lack the text, the user or the time, and with
    reason ``anonymous_buyer`` for a masked viewer (uid 0): see the module docstring.
    """
    if not isinstance(command, dict):
        raise MalformedInput("not_an_object", "a message body must be a JSON object", command)
    cmd = command.get("cmd")
    if not isinstance(cmd, str):
        raise MalformedInput("missing_field", "message has no 'cmd'", command)
    kind = cmd.split(":", 1)[0]
    if kind == "SUPER_CHAT_MESSAGE":
        return _super_chat(command, room)
    if kind != "DANMU_MSG":
        return None
    info = command.get("info")
    try:
        meta, text, user = info[0], info[1], info[2]  # type: ignore[index]
        ts_ms = meta[4]
        uid, uname = user[0], user[1]
    except (TypeError, IndexError, KeyError) as exc:
        raise MalformedInput("missing_field", f"DANMU_MSG info is not the expected shape: {exc}", command) from exc
    if not isinstance(ts_ms, int | float) or isinstance(ts_ms, bool):
        raise MalformedInput("missing_field", "DANMU_MSG info[0][4] (time) must be a number", command)
    user_id = _uid(uid)
    if user_id is None:
        raise MalformedInput("anonymous_buyer", ANONYMOUS_DETAIL, {"name": uname, "text": text})
    fields: dict[str, Any] = {"platform": "bilibili", "room": room, "user": user_id, "name": uname or user_id,
                              "text": text, "ts": ts_ms / 1000.0}
    ident = _message_id(meta) if isinstance(meta, list) else None
    if ident is not None:
        fields["id"] = ident
    return Comment.from_mapping(fields)


def _super_chat(command: dict[str, Any], room: str) -> Comment:
    data = command.get("data")
    if not isinstance(data, dict):
        raise MalformedInput("missing_field", "SUPER_CHAT_MESSAGE has no 'data' object", command)
    ident, start = data.get("id"), data.get("start_time")
    if isinstance(ident, bool) or not isinstance(ident, int | str) or ident in ("", 0):
        raise MalformedInput("missing_field", "SUPER_CHAT_MESSAGE data.id is missing", command)
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise MalformedInput("missing_field", "SUPER_CHAT_MESSAGE data.start_time must be a number", command)
    info = data.get("user_info")
    uname = info.get("uname") if isinstance(info, dict) else None
    user_id = _uid(data.get("uid"))
    if user_id is None:
        raise MalformedInput("anonymous_buyer", ANONYMOUS_DETAIL, {"name": uname, "text": data.get("message")})
    # Super chat ids are their own sequence: prefixed so they can never collide with a danmaku's id_str.
    return Comment.from_mapping({"platform": "bilibili", "room": room, "id": f"sc-{ident}", "user": user_id,
                                 "name": uname or user_id, "text": data.get("message"),
                                 "ts": float(start)})


def _hosts(v: Any) -> str | None:
    if not v or not all(isinstance(h, str) and h.startswith(("ws://", "wss://")) for h in v):
        return "must be a non-empty list of ws:// or wss:// URLs"
    return None


class BilibiliAdapter(Adapter):
    """Danmaku of one Bilibili live room. Bilibili has no reply API for third parties: ``can_reply`` is False."""

    type = "bilibili"
    OPTIONS: ClassVar = {
        "room": Option(int, required=True, check=check_more_than_zero, doc="the real (long) room id"),
        "hosts": Option(list, ["wss://broadcastlv.chat.bilibili.com/sub"], check=_hosts,
                        doc="danmaku server URLs, tried in turn (failover)"),
        "uid": Option(int, 0, doc="uid for the auth packet (0 = anonymous)"),
        "token": Option(str, "", doc="the 'key' from getDanmuInfo (anonymous connections may omit it)"),
        "buvid": Option(str, "", doc="the buvid3 cookie, sent in the auth packet"),
        "heartbeat_interval": Option(float, 30.0, check=check_more_than_zero, doc="seconds between heartbeats"),
        "auth_timeout": Option(float, 5.0, check=check_more_than_zero, doc="longest wait for the auth reply"),
        "auth_attempts": Option(int, 3, check=check_more_than_zero,
                                doc="connections in a row closed by the server right after the auth packet "
                                    "(its way of refusing a uid/token/buvid that do not match) before giving up"),
        "idle_timeout": Option(float, 75.0, check=check_more_than_zero,
                               doc="reconnect when nothing (not even a heartbeat reply) arrives for this long"),
        "retry_initial": Option(float, 0.5, check=check_more_than_zero, doc="first reconnect delay (s)"),
        "retry_max": Option(float, 30.0, check=check_more_than_zero, doc="longest reconnect delay (s)"),
    }

    def __init__(self, options: Any, *, name: str, stats: AdapterStats | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"bilibili {name}"), name=name, stats=stats)
        self._sleep = sleep
        self._room = str(self.options["room"])
        self._hosts: list[str] = list(self.options["hosts"])
        self._host_index = 0
        self._ws: ClientConnection | None = None
        self._seen = RecentKeys(8192)
        self.popularity = 0
        self.heartbeats_sent = 0
        self.heartbeat_replies = 0
        self.host_failures = 0
        self.current_host: str | None = None
        #: Connections in a row that the server closed before answering the auth packet.
        self.auth_closed = 0

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        await super().close()

    def _policy(self) -> Backoff:
        return Backoff(initial=float(self.options["retry_initial"]), cap=float(self.options["retry_max"]))

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        return reconnecting(self._connection, stats=self.stats, policy=self._policy(), sleep=self._sleep)

    async def _connection(self) -> AsyncIterator[Sequence[Comment]]:
        if self._closed:
            return
        url = self._hosts[self._host_index % len(self._hosts)]
        self.current_host = url
        try:
            async with connect(url, max_size=MAX_PACKET, ping_interval=None, open_timeout=10) as ws:
                self._ws = ws
                await self._authenticate(ws)
                # One named background task per connection; the reader owns it and cancels it on the way out
                # (a TaskGroup would wrap the reader's RetryableError in an ExceptionGroup).
                beat = asyncio.create_task(self._heartbeat(ws), name=f"bilibili-{self.name}-heartbeat")
                try:
                    async for batch in self._read(ws):
                        yield batch
                finally:
                    beat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beat
        except FatalAdapterError:
            raise
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException, RetryableError) as exc:
            if self._closed:
                return
            # Failover: the next attempt goes to the next host in the list.
            self.host_failures += 1
            self._host_index += 1
            raise RetryableError(f"bilibili {url}: {exc!r}") from exc
        finally:
            self._ws = None

    async def _authenticate(self, ws: ClientConnection) -> None:
        o = self.options
        await ws.send(encode_packet(Op.AUTH, auth_body(int(o["room"]), uid=int(o["uid"]), token=o["token"],
                                                       buvid=o["buvid"])))
        try:
            async with asyncio.timeout(float(o["auth_timeout"])):
                while True:
                    try:
                        frame = await ws.recv()
                    except websockets.exceptions.ConnectionClosed as exc:
                        self._auth_closed(exc)
                        raise
                    if isinstance(frame, str):
                        frame = frame.encode()
                    try:
                        packets = decode_frame(frame)
                    except MalformedInput as exc:
                        self.stats.malformed(exc.reason, exc.detail, exc.sample)
                        continue
                    for p in packets:
                        if p.op == Op.AUTH_REPLY:
                            self._check_auth_reply(p.body)
                            self.auth_closed = 0
                            return
        except TimeoutError as exc:
            raise RetryableError(f"bilibili: no auth reply within {o['auth_timeout']}s") from exc

    def _auth_closed(self, exc: Exception) -> None:
        """A refused auth is often a bare close, not a ``code`` reply: give up after ``auth_attempts`` in a row."""
        self.auth_closed += 1
        limit = int(self.options["auth_attempts"])
        if self.auth_closed >= limit:
            raise FatalAdapterError(
                f"bilibili room {self._room}: auth refused: the server closed the connection right after the "
                f"auth packet {self.auth_closed} times in a row ({exc}); check room, uid, token and buvid "
                "(token comes from getDanmuInfo with the same login as uid)") from exc

    def _check_auth_reply(self, body: bytes) -> None:
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RetryableError(f"bilibili: auth reply is not JSON: {body[:80]!r}") from exc
        code = reply.get("code") if isinstance(reply, dict) else None
        if code != 0:
            raise FatalAdapterError(f"bilibili room {self._room}: auth refused (code {code!r}); "
                                    "check room, uid, token and buvid")

    async def _heartbeat(self, ws: ClientConnection) -> None:
        interval = float(self.options["heartbeat_interval"])
        # The web client sends the text "[object Object]" as the heartbeat body; the server ignores it.
        packet = encode_packet(Op.HEARTBEAT, b"[object Object]")
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):  # the reader sees the close too
            while True:
                await ws.send(packet)
                self.heartbeats_sent += 1
                await asyncio.sleep(interval)

    async def _read(self, ws: ClientConnection) -> AsyncIterator[Sequence[Comment]]:
        idle = float(self.options["idle_timeout"])
        while True:
            try:
                async with asyncio.timeout(idle):
                    frame = await ws.recv()
            except TimeoutError as exc:
                raise RetryableError(f"bilibili: nothing received for {idle}s") from exc
            if isinstance(frame, str):
                self.stats.malformed("text_frame", "expected a binary frame", frame[:80])
                continue
            batch = self.handle_frame(frame)
            if batch:
                yield batch

    def handle_frame(self, frame: bytes) -> list[Comment]:
        """The new comments in one frame; malformed packets are counted and skipped, duplicates dropped."""
        try:
            packets = decode_frame(frame)
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return []
        out: list[Comment] = []
        for p in packets:
            if p.op == Op.HEARTBEAT_REPLY:
                try:
                    self.popularity = heartbeat_popularity(p.body)
                    self.heartbeat_replies += 1
                except MalformedInput as exc:
                    self.stats.malformed(exc.reason, exc.detail, exc.sample)
            elif p.op == Op.MESSAGE:
                try:
                    comment = danmaku_to_comment(load_json(p.body), self._room)
                except MalformedInput as exc:
                    self.stats.malformed(exc.reason, exc.detail, exc.sample)
                    continue
                admit(out, comment, self._seen, self.stats)
        return out

