"""``webhook``: an HTTP endpoint that accepts POSTed comments (one JSON object or a JSON array of them).

Keys: ``host`` (127.0.0.1), ``port`` (0 = a free one, see :attr:`WebhookAdapter.bound_port`), ``path``
(``/comments``), ``token`` (when set, required as ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``),
``max_body`` (bytes), ``max_pending`` (comments buffered for the consumer), ``retry_after`` (seconds told to
a refused sender), ``ack_timeout`` (longest wait for the journal before answering 503), ``platform`` /
``room`` / ``fields`` / ``ts_unit`` (as for ``websocket``), and the listener's hygiene (see
:mod:`livecart.adapters._listen`): ``max_connections``, ``idle_timeout``, ``request_timeout``.

A 2xx answer means that what the request held is durable (contract §1): the handler hands the comments to
the engine and answers once the journal has committed them.

=======  ======================================================================================
status   when
=======  ======================================================================================
200      durable; body ``{"accepted": N, "rejected": [{"index", "reason", "detail"}...]}`` (the
         good elements of an array are taken even when others are bad; ``rejected`` ones are not
         kept, and sending them again will not help)
400      the body is not JSON, or nothing in it is a valid comment; the body says why
401      token missing or wrong (with ``WWW-Authenticate: Bearer``)
413      the body is over ``max_body``
503      not durable, send it again after ``Retry-After`` seconds: the buffer is full (the engine
         is behind), the journal failed, the daemon is stopping, or the commit took longer than
         ``ack_timeout`` (the request may then be in the journal already: a resend is recognised
         by its ids and processed once)
=======  ======================================================================================

Each refusal is counted (``malformed`` by reason: ``bad_json``, ``bad_token``, ``oversized``, ...;
:attr:`WebhookAdapter.busy` for 503s). Duplicate deliveries (a sender retrying) pass through with their ids.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from aiohttp import web

from livecart.adapters._codec import DEFAULT_MAX_BYTES, Decoder, RecentKeys, check_fields, with_defaults
from livecart.adapters._intake import Intake
from livecart.core.errors import FatalAdapterError, LivecartError, MalformedInput, NotDurable
from livecart.core.records import Comment
from livecart.listen import (
    DEFAULT_IDLE,
    DEFAULT_REQUEST,
    Guard,
    GuardedSite,
    UnreadableBody,
    closing,
    read_body,
    runner_options,
)
from livecart.plugin import (
    Adapter,
    AdapterStats,
    Batch,
    Option,
    check_more_than_zero,
    check_nonneg,
    check_port,
)

log = logging.getLogger("livecart.adapter")


def _check_path(value: Any) -> str | None:
    return None if isinstance(value, str) and value.startswith("/") else "must start with '/'"


class WebhookAdapter(Adapter):
    type = "webhook"
    OPTIONS: ClassVar[Mapping[str, Option]] = {
        "host": Option(str, "127.0.0.1", doc="address to listen on"),
        "port": Option(int, 0, check=check_port, doc="port; 0 = a free one (see bound_port)"),
        "path": Option(str, "/comments", check=_check_path, doc="URL path that accepts POSTs"),
        "token": Option(str, "", doc="shared secret; empty = none required"),
        "max_body": Option(int, DEFAULT_MAX_BYTES, check=check_more_than_zero, doc="largest request body, bytes"),
        "max_pending": Option(int, 10000, check=check_more_than_zero, doc="comments buffered before answering 503"),
        "retry_after": Option(float, 1.0, check=check_more_than_zero, doc="Retry-After of a 503, seconds"),
        "ack_timeout": Option(float, 10.0, check=check_more_than_zero,
                              doc="longest wait for the journal commit before answering 503, s"),
        "fields": Option(dict, {}, check=check_fields, doc="contract field = payload field"),
        "ts_unit": Option(str, "s", choices=("s", "ms"), doc="unit of the payload's ts field"),
        "max_connections": Option(int, 0, check=check_nonneg, doc="open connections at most; 0 = from the fd limit"),
        "idle_timeout": Option(float, DEFAULT_IDLE, check=check_nonneg, doc="close a silent connection after, s"),
        "request_timeout": Option(float, DEFAULT_REQUEST, check=check_more_than_zero,
                                  doc="a request head must be complete within, s"),
        "platform": Option(str, "webhook", doc="platform of comments that name none"),
        "room": Option(str, "default", doc="room of comments that name none"),
    }

    def __init__(self, options: Mapping[str, Any], *, name: str, stats: AdapterStats | None = None) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"webhook {name}"), name=name, stats=stats)
        o = self.options
        problem = _check_path(o["path"])
        if problem:
            raise FatalAdapterError(f"webhook {name}: path {problem}")
        self.decoder = Decoder(self.stats, platform=o["platform"], room=o["room"], fields=o["fields"],
                               max_bytes=o["max_body"], ts_unit=o["ts_unit"], dedupe_window=0)
        # Duplicates are counted only for comments handed on, so a sender's retry after a 503 is not one.
        self._recent = RecentKeys(4096)
        self.intake = Intake(int(o["max_pending"]))
        #: Requests refused with 503 because the buffer was full.
        self.busy = 0
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.guard: Guard | None = None
        self._retry_after = str(max(1, math.ceil(float(o["retry_after"]))))

    @property
    def bound_port(self) -> int:
        """The port actually listened on (after :meth:`open`)."""
        if self._port is None:
            raise RuntimeError(f"webhook {self.name}: not listening")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.options['host']}:{self.bound_port}{self.options['path']}"

    async def open(self) -> None:
        if self._runner is not None or self.closed:  # a closed adapter is never reopened
            return
        o = self.options
        # client_max_size makes aiohttp itself refuse a longer body with 413 while reading it.
        app = web.Application(client_max_size=int(o["max_body"]))
        app.router.add_post(o["path"], self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               **runner_options(float(o["idle_timeout"])))
        await runner.setup()
        self.guard = Guard(f"webhook {self.name}", max_connections=int(o["max_connections"]),
                           idle_timeout=float(o["idle_timeout"]), request_timeout=float(o["request_timeout"]))
        site = GuardedSite(runner, o["host"], int(o["port"]), self.guard)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise FatalAdapterError(f"webhook {self.name}: cannot listen on {o['host']}:{o['port']}: {exc}") \
                from exc
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self.stats.connected = True  # listening: senders can reach it (the board says so, not 'disconnected')
        log.info("adapter %s: webhook listening on %s", self.name, self.url)

    async def close(self) -> None:
        # Requests still waiting for a commit that will not come now are answered 503 (their senders retry).
        self.intake.abandon(NotDurable(f"webhook {self.name}: the daemon is stopping"))
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self.stats.connected = False
        await super().close()

    async def batches(self) -> AsyncIterator[Sequence[Comment]]:
        await self.open()
        while True:
            batch = await self.intake.get()
            if batch is None:
                return
            yield batch

    def _authorised(self, request: web.Request) -> bool:
        token = str(self.options["token"])
        if not token:
            return True
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.startswith("Bearer ") else request.query.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorised(request):
            self.stats.malformed("bad_token", "request refused with 401", request.remote)
            return web.json_response({"error": "missing or wrong token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="livecart"'})
        limit = int(self.options["max_body"])
        if request.content_length is not None and request.content_length > limit:
            self.stats.malformed("oversized", f"body of {request.content_length} bytes refused with 413")
            return web.json_response({"error": f"body is over the limit of {limit} bytes"}, status=413)
        if self.intake.full() or self.intake.closed:
            return self._busy()
        try:
            body = await read_body(request)
        except UnreadableBody as exc:
            self.stats.malformed("bad_encoding", str(exc))
            return closing(web.json_response({"error": f"bad_encoding: {exc}"}, status=400))
        except web.HTTPRequestEntityTooLarge:
            self.stats.malformed("oversized", "chunked body over the limit refused with 413")
            return web.json_response({"error": f"body is over the limit of {limit} bytes"}, status=413)
        rejected: list[tuple[int | None, MalformedInput]] = []
        comments = self.decoder.decode(body, rejected)
        problems = [{"index": i, "reason": e.reason, "detail": e.detail} for i, e in rejected]
        if not comments:
            if not problems:  # an empty array: nothing to do, nothing wrong
                return web.json_response({"accepted": 0, "rejected": []}, status=200)
            first = problems[0]
            return web.json_response({"error": f"{first['reason']}: {first['detail']}", "rejected": problems},
                                     status=400)
        batch = Batch(comments)
        durable = batch.durable()
        if not self.intake.offer(batch):
            # Nothing of this request is kept, so a retry of the whole request is exactly right; undo the
            # count of comments received that were never handed on.
            durable.cancel()
            self.stats.received -= len(comments)
            return self._busy()
        seen = self._recent.seen
        self.stats.duplicates += sum(1 for c in comments if seen(c.key))
        try:
            async with asyncio.timeout(float(self.options["ack_timeout"])):
                await durable
        except TimeoutError:
            # Either is possible and this adapter cannot tell which: the commit, or a host's pause (the
            # daemon takes nothing in until resume). Said as both, not blamed on the journal.
            return self._busy(f"not taken in and committed within {float(self.options['ack_timeout']):g} s: "
                              "the host paused intake, or the journal commit is slow")
        except LivecartError as exc:
            return self._busy(str(exc))
        return web.json_response({"accepted": len(comments), "rejected": problems}, status=200)

    def _busy(self, why: str = "") -> web.Response:
        self.busy += 1
        reason = why or f"buffer full ({len(self.intake)} comments)"
        level = logging.WARNING if self.busy == 1 else logging.DEBUG
        log.log(level, "adapter %s: %s; answering 503%s", self.name, reason,
                " (further ones are counted in busy, logged at DEBUG)" if self.busy == 1 else "")
        return web.json_response({"error": f"not durable ({reason}); retry later"}, status=503,
                                 headers={"Retry-After": self._retry_after})

    def __repr__(self) -> str:
        s = self.stats
        where = self.url if self._port is not None else f"{self.options['host']}:{self.options['port']}"
        state = "closed" if self.closed else ("listening" if self._runner is not None else "idle")
        return (f"<WebhookAdapter {self.name}: {where}, {state}, {self.requests} requests, {s.received} "
                f"comments, {s.malformed_total} malformed, {self.busy} busy, {self.intake!r}>")
