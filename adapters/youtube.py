"""``youtube``: live chat by polling the YouTube Data API v3 ``liveChatMessages.list``.

Protocol (developers.google.com/youtube/v3/live/docs/liveChatMessages/list, ".../live/docs/errors"):

* ``GET {api_base}/liveChat/messages?liveChatId=...&part=id,snippet,authorDetails&pageToken=...`` with an API
  key (``key=``) or an OAuth bearer token.
* The response has ``items``, ``nextPageToken`` (pass it as ``pageToken`` next time), ``pollingIntervalMillis``
  (wait at least this long before the next request) and, once the broadcast has ended, ``offlineAt``.
* An item: ``id``; ``snippet.type`` (``textMessageEvent`` is a chat line), ``snippet.publishedAt`` (RFC 3339),
  ``snippet.textMessageDetails.messageText`` / ``snippet.displayMessage``; ``authorDetails.channelId`` and
  ``displayName``.
* The first page (no ``pageToken``) is the chat's recent history: comments written before livecart started
  are not orders unless ``include_history`` is set.
* Errors are ``{"error": {"code", "message", "errors": [{"reason", ...}]}}``. ``quotaExceeded`` (403) and
  ``rateLimitExceeded`` are waited out with backoff; ``liveChatEnded`` ends the stream cleanly; other 4xx
  (bad key, forbidden, ``liveChatNotFound``) are fatal; 5xx and network errors are retried.

:func:`parse_page`, :func:`item_to_comment` and :func:`classify_error` are pure; the adapter is the polling
shell around ``aiohttp``, run under the shared reconnect loop so every retry backs off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar

import aiohttp
import orjson

from livecart.adapters._codec import RecentKeys
from livecart.adapters.reconnect import Backoff, reconnecting
from livecart.core.errors import FatalAdapterError, MalformedInput, RetryableError
from livecart.core.records import Comment
from livecart.plugin import Adapter, AdapterStats, Option

log = logging.getLogger("livecart.adapter")

TEXT_EVENT = "textMessageEvent"


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
    """One ``liveChatMessage`` -> a comment; None for events that are not text (joins, deletions, polls ...)."""
    if not isinstance(item, dict) or not isinstance(item.get("snippet"), dict):
        raise MalformedInput("missing_field", "item has no snippet", item)
    snippet = item["snippet"]
    if snippet.get("type") != TEXT_EVENT:
        return None
    details = snippet.get("textMessageDetails")
    text = details.get("messageText") if isinstance(details, dict) else None
    if not isinstance(text, str):
        text = snippet.get("displayMessage")
    author = item.get("authorDetails")
    author = author if isinstance(author, dict) else {}
    user = author.get("channelId") or snippet.get("authorChannelId")
    fields: dict[str, Any] = {"platform": "youtube", "room": chat_id, "id": item.get("id"), "user": user,
                              "name": author.get("displayName") or user, "text": text,
                              "ts": _rfc3339(snippet.get("publishedAt"))}
    return Comment.from_mapping(fields)


class ErrorKind(Enum):
    QUOTA = "quota"        # wait and retry with backoff
    ENDED = "ended"        # the chat is over: end cleanly
    RETRY = "retry"        # a server-side failure
    FATAL = "fatal"        # retrying cannot help


_QUOTA = frozenset({"quotaExceeded", "rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded"})


def error_reason(body: Any) -> str:
    """The first ``error.errors[].reason`` of an API error body, or ''."""
    try:
        return str(body["error"]["errors"][0]["reason"])
    except (TypeError, KeyError, IndexError):
        return ""


def classify_error(status: int, body: Any) -> ErrorKind:
    reason = error_reason(body)
    if reason in _QUOTA or status == 429:
        return ErrorKind.QUOTA
    if reason == "liveChatEnded":
        return ErrorKind.ENDED
    if status >= 500:
        return ErrorKind.RETRY
    return ErrorKind.FATAL


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be more than 0"


def _nonneg(v: Any) -> str | None:
    return None if v >= 0 else "must be 0 or more"


class YouTubeAdapter(Adapter):
    """Chat of one YouTube live broadcast (its ``liveChatId``), by polling."""

    type = "youtube"
    OPTIONS: ClassVar = {
        "api_base": Option(str, "https://www.googleapis.com/youtube/v3", doc="Data API v3 base URL"),
        "live_chat_id": Option(str, required=True, doc="the broadcast's snippet.liveChatId"),
        "api_key": Option(str, "", doc="API key (this or access_token)"),
        "access_token": Option(str, "", doc="OAuth 2 bearer token (this or api_key)"),
        "include_history": Option(bool, False, doc="treat the first page (chat before start) as orders"),
        "poll_floor": Option(float, 1.0, check=_nonneg, doc="shortest wait between polls (s)"),
        "max_results": Option(int, 2000, check=_positive, doc="maxResults per page (200-2000)"),
        "timeout": Option(float, 10.0, check=_positive, doc="HTTP request timeout (s)"),
        "retry_initial": Option(float, 5.0, check=_positive, doc="first backoff after a quota or server error"),
        "retry_max": Option(float, 600.0, check=_positive, doc="longest backoff (s)"),
    }

    def __init__(self, options: Any, *, name: str, stats: AdapterStats | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(options, name=name, stats=stats)
        self._sleep = sleep
        self.chat_id = str(self.options["live_chat_id"])
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._first = True
        self._seen = RecentKeys(32768)
        self.polls = 0
        self.history_skipped = 0
        self.quota_errors = 0
        self.ended: str | None = None

    async def open(self) -> None:
        if not self.options["api_key"] and not self.options["access_token"]:
            raise FatalAdapterError(f"youtube {self.name}: set api_key or access_token")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=float(self.options["timeout"])))

    async def close(self) -> None:
        s, self._session = self._session, None
        if s is not None:
            await s.close()
        await super().close()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        policy = Backoff(initial=float(self.options["retry_initial"]), cap=float(self.options["retry_max"]))
        return reconnecting(self._polling, stats=self.stats, policy=policy, sleep=self._sleep)

    def _request(self) -> tuple[str, dict[str, str], dict[str, str]]:
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
        return f"{o['api_base'].rstrip('/')}/liveChat/messages", params, headers

    async def _fetch(self) -> tuple[int, bytes]:
        assert self._session is not None
        url, params, headers = self._request()
        try:
            async with self._session.get(url, params=params, headers=headers) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableError(f"youtube: {exc!r}") from exc

    async def _polling(self) -> AsyncIterator[Sequence[Comment]]:
        await self.open()
        floor = float(self.options["poll_floor"])
        while not self._closed and self.ended is None:
            status, raw = await self._fetch()
            self.polls += 1
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = None
            if status != 200:
                self._fail(status, data, raw)
                return  # liveChatEnded: the source closed cleanly
            try:
                page = parse_page(data)
            except MalformedInput as exc:
                self.stats.malformed(exc.reason if data is not None else "bad_json", exc.detail, raw[:200])
                await self._sleep(floor)
                continue
            batch = self._take(page)
            first, self._first = self._first, False
            if page.next_token:
                self._token = page.next_token
            if first and not self.options["include_history"]:
                self.history_skipped += len(batch)
                batch = []
            if batch:
                yield batch
            if page.offline_at is not None:
                self.ended = page.offline_at
                log.info("adapter %s: broadcast went offline at %s", self.name, page.offline_at)
                return
            await self._sleep(max(page.interval, floor))

    def _fail(self, status: int, data: Any, raw: bytes) -> None:
        kind = classify_error(status, data)
        reason = error_reason(data) or f"HTTP {status}"
        if kind is ErrorKind.ENDED:
            self.ended = reason
            return
        if kind is ErrorKind.QUOTA:
            self.quota_errors += 1
            raise RetryableError(f"youtube: {reason}; backing off")
        if kind is ErrorKind.RETRY:
            raise RetryableError(f"youtube: HTTP {status}: {raw[:200]!r}")
        raise FatalAdapterError(f"youtube live chat {self.chat_id}: {reason}: {raw[:300]!r}")

    def _take(self, page: Page) -> list[Comment]:
        out: list[Comment] = []
        for item in page.items:
            try:
                comment = item_to_comment(item, self.chat_id)
            except MalformedInput as exc:
                self.stats.malformed(exc.reason, exc.detail, exc.sample)
                continue
            if comment is None:
                continue
            if self._seen.seen(comment.id):
                self.stats.duplicates += 1
                continue
            self.stats.received += 1
            out.append(comment)
        return out
