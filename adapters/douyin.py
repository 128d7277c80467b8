"""``douyin``: Douyin open-platform live data push (直播间数据开放, message type ``live_comment``).

Protocol (developer.open-douyin.com, 直播玩法 > 服务端 > 直播间能力 > 数据开放, "data-open-desc"):

* The platform POSTs each batch to the developer's URL with the headers ``x-nonce-str`` (random string),
  ``x-timestamp`` (ms), ``x-roomid``, ``x-msg-type`` (``live_comment``, ``live_gift``, ``live_like`` ...) and
  ``x-signature``; the body is the JSON-serialised payload: a list of comments, each with ``msg_id``,
  ``sec_openid``, ``content``, ``avatar_url``, ``nickname`` and ``timestamp``.
* Pushes flow only while a push task runs: one task per (room, app, message type), started with
  ``POST https://webcast.bytedance.com/api/live_data/task/start`` (header ``access-token``, JSON body
  ``{"roomid", "appid", "msg_type"}``, answer ``{"err_no": 0, "err_msg": "ok", "logid", "data":
  {"task_id"}}``) and stopped with ``.../api/live_data/task/stop`` (same body). The calls are idempotent. The
  platform stops the task itself when the host unmounts the app or ends the live. livecart starts a task for
  each configured message type once its endpoint listens, and stops them on close.
* Each message type's pushes are signed with that type's own secret (开发配置 lists one per data type), so
  ``secrets`` maps message type -> secret; ``secret`` alone is the ``live_comment`` secret.
* A response slower than 2 seconds, or not 2xx, counts as a failed push; ten in a row trip the platform's
  circuit breaker and it discards data. So the handler only verifies, decodes and enqueues (no I/O, no
  waiting on the pipeline) and answers at once.
* ``x-timestamp`` is checked against the clock: a push more than ``max_skew`` seconds (300) away is refused,
  so a captured push cannot be replayed later.
* Comments "may be delivered more than once; deduplicate by message id": ids are the platform's ``msg_id``.
* Signature: take the four ``x-`` headers other than ``x-signature``, sort by key, join as ``k=v`` with
  ``&``, append the raw body string and then the secret, MD5 the UTF-8 bytes and base64 the 16-byte digest.
  The push-protocol page only says to "verify the signature"; the construction above is the one spelled out,
  with a worked example (``GAkalGmhzqlUGQO/TgvMug==``), for the same header set on the sibling 直播玩法
  server-push page ("viewer-data-query-dev", 签名方式). That example is a test case here.

:func:`signature` and :func:`decode_comments` are pure; :class:`DouyinAdapter` runs an aiohttp server under the
shared push shell (:mod:`livecart.adapters._push`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import orjson
from aiohttp import web

from livecart.adapters._codec import load_json
from livecart.adapters._push import PushAdapter, Refused, post_json, push_options, require_secret
from livecart.core.errors import FatalAdapterError, MalformedInput, RetryableError
from livecart.core.records import Comment
from livecart.plugin import AdapterStats, Option, check_nonneg

log = logging.getLogger("livecart.adapter")

SIGNED_HEADERS = ("x-msg-type", "x-nonce-str", "x-roomid", "x-timestamp")
COMMENT_TYPE = "live_comment"
#: The message types of the live data push (数据开放): comments are orders, the others are verified and ignored.
MSG_TYPES = ("live_comment", "live_gift", "live_like", "live_fansclub")

_OK = orjson.dumps({"err_no": 0, "err_msg": "ok"})


def signature(headers: Mapping[str, str], body: str | bytes, secret: str) -> str:
    """The ``x-signature`` of a push: base64(md5("k1=v1&k2=v2..." + body + secret)), keys sorted."""
    raw_body = body if isinstance(body, bytes) else body.encode()
    signed = "&".join(f"{k}={headers[k]}" for k in sorted(headers) if k in SIGNED_HEADERS)
    digest = hashlib.md5(signed.encode() + raw_body + secret.encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    return v / 1000.0 if v > 1e11 else v  # the docs give ms for x-timestamp; accept s or ms in the payload


def decode_comments(body: bytes, room: str, sent_ms: str) -> tuple[list[Comment], list[MalformedInput]]:
    """The comments in one ``live_comment`` body and the problems with the items that are not.

    A body that is not JSON, or neither an object nor a list of objects, raises :class:`MalformedInput`.
    An item lacking its ``timestamp`` takes the push's ``x-timestamp``.
    """
    data = load_json(body)
    items = data if isinstance(data, list) else [data]
    fallback_ts = _seconds(sent_ms)
    comments: list[Comment] = []
    problems: list[MalformedInput] = []
    for item in items:
        if not isinstance(item, dict):
            problems.append(MalformedInput("not_an_object", "payload item is not an object", item))
            continue
        ts = _seconds(item.get("timestamp"))
        if ts is None:
            ts = fallback_ts
        msg_id = item.get("msg_id")
        if not isinstance(msg_id, str | int) or isinstance(msg_id, bool) or msg_id == "":
            problems.append(MalformedInput("missing_field", "'msg_id' is missing", item))
            continue
        try:
            comments.append(Comment.from_mapping({
                "platform": "douyin", "room": room, "id": str(msg_id), "user": item.get("sec_openid"),
                "name": item.get("nickname") or item.get("sec_openid"), "text": item.get("content"), "ts": ts}))
        except MalformedInput as exc:
            problems.append(exc)
    return comments, problems


def _check_secrets(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return "must be a table of message type = secret"
    for k, v in value.items():
        if k not in MSG_TYPES:
            return f"unknown message type {k!r}; expected one of {', '.join(MSG_TYPES)}"
        if not isinstance(v, str) or not v.strip():
            return f"the secret of {k!r} is empty; an empty secret would accept forged pushes"
    return None


class DouyinAdapter(PushAdapter):
    """Receives Douyin's live-data pushes on a local HTTP endpoint. No reply channel: ``can_reply`` is False."""

    type = "douyin"
    OK_BODY = orjson.dumps({"err_no": 0, "err_msg": "ok"})
    OPTIONS: ClassVar = {
        **push_options("/douyin/live", 8790, ack_timeout=1.5),
        "secret": Option(str, "", doc="the live_comment push secret (开发配置); shorthand for secrets.live_comment"),
        "secrets": Option(dict, {}, check=_check_secrets,
                          doc="message type = its push secret (live_comment, live_gift, live_like, live_fansclub)"),
        "max_skew": Option(float, 300.0, check=check_nonneg,
                           doc="refuse pushes whose x-timestamp is further than this from now (s); 0 = off"),
        "app_id": Option(str, "", doc="the live app's appid: with access_token, livecart starts the push tasks"),
        "access_token": Option(str, "", doc="the app's access_token (接口调用凭证) for task start/stop"),
        "room_id": Option(str, "", doc="the live room id whose push tasks livecart starts"),
        "api_base": Option(str, "https://webcast.bytedance.com", doc="base URL of the task start/stop API"),
    }

    def __init__(self, options: Any, *, name: str, stats: AdapterStats | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(options, name=name, stats=stats, clock=clock, sleep=sleep)
        o = self.options
        where = f"douyin {name}"
        problem = _check_secrets(o["secrets"])
        if problem:
            raise FatalAdapterError(f"{where}: secrets {problem}")
        secrets = dict(o["secrets"])
        if o["secret"]:
            secrets.setdefault(COMMENT_TYPE, o["secret"])
        # In the platform's order, so tasks start comments first.
        self._secrets: dict[str, str] = {k: require_secret(where, f"secrets.{k}", secrets[k])
                                         for k in MSG_TYPES if k in secrets}
        require_secret(where, "secrets.live_comment (or secret)", self._secrets.get(COMMENT_TYPE))
        if o["app_id"] or o["access_token"]:
            for key in ("app_id", "access_token", "room_id"):
                if not o[key]:
                    raise FatalAdapterError(f"{where}: {key} is needed to start the push tasks "
                                            "(set app_id, access_token and room_id together, or none of them)")
        #: task id per message type, as the platform answered the start call.
        self.tasks: dict[str, str] = {}
        self.forgeries = 0
        self.stale = 0

    @property
    def msg_types(self) -> tuple[str, ...]:
        """The message types livecart verifies (and starts a push task for)."""
        return tuple(self._secrets)

    async def start_tasks(self) -> None:
        if not self.options["app_id"]:
            log.info("adapter %s: no app_id/access_token: start the push tasks (%s) from your own server",
                     self.name, ", ".join(self.msg_types))
            return
        for msg_type in self.msg_types:
            data = await self._task_call("start", msg_type)
            task = data.get("data") if isinstance(data, dict) else None
            self.tasks[msg_type] = str(task.get("task_id", "")) if isinstance(task, dict) else ""
            log.info("adapter %s: push task for %s started (task %s)", self.name, msg_type, self.tasks[msg_type])

    async def stop_tasks(self) -> None:
        for msg_type in list(self.tasks):
            await self._task_call("stop", msg_type)
            del self.tasks[msg_type]

    async def _task_call(self, verb: str, msg_type: str) -> Any:
        o = self.options
        url = f"{o['api_base'].rstrip('/')}/api/live_data/task/{verb}"
        status, data = await post_json(url, {"roomid": o["room_id"], "appid": o["app_id"], "msg_type": msg_type},
                                       {"access-token": o["access_token"]})
        err = data.get("err_no") if isinstance(data, dict) else None
        if status == 200 and err == 0:
            return data
        msg = data.get("err_msg") if isinstance(data, dict) else None
        if status >= 500 or err == 20010001:  # the platform's own failure: worth another try
            raise RetryableError(f"douyin task {verb} {msg_type}: HTTP {status}, err_no {err!r} {msg!r}")
        hint = {20040022: "the access_token is invalid or expired",
                2005003019: "the room is not live, the app is not mounted in it, or the type is not granted"}
        raise FatalAdapterError(f"douyin task {verb} for {msg_type} in room {o['room_id']} refused: HTTP {status}, "
                                f"err_no {err!r} {msg!r}" + (f" ({hint[err]})" if err in hint else ""))

    def decode_push(self, request: web.Request, body: bytes) -> list[Comment]:
        headers = {k: request.headers.get(k, "") for k in SIGNED_HEADERS}
        missing = [k for k, v in headers.items() if not v]
        given = request.headers.get("x-signature", "")
        if missing or not given:
            raise Refused(400, "missing_header", f"push without {', '.join(missing) or 'x-signature'}",
                          dict(request.headers))
        msg_type = headers["x-msg-type"]
        secret = self._secrets.get(msg_type)
        if secret is None:
            raise Refused(401, "unknown_msg_type", f"no secret configured for message type {msg_type!r} "
                          "(add it to secrets); push refused", {"roomid": headers["x-roomid"]})
        if not hmac.compare_digest(given.encode(), signature(headers, body, secret).encode()):
            self.forgeries += 1
            raise Refused(401, "bad_signature", f"x-signature does not match the {msg_type} secret; push refused",
                          {"roomid": headers["x-roomid"], "nonce": headers["x-nonce-str"]})
        skew = float(self.options["max_skew"])
        sent = _seconds(headers["x-timestamp"])
        if skew and (sent is None or abs(self._clock() - sent) > skew):
            self.stale += 1
            raise Refused(401, "stale", f"x-timestamp {headers['x-timestamp']} is more than {skew:g}s from now "
                          "(a replayed push, or this machine's clock is wrong)", headers)
        if msg_type != COMMENT_TYPE:
            self.ignored += 1
            return []  # gifts and likes are signed and valid, just not orders
        try:
            comments, problems = decode_comments(body, headers["x-roomid"], headers["x-timestamp"])
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return []  # answered 2xx: a redelivery of the same bytes would not fix it
        for p in problems:
            self.stats.malformed(p.reason, p.detail, p.sample)
        return comments
