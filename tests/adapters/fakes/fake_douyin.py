"""The Douyin side of a live-data push: builds signed requests exactly as the platform sends them and POSTs
them with aiohttp's client to the adapter's local endpoint; and the open platform's task API
(``/api/live_data/task/start`` and ``/stop``) on 127.0.0.1:0, which pushes a message type only while its task
runs, each type signed with its own secret."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web


def sign(headers: dict[str, str], body: bytes, secret: str) -> str:
    """Independent of the adapter's code: sorted 'k=v' joined by '&', + body + secret, MD5, base64."""
    text = "&".join(f"{k}={headers[k]}" for k in sorted(headers))
    return base64.b64encode(hashlib.md5(text.encode() + body + secret.encode()).digest()).decode()


def comment(msg_id: str, content: str, *, openid: str = "sec-42", nickname: str = "张三",
            ts: int = 1700000000) -> dict[str, Any]:
    return {"msg_id": msg_id, "sec_openid": openid, "content": content,
            "avatar_url": "https://p3.douyinpic.com/a.jpeg", "nickname": nickname, "timestamp": ts}


class DouyinPusher:
    """Pushes like the platform: POST {url} with x-nonce-str / x-timestamp / x-roomid / x-msg-type / x-signature."""

    def __init__(self, url: str, secret: str, room: str = "7312") -> None:
        self.url = url
        self.secret = secret
        self.room = room
        self._n = 0

    async def push(self, payload: Any, *, msg_type: str = "live_comment", secret: str | None = None,
                   raw: bytes | None = None, tamper: bytes | None = None, drop: str | None = None,
                   timestamp_ms: int | None = 1700000000123) -> tuple[int, bytes]:
        self._n += 1
        body = raw if raw is not None else orjson.dumps(payload)
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        headers = {"x-nonce-str": f"nonce{self._n}", "x-timestamp": str(timestamp_ms), "x-roomid": self.room,
                   "x-msg-type": msg_type}
        headers["x-signature"] = sign(headers, body, self.secret if secret is None else secret)
        if drop is not None:
            headers.pop(drop)
        async with aiohttp.ClientSession() as s, s.post(
                self.url, data=tamper if tamper is not None else body,
                headers={**headers, "content-type": "application/json"}) as resp:
            return resp.status, await resp.read()


class FakeDouyinPlatform:
    """The open platform: the task API, and pushes (signed per type) for the tasks that run.

    ``push(msg_type, payload)`` raises ``LookupError`` when no task of that type runs: the platform only
    pushes a type after ``live_data/task/start`` for it.
    """

    def __init__(self, secrets: dict[str, str], *, access_token: str = "tok-1", app_id: str = "tt-app",
                 room: str = "7312", refuse: int | None = None) -> None:
        self.secrets = secrets
        self.access_token = access_token
        self.app_id = app_id
        self.room = room
        self.refuse = refuse
        self.running: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.push_url = ""
        self._runner: web.AppRunner | None = None
        self.api_base = ""
        self._pushers: dict[str, DouyinPusher] = {}

    async def __aenter__(self) -> FakeDouyinPlatform:
        app = web.Application()
        app.router.add_post("/api/live_data/task/{verb}", self._task)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.api_base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _task(self, request: web.Request) -> web.Response:
        verb = request.match_info["verb"]
        body = await request.json()
        self.calls.append((verb, body))
        if request.headers.get("access-token") != self.access_token:
            return web.json_response({"err_no": 20040022, "err_msg": "invalid access token", "logid": "l1"})
        if self.refuse is not None:
            return web.json_response({"err_no": self.refuse, "err_msg": "refused", "logid": "l2"})
        if body.get("roomid") != self.room or body.get("appid") != self.app_id or not body.get("msg_type"):
            return web.json_response({"err_no": 20040023, "err_msg": "missing params", "logid": "l3"})
        if verb == "start":
            self.running[body["msg_type"]] = f"task-{len(self.calls)}"
            return web.json_response({"err_no": 0, "err_msg": "ok", "logid": "l4",
                                      "data": {"task_id": self.running[body["msg_type"]]}})
        self.running.pop(body["msg_type"], None)
        return web.json_response({"err_no": 0, "err_msg": "ok", "logid": "l5"})

    async def push(self, msg_type: str, payload: Any, **kw: Any) -> tuple[int, bytes]:
        if msg_type not in self.running:
            raise LookupError(f"no push task runs for {msg_type}")
        pusher = self._pushers.setdefault(msg_type, DouyinPusher(self.push_url, self.secrets[msg_type], self.room))
        return await pusher.push(payload, msg_type=msg_type, **kw)


async def post_raw(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST recorded bytes with recorded headers (a replay of what the platform sent)."""
    async with aiohttp.ClientSession() as s, s.post(
            url, data=body, headers={**headers, "content-type": "application/json"}) as resp:
        return resp.status, await resp.read()
