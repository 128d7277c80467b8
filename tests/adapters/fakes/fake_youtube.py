"""A fake YouTube Data API v3 ``liveChat/messages`` endpoint: JSON over HTTP on an aiohttp server at
127.0.0.1:0, answering from a script of pages and API errors, recording every request."""

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


def api_error(code: int, reason: str, domain: str = "youtube.liveChat") -> tuple[int, dict[str, Any]]:
    return code, {"error": {"code": code, "message": reason,
                            "errors": [{"message": reason, "domain": domain, "reason": reason}]}}


Scripted = dict[str, Any] | tuple[int, Any] | bytes


class FakeYouTube:
    """Answers each request with the next scripted reply: a page (200), ``(status, json)``, or raw bytes (200).
    When the script runs out it answers ``liveChatEnded``."""

    def __init__(self, script: list[Scripted]) -> None:
        self.script = list(script)
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.api_base = ""

    async def __aenter__(self) -> FakeYouTube:
        app = web.Application()
        app.router.add_get("/youtube/v3/liveChat/messages", self._handle)
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
