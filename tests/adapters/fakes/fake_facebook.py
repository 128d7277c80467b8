"""A fake of the Graph API's live-comments stream and reply edge on 127.0.0.1:0.

``GET /{video}/live_comments`` answers ``text/event-stream``. Each connection plays the next *session* the
test queued: a list of byte chunks written as they are (so a test can split an event mid-line, use CRLF,
send keep-alive comments, ``id:`` and ``retry:`` fields), then the stream closes. With no session queued the
connection stays open until the test adds one or the fake stops. A wrong token gets the Graph error body
(code 190). ``POST /{version}/{id}/comments`` records replies.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from livecart.adapters._intake import Milestone


def sse(obj: Any, *, ident: str | None = None) -> bytes:
    """One event whose data is ``obj`` as JSON."""
    head = f"id: {ident}\n" if ident is not None else ""
    return (head + "data: " + orjson.dumps(obj).decode() + "\n\n").encode()


def fb_comment(cid: str, message: str, *, uid: str | None = "10229000000000001", name: str = "Mei Lin",
               created: str = "2024-11-30T06:00:00+0000") -> dict[str, Any]:
    c: dict[str, Any] = {"id": cid, "message": message, "created_time": created}
    if uid is not None:
        c["from"] = {"id": uid, "name": name}
    return c


class FakeGraph:
    def __init__(self, *, token: str = "page-token", video: str = "1900000000000001") -> None:
        self.token = token
        self.video = video
        self.sessions: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self.requests: list[dict[str, str]] = []
        #: Stream requests so far, awaitable (``await g.arrived.reached(2)``).
        self.arrived = Milestone()
        self.replies: list[tuple[str, str]] = []
        self.error: tuple[int, dict[str, Any]] | None = None
        self.reply_error: tuple[int, dict[str, Any]] | None = None
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> FakeGraph:
        app = web.Application()
        app.router.add_get("/{video}/live_comments", self._stream)
        app.router.add_post("/{version}/{target}/comments", self._reply)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def play(self, *chunks: bytes) -> None:
        """Queue one connection's worth of bytes (it closes after them)."""
        self.sessions.put_nowait(list(chunks))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({**request.query, **{k: v for k, v in request.headers.items()
                                                   if k.lower() == "last-event-id"}})
        self.arrived.advance()
        if request.query.get("access_token") != self.token:
            return web.json_response({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException",
                                                "code": 190, "fbtrace_id": "AbC"}}, status=400)
        if self.error is not None:
            status, body = self.error
            return web.json_response(body, status=status)
        if request.match_info["video"] != self.video:
            return web.json_response({"error": {"message": "Unsupported get request.", "code": 100}}, status=400)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for chunk in await self.sessions.get():
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def _reply(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("access_token") != self.token:
            return web.json_response({"error": {"message": "Invalid OAuth access token.", "code": 190}}, status=400)
        if self.reply_error is not None:
            return web.json_response(self.reply_error[1], status=self.reply_error[0])
        self.replies.append((request.match_info["target"], str(form.get("message"))))
        return web.json_response({"id": f"{request.match_info['target']}_r{len(self.replies)}"})
