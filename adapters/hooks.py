"""The built-in hook: POST durable outcomes and stream events as JSON to a URL, with retries.

Registered as ``http_post`` in the ``livecart.hooks`` entry-point group::

    [[hooks]]
    type = "http_post"
    url = "https://shop.example/livecart"   # required
    token = "s3cret"                        # sent as "Authorization: Bearer s3cret"; optional
    timeout = 5                             # seconds per attempt
    retries = 3                             # attempts after the first, on 5xx / 408 / 429 / network errors
    backoff = 0.5                           # first retry delay (seconds), doubling, jittered, capped at 30

Bodies: ``{"stream": NAME, "outcomes": [outcome, ...]}`` (each outcome as docs/contract.md §4, plus platform,
room, ts, seq) and ``{"stream": NAME, "event": {"kind": "sold_out", "sku": ..., "variant": ..., ...}}``.
A 2xx answer is success; any other 4xx is not retried. After the last attempt the hook raises
:class:`DeliveryFailed` (the runner counts and logs it) and counts it in :attr:`HttpPostHook.gave_up`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
import orjson

from livecart.adapters.reconnect import Backoff, backoff
from livecart.core.errors import LivecartError
from livecart.core.records import Outcome
from livecart.plugin import Hook, Option, check_more_than_zero, check_nonneg

log = logging.getLogger("livecart.hooks")

_RETRY_STATUS = frozenset({408, 429})


def _url(v: Any) -> str | None:
    return None if isinstance(v, str) and v.startswith(("http://", "https://")) else "must be an http(s) URL"


class DeliveryFailed(LivecartError):
    """A POST that did not succeed after every attempt (or was refused with a 4xx)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Retry(Exception):
    pass


class HttpPostHook(Hook):
    type = "http_post"
    OPTIONS: ClassVar[Mapping[str, Option]] = {
        "url": Option(str, required=True, check=_url, doc="where to POST"),
        "token": Option(str, "", doc="Bearer token sent in the Authorization header"),
        "timeout": Option(float, 5.0, check=check_more_than_zero, doc="seconds per attempt"),
        "retries": Option(int, 3, check=check_nonneg, doc="attempts after the first on 5xx/408/429/network errors"),
        "backoff": Option(float, 0.5, check=check_more_than_zero, doc="first retry delay, doubling, capped at 30s"),
        "stream": Option(str, "", doc="stream name in the body; defaults to [stream].name"),
    }

    def __init__(self, options: Mapping[str, Any], *, name: str) -> None:
        full = {k: o.default for k, o in self.OPTIONS.items()}
        full.update({k: v for k, v in options.items() if v is not None})
        super().__init__(full, name=name)
        if not full.get("url"):
            raise ValueError(f"hook {name}: option 'url' is required")
        self.url: str = full["url"]
        self.stream: str = full["stream"] or ""
        self.timeout = float(full["timeout"])
        self.retries = int(full["retries"])
        self.policy = Backoff(initial=float(full["backoff"]), cap=30.0)
        self._headers = {"Content-Type": "application/json"}
        if full["token"]:
            self._headers["Authorization"] = f"Bearer {full['token']}"
        self._session: aiohttp.ClientSession | None = None
        #: Bodies delivered, attempts retried, bodies given up on.
        self.posted = 0
        self.retried = 0
        self.gave_up = 0

    async def open(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def on_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        await self.post({"stream": self.stream, "outcomes": [o.to_dict() for o in outcomes]})

    async def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        await self.post({"stream": self.stream, "event": {**data, "kind": event}})

    async def _attempt(self, session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(self.url, data=body, headers=self._headers) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return
                if resp.status >= 500 or resp.status in _RETRY_STATUS:
                    raise _Retry(f"HTTP {resp.status}")
                raise DeliveryFailed(f"hook {self.name}: {self.url} refused the POST with HTTP {resp.status}",
                                     resp.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _Retry(repr(exc)) from exc

    async def post(self, payload: Mapping[str, Any]) -> None:
        """POST ``payload`` as JSON, retrying as the module docstring says. Raises :class:`DeliveryFailed`."""
        await self.open()
        assert self._session is not None
        body = orjson.dumps(payload)
        delays = backoff(self.policy)
        attempt = 0
        while True:
            try:
                await self._attempt(self._session, body)
            except _Retry as exc:
                if attempt >= self.retries:
                    self.gave_up += 1
                    raise DeliveryFailed(f"hook {self.name}: gave up on {self.url} after {attempt + 1} "
                                         f"attempt(s): {exc}") from exc
                attempt += 1
                self.retried += 1
                delay = next(delays)
                log.debug("hook %s: POST failed (%s); retry %d in %.2fs", self.name, exc, attempt, delay)
                await asyncio.sleep(delay)
                continue
            except DeliveryFailed:
                self.gave_up += 1
                raise
            self.posted += 1
            return

    def __repr__(self) -> str:
        return (f"<HttpPostHook {self.name} -> {self.url}: {self.posted} posted, {self.retried} retried, "
                f"{self.gave_up} given up>")
