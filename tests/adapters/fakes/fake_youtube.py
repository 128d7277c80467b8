"""A fake YouTube Data API v3 ``liveChat/messages`` endpoint: JSON over HTTP on an aiohttp server at
127.0.0.1:0, answering from a script of pages and API errors, recording every request.

``streams`` scripts ``liveChat/messages/stream`` (streamList): each connection writes the next list of
response objects as one JSON array, a few bytes at a time (so objects arrive split across chunks), then
closes. Without ``streams`` the stream endpoint does not exist (404), as where streamList is not offered.
``POST liveChat/messages`` (insert) records the replies."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def message(msg_id: str, text: str, *, channel: str = "UC42", name: str = "Ann",
            published: str = "2024-05-01T10:00:00.123456Z", kind: str = "textMessageEvent") -> dict[str, Any]:
    """A liveChatMessage resource as the API returns it."""
    snippet: dict[str, Any] = {"type": kind, "liveChatId": "chat-1", "authorChannelId": channel,
                               "publishedAt": published, "hasDisplayContent": True, "displayMessage": text}
    if kind == "textMessageEvent":
        snippet["textMessageDetails"] = {"messageText": text}
    return {"kind": "youtube#liveChatMessage", "etag": "e", "id": msg_id, "snippet": snippet,
            "authorDetails": {"channelId": channel, "channelUrl": f"http://www.youtube.com/channel/{channel}",
                              "displayName": name, "profileImageUrl": "", "isVerified": False,
                              "isChatOwner": False, "isChatSponsor": False, "isChatModerator": False}}


def page(items: list[dict[str, Any]], token: str, interval_ms: int = 2000,
         offline_at: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "youtube#liveChatMessageListResponse", "etag": "e", "nextPageToken": token,
                            "pollingIntervalMillis": interval_ms,
                            "pageInfo": {"totalResults": len(items), "resultsPerPage": len(items)},
                            "items": items}
    if offline_at is not None:
        body["offlineAt"] = offline_at
    return body


def super_chat(msg_id: str, comment: str | None, *, channel: str = "UC77", name: str = "Kim",
               amount: str = "$5.00", published: str = "2024-05-01T10:00:01Z") -> dict[str, Any]:
    m = message(msg_id, f"{amount} from {name}", channel=channel, name=name, published=published,
                kind="superChatEvent")
    details: dict[str, Any] = {"amountMicros": "5000000", "currency": "USD", "amountDisplayString": amount,
                               "tier": 2}
    if comment is not None:
        details["userComment"] = comment
    m["snippet"]["superChatDetails"] = details
    return m


def milestone(msg_id: str, comment: str | None, *, channel: str = "UC88", name: str = "Lee",
              published: str = "2024-05-01T10:00:02Z") -> dict[str, Any]:
    m = message(msg_id, f"{name} has been a member for 12 months", channel=channel, name=name,
                published=published, kind="memberMilestoneChatEvent")
    details: dict[str, Any] = {"memberMonth": 12, "memberLevelName": "Member"}
    if comment is not None:
        details["userComment"] = comment
    m["snippet"]["memberMilestoneChatDetails"] = details
    return m


def api_error(code: int, reason: str, domain: str = "youtube.liveChat") -> tuple[int, dict[str, Any]]:
    return code, {"error": {"code": code, "message": reason,
                            "errors": [{"message": reason, "domain": domain, "reason": reason}]}}


Scripted = dict[str, Any] | tuple[int, Any] | bytes


class FakeYouTube:
    """Answers each request with the next scripted reply: a page (200), ``(status, json)``, or raw bytes (200).
    When the script runs out it answers ``liveChatEnded``."""

    def __init__(self, script: list[Scripted], *, streams: list[list[Scripted]] | None = None,
                 chunk: int = 7) -> None:
        self.script = list(script)
        self.streams = None if streams is None else list(streams)
        self.chunk = chunk
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []
        self.stream_requests: list[dict[str, str]] = []
        self.inserted: list[tuple[dict[str, str], Any, str]] = []
        self.insert_status = 200
        self._runner: web.AppRunner | None = None
        self.api_base = ""

    async def __aenter__(self) -> FakeYouTube:
        app = web.Application()
        app.router.add_get("/youtube/v3/liveChat/messages", self._handle)
        app.router.add_post("/youtube/v3/liveChat/messages", self._insert)
        if self.streams is not None:
            app.router.add_get("/youtube/v3/liveChat/messages/stream", self._stream)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.api_base = f"http://127.0.0.1:{port}/youtube/v3"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.query), dict(request.headers)))
        reply: Scripted = self.script.pop(0) if self.script else api_error(403, "liveChatEnded")
        if isinstance(reply, bytes):
            return web.Response(body=reply, content_type="application/json")
        status, body = reply if isinstance(reply, tuple) else (200, reply)
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.stream_requests.append(dict(request.query))
        assert self.streams is not None
        if not self.streams:
            status, body = api_error(403, "liveChatEnded")
            return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
        objects = self.streams.pop(0)
        if len(objects) == 1 and isinstance(objects[0], tuple):
            status, body = objects[0]
            return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        raw = b"[" + b",\n".join(o if isinstance(o, bytes) else orjson.dumps(o) for o in objects) + b"]"
        for i in range(0, len(raw), self.chunk):
            await resp.write(raw[i:i + self.chunk])
        await resp.write_eof()
        return resp

    async def _insert(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.inserted.append((dict(request.query), body, request.headers.get("Authorization", "")))
        if self.insert_status != 200:
            status, err = api_error(self.insert_status, "rateLimitExceeded")
            return web.Response(status=status, body=orjson.dumps(err), content_type="application/json")
        return web.json_response({"kind": "youtube#liveChatMessage", "id": f"ins-{len(self.inserted)}",
                                  "snippet": body["snippet"]})
