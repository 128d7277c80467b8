"""A fake Bilibili danmaku server: real 16-byte headers, zlib / brotli bodies of nested packets, op 3 replies
carrying a 4-byte popularity count, on a ``websockets`` server bound to 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from typing import Any

import brotli
import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

HEADER = struct.Struct(">IHHII")


def packet(op: int, body: bytes, ver: int = 0, seq: int = 0) -> bytes:
    return HEADER.pack(16 + len(body), 16, ver, op, seq) + body


def message(obj: Any) -> bytes:
    """One op-5 packet with a JSON body (protocol version 0)."""
    return packet(5, orjson.dumps(obj), ver=0)


def zlib_frame(*packets: bytes) -> bytes:
    return packet(5, zlib.compress(b"".join(packets)), ver=2)


def brotli_frame(*packets: bytes) -> bytes:
    return packet(5, brotli.compress(b"".join(packets)), ver=3)


def danmu(text: str, uid: int, name: str, ts_ms: int, id_str: str | None = None, cmd: str = "DANMU_MSG") -> dict[str, Any]:
    """A DANMU_MSG command shaped like the live servers' (info[0] has 16+ fields on current servers)."""
    meta: list[Any] = [0, 1, 25, 16777215, ts_ms, 1700000000, 0, "c8a2c3a1", 0, 0, 0, "", 0, "{}", "{}"]
    if id_str is not None:
        meta.append({"mode": 0, "extra": orjson.dumps({"id_str": id_str, "content": text}).decode()})
    return {"cmd": cmd, "info": [meta, text, [uid, name, 0, 0, 0, 10000, 1, ""], [], [0, 0, 9868950, ">50000"],
                                 ["", ""], 0, 0, None, {"ts": ts_ms // 1000, "ct": "AB12"}, 0, 0, None, None, 0, 7,
                                 [0]]}


def super_chat(ident: int, uid: int, uname: str, text: str, start: int, price: int = 30) -> dict[str, Any]:
    """A SUPER_CHAT_MESSAGE as the live servers send it (the fields livecart reads, and some it does not)."""
    return {"cmd": "SUPER_CHAT_MESSAGE", "roomid": 21452505,
            "data": {"id": ident, "uid": uid, "message": text, "price": price, "start_time": start,
                     "end_time": start + 60, "time": 60, "background_color": "#EDF5FF",
                     "user_info": {"uname": uname, "face": "http://i0.hdslb.com/bfs/face/x.jpg",
                                   "guard_level": 0}}}


class FakeBilibili:
    """Accepts connections, expects the auth packet first, answers heartbeats, sends what the test queues.

    Queue a frame with :meth:`send`; queue ``None`` to drop the current connection.
    """

    def __init__(self, *, auth_code: int = 0, popularity: int = 4321, refuse_by_closing: bool = False) -> None:
        """``refuse_by_closing``: answer the auth packet by closing the socket (how the live servers refuse a
        uid/key mismatch), not with a ``code`` reply."""
        self.auth_code = auth_code
        self.refuse_by_closing = refuse_by_closing
        self.popularity = popularity
        self.auths: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.connections = 0
        self.authed = asyncio.Event()
        self.heartbeat_seen = asyncio.Event()
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> FakeBilibili:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/sub"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def send(self, frame: bytes | None) -> None:
        self.outbox.put_nowait(frame)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        first = await ws.recv()
        assert isinstance(first, bytes)
        length, hlen, ver, op, seq = HEADER.unpack_from(first)
        if op != 7:
            await ws.close(1002, "auth expected first")
            return
        self.auths.append(orjson.loads(first[hlen:length]))
        if self.refuse_by_closing:
            await ws.close(1000)
            return
        await ws.send(packet(8, orjson.dumps({"code": self.auth_code}), ver=1, seq=1))
        self.authed.set()
        reader = asyncio.create_task(self._read(ws))
        try:
            while True:
                getter = asyncio.create_task(self.outbox.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():  # the client went away: leave the queued frames for the next connection
                    getter.cancel()
                    return
                frame = getter.result()
                if frame is None:
                    await ws.close()
                    return
                await ws.send(frame)
        finally:
            reader.cancel()

    async def _read(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._read_frames(ws)

    async def _read_frames(self, ws: ServerConnection) -> None:
        async for frame in ws:
            assert isinstance(frame, bytes)
            length, hlen, _, op, _ = HEADER.unpack_from(frame)
            if op == 2:
                self.heartbeats += 1
                # As the live servers answer: a packet of 16 + 4 bytes (the big-endian popularity count, not
                # JSON), and then the client's heartbeat body echoed back, outside the declared length.
                await ws.send(packet(3, self.popularity.to_bytes(4, "big"), ver=1, seq=1) + frame[hlen:length])
                self.heartbeat_seen.set()
