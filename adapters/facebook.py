"""``facebook``: comments of a Facebook Live video through the Graph API's live-comments stream (SSE).

Protocol (Meta for Developers: Graph API > Live Video API > "Getting live comments" and the
``/{live-video-id}/live_comments`` reference; Graph API "Handling errors"; WHATWG "Server-sent events"):

* ``GET https://streaming-graph.facebook.com/{live-video-id}/live_comments?access_token=..&comment_rate=..
  &fields=from{name,id},message,created_time,id`` answers ``text/event-stream``: one ``data:`` line per comment
  holding its JSON, ``{"id", "message", "created_time" ("2024-11-30T06:00:00+0000"), "from": {"id",
  "name"}}``. ``comment_rate`` is ``one_per_two_seconds``, ``ten_per_second`` or ``one_hundred_per_second``.
* ``from`` is present only when the token may see the commenter: with a **Page access token** of the Page
  that is live, every commenter is visible; with a user token, commenters who have not granted the app
  are anonymous. A comment without ``from.id`` is refused as ``anonymous_buyer`` (never merged with another).
* The stream closes when the broadcast ends or the connection drops. livecart reconnects with backoff,
  sends ``Last-Event-ID`` when the stream gave event ids, honours ``retry:``, and drops comments seen before
  the reconnect by their id, so a resumed stream never processes a comment twice.
* Errors are JSON: ``{"error": {"message", "type", "code", "error_subcode"}}``. Code 190 (bad or expired
  token), 10/200-299 (permission), 100 (bad id) are fatal; 4, 17, 32, 613 (rate limits), 1, 2 (temporary)
  and 5xx are retried.
* Replies: ``POST https://graph.facebook.com/{version}/{comment-id}/comments`` with ``message`` and the Page
  token posts a reply under the buyer's comment (a comment on the live video itself when the reply answers
  no comment).

:class:`~livecart.adapters._codec.SseDecoder`, :func:`to_comment` and :func:`classify_error` are pure;
:class:`FacebookAdapter` is the shell around an aiohttp client under the shared reconnect loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

import aiohttp
import orjson

from livecart.adapters._codec import RecentKeys, SseDecoder, admit, load_json, with_defaults
from livecart.adapters.reconnect import Backoff, reconnecting
from livecart.core.errors import FatalAdapterError, MalformedInput, RetryableError
from livecart.core.records import Comment
from livecart.plugin import Adapter, AdapterStats, Option, Reply, check_more_than_zero

log = logging.getLogger("livecart.adapter")

RATES = ("one_per_two_seconds", "ten_per_second", "one_hundred_per_second")
FIELDS = "from{name,id},message,created_time,id"
#: Graph error codes that a retry can fix: temporary errors and the rate limits.
RETRYABLE_CODES = frozenset({1, 2, 4, 17, 32, 341, 613})


def _created(value: Any) -> float:
    if not isinstance(value, str):
        raise MalformedInput("missing_field", "created_time is missing", value)
    try:
        # Graph gives "+0000" offsets; fromisoformat (3.11) reads them.
        return datetime.fromisoformat(value).timestamp()
    except ValueError as exc:
        raise MalformedInput("bad_field", f"created_time {value!r} is not ISO 8601", value) from exc


def to_comment(obj: Any, video_id: str) -> Comment:
    """One live comment object -> a comment. Raises :class:`MalformedInput` (``anonymous_buyer`` when the
    commenter is not visible to the token)."""
    if not isinstance(obj, dict):
        raise MalformedInput("not_an_object", "event data is not a JSON object", obj)
    sender = obj.get("from")
    uid = sender.get("id") if isinstance(sender, dict) else None
    if not isinstance(uid, str) or not uid:
        raise MalformedInput("anonymous_buyer", "comment without from.id: the commenter is hidden from this token "
                             "(use the live Page's access token); refused, never merged with another",
                             {"id": obj.get("id"), "message": obj.get("message")})
    name = sender.get("name") if isinstance(sender, dict) else None
    return Comment.from_mapping({"platform": "facebook", "room": video_id, "id": obj.get("id"), "user": uid,
                                 "name": name or uid, "text": obj.get("message"),
                                 "ts": _created(obj.get("created_time"))})


def graph_error(body: Any) -> tuple[int | None, str]:
    """``(code, message)`` of a Graph API error body."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return None, ""
    code = err.get("code")
    return (code if isinstance(code, int) else None), str(err.get("message", ""))


def classify_error(status: int, body: Any) -> bool:
    """True when a failed request is worth retrying (see the module docstring)."""
    code, _ = graph_error(body)
    if code is not None:
        return code in RETRYABLE_CODES
    return status >= 500 or status == 429


class FacebookAdapter(Adapter):
    """Comments of one Facebook live video, and replies under them."""

    type = "facebook"
    can_reply = True
    OPTIONS: ClassVar = {
        "live_video_id": Option(str, required=True, doc="the LiveVideo id (not the video id of the VOD)"),
        "access_token": Option(str, required=True,
                               doc="a Page access token of the Page that is live (sees every commenter, "
                                   "may reply)"),
        "comment_rate": Option(str, "one_hundred_per_second", choices=RATES,
                               doc="how many comments per second the stream may send at most"),
        "stream_base": Option(str, "https://streaming-graph.facebook.com", doc="SSE host"),
        "graph_base": Option(str, "https://graph.facebook.com", doc="Graph API host, for replies"),
        "api_version": Option(str, "v21.0", doc="Graph API version of the reply calls"),
        "idle_timeout": Option(float, 120.0, check=check_more_than_zero,
                               doc="reconnect when nothing arrives for this long (s)"),
        "timeout": Option(float, 10.0, check=check_more_than_zero, doc="connect and reply request timeout (s)"),
        "retry_initial": Option(float, 1.0, check=check_more_than_zero, doc="first reconnect delay (s)"),
        "retry_max": Option(float, 60.0, check=check_more_than_zero, doc="longest reconnect delay (s)"),
    }

    def __init__(self, options: Any, *, name: str, stats: AdapterStats | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"facebook {name}"), name=name, stats=stats)
        if not str(self.options["access_token"]).strip():
            raise FatalAdapterError(f"facebook {name}: access_token must be set (a Page access token)")
        self._sleep = sleep
        self.video_id = str(self.options["live_video_id"])
        self._session: aiohttp.ClientSession | None = None
        self._sse = SseDecoder()
        self._seen = RecentKeys(32768)
        self.connections = 0
        self.stream_ends = 0
        self.reply_failures = 0

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=float(self.options["timeout"])))
        return self._session

    async def close(self) -> None:
        s, self._session = self._session, None
        if s is not None:
            await s.close()
        await super().close()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        policy = Backoff(initial=float(self.options["retry_initial"]), cap=float(self.options["retry_max"]))
        return reconnecting(self._stream, stats=self.stats, policy=policy, sleep=self._sleep)

    def stream_request(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """URL, query and headers of the next connection (``Last-Event-ID`` when resuming)."""
        o = self.options
        url = f"{o['stream_base'].rstrip('/')}/{self.video_id}/live_comments"
        params = {"access_token": o["access_token"], "comment_rate": o["comment_rate"], "fields": FIELDS}
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._sse.last_id:
            headers["Last-Event-ID"] = self._sse.last_id
        return url, params, headers

    async def _stream(self) -> AsyncIterator[Sequence[Comment]]:
        if self._closed:
            return
        if self._sse.retry_ms:  # the server's own reconnection time, before the policy's backoff
            await self._sleep(self._sse.retry_ms / 1000.0)
        session = await self._client()
        url, params, headers = self.stream_request()
        last_id = self._sse.last_id
        self._sse = SseDecoder()
        self._sse.last_id = last_id
        idle = float(self.options["idle_timeout"])
        try:
            async with session.get(url, params=params, headers=headers) as resp:
                self.connections += 1
                if resp.status != 200:
                    raw = await resp.read()
                    self._fail(resp.status, raw)
                while True:
                    async with asyncio.timeout(idle):
                        chunk = await resp.content.readany()
                    if not chunk:
                        break
                    batch = self._take(chunk)
                    if batch:
                        yield batch
        except (aiohttp.ClientError, TimeoutError) as exc:
            if self._closed:
                return
            raise RetryableError(f"facebook live_comments: {exc!r}") from exc
        if self._closed:
            return
        # A closed stream is not the end of the sale: the broadcast may come back, and a dropped
        # connection looks the same. Reconnect (with backoff); a finished video answers with an error.
        self.stream_ends += 1
        raise RetryableError("facebook live_comments: the stream closed")

    def _fail(self, status: int, raw: bytes) -> None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        code, message = graph_error(body)
        what = f"facebook live_comments of {self.video_id}: HTTP {status}, code {code}: {message or raw[:200]!r}"
        if classify_error(status, body):
            raise RetryableError(what)
        raise FatalAdapterError(what + (" (the access token is invalid or expired)" if code == 190 else ""))

    def _take(self, chunk: bytes) -> list[Comment]:
        try:
            events = self._sse.feed(chunk)
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return []
        out: list[Comment] = []
        for ev in events:
            try:
                comment = to_comment(load_json(ev.data), self.video_id)
            except MalformedInput as exc:
                self.stats.malformed(exc.reason, exc.detail, exc.sample)
                continue
            admit(out, comment, self._seen, self.stats)
        return out

    async def send_replies(self, replies: Sequence[Reply]) -> None:
        """Post each reply under the comment it answers (or on the live video). A failure is counted in
        ``stats.errors`` and logged; it never stops the stream."""
        o = self.options
        session = await self._client()
        base = f"{o['graph_base'].rstrip('/')}/{o['api_version']}"
        for r in replies:
            target = r.comment.id if r.comment is not None and r.comment.platform == "facebook" else self.video_id
            try:
                async with asyncio.timeout(float(o["timeout"])), session.post(
                        f"{base}/{target}/comments",
                        data={"message": r.text, "access_token": o["access_token"]}) as resp:
                    raw = await resp.read()
                    if resp.status == 200:
                        self.stats.replies_sent += 1
                        continue
                    code, message = graph_error(orjson.loads(raw) if raw.startswith(b"{") else None)
                    problem = f"HTTP {resp.status}, code {code}: {message}"
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                problem = repr(exc)
            self.reply_failures += 1
            self.stats.errors += 1
            log.warning("adapter %s: reply to %s not posted: %s", self.name, target, problem)
