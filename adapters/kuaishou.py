"""``kuaishou``: Kuaishou open-platform live data push (快手开放平台 直播数据推送), the same shape as ``douyin``.

Protocol (open.kuaishou.com, 开放能力 > WebHook > 接入指南 and 事件列表; the mini-app server SDKs agree):

* The platform POSTs each event to the developer's callback URL as JSON: ``{"message_id", "event",
  "app_id", "timestamp" (ms), "data": {...}}``.
* Source check: the ``kwaisign`` header is ``md5(raw body + app_secret)`` in hex. Everything the event says,
  its timestamp included, is inside the signed body.
* The answer that ends redelivery is HTTP 200 with ``{"result": 1}``; anything else is retried (the guide:
  3 times, 5 s apart; the mini-app push: up to 16 times). Deduplicate by ``message_id``.
* Saving the callback URL in the console sends a test event (``event`` = ``TEST``); it is answered like any
  other push so the URL is accepted.
* Pushes of live-room data flow only while a push task runs for the room (as on Douyin). livecart starts it
  once its endpoint listens and stops it on close when ``start_url`` / ``stop_url`` are set: ``POST
  {url}?app_id=..&access_token=..`` with JSON ``{"room_id", "event"}``, success when the answer's ``result`` is
  1 (the open platform's convention). The exact task URLs are shown in the developer console for the app's
  live capability, so they are configuration, not constants.
* A comment event (``comment_event``, default ``live_comment``) carries one comment in ``data``, or a list
  of them in ``data.list``. The field names of a comment are configurable (``fields``, as for the webhook
  adapter); the defaults are ``msg_id`` (else the push's ``message_id``), ``open_id``, ``nickname``,
  ``content``, ``timestamp`` (ms; else the push's).

:func:`signature` and :func:`decode_event` are pure; :class:`KuaishouAdapter` is the shared push shell
(:mod:`livecart.adapters._push`) with this verification.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from aiohttp import web

from livecart.adapters._codec import FieldMap, check_fields, load_json
from livecart.adapters._push import PushAdapter, Refused, post_json, push_options, require_secret
from livecart.core.errors import FatalAdapterError, MalformedInput, RetryableError
from livecart.core.records import Comment
from livecart.plugin import Option, check_nonneg

log = logging.getLogger("livecart.adapter")

SIGN_HEADER = "kwaisign"
TEST_EVENT = "TEST"
DEFAULT_FIELDS = {"id": "msg_id", "user": "open_id", "name": "nickname", "text": "content", "ts": "timestamp"}


def signature(body: bytes, app_secret: str) -> str:
    """The ``kwaisign`` of a push: hex md5 of the raw body followed by the app secret."""
    return hashlib.md5(body + app_secret.encode(), usedforsecurity=False).hexdigest()


def _ms(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    return v / 1000.0 if v > 1e11 else v


def decode_event(body: bytes) -> dict[str, Any]:
    """The envelope of one push. Raises :class:`MalformedInput` when it is not one."""
    event = load_json(body)
    if not isinstance(event, dict):
        raise MalformedInput("not_an_object", "a push must be a JSON object", body[:200])
    for key in ("message_id", "event"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise MalformedInput("missing_field", f"push has no {key!r}", body[:200])
    return event


def event_comments(event: Mapping[str, Any], room: str, fields: FieldMap) -> tuple[list[Comment],
                                                                                     list[MalformedInput]]:
    """The comments of one comment event, and the problems with the items that are not comments."""
    data = event.get("data")
    items: list[Any]
    items = data["list"] if isinstance(data, dict) and isinstance(data.get("list"), list) else [data]
    sent = _ms(event.get("timestamp"))
    comments: list[Comment] = []
    problems: list[MalformedInput] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(MalformedInput("not_an_object", "comment is not an object", item))
            continue
        obj = fields.apply(item)
        if obj.get("user") in (None, "", 0, "0"):
            problems.append(MalformedInput("anonymous_buyer", "comment without the viewer's open_id: it cannot be "
                                           "told apart from another viewer's, so it is refused", item))
            continue
        if obj.get("id") in (None, ""):
            # One comment per push: the push's own id is the comment's (a batch's items need their own).
            obj["id"] = event["message_id"] if len(items) == 1 else f"{event['message_id']}#{i}"
        ts = _ms(obj.get("ts"))
        obj["ts"] = ts if ts is not None else sent
        obj.setdefault("name", obj.get("user"))
        try:
            comments.append(Comment.from_mapping(obj, platform="kuaishou", room=room))
        except MalformedInput as exc:
            problems.append(exc)
    return comments, problems


class KuaishouAdapter(PushAdapter):
    """Receives Kuaishou's live data pushes on a local HTTP endpoint. No reply channel: ``can_reply`` is False."""

    type = "kuaishou"
    OK_BODY = orjson.dumps({"result": 1})
    OPTIONS: ClassVar = {
        **push_options("/kuaishou/live", 8791, ack_timeout=3.0),
        "app_secret": Option(str, "", doc="the app's secret: kwaisign = md5(body + app_secret); required"),
        "room_id": Option(str, "", doc="the live room: the comments' room, and whose push task is started"),
        "comment_event": Option(str, "live_comment", doc="the event name of comment pushes"),
        "fields": Option(dict, {}, check=check_fields,
                         doc="contract field = field of a comment in data (defaults: id=msg_id, user=open_id, "
                             "name=nickname, text=content, ts=timestamp)"),
        "max_skew": Option(float, 300.0, check=check_nonneg,
                           doc="refuse pushes whose timestamp is further than this from now (s); 0 = off"),
        "app_id": Option(str, "", doc="the app id, for the push task calls"),
        "access_token": Option(str, "", doc="the app's access_token, for the push task calls"),
        "start_url": Option(str, "", doc="URL of the start-push-task call (developer console); empty = none"),
        "stop_url": Option(str, "", doc="URL of the stop-push-task call; empty = none"),
    }

    def __init__(self, options: Any, **kw: Any) -> None:
        super().__init__(options, **kw)
        o = self.options
        where = f"kuaishou {self.name}"
        self._secret = require_secret(where, "app_secret", o["app_secret"])
        self._fields = FieldMap({**DEFAULT_FIELDS, **o["fields"]})
        self._room = str(o["room_id"]) or "default"
        if (o["start_url"] or o["stop_url"]) and not (o["app_id"] and o["access_token"] and o["room_id"]):
            raise FatalAdapterError(f"{where}: app_id, access_token and room_id are needed to start the push task")
        self.task_running = False
        self.forgeries = 0
        self.stale = 0
        self.tests = 0

    async def start_tasks(self) -> None:
        if self.options["start_url"]:
            await self._task_call(self.options["start_url"], "start")
            self.task_running = True
        else:
            log.info("adapter %s: no start_url: start the push task from the developer console", self.name)

    async def stop_tasks(self) -> None:
        if self.task_running and self.options["stop_url"]:
            await self._task_call(self.options["stop_url"], "stop")
        self.task_running = False

    async def _task_call(self, url: str, verb: str) -> None:
        o = self.options
        sep = "&" if "?" in url else "?"
        full = f"{url}{sep}app_id={o['app_id']}&access_token={o['access_token']}"
        status, data = await post_json(full, {"room_id": o["room_id"], "event": o["comment_event"]}, {})
        result = data.get("result") if isinstance(data, dict) else None
        if status == 200 and result == 1:
            return
        msg = (data.get("error_msg") or data.get("message")) if isinstance(data, dict) else None
        if status >= 500:
            raise RetryableError(f"kuaishou task {verb}: HTTP {status} {msg!r}")
        raise FatalAdapterError(f"kuaishou push task {verb} for room {o['room_id']} refused: HTTP {status}, "
                                f"result {result!r} {msg!r} (check app_id, access_token, room_id and that the "
                                "room is live with the app mounted)")

    def decode_push(self, request: web.Request, body: bytes) -> list[Comment]:
        given = request.headers.get(SIGN_HEADER, "")
        if not given:
            raise Refused(400, "missing_header", f"push without {SIGN_HEADER}", dict(request.headers))
        if not hmac.compare_digest(given.lower().encode(), signature(body, self._secret).encode()):
            self.forgeries += 1
            raise Refused(401, "bad_signature", f"{SIGN_HEADER} does not match md5(body + app_secret); refused",
                          body[:120])
        try:
            event = decode_event(body)
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return []  # signed, yet not an event: a redelivery of the same bytes would not fix it
        if event["event"] == TEST_EVENT:
            self.tests += 1
            return []
        skew = float(self.options["max_skew"])
        sent = _ms(event.get("timestamp"))
        if skew and (sent is None or abs(self._clock() - sent) > skew):
            self.stale += 1
            raise Refused(401, "stale", f"timestamp {event.get('timestamp')!r} is more than {skew:g}s from now "
                          "(a replayed push, or this machine's clock is wrong)", event.get("message_id"))
        if event["event"] != self.options["comment_event"]:
            self.ignored += 1
            return []
        comments, problems = event_comments(event, self._room, self._fields)
        for p in problems:
            self.stats.malformed(p.reason, p.detail, p.sample)
        return comments
