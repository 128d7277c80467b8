"""``twitch_eventsub``: Twitch chat through EventSub ``channel.chat.message`` over its WebSocket transport.

Twitch recommends EventSub over IRC for new chat bots. Protocol (dev.twitch.tv/docs/eventsub/handling-
websocket-events, /eventsub/eventsub-subscription-types/#channelchatmessage, /api/reference#send-chat-message):

* Connect to ``wss://eventsub.wss.twitch.tv/ws``. The first message is ``session_welcome``:
  ``{"metadata": {"message_id", "message_type", "message_timestamp"}, "payload": {"session": {"id", "status",
  "keepalive_timeout_seconds", "reconnect_url", "connected_at"}}}``. Within 10 s the client subscribes, or the
  server closes with 4003: ``POST {helix}/eventsub/subscriptions`` (``Authorization: Bearer``, ``Client-Id``)
  with ``{"type": "channel.chat.message", "version": "1", "condition": {"broadcaster_user_id", "user_id"},
  "transport": {"method": "websocket", "session_id"}}``; 202 = enabled. 401 (token) and 403 (missing scope
  ``user:read:chat``) are fatal; 409 means it exists already.
* ``session_keepalive`` arrives when nothing else has for ``keepalive_timeout_seconds``: silence longer than
  that means the connection is dead; reconnect (a new session, subscribe again).
* ``notification`` with ``metadata.subscription_type`` ``channel.chat.message``: ``payload.event`` has
  ``chatter_user_id``, ``chatter_user_login``, ``chatter_user_name``, ``message_id``, ``message.text``;
  the time is ``metadata.message_timestamp`` (RFC 3339, nanoseconds). Notifications may repeat: they are
  dropped by ``metadata.message_id``.
* ``session_reconnect`` carries ``payload.session.reconnect_url``: connect there, wait for its welcome, then
  close the old connection. Subscriptions move with the session: no new subscribe.
* ``revocation`` (``authorization_revoked``, ``user_removed``, ``version_removed``) is fatal.
* Replies: ``POST {helix}/chat/messages`` with ``{"broadcaster_id", "sender_id", "message",
  "reply_parent_message_id"}``; the answer's ``data[0].is_sent`` false (with ``drop_reason``) is a failure.

:func:`notification_to_comment` is pure; :class:`TwitchEventSubAdapter` is the shell around a ``websockets``
client and aiohttp for the Helix calls, under the shared reconnect loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

import aiohttp
import orjson
import websockets
from websockets.asyncio.client import ClientConnection, connect

from livecart.adapters._codec import RecentKeys, with_defaults
from livecart.adapters.reconnect import Backoff, reconnecting
from livecart.adapters.twitch import MAX_REPLY, SlidingWindow
from livecart.core.errors import FatalAdapterError, MalformedInput, RetryableError
from livecart.core.records import Comment
from livecart.plugin import Adapter, AdapterStats, Option, Reply, check_more_than_zero

log = logging.getLogger("livecart.adapter")

SUBSCRIPTION = "channel.chat.message"


def _timestamp(value: Any) -> float:
    if not isinstance(value, str):
        raise MalformedInput("missing_field", "metadata.message_timestamp is missing", value)
    head, dot, frac = value.partition(".")
    if dot:  # nanoseconds: fromisoformat takes up to 6 fractional digits
        digits = "".join(ch for ch in frac if ch.isdigit())
        value = f"{head}.{digits[:6]}{frac[len(digits):]}"
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError as exc:
        raise MalformedInput("bad_field", f"message_timestamp {value!r} is not RFC 3339", value) from exc


def notification_to_comment(msg: Any, room: str) -> Comment | None:
    """A ``channel.chat.message`` notification -> a comment; None for other subscription types."""
    meta = msg.get("metadata") if isinstance(msg, dict) else None
    payload = msg.get("payload") if isinstance(msg, dict) else None
    if not isinstance(meta, dict) or not isinstance(payload, dict):
        raise MalformedInput("missing_field", "notification without metadata/payload", msg)
    if meta.get("subscription_type") != SUBSCRIPTION:
        return None
    event = payload.get("event")
    if not isinstance(event, dict):
        raise MalformedInput("missing_field", "notification without payload.event", msg)
    message = event.get("message")
    text = message.get("text") if isinstance(message, dict) else None
    return Comment.from_mapping({
        "platform": "twitch", "room": room, "id": event.get("message_id"), "user": event.get("chatter_user_id"),
        "name": event.get("chatter_user_name") or event.get("chatter_user_login"), "text": text,
        "ts": _timestamp(meta.get("message_timestamp"))})


class TwitchEventSubAdapter(Adapter):
    """Chat of one Twitch channel through EventSub; replies through Helix ``Send Chat Message``."""

    type = "twitch_eventsub"
    can_reply = True
    reply_limit: ClassVar[int | None] = 20
    reply_window: ClassVar[float] = 30.0
    OPTIONS: ClassVar = {
        "url": Option(str, "wss://eventsub.wss.twitch.tv/ws", doc="EventSub WebSocket endpoint"),
        "helix": Option(str, "https://api.twitch.tv/helix", doc="Helix API base URL"),
        "client_id": Option(str, required=True, doc="the app's client id"),
        "token": Option(str, required=True, doc="user access token with user:read:chat (+ user:write:chat to reply)"),
        "broadcaster_id": Option(str, required=True, doc="user id of the channel whose chat is read"),
        "user_id": Option(str, required=True, doc="user id of the account reading (and replying)"),
        "channel": Option(str, "", doc="channel login, the comments' room (default: broadcaster_id)"),
        "reply_limit": Option(int, 20, check=check_more_than_zero, doc="most replies per reply_window"),
        "reply_window": Option(float, 30.0, check=check_more_than_zero, doc="seconds of the reply rate window"),
        "timeout": Option(float, 10.0, check=check_more_than_zero, doc="Helix request timeout (s)"),
        "retry_initial": Option(float, 0.5, check=check_more_than_zero, doc="first reconnect delay (s)"),
        "retry_max": Option(float, 30.0, check=check_more_than_zero, doc="longest reconnect delay (s)"),
    }

    def __init__(self, options: Any, *, name: str, stats: AdapterStats | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"twitch_eventsub {name}"), name=name, stats=stats)
        o = self.options
        self._clock = clock
        self._sleep = sleep
        self.room = str(o["channel"] or o["broadcaster_id"]).lstrip("#").lower()
        self._limiter = SlidingWindow(int(o["reply_limit"]), float(o["reply_window"]))
        self._session: aiohttp.ClientSession | None = None
        self._ws: ClientConnection | None = None
        self._seen = RecentKeys(8192)
        self.session_id: str | None = None
        self.subscriptions = 0
        self.keepalives = 0
        self.server_reconnects = 0
        self.reply_failures = 0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.options['token']}", "Client-Id": self.options["client_id"]}

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=float(self.options["timeout"])))
        return self._session

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        s, self._session = self._session, None
        if s is not None:
            await s.close()
        await super().close()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        policy = Backoff(initial=float(self.options["retry_initial"]), cap=float(self.options["retry_max"]))
        return reconnecting(self._connection, stats=self.stats, policy=policy, sleep=self._sleep)

    async def _welcome(self, ws: ClientConnection) -> float:
        """Read ``session_welcome``; the keepalive timeout (s) it names."""
        async with asyncio.timeout(10):
            raw = await ws.recv()
        msg = orjson.loads(raw)
        if msg.get("metadata", {}).get("message_type") != "session_welcome":
            raise RetryableError(f"twitch eventsub: expected session_welcome first, got {raw[:200]!r}")
        session = msg["payload"]["session"]
        self.session_id = str(session["id"])
        return float(session.get("keepalive_timeout_seconds") or 10)

    async def _connection(self) -> AsyncIterator[Sequence[Comment]]:
        if self._closed:
            return
        try:
            ws = await connect(self.options["url"], ping_interval=None, open_timeout=10, max_size=1 << 20)
            self._ws = ws
            try:
                keepalive = await self._welcome(ws)
                await self._subscribe()
                while True:
                    moved = None
                    reader = self._read(ws, keepalive)
                    try:
                        async for batch in reader:
                            if isinstance(batch, str):
                                moved = batch
                                break
                            yield batch
                    finally:
                        await reader.aclose()
                    if moved is None:
                        return
                    # session_reconnect: the new connection first, then the old one goes; no resubscribe.
                    new = await connect(moved, ping_interval=None, open_timeout=10, max_size=1 << 20)
                    try:
                        keepalive = await self._welcome(new)
                    except BaseException:
                        await new.close()
                        raise
                    await ws.close()
                    ws = self._ws = new
            finally:
                await ws.close()
        except (FatalAdapterError, RetryableError):
            raise
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException, orjson.JSONDecodeError,
                KeyError, TypeError, aiohttp.ClientError) as exc:
            if self._closed:
                return
            raise RetryableError(f"twitch eventsub: {exc!r}") from exc
        finally:
            self._ws = None

    async def _subscribe(self) -> None:
        o = self.options
        body = {"type": SUBSCRIPTION, "version": "1",
                "condition": {"broadcaster_user_id": o["broadcaster_id"], "user_id": o["user_id"]},
                "transport": {"method": "websocket", "session_id": self.session_id}}
        session = await self._http()
        async with session.post(f"{o['helix'].rstrip('/')}/eventsub/subscriptions", json=body,
                                headers=self._headers()) as resp:
            raw = await resp.read()
            status = resp.status
        if status in (200, 202, 409):
            self.subscriptions += 1
            return
        if status == 429 or status >= 500:
            raise RetryableError(f"twitch eventsub subscribe: HTTP {status}: {raw[:200]!r}")
        hint = {401: "the token is invalid or expired, or does not belong to client_id",
                403: "the token lacks the user:read:chat scope, or user_id may not read this chat"}
        raise FatalAdapterError(f"twitch eventsub: subscribing to {SUBSCRIPTION} refused: HTTP {status} "
                                f"({hint.get(status, 'see the body')}): {raw[:300]!r}")

    async def _read(self, ws: ClientConnection, keepalive: float) -> AsyncGenerator[list[Comment] | str, None]:
        """Batches of comments; a string is a reconnect URL (the caller moves to it)."""
        while True:
            try:
                # Twitch: no message for keepalive_timeout_seconds means the connection is gone.
                async with asyncio.timeout(keepalive * 1.5):
                    raw = await ws.recv()
            except TimeoutError as exc:
                raise RetryableError(f"twitch eventsub: no message or keepalive for {keepalive * 1.5:g}s") from exc
            try:
                msg = orjson.loads(raw)
                kind = msg["metadata"]["message_type"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                self.stats.malformed("bad_message", f"not an EventSub message: {exc!r}", raw[:200])
                continue
            if kind == "session_keepalive":
                self.keepalives += 1
            elif kind == "notification":
                comment = self._notification(msg)
                if comment is not None:
                    yield [comment]
            elif kind == "session_reconnect":
                self.server_reconnects += 1
                url = msg.get("payload", {}).get("session", {}).get("reconnect_url")
                if not isinstance(url, str) or not url:
                    raise RetryableError("twitch eventsub: session_reconnect without reconnect_url")
                yield url
                return
            elif kind == "revocation":
                status = msg.get("payload", {}).get("subscription", {}).get("status")
                raise FatalAdapterError(f"twitch eventsub: subscription revoked ({status}); re-authorise the app")

    def _notification(self, msg: Any) -> Comment | None:
        mid = msg["metadata"].get("message_id")
        if mid and self._seen.seen(("n", mid)):
            self.stats.duplicates += 1
            return None
        try:
            comment = notification_to_comment(msg, self.room)
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return None
        if comment is not None:
            self.stats.received += 1
        return comment

    async def send_replies(self, replies: Sequence[Reply]) -> None:
        """Send each reply with Helix ``Send Chat Message``, within ``reply_limit`` per ``reply_window``.
        A refused or dropped message is counted in ``stats.errors`` and logged."""
        o = self.options
        session = await self._http()
        for r in replies:
            wait = self._limiter.wait_time(self._clock())
            if wait > 0:
                await self._sleep(wait)
            body: dict[str, Any] = {"broadcaster_id": o["broadcaster_id"], "sender_id": o["user_id"],
                                    "message": " ".join(r.text.split())[:MAX_REPLY]}
            if r.comment is not None and r.comment.platform == "twitch":
                body["reply_parent_message_id"] = r.comment.id
            self._limiter.record(self._clock())
            problem = ""
            try:
                async with session.post(f"{o['helix'].rstrip('/')}/chat/messages", json=body,
                                        headers=self._headers()) as resp:
                    raw = await resp.read()
                    if resp.status == 200:
                        data = orjson.loads(raw).get("data") or [{}]
                        if data[0].get("is_sent"):
                            self.stats.replies_sent += 1
                            continue
                        problem = f"dropped: {data[0].get('drop_reason')}"
                    else:
                        problem = f"HTTP {resp.status}: {raw[:200]!r}"
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, AttributeError) as exc:
                problem = repr(exc)
            self.reply_failures += 1
            self.stats.errors += 1
            log.warning("adapter %s: reply not sent (%s)", self.name, problem)

    def __repr__(self) -> str:
        s = self.stats
        return (f"<TwitchEventSubAdapter {self.name}: session {self.session_id}, {s.received} received, "
                f"{s.reconnects} reconnects, {self.server_reconnects} moved, {s.replies_sent} replies>")
