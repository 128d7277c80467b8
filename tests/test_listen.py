"""Connection hygiene (:mod:`livecart.listen`) on a real listening socket: the cap, the request timeout, the
idle timeout, each counted. An echo protocol stands for the listener's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from livecart.listen import Guard, default_cap, nofile_limit, raise_nofile_limit

DEADLINE = 10.0


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.fixture
async def served() -> AsyncIterator[tuple[Guard, int]]:
    guard = Guard("test", max_connections=3, idle_timeout=0.6, request_timeout=0.3)
    server = await asyncio.get_running_loop().create_server(guard.wrap(Echo), "127.0.0.1", 0)
    try:
        yield guard, server.sockets[0].getsockname()[1]
    finally:
        guard.close()
        server.close()


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed (or reset) the connection."""
    try:
        async with asyncio.timeout(DEADLINE):
            return await reader.read(100) == b""
    except ConnectionResetError:
        return True


async def test_connections_over_the_cap_are_refused_and_counted(served: tuple[Guard, int]) -> None:
    guard, port = served
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    for _, w in conns:
        w.write(b"GET / HTTP/1.1\r\n\r\n")
    for r, _ in conns:
        assert await r.readexactly(18) == b"GET / HTTP/1.1\r\n\r\n"
    r4, w4 = await asyncio.open_connection("127.0.0.1", port)
    assert await closed(r4)
    w4.close()
    assert guard.counts["refused"] == 1
    assert len(guard.live) == 3
    for _, w in conns:
        w.close()


async def test_a_connection_without_a_complete_request_head_is_closed(served: tuple[Guard, int]) -> None:
    guard, port = served
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # slow headers: never the blank line
    assert await r.readexactly(25)
    assert await closed(r)
    w.close()
    assert guard.counts["request_timeout"] == 1


async def test_a_silent_connection_is_closed_after_the_idle_timeout(served: tuple[Guard, int]) -> None:
    guard, port = served
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\n")
    w.write(b"\r\n")  # the head completes across two writes
    await r.readexactly(18)
    assert await closed(r)
    w.close()
    assert guard.counts["idle"] == 1
    assert guard.counts["request_timeout"] == 0


def test_the_soft_descriptor_limit_is_raised_and_caps_stay_below_it() -> None:
    soft = raise_nofile_limit()
    assert soft == nofile_limit()[0]
    assert 4 * default_cap() <= max(soft, 4 * 16)


async def test_a_streaming_connection_is_not_closed_for_idleness(served: tuple[Guard, int]) -> None:
    guard, port = served
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /events HTTP/1.1\r\n\r\n")
    await r.readexactly(24)
    [conn] = guard.live
    guard.streaming(conn.transport)
    other_r, other_w = await asyncio.open_connection("127.0.0.1", port)
    other_w.write(b"GET / HTTP/1.1\r\n\r\n")
    await other_r.readexactly(18)
    assert await closed(other_r)  # the plain silent one goes after 0.6 s ...
    assert guard.counts["idle"] == 1
    assert conn in guard.live  # ... the streaming one stays
    w.write(b"x")
    assert await r.readexactly(1) == b"x"
    w.close()
    other_w.close()
