"""A fake Twitch EventSub WebSocket server and the Helix calls it needs, on 127.0.0.1:0.

Each connection gets ``session_welcome`` (``keepalive_timeout_seconds`` as set); a subscription must arrive by
``POST /helix/eventsub/subscriptions`` naming that session. The test queues messages with :meth:`notify`,
:meth:`keepalive`, :meth:`move` (``session_reconnect`` to a second URL of this server: the session and its
subscription carry over, the old connection is closed after the new one's welcome), :meth:`revoke`, or
:meth:`drop` (close without a word). ``POST /helix/chat/messages`` records replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from livecart.adapters._intake import Milestone


def envelope(kind: str, payload: dict[str, Any], *, sub_type: str | None = None, mid: str | None = None,
             ts: str = "2024-11-30T06:00:00.123456789Z") -> dict[str, Any]:
    meta: dict[str, Any] = {"message_id": mid or str(uuid.uuid4()), "message_type": kind, "message_timestamp": ts}
    if sub_type:
        meta["subscription_type"] = sub_type
        meta["subscription_version"] = "1"
    return {"metadata": meta, "payload": payload}


def chat(message_id: str, text: str, *, user_id: str = "1001", login: str = "meilin", name: str = "MeiLin",
         mid: str | None = None, ts: str = "2024-11-30T06:00:00.123456789Z") -> dict[str, Any]:
    event = {"broadcaster_user_id": "42", "broadcaster_user_login": "tonggu_farm",
             "broadcaster_user_name": "Tonggu_Farm", "chatter_user_id": user_id, "chatter_user_login": login,
             "chatter_user_name": name, "message_id": message_id,
             "message": {"text": text, "fragments": [{"type": "text", "text": text, "cheermote": None,
                                                      "emote": None, "mention": None}]},
             "color": "#FF0000", "badges": [], "message_type": "text", "cheer": None, "reply": None,
             "channel_points_custom_reward_id": None}
    sub = {"id": "sub-1", "status": "enabled", "type": "channel.chat.message", "version": "1",
           "condition": {"broadcaster_user_id": "42", "user_id": "7"},
           "transport": {"method": "websocket", "session_id": "s"}, "created_at": "2024-11-30T05:00:00Z", "cost": 0}
    return envelope("notification", {"subscription": sub, "event": event}, sub_type="channel.chat.message",
                    mid=mid, ts=ts)


class FakeEventSub:
    def __init__(self, *, token: str = "user-token", client_id: str = "cid", keepalive: float = 10.0,
                 subscribe_status: int = 202) -> None:
        self.token = token
        self.client_id = client_id
        self.keepalive_s = keepalive
        self.subscribe_status = subscribe_status
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.subscriptions: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.reply_drop: str | None = None
        self.connections = Milestone()
        self.subscribed = Milestone()
        self.session = "sess-1"
        self.url = ""
        self.helix = ""
        self._server: Server | None = None
        self._runner: web.AppRunner | None = None
        self._sessions = 0

    async def __aenter__(self) -> FakeEventSub:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        app = web.Application()
        app.router.add_post("/helix/eventsub/subscriptions", self._subscribe)
        app.router.add_post("/helix/chat/messages", self._send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.helix = f"http://127.0.0.1:{self._runner.addresses[0][1]}/helix"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        assert self._runner is not None
        self._server.close()
        await self._server.wait_closed()
        await self._runner.cleanup()

    def notify(self, msg: dict[str, Any]) -> None:
        self.outbox.put_nowait(msg)

    def keepalive(self) -> None:
        self.outbox.put_nowait(envelope("session_keepalive", {}))

    def move(self) -> None:
        self.outbox.put_nowait(envelope("session_reconnect", {"session": {
            "id": self.session, "status": "reconnecting", "keepalive_timeout_seconds": None,
            "reconnect_url": self.url + "?reconnect=1", "connected_at": "2024-11-30T05:00:00Z"}}))

    def revoke(self) -> None:
        self.outbox.put_nowait(envelope("revocation", {"subscription": {
            "id": "sub-1", "status": "authorization_revoked", "type": "channel.chat.message", "version": "1"}}))

    def drop(self) -> None:
        self.outbox.put_nowait(None)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.advance()
        moved = ws.request is not None and "reconnect=1" in ws.request.path
        if not moved:  # a fresh connection is a new session; a moved one keeps its session
            self._sessions += 1
            self.session = f"sess-{self._sessions}"
        await ws.send(orjson.dumps(envelope("session_welcome", {"session": {
            "id": self.session, "status": "connected", "keepalive_timeout_seconds": self.keepalive_s,
            "reconnect_url": None, "connected_at": "2024-11-30T05:00:00Z"}})).decode())
        closed = asyncio.create_task(ws.wait_closed())
        try:
            while True:
                getter = asyncio.create_task(self.outbox.get())
                await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():  # the client went: leave the queue for the next connection
                    getter.cancel()
                    return
                msg = getter.result()
                if msg is None:
                    await ws.close(4006, "network error")
                    return
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(orjson.dumps(msg).decode())
                if msg["metadata"]["message_type"] == "session_reconnect":
                    await closed  # the client closes this one once the new one is welcomed
                    return
        finally:
            closed.cancel()

    def _authorised(self, request: web.Request) -> bool:
        return (request.headers.get("Authorization") == f"Bearer {self.token}"
                and request.headers.get("Client-Id") == self.client_id)

    async def _subscribe(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._authorised(request):
            return web.json_response({"error": "Unauthorized", "status": 401, "message": "Invalid OAuth token"},
                                     status=401)
        if self.subscribe_status != 202:
            return web.json_response({"error": "x", "status": self.subscribe_status, "message": "refused"},
                                     status=self.subscribe_status)
        if body.get("transport", {}).get("session_id") != self.session:
            return web.json_response({"error": "Bad Request", "status": 400, "message": "unknown session"},
                                     status=400)
        self.subscriptions.append(body)
        self.subscribed.advance()
        return web.json_response({"data": [{"id": "sub-1", "status": "enabled", **body}], "total": 1,
                                  "total_cost": 0, "max_total_cost": 10}, status=202)

    async def _send(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "Unauthorized", "status": 401}, status=401)
        body = await request.json()
        self.replies.append(body)
        if self.reply_drop:
            return web.json_response({"data": [{"message_id": "", "is_sent": False,
                                                "drop_reason": {"code": "msg_duplicate", "message": self.reply_drop}}]})
        return web.json_response({"data": [{"message_id": f"r{len(self.replies)}", "is_sent": True,
                                            "drop_reason": None}]})
