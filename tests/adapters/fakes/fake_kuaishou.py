"""The Kuaishou side of a live data push: events signed as the platform signs them (``kwaisign`` = hex
md5 of the raw body + app secret), POSTed to the adapter; and a task API on 127.0.0.1:0 that answers with
the open platform's ``{"result": 1}`` convention and pushes only while the task runs."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web


def kwaisign(body: bytes, secret: str) -> str:
    """Independent of the adapter's code: md5 over the body bytes then the secret, lower-case hex."""
    h = hashlib.md5()
    h.update(body)
    h.update(secret.encode("utf-8"))
    return h.hexdigest()


def event(message_id: str, data: Any, *, name: str = "live_comment", ts_ms: int | None = None,
          app_id: str = "ks-app-1") -> dict[str, Any]:
    return {"message_id": message_id, "event": name, "app_id": app_id,
            "timestamp": int(time.time() * 1000) if ts_ms is None else ts_ms, "data": data}


def comment(msg_id: str | None, content: str, *, open_id: str = "f18a2b3c", nickname: str = "小鱼",
            ts_ms: int | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"open_id": open_id, "nickname": nickname, "content": content,
                         "avatar": "https://p2.a.yximgs.com/uhead/a.jpg",
                         "timestamp": int(time.time() * 1000) if ts_ms is None else ts_ms}
    if msg_id is not None:
        c["msg_id"] = msg_id
    return c


async def push(url: str, payload: Any, secret: str, *, raw: bytes | None = None, sign: str | None = None,
               drop_sign: bool = False) -> tuple[int, bytes]:
    body = raw if raw is not None else orjson.dumps(payload)
    headers = {"content-type": "application/json"}
    if not drop_sign:
        headers["kwaisign"] = sign if sign is not None else kwaisign(body, secret)
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.read()


class FakeKuaishouTasks:
    """The push-task calls: ``POST /task/start|stop?app_id=..&access_token=..`` with ``{"room_id", "event"}``."""

    def __init__(self, *, access_token: str = "ks-token") -> None:
        self.access_token = access_token
        self.running: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeKuaishouTasks:
        app = web.Application()
        app.router.add_post("/task/{verb}", self._task)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _task(self, request: web.Request) -> web.Response:
        body = await request.json()
        verb = request.match_info["verb"]
        self.calls.append((verb, body))
        if request.query.get("access_token") != self.access_token or not request.query.get("app_id"):
            return web.json_response({"result": 28, "error_msg": "access_token invalid"})
        key = (body["room_id"], body["event"])
        if verb == "start":
            self.running.add(key)
        else:
            self.running.discard(key)
        return web.json_response({"result": 1})
