"""The Douyin side of a live-data push: builds signed requests exactly as the platform sends them and POSTs
them with aiohttp's client to the adapter's local endpoint."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import aiohttp
import orjson


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
                   timestamp_ms: int = 1700000000123) -> tuple[int, bytes]:
        self._n += 1
        body = raw if raw is not None else orjson.dumps(payload)
        headers = {"x-nonce-str": f"nonce{self._n}", "x-timestamp": str(timestamp_ms), "x-roomid": self.room,
                   "x-msg-type": msg_type}
        headers["x-signature"] = sign(headers, body, self.secret if secret is None else secret)
        if drop is not None:
            headers.pop(drop)
        async with aiohttp.ClientSession() as s, s.post(
                self.url, data=tamper if tamper is not None else body,
                headers={**headers, "content-type": "application/json"}) as resp:
            return resp.status, await resp.read()
