"""Meta's side of the Instagram ``live_comments`` webhook: the GET subscription handshake and POSTed
payloads signed with ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body, keyed with the app secret)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp


def hub_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def live_comment(comment_id: str, text: str, *, user: str | None = "17841400000000001",
                 username: str = "tonggu_fan", media: str = "18020000000000001") -> dict[str, Any]:
    value: dict[str, Any] = {"id": comment_id, "text": text,
                             "media": {"id": media, "media_product_type": "LIVE"}}
    if user is not None:
        value["from"] = {"id": user, "username": username}
    return {"field": "live_comments", "value": value}


def payload(*changes: dict[str, Any], account: str = "17841400000000999", ts: int | None = None) -> dict[str, Any]:
    return {"object": "instagram",
            "entry": [{"id": account, "time": int(time.time()) if ts is None else ts, "changes": list(changes)}]}


async def deliver(url: str, body_obj: Any, secret: str, *, raw: bytes | None = None, sig: str | None = None,
                  unsigned: bool = False) -> tuple[int, bytes]:
    # Meta sends the body with non-ASCII escaped (\\uXXXX): the signature is over those exact bytes.
    body = raw if raw is not None else json.dumps(body_obj, ensure_ascii=True, separators=(",", ":")).encode()
    headers = {"content-type": "application/json"}
    if not unsigned:
        headers["X-Hub-Signature-256"] = sig if sig is not None else hub_signature(body, secret)
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def subscribe(url: str, verify_token: str, challenge: str = "1158201444",
                    mode: str = "subscribe") -> tuple[int, str]:
    params = {"hub.mode": mode, "hub.verify_token": verify_token, "hub.challenge": challenge}
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as resp:
        return resp.status, await resp.text()
