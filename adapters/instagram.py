"""``instagram``: comments of an Instagram Live through the Graph API webhook field ``live_comments``.

Protocol (Meta for Developers: Graph API > Webhooks > "Getting started" and "Instagram"; Instagram Platform >
Webhooks, field ``live_comments``):

* Subscription handshake: when the callback URL is saved, Meta sends ``GET {path}?hub.mode=subscribe&
  hub.verify_token=TOKEN&hub.challenge=N``. The endpoint answers 200 with the challenge as the body only when
  the mode is ``subscribe`` and the token is the one configured; otherwise 403.
* Each event is ``POST {path}`` with the header ``X-Hub-Signature-256: sha256=<hex>``: HMAC-SHA256 of the raw
  request body keyed with the app secret. It is checked over the bytes as received (before any JSON parsing:
  re-serialising would change escaped characters and break the comparison).
* The body: ``{"object": "instagram", "entry": [{"id": <IG user id>, "time": <s>, "changes": [{"field":
  "live_comments", "value": {"from": {"id", "username"}, "media": {"id", "media_product_type"}, "id":
  <comment id>, "text"}}]}]}``. Several entries and changes may come in one POST. Other fields
  (``comments``, ``mentions`` ...) are answered and ignored.
* Meta retries a delivery that did not get a 2xx, and may deliver one twice: comments are deduplicated by id.
* A comment whose ``from.id`` is missing (a user who cannot be identified to this app) is refused as
  ``anonymous_buyer``: two such strangers must never become one buyer.
* Replies: the Graph API has no public reply to a *live* comment (``/{comment-id}/replies`` is for posts and
  reels); Instagram private replies go through the messaging API under its own permissions and 7-day window.
  So ``can_reply`` is False; announce outcomes with a hook instead.

:func:`signature`, :func:`handshake` and :func:`payload_comments` are pure; :class:`InstagramAdapter` is the
shared push shell (:mod:`livecart.adapters._push`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web

from livecart.adapters._codec import load_json
from livecart.adapters._push import PushAdapter, Refused, push_options, require_secret
from livecart.core.errors import MalformedInput
from livecart.core.records import Comment
from livecart.plugin import Option

SIGN_HEADER = "X-Hub-Signature-256"
FIELD = "live_comments"


def signature(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value of a body: ``sha256=`` + hex HMAC-SHA256 keyed with the app secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def handshake(query: Mapping[str, str], verify_token: str) -> str | None:
    """The challenge to echo for a valid subscription request, or None when it must be refused."""
    mode, token, challenge = query.get("hub.mode"), query.get("hub.verify_token", ""), query.get("hub.challenge")
    if mode != "subscribe" or challenge is None:
        return None
    return challenge if hmac.compare_digest(token.encode(), verify_token.encode()) else None


def payload_comments(data: Any) -> tuple[list[Comment], list[MalformedInput], int]:
    """The live comments in one webhook payload, the problems found, and how many changes were other fields.

    Raises :class:`MalformedInput` when the payload is not a webhook payload at all.
    """
    if not isinstance(data, dict) or not isinstance(data.get("entry"), list):
        raise MalformedInput("missing_field", "payload has no 'entry' list", data)
    comments: list[Comment] = []
    problems: list[MalformedInput] = []
    other = 0
    for entry in data["entry"]:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            problems.append(MalformedInput("missing_field", "entry has no 'changes' list", entry))
            continue
        for change in changes:
            if not isinstance(change, dict) or change.get("field") != FIELD:
                other += 1
                continue
            try:
                comments.append(_comment(change.get("value"), entry))
            except MalformedInput as exc:
                problems.append(exc)
    return comments, problems, other


def _comment(value: Any, entry: Mapping[str, Any]) -> Comment:
    if not isinstance(value, dict):
        raise MalformedInput("missing_field", "live_comments change has no 'value' object", value)
    sender = value.get("from")
    uid = sender.get("id") if isinstance(sender, dict) else None
    if not isinstance(uid, str | int) or isinstance(uid, bool) or uid in ("", 0):
        raise MalformedInput("anonymous_buyer", "live comment without from.id: the commenter cannot be told "
                             "apart from another, so the comment is refused", {"text": value.get("text")})
    media = value.get("media")
    room = media.get("id") if isinstance(media, dict) else None
    ts = entry.get("time")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 1e11:
        ts = ts / 1000.0  # some deliveries give ms
    username = sender.get("username") if isinstance(sender, dict) else None
    return Comment.from_mapping({"platform": "instagram", "room": room if room else entry.get("id"),
                                 "id": value.get("id"), "user": uid, "name": username or str(uid),
                                 "text": value.get("text"), "ts": ts})


class InstagramAdapter(PushAdapter):
    """Receives the ``live_comments`` webhook. No reply channel (see the module docstring)."""

    type = "instagram"
    OK_BODY = b"EVENT_RECEIVED"
    OK_TYPE = "text/plain"
    OPTIONS: ClassVar = {
        **push_options("/instagram/webhook", 8792, ack_timeout=5.0),
        "app_secret": Option(str, "", doc="the Meta app's secret: X-Hub-Signature-256 is keyed with it; required"),
        "verify_token": Option(str, "", doc="the Verify Token typed into the webhook settings; required"),
    }

    def __init__(self, options: Any, **kw: Any) -> None:
        super().__init__(options, **kw)
        where = f"instagram {self.name}"
        self._secret = require_secret(where, "app_secret", self.options["app_secret"])
        self._verify_token = require_secret(where, "verify_token", self.options["verify_token"])
        self.handshakes = 0
        self.forgeries = 0

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get(self.options["path"], self._subscribe)

    async def _subscribe(self, request: web.Request) -> web.Response:
        challenge = handshake(request.query, self._verify_token)
        if challenge is None:
            self.stats.malformed("bad_handshake", "subscription request with a wrong hub.verify_token or mode; "
                                 "answered 403", dict(request.query))
            return web.Response(status=403, text="verify token mismatch")
        self.handshakes += 1
        return web.Response(text=challenge, content_type="text/plain")

    def decode_push(self, request: web.Request, body: bytes) -> list[Comment]:
        given = request.headers.get(SIGN_HEADER, "")
        if not given:
            raise Refused(400, "missing_header", f"POST without {SIGN_HEADER}", dict(request.headers))
        if not hmac.compare_digest(given.encode(), signature(body, self._secret).encode()):
            self.forgeries += 1
            raise Refused(401, "bad_signature", f"{SIGN_HEADER} is not the HMAC-SHA256 of the body with the app "
                          "secret; refused", body[:120])
        try:
            comments, problems, other = payload_comments(load_json(body))
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return []
        for p in problems:
            self.stats.malformed(p.reason, p.detail, p.sample)
        self.ignored += other
        return comments
