from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from livecart import registry
from livecart.adapters.hooks import DeliveryFailed, HttpPostHook
from livecart.core.events import Event, EventKind
from livecart.core.records import Outcome, Status
from livecart.runtime.hooks import HookRunner

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """A real aiohttp server on 127.0.0.1:0 whose answers the test scripts."""

    def __init__(self, answers: list[int | str]) -> None:
        self.answers = answers  # status codes, or "hang"
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(orjson.loads(await request.read()))
        self.headers.append(dict(request.headers))
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            await self.release.wait()
            answer = 200
        assert isinstance(answer, int)
        return web.Response(status=answer, text="ok" if answer < 300 else "no")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        self.release.set()
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def server_factory() -> AsyncIterator[Callable[[list[int | str]], Awaitable[Server]]]:
    servers: list[Server] = []

    async def make(answers: list[int | str]) -> Server:
        s = Server(answers)
        await s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        await s.stop()


def outcome(n: int = 1) -> Outcome:
    return Outcome(f"m-{n}", "u-1", f"o-{n:06d}", "egg-10", None, 2, Status.RESERVED, None, None, "douyin",
                   "7312", 1.5, n)


def hook(url: str, **opts: Any) -> HttpPostHook:
    return HttpPostHook({"url": url, "backoff": 0.01, "stream": "Spring", **opts}, name="shop")


def test_registered_in_the_entry_point_group() -> None:
    assert registry.hook_class("http_post") is HttpPostHook


async def test_retries_5xx_then_delivers(server_factory: Callable[[list[int | str]], Awaitable[Server]]) -> None:
    srv = await server_factory([503, 500])
    h = hook(srv.url, token="t0k")
    await h.open()
    try:
        await h.on_outcomes([outcome(1), outcome(2)])
    finally:
        await h.close()
    assert len(srv.bodies) == 3
    assert srv.bodies[-1]["stream"] == "Spring"
    assert [o["order"] for o in srv.bodies[-1]["outcomes"]] == ["o-000001", "o-000002"]
    assert srv.bodies[-1]["outcomes"][0]["status"] == "reserved"
    assert srv.headers[-1]["Authorization"] == "Bearer t0k"
    assert (h.posted, h.retried, h.gave_up) == (1, 2, 0)


async def test_gives_up_after_retries_and_counts_it(
        server_factory: Callable[[list[int | str]], Awaitable[Server]]) -> None:
    srv = await server_factory([500, 500, 500])
    h = hook(srv.url, retries=2)
    with pytest.raises(DeliveryFailed, match="after 3 attempt"):
        await h.on_outcomes([outcome()])
    await h.close()
    assert len(srv.bodies) == 3
    assert h.gave_up == 1


async def test_4xx_is_not_retried(server_factory: Callable[[list[int | str]], Awaitable[Server]]) -> None:
    srv = await server_factory([403])
    h = hook(srv.url)
    with pytest.raises(DeliveryFailed) as info:
        await h.on_outcomes([outcome()])
    await h.close()
    assert info.value.status == 403
    assert len(srv.bodies) == 1
    assert h.gave_up == 1


async def test_hanging_server_times_out_each_attempt(
        server_factory: Callable[[list[int | str]], Awaitable[Server]]) -> None:
    srv = await server_factory(["hang", "hang"])
    h = hook(srv.url, timeout=0.2, retries=1)
    with pytest.raises(DeliveryFailed, match="after 2 attempt"):
        await h.on_outcomes([outcome()])
    await h.close()
    assert h.retried == 1


async def test_connection_refused_is_retried_then_given_up() -> None:
    # Bind and close a socket to get a port nothing listens on.
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h = hook(f"http://127.0.0.1:{port}/hook", retries=2)
    with pytest.raises(DeliveryFailed):
        await h.on_event("sold_out", {"sku": "egg-10"})
    await h.close()
    assert (h.retried, h.gave_up) == (2, 1)


async def test_event_body(server_factory: Callable[[list[int | str]], Awaitable[Server]]) -> None:
    srv = await server_factory([])
    h = hook(srv.url)
    await h.on_event("sold_out", {"sku": "egg-10", "variant": None, "left": 0})
    await h.close()
    assert srv.bodies == [{"stream": "Spring", "event": {"kind": "sold_out", "sku": "egg-10", "variant": None,
                                                         "left": 0}}]


async def test_runner_isolates_a_hanging_http_hook(
        server_factory: Callable[[list[int | str]], Awaitable[Server]]) -> None:
    hang = await server_factory(["hang"] * 10)
    good = await server_factory([])
    runner = HookRunner([hook(hang.url, timeout=30.0, retries=0), hook(good.url)], stream="Spring",
                        timeout=0.3, grace=0.1)
    runner.hooks[0].name = "slow"
    await runner.start()
    runner.submit_outcomes([outcome(1)])
    runner.submit_event(Event(EventKind.SOLD_OUT, "egg-10", None, {"left": 0}))
    await asyncio.wait_for(runner.drained(), 10.0)
    await runner.close()
    assert [b.get("event", {}).get("kind") for b in good.bodies] == [None, "sold_out"]
    assert runner.count("shop", "outcomes", "ok") == 1
    assert runner.count("slow", "outcomes", "timeout") == 1
    assert runner.count("slow", "event", "timeout") == 1


def test_bad_url_is_refused_by_the_option_check() -> None:
    check = HttpPostHook.OPTIONS["url"].check
    assert check is not None
    assert check("ftp://x") is not None
    assert check("http://127.0.0.1:1/x") is None
