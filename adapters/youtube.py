"""``youtube``: live chat through the YouTube Data API v3: ``liveChatMessages.streamList`` (server streaming)
where available, ``liveChatMessages.list`` polling as the fallback, ``liveChatMessages.insert`` for replies.

Protocol (developers.google.com/youtube/v3/live/docs/liveChatMessages: list, streamList, insert; ".../live/docs/
errors"; ".../getting-started#quota"):

* ``streamList`` (``GET {api_base}/liveChat/messages/stream``, same parameters as ``list``) keeps the response
  open and writes ``liveChatMessageListResponse`` objects as messages arrive; the API reference recommends it
  over polling. When the stream closes, it is opened again from the last ``nextPageToken``. Where the endpoint
  is not offered (404/405/501), the adapter falls back to polling ``list`` (mode ``auto``; ``stream`` and
  ``poll`` force one). A ``list`` call costs 5 quota units, so polling a busy chat spends the daily quota fast.

* ``GET {api_base}/liveChat/messages?liveChatId=...&part=id,snippet,authorDetails&pageToken=...`` with an API
  key (``key=``) or an OAuth bearer token.
* The response has ``items``, ``nextPageToken`` (pass it as ``pageToken`` next time), ``pollingIntervalMillis``
  (wait at least this long before the next request) and, once the broadcast has ended, ``offlineAt``.
* An item: ``id``; ``snippet.type`` (``textMessageEvent`` is a chat line), ``snippet.publishedAt`` (RFC 3339),
  ``snippet.textMessageDetails.messageText`` / ``snippet.displayMessage``; ``authorDetails.channelId`` and
  ``displayName``.
* The first page (no ``pageToken``) is the chat's recent history: comments written before livecart started
  are not orders unless ``include_history`` is set.
* ``superChatEvent`` (``snippet.superChatDetails.userComment``) and ``memberMilestoneChatEvent``
  (``snippet.memberMilestoneChatDetails.userComment``) carry a buyer's words too and are comments; without
  a ``userComment`` they say nothing to order from and are skipped.
* Errors are ``{"error": {"code", "message", "errors": [{"reason", ...}]}}``. Two different limits:
  ``rateLimitExceeded`` ("sent too quickly") is a short wait — the next try after a brief backoff capped at
  ``rate_retry_max`` (30 s); ``quotaExceeded`` / ``dailyLimitExceeded`` means the project's *daily* quota is
  spent and nothing will succeed until it resets at midnight Pacific Time: the adapter sleeps until then
  (plus ``quota_reset_margin``) instead of retrying every few minutes. ``liveChatEnded`` ends the stream
  cleanly; other 4xx (bad key, forbidden, ``liveChatNotFound``) are fatal; 5xx and network errors are retried
  with backoff.
* ``insert``: ``POST {api_base}/liveChat/messages?part=snippet`` with an OAuth token and ``{"snippet":
  {"liveChatId", "type": "textMessageEvent", "textMessageDetails": {"messageText"}}}`` (200 characters at
  most) posts a reply; it needs ``access_token`` (an API key cannot write).

:func:`parse_page`, :func:`item_to_comment` and :func:`classify_error` are pure; the adapter is the polling
shell around ``aiohttp``, run under the shared reconnect loop so every retry backs off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import aiohttp
import orjson

from livecart.adapters._codec import JsonObjectStream, RecentKeys, admit, with_defaults
from livecart.adapters.reconnect import Backoff, reconnecting
from livecart.core.errors import FatalAdapterError, MalformedInput, RetryableError
from livecart.core.records import Comment
from livecart.plugin import Adapter, AdapterStats, Option, Reply, check_more_than_zero, check_nonneg

log = logging.getLogger("livecart.adapter")

TEXT_EVENT = "textMessageEvent"
#: Events whose ``userComment`` is a buyer's words: the detail object that holds it, per type.
WORDED_EVENTS = {TEXT_EVENT: "textMessageDetails", "superChatEvent": "superChatDetails",
                 "memberMilestoneChatEvent": "memberMilestoneChatDetails"}
PACIFIC = ZoneInfo("America/Los_Angeles")
#: liveChatMessages.insert refuses longer messages.
MAX_REPLY = 200


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[Any, ...]
    next_token: str | None
    interval: float  # seconds
    offline_at: str | None


def parse_page(data: Any) -> Page:
    """A decoded ``liveChatMessageListResponse`` -> :class:`Page`. Raises :class:`MalformedInput`."""
    if not isinstance(data, dict):
        raise MalformedInput("not_an_object", "response is not a JSON object", data)
    items = data.get("items", [])
    if not isinstance(items, list):
        raise MalformedInput("bad_field", "'items' is not a list", data)
    token = data.get("nextPageToken")
    interval = data.get("pollingIntervalMillis", 0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
        interval = 0
    offline = data.get("offlineAt")
    return Page(tuple(items), token if isinstance(token, str) and token else None, interval / 1000.0,
                offline if isinstance(offline, str) and offline else None)


def _rfc3339(value: Any) -> float:
    if not isinstance(value, str):
        raise MalformedInput("missing_field", "snippet.publishedAt is missing", value)
    try:
        # fromisoformat (3.11) takes 'Z' and up to 6 fractional digits; YouTube may send more.
        head, dot, frac = value.partition(".")
        if dot:
            n = 0
            while n < len(frac) and frac[n].isdigit():
                n += 1
            digits, zone = frac[:n], frac[n:]
            value = f"{head}.{digits[:6]}{zone}"
        return datetime.fromisoformat(value).timestamp()
    except ValueError as exc:
        raise MalformedInput("bad_field", f"publishedAt {value!r} is not RFC 3339", value) from exc


def item_to_comment(item: Any, chat_id: str) -> Comment | None:
    """One ``liveChatMessage`` -> a comment; None for events without a buyer's words (joins, deletions, polls,
    stickers, a super chat with no comment ...)."""
    if not isinstance(item, dict) or not isinstance(item.get("snippet"), dict):
        raise MalformedInput("missing_field", "item has no snippet", item)
    snippet = item["snippet"]
    kind = snippet.get("type")
    detail_key = WORDED_EVENTS.get(kind) if isinstance(kind, str) else None
    if detail_key is None:
        return None
    details = snippet.get(detail_key)
    if kind == TEXT_EVENT:
        text = details.get("messageText") if isinstance(details, dict) else None
        if not isinstance(text, str):
            text = snippet.get("displayMessage")
    else:
        text = details.get("userComment") if isinstance(details, dict) else None
        if not isinstance(text, str) or not text.strip():
            return None
    author = item.get("authorDetails")
    author = author if isinstance(author, dict) else {}
    user = author.get("channelId") or snippet.get("authorChannelId")
    fields: dict[str, Any] = {"platform": "youtube", "room": chat_id, "id": item.get("id"), "user": user,
                              "name": author.get("displayName") or user, "text": text,
                              "ts": _rfc3339(snippet.get("publishedAt"))}
    return Comment.from_mapping(fields)


def quota_reset_delay(now: float) -> float:
    """Seconds from ``now`` (epoch seconds) to the next midnight Pacific Time, when the daily quota resets."""
    here = datetime.fromtimestamp(now, PACIFIC)
    midnight = datetime.combine(here.date() + timedelta(days=1), datetime.min.time(), PACIFIC)
    return max(0.0, midnight.timestamp() - now)


class ErrorKind(Enum):
    QUOTA = "quota"        # the daily quota is spent: wait for the reset at midnight Pacific
    RATE = "rate"          # requests sent too quickly: a short backoff
    ENDED = "ended"        # the chat is over: end cleanly
    RETRY = "retry"        # a server-side failure
    FATAL = "fatal"        # retrying cannot help
    ABSENT = "absent"      # the endpoint is not offered (streamList): fall back to polling


_QUOTA = frozenset({"quotaExceeded", "dailyLimitExceeded"})
_RATE = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


def error_reason(body: Any) -> str:
    """The first ``error.errors[].reason`` of an API error body, or ''."""
    try:
        return str(body["error"]["errors"][0]["reason"])
    except (TypeError, KeyError, IndexError):
        return ""


def classify_error(status: int, body: Any) -> ErrorKind:
    reason = error_reason(body)
    if reason in _QUOTA:
        return ErrorKind.QUOTA
    if reason in _RATE or status == 429:
        return ErrorKind.RATE
    if reason == "liveChatEnded":
        return ErrorKind.ENDED
    if status >= 500 and status != 501:
        return ErrorKind.RETRY
    if status in (404, 405, 501) and reason not in ("liveChatNotFound", "liveChatDisabled"):
        return ErrorKind.ABSENT
    return ErrorKind.FATAL


class YouTubeAdapter(Adapter):
    """Chat of one YouTube live broadcast (its ``liveChatId``): streamed where possible, else polled."""

    type = "youtube"
    can_reply = True
    OPTIONS: ClassVar = {
        "api_base": Option(str, "https://www.googleapis.com/youtube/v3", doc="Data API v3 base URL"),
        "live_chat_id": Option(str, required=True, doc="the broadcast's snippet.liveChatId"),
        "api_key": Option(str, "", doc="API key (this or access_token; replies need access_token)"),
        "access_token": Option(str, "", doc="OAuth 2 bearer token (this or api_key)"),
        "mode": Option(str, "auto", choices=("auto", "stream", "poll"),
                       doc="auto = streamList, falling back to list polling where it is not offered"),
        "include_history": Option(bool, False, doc="treat the first page (chat before start) as orders"),
        "poll_floor": Option(float, 1.0, check=check_nonneg, doc="shortest wait between polls (s)"),
        "max_results": Option(int, 2000, check=check_more_than_zero, doc="maxResults per page (200-2000)"),
        "timeout": Option(float, 10.0, check=check_more_than_zero, doc="HTTP request timeout (s); a stream may idle longer"),
        "stream_idle": Option(float, 120.0, check=check_more_than_zero,
                              doc="reopen a stream that sent nothing for this long (s)"),
        "retry_initial": Option(float, 5.0, check=check_more_than_zero, doc="first backoff after a server error (s)"),
        "retry_max": Option(float, 600.0, check=check_more_than_zero, doc="longest backoff after server errors (s)"),
        "rate_retry_max": Option(float, 30.0, check=check_more_than_zero, doc="longest wait after rateLimitExceeded (s)"),
        "quota_reset_margin": Option(float, 60.0, check=check_nonneg,
                                     doc="extra wait past midnight Pacific before trying a spent daily quota (s)"),
    }

    def __init__(self, options: Any, *, name: str, stats: AdapterStats | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"youtube {name}"), name=name, stats=stats)
        self._sleep = sleep
        self._clock = clock
        self.chat_id = str(self.options["live_chat_id"])
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._first = True
        self._seen = RecentKeys(32768)
        self._rate_delay = 0.0
        self.streaming = self.options["mode"] != "poll"
        self.polls = 0
        self.streams = 0
        self.history_skipped = 0
        self.quota_errors = 0
        self.rate_limited = 0
        self.reply_failures = 0
        self.ended: str | None = None
        #: When the adapter last waited for the daily quota reset: (epoch now, seconds waited).
        self.quota_waits: list[tuple[float, float]] = []

    async def open(self) -> None:
        if not self.options["api_key"] and not self.options["access_token"]:
            raise FatalAdapterError(f"youtube {self.name}: set api_key or access_token")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=float(self.options["timeout"]),
                                              sock_read=float(self.options["stream_idle"])))

    async def close(self) -> None:
        s, self._session = self._session, None
        if s is not None:
            await s.close()
        await super().close()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        policy = Backoff(initial=float(self.options["retry_initial"]), cap=float(self.options["retry_max"]))
        return reconnecting(self._run, stats=self.stats, policy=policy, sleep=self._sleep)

    def _request(self, stream: bool) -> tuple[str, dict[str, str], dict[str, str]]:
        o = self.options
        params = {"liveChatId": self.chat_id, "part": "id,snippet,authorDetails",
                  "maxResults": str(o["max_results"])}
        if self._token:
            params["pageToken"] = self._token
        headers = {"Accept": "application/json"}
        if o["access_token"]:
            headers["Authorization"] = f"Bearer {o['access_token']}"
        else:
            params["key"] = o["api_key"]
        path = "/liveChat/messages/stream" if stream else "/liveChat/messages"
        return f"{o['api_base'].rstrip('/')}{path}", params, headers

    async def _run(self) -> AsyncIterator[Sequence[Comment]]:
        await self.open()
        while not self._closed and self.ended is None:
            source = self._stream() if self.streaming else self._poll()
            async for batch in source:
                yield batch

    async def _stream(self) -> AsyncIterator[Sequence[Comment]]:
        """One streamList connection; returns when it closes (the caller reopens it from the last token)."""
        assert self._session is not None
        url, params, headers = self._request(stream=True)
        splitter = JsonObjectStream()
        objects_seen = 0
        try:
            async with self._session.get(url, params=params, headers=headers) as resp:
                self.streams += 1
                if resp.status != 200:
                    raw = await resp.read()
                    await self._fail(resp.status, _json(raw), raw, stream=True)
                    return
                async for chunk in resp.content.iter_any():
                    try:
                        objects = splitter.feed(chunk)
                    except MalformedInput as exc:
                        self.stats.malformed(exc.reason, exc.detail, exc.sample)
                        raise RetryableError("youtube streamList: the stream is corrupt; reopening") from exc
                    objects_seen += len(objects)
                    for obj in objects:
                        if isinstance(obj, dict) and "error" in obj:
                            await self._fail(int(obj["error"].get("code", 500)), obj, b"", stream=True)
                            return
                        batch = self._page(obj)
                        if batch:
                            yield batch
                        if self.ended is not None:
                            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableError(f"youtube streamList: {exc!r}") from exc
        if not objects_seen and self.ended is None:
            # A stream that closes with nothing in it is reopened after a backoff, never in a tight loop.
            raise RetryableError("youtube streamList: the stream closed without a response")

    async def _poll(self) -> AsyncIterator[Sequence[Comment]]:
        """One ``list`` call and the wait after it."""
        assert self._session is not None
        url, params, headers = self._request(stream=False)
        try:
            async with self._session.get(url, params=params, headers=headers) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableError(f"youtube: {exc!r}") from exc
        self.polls += 1
        data = _json(raw)
        if status != 200:
            await self._fail(status, data, raw, stream=False)
            return
        batch = self._page(data if data is not None else raw)
        if batch:
            yield batch
        if self.ended is None and self._last_interval is not None:
            await self._sleep(max(self._last_interval, float(self.options["poll_floor"])))

    _last_interval: float | None = None

    def _page(self, data: Any) -> list[Comment]:
        """The new comments of one response object (history skipped); remembers its token and interval."""
        if isinstance(data, bytes):
            self.stats.malformed("bad_json", "response is not JSON", data[:200])
            self._last_interval = float(self.options["poll_floor"])
            return []
        try:
            page = parse_page(data)
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            self._last_interval = float(self.options["poll_floor"])
            return []
        self._rate_delay = 0.0
        batch = self._take(page)
        first, self._first = self._first, False
        if page.next_token:
            self._token = page.next_token
        if first and not self.options["include_history"]:
            self.history_skipped += len(batch)
            batch = []
        self._last_interval = page.interval
        if page.offline_at is not None:
            self.ended = page.offline_at
            log.info("adapter %s: broadcast went offline at %s", self.name, page.offline_at)
        return batch

    async def _fail(self, status: int, data: Any, raw: bytes, *, stream: bool) -> None:
        kind = classify_error(status, data)
        reason = error_reason(data) or f"HTTP {status}"
        if kind is ErrorKind.ENDED:
            self.ended = reason
        elif kind is ErrorKind.ABSENT and stream and self.options["mode"] == "auto":
            self.streaming = False
            log.info("adapter %s: liveChatMessages.streamList is not offered here (%s); polling list instead",
                     self.name, reason)
        elif kind is ErrorKind.QUOTA:
            # The daily quota: nothing succeeds before midnight Pacific, so one wait, not a retry storm.
            self.quota_errors += 1
            wait = quota_reset_delay(self._clock()) + float(self.options["quota_reset_margin"])
            self.quota_waits.append((self._clock(), wait))
            log.warning("adapter %s: YouTube daily quota spent (%s); waiting %.0f s for the reset at midnight "
                        "Pacific", self.name, reason, wait)
            await self._sleep(wait)
        elif kind is ErrorKind.RATE:
            self.rate_limited += 1
            cap = float(self.options["rate_retry_max"])
            self._rate_delay = min(cap, max(1.0, float(self.options["poll_floor"]), self._rate_delay * 2))
            log.info("adapter %s: %s; next try in %.1f s", self.name, reason, self._rate_delay)
            await self._sleep(self._rate_delay)
        elif kind is ErrorKind.RETRY:
            raise RetryableError(f"youtube: HTTP {status}: {raw[:200]!r}")
        else:  # FATAL, or an endpoint that is absent where it was required
            raise FatalAdapterError(f"youtube live chat {self.chat_id}: {reason}: {raw[:300]!r}")

    def _take(self, page: Page) -> list[Comment]:
        out: list[Comment] = []
        for item in page.items:
            try:
                comment = item_to_comment(item, self.chat_id)
            except MalformedInput as exc:
                self.stats.malformed(exc.reason, exc.detail, exc.sample)
                continue
            admit(out, comment, self._seen, self.stats)
        return out

    async def send_replies(self, replies: Sequence[Reply]) -> None:
        """Post each reply into the chat with ``liveChatMessages.insert``. Needs ``access_token``; a reply that
        cannot be posted is counted in ``stats.errors`` and logged."""
        o = self.options
        if not o["access_token"]:
            self.stats.errors += len(replies)
            self.reply_failures += len(replies)
            log.warning("adapter %s: %d replies not sent: liveChatMessages.insert needs access_token (OAuth); "
                        "an API key cannot write", self.name, len(replies))
            return
        await self.open()
        assert self._session is not None
        url = f"{o['api_base'].rstrip('/')}/liveChat/messages"
        for r in replies:
            body = {"snippet": {"liveChatId": self.chat_id, "type": TEXT_EVENT,
                                "textMessageDetails": {"messageText": " ".join(r.text.split())[:MAX_REPLY]}}}
            try:
                async with asyncio.timeout(float(o["timeout"])), self._session.post(
                        url, params={"part": "snippet"}, json=body,
                        headers={"Authorization": f"Bearer {o['access_token']}"}) as resp:
                    raw = await resp.read()
                    if resp.status == 200:
                        self.stats.replies_sent += 1
                        continue
                    problem = f"HTTP {resp.status} {error_reason(_json(raw)) or raw[:120]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = repr(exc)
            self.reply_failures += 1
            self.stats.errors += 1
            log.warning("adapter %s: reply not posted: %s", self.name, problem)


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
