"""The shell shared by the adapters a platform pushes to over HTTP: ``douyin``, ``kuaishou``, ``instagram``.

A subclass says how one request is verified and decoded (:meth:`PushAdapter.decode_push`) and, where the
platform has one, how the push task is started and stopped (:meth:`PushAdapter.start_tasks`,
:meth:`PushAdapter.stop_tasks`); this class runs the aiohttp server under the shared reconnect loop (a bind
failure, e.g. the port still held by a dying process, is retried), buffers comments in a bounded
:class:`~livecart.adapters._intake.Intake`, and answers.

Every 2xx answer leaves through one method, :meth:`PushAdapter._acknowledge`, and only once what the push held
is durable (STYLE 9b; ``docs``, "Acknowledgement"): the comments go to the engine as a
:class:`~livecart.plugin.Batch` and the answer waits for its settlement. When that cannot be said within
``ack_timeout`` (under the platform's own deadline), or the buffer is full, or the journal failed, or the
daemon is stopping, the answer is 503 with ``Retry-After`` and the platform pushes again; comments that were
durable after all are recognised by their ids. A refused push is answered by the status its :class:`Refused`
names and counted under its reason. The listener has the same connection hygiene as the webhook
(:mod:`livecart.listen`: a connection cap, idle and request-head timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
import orjson
from aiohttp import web

from livecart.adapters._codec import RecentKeys, with_defaults
from livecart.adapters._intake import Intake
from livecart.adapters.reconnect import Backoff, reconnecting
from livecart.core.errors import FatalAdapterError, LivecartError, NotDurable, RetryableError
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

#: Largest push body accepted; a comment batch is far smaller.
MAX_BODY = 1 << 20


class Refused(Exception):
    """A push that is answered with ``status`` and counted under ``reason`` (never raised out of the adapter)."""

    def __init__(self, status: int, reason: str, detail: str, sample: object = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.sample = sample


def _check_path(value: Any) -> str | None:
    return None if isinstance(value, str) and value.startswith("/") else "must start with '/'"


def push_options(path: str, port: int, ack_timeout: float) -> dict[str, Option]:
    """The keys every push adapter has (each adds its own); ``ack_timeout`` stays under the platform's own
    answer deadline."""
    return {
        # Loopback by default: the platform reaches livecart through the seller's HTTPS front (a reverse
        # proxy or tunnel), never by livecart listening on every interface unasked.
        "host": Option(str, "127.0.0.1", doc="address to listen on (put an HTTPS reverse proxy in front)"),
        "port": Option(int, port, check=check_port, doc="port to listen on (0 = any free port)"),
        "path": Option(str, path, check=_check_path, doc="the push URL's path, as configured on the platform"),
        "queue_max": Option(int, 100_000, check=check_more_than_zero,
                            doc="comments held for the pipeline before a push is answered 503"),
        "retry_after": Option(float, 1.0, check=check_more_than_zero, doc="Retry-After of a 503 (s)"),
        "ack_timeout": Option(float, ack_timeout, check=check_more_than_zero,
                              doc="longest wait for the journal commit before answering 503 (s)"),
        "max_connections": Option(int, 0, check=check_nonneg, doc="open connections at most; 0 = from the fd limit"),
        "idle_timeout": Option(float, DEFAULT_IDLE, check=check_nonneg, doc="close a silent connection after (s)"),
        "request_timeout": Option(float, DEFAULT_REQUEST, check=check_more_than_zero,
                                  doc="a request head must be complete within (s)"),
        "retry_initial": Option(float, 0.5, check=check_more_than_zero,
                                doc="first retry delay when the port cannot be bound (s)"),
        "retry_max": Option(float, 30.0, check=check_more_than_zero, doc="longest retry delay (s)"),
    }


class PushAdapter(Adapter):
    """Base class of the HTTP-push platform adapters (see the module docstring)."""

    #: The platform's expected success body and its content type.
    OK_BODY: ClassVar[bytes] = b"{}"
    OK_TYPE: ClassVar[str] = "application/json"

    def __init__(self, options: Mapping[str, Any], *, name: str, stats: AdapterStats | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"{self.type} {name}"), name=name, stats=stats)
        self._clock = clock
        self._sleep = sleep
        self.intake = Intake(int(self.options["queue_max"]))
        self._runner: web.AppRunner | None = None
        self._seen = RecentKeys(65536)
        self._retry_after = str(max(1, math.ceil(float(self.options["retry_after"]))))
        self._tasks_started = False
        self.guard: Guard | None = None
        self.ready = asyncio.Event()
        self.port: int | None = None
        #: Pushes answered 503 because the buffer was full.
        self.busy = 0
        #: Valid pushes that carried nothing to order from (gifts, likes, other fields).
        self.ignored = 0
        self.requests = 0

    @property
    def bound_port(self) -> int:
        """The port listened on (once :attr:`ready` is set); the daemon shows it in its status."""
        if self.port is None or self._runner is None:
            raise RuntimeError(f"{self.type} {self.name}: not listening")
        return self.port

    # --- what a subclass provides -----------------------------------------------------------------------

    def decode_push(self, request: web.Request, body: bytes) -> list[Comment]:
        """The comments of one verified push. Raise :class:`Refused` to refuse it; count bad items yourself."""
        raise NotImplementedError

    def add_routes(self, app: web.Application) -> None:
        """Register the push route; a subclass may add more (a subscription handshake)."""
        app.router.add_post(self.options["path"], self._handle)

    async def start_tasks(self) -> None:
        """Ask the platform to start pushing (called once the endpoint listens). Default: nothing to start."""

    async def stop_tasks(self) -> None:
        """Ask the platform to stop pushing (called on close, best effort). Default: nothing to stop."""

    # --- the shell ----------------------------------------------------------------------------------------

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Pushes still waiting for a commit that will not come now are answered 503 (the platform retries).
            self.intake.abandon(NotDurable(f"{self.type} {self.name}: the daemon is stopping"))
            if self._tasks_started:
                self._tasks_started = False
                try:
                    async with asyncio.timeout(10):
                        await self.stop_tasks()
                except Exception as exc:  # best effort: the platform also stops when the room closes
                    log.warning("adapter %s: could not stop the push task: %r", self.name, exc)
        await self._stop()
        await super().close()

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        self.ready.clear()
        if runner is not None:
            await runner.cleanup()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        policy = Backoff(initial=float(self.options["retry_initial"]), cap=float(self.options["retry_max"]))
        return reconnecting(self._serve, stats=self.stats, policy=policy, sleep=self._sleep)

    async def _serve(self) -> AsyncIterator[Sequence[Comment]]:
        if self._closed:
            return
        o = self.options
        app = web.Application(client_max_size=MAX_BODY)
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               **runner_options(float(o["idle_timeout"])))
        await runner.setup()
        self.guard = Guard(f"{self.type} {self.name}", max_connections=int(o["max_connections"]),
                           idle_timeout=float(o["idle_timeout"]), request_timeout=float(o["request_timeout"]))
        try:
            site = GuardedSite(runner, o["host"], int(o["port"]), self.guard)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise RetryableError(f"{self.type}: cannot listen on {o['host']}:{o['port']}: {exc.strerror}") from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        try:
            if not self._tasks_started:
                await self.start_tasks()
                self._tasks_started = True
            self.stats.connected = True
            self.ready.set()
            log.info("adapter %s: listening for %s pushes on %s:%s%s", self.name, self.type, o["host"],
                     self.port, o["path"])
            while True:
                batch = await self.intake.get()
                if batch is None:
                    return
                yield batch
        finally:
            await self._stop()

    async def _handle(self, request: web.Request) -> web.Response:
        # Verify, decode, buffer, answer: nothing here waits on the pipeline, so the platform's answer
        # deadline (2 s on Douyin) is met.
        self.requests += 1
        if self.intake.closed:
            return self._busy()
        try:
            body = await read_body(request)
            comments = self.decode_push(request, body)
        except UnreadableBody as exc:
            self.stats.malformed("bad_encoding", str(exc))
            return closing(web.json_response({"error": "bad_encoding", "detail": str(exc)}, status=400))
        except web.HTTPRequestEntityTooLarge:
            self.stats.malformed("oversized", f"push body over {MAX_BODY} bytes refused with 413")
            return web.json_response({"error": f"body over {MAX_BODY} bytes"}, status=413)
        except Refused as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return web.json_response({"error": exc.reason, "detail": exc.detail}, status=exc.status)
        return await self._acknowledge(comments)

    async def _acknowledge(self, comments: list[Comment]) -> web.Response:
        """The one place a push is answered 2xx: once its comments are durable (or it held none).

        Redeliveries are counted as duplicates and go on too: the engine recognises them by id, and the answer
        must wait until the first copy is durable, which the engine's ordering of settlements guarantees.
        """
        if not comments:
            return web.Response(body=self.OK_BODY, content_type=self.OK_TYPE)
        self.stats.duplicates += sum(1 for c in comments if self._seen.seen(c.key))
        batch = Batch(comments)
        durable = batch.durable()
        if not self.intake.offer(batch):
            durable.cancel()
            return self._busy(f"buffer full ({len(self.intake)} comments)")
        self.stats.received += len(comments)
        try:
            async with asyncio.timeout(float(self.options["ack_timeout"])):
                await durable
        except TimeoutError:
            return self._busy(f"no journal commit within {self.options['ack_timeout']}s")
        except LivecartError as exc:
            return self._busy(str(exc))
        return web.Response(body=self.OK_BODY, content_type=self.OK_TYPE)

    def _busy(self, why: str = "the daemon is stopping") -> web.Response:
        self.busy += 1
        level = logging.WARNING if self.busy == 1 else logging.DEBUG
        log.log(level, "adapter %s: %s; answering 503 (the platform retries)%s", self.name, why,
                " (further ones are counted in busy, logged at DEBUG)" if self.busy == 1 else "")
        return web.json_response({"error": f"not durable ({why}); retry later"}, status=503,
                                 headers={"Retry-After": self._retry_after})

    def __repr__(self) -> str:
        s = self.stats
        state = "closed" if self._closed else ("listening" if self._runner is not None else "idle")
        return (f"<{type(self).__name__} {self.name}: {state} on port {self.port}, {self.requests} requests, "
                f"{s.received} comments, {s.malformed_total} refused, {self.busy} busy>")


def require_secret(where: str, key: str, value: Any) -> str:
    """``value`` as a non-empty secret, or :class:`FatalAdapterError`: an empty secret verifies anything."""
    if not isinstance(value, str) or not value.strip():
        raise FatalAdapterError(f"{where}: {key} must be set to the platform's secret; an empty secret would "
                                "accept forged pushes")
    return value


async def post_json(url: str, payload: Mapping[str, Any], headers: Mapping[str, str],
                    limit: float = 10.0) -> tuple[int, Any]:
    """POST ``payload`` as JSON; the status and the decoded answer (None when it is not JSON).

    Network failures raise :class:`RetryableError`.
    """
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as s, \
                s.post(url, json=dict(payload), headers=dict(headers)) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RetryableError(f"POST {url}: {exc!r}") from exc
    data: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(raw)
    return status, data
