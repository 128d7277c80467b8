"""Connection hygiene for every socket livecart listens on (webhook, Douyin push, WebSocket server, status,
host controls).

A :class:`Guard` wraps a listener's protocol factory and enforces, per listener:

* a cap on open connections (``max_connections``), below the process's file-descriptor limit, so that a
  flood of connections on one public listener cannot use up the descriptors that ``livecart ctl`` and
  ``/healthz`` need. A connection over the cap is closed at once (reset) and counted;
* a request timeout: a connection must complete the head of its first request (an HTTP request or a
  WebSocket upgrade, up to the blank line) within ``request_timeout`` seconds of connecting, or it is
  closed (a slow-header client, or one that connects and says nothing);
* an idle timeout: a connection that has sent nothing for ``idle_timeout`` seconds is closed (0 = off).

Every refusal and timeout is counted (:attr:`Guard.counts`, exported by the daemon as
``livecart_connections_total{listener, event}``) and logged: the first of each kind at WARNING, then one
summary a minute at most. :func:`raise_nofile_limit` raises the soft ``RLIMIT_NOFILE`` to the hard limit at
start; :func:`default_cap` derives a listener's cap from the soft limit that is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web, web_protocol

log = logging.getLogger("livecart.listen")

#: Descriptors kept free of every listener's cap: the journal, the broker and hook connections, logs.
RESERVE = 128
#: Share of the descriptors left that one public listener may hold (four such listeners fit at once).
SHARE = 4
DEFAULT_IDLE = 30.0
DEFAULT_REQUEST = 10.0
#: Seconds between two summary log lines of one listener.
LOG_EVERY = 60.0

#: Every guard alive, for the daemon's metrics.
GUARDS: weakref.WeakSet[Guard] = weakref.WeakSet()


def nofile_limit() -> tuple[int, int]:
    """The soft and hard ``RLIMIT_NOFILE`` (a large default where the platform has none)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 8192, 8192
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft), int(hard)


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (capped at 1,048,576); return the soft limit now."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return nofile_limit()[0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            log.info("raised the open-file limit from %d to %d", soft, want)
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return int(soft)


def default_cap(share: int = SHARE) -> int:
    """Connections one listener may hold: a ``share``-th of the descriptors left after :data:`RESERVE`."""
    soft = nofile_limit()[0]
    return max(16, (soft - RESERVE) // share)


class Guard:
    """The limits of one listener and its counts. Call :meth:`wrap` on the protocol factory before
    ``create_server``; the sweeper runs while at least one connection is open."""

    def __init__(self, name: str, *, max_connections: int = 0, idle_timeout: float = DEFAULT_IDLE,
                 request_timeout: float = DEFAULT_REQUEST, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.max_connections = max_connections or default_cap()
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.clock = clock
        self.live: set[_Guarded] = set()
        #: ``refused`` (over the cap), ``idle`` and ``request_timeout`` (closed by a timeout), ``accepted``.
        self.counts: dict[str, int] = {"accepted": 0, "refused": 0, "idle": 0, "request_timeout": 0}
        self._sweeper: asyncio.Task[None] | None = None
        self._logged: dict[str, float] = {}
        GUARDS.add(self)

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, factory)

    def note(self, event: str) -> None:
        n = self.counts[event] = self.counts.get(event, 0) + 1
        now = self.clock()
        last = self._logged.get(event)
        if last is None or now - last >= LOG_EVERY:
            self._logged[event] = now
            what = {"refused": f"over the cap of {self.max_connections} open connections",
                    "idle": f"idle for {self.idle_timeout:g}s",
                    "request_timeout": f"no complete request within {self.request_timeout:g}s"}.get(event, event)
            log.warning("listener %s: closed a connection %s (%d so far; counted, logged at most once a "
                        "minute)", self.name, what, n)

    def _opened(self, conn: _Guarded) -> bool:
        if len(self.live) >= self.max_connections:
            self.note("refused")
            return False
        self.live.add(conn)
        self.counts["accepted"] += 1
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name=f"guard:{self.name}")
        return True

    async def _sweep(self) -> None:
        timeouts = [t for t in (self.idle_timeout, self.request_timeout) if t > 0]
        step = max(0.05, min(timeouts) / 4) if timeouts else 1.0
        while self.live:
            await asyncio.sleep(step)
            now = self.clock()
            for conn in list(self.live):
                if conn.head_pending and self.request_timeout and now - conn.opened > self.request_timeout:
                    self.note("request_timeout")
                    conn.drop()
                elif self.idle_timeout and not conn.streaming and now - conn.last_rx > self.idle_timeout:
                    self.note("idle")
                    conn.drop()

    def streaming(self, transport: object) -> None:
        """Exempt the connection on ``transport`` from the idle timeout: it carries a long-lived response
        (server push, such as the console's event stream) on which the peer sends nothing. It still counts
        against the cap and ends when either side closes it."""
        for conn in self.live:
            if conn.transport is transport:
                conn.streaming = True

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def __repr__(self) -> str:
        c = self.counts
        return (f"<Guard {self.name}: {len(self.live)}/{self.max_connections} open, {c['refused']} refused, "
                f"{c['idle']} idle and {c['request_timeout']} slow closed>")


class _Guarded(asyncio.Protocol):
    """Delegates to the listener's own protocol, watching what arrives. A refused connection never reaches
    the inner protocol."""

    __slots__ = ("guard", "inner", "transport", "opened", "last_rx", "head_pending", "streaming", "_tail",
                 "_factory")

    def __init__(self, guard: Guard, factory: Callable[[], Any]) -> None:
        self.guard = guard
        self._factory = factory
        self.inner: Any = None
        self.transport: asyncio.BaseTransport | None = None
        self.opened = self.last_rx = guard.clock()
        self.head_pending = True
        self.streaming = False
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.guard._opened(self):
            cast(asyncio.Transport, transport).abort()
            return
        self.inner = self._factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.guard.clock()
        if self.head_pending:
            # The end of the first request's head: a blank line, possibly split across reads.
            if b"\r\n\r\n" in self._tail + data[:4] or b"\r\n\r\n" in data:
                self.head_pending = False
                self._tail = b""
            else:
                self._tail = data[-3:]
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.live.discard(self)
        if self.inner is not None:
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def drop(self) -> None:
        self.guard.live.discard(self)
        if self.transport is not None:
            cast(asyncio.Transport, self.transport).abort()


class GuardedSite(web.TCPSite):
    """aiohttp's ``TCPSite`` with a :class:`Guard` around each connection."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: Guard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(self.guard.wrap(server), self._host, self._port,
                                                backlog=self._backlog, reuse_address=self._reuse_address)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        self.guard.close()
        await super().stop()


class UnreadableBody(Exception):
    """A request body that is not what its ``Content-Encoding`` says (not gzip, deflate or br at all)."""


async def read_body(request: web.Request) -> bytes:
    """``request.read()``; raises :class:`UnreadableBody` for a body that cannot be decoded as its
    ``Content-Encoding`` says. The handler answers it (400, counted): aiohttp would otherwise answer 500 and
    log a traceback per request. Its connection is closed after the answer (what follows in it cannot be
    read)."""
    try:
        return await request.read()
    except web_protocol.RequestPayloadError as exc:
        # Nothing more is read from this body: without this, aiohttp reads on after the answer and logs the
        # same error as an unhandled exception.
        request.content.feed_eof()
        encoding = request.headers.get("Content-Encoding", "none")
        raise UnreadableBody(f"the body cannot be decoded as its Content-Encoding ({encoding[:40]}) says") from exc


def closing(response: web.Response) -> web.Response:
    """``response`` with the connection closed after it (a body that could not be read)."""
    response.force_close()
    return response


def runner_options(idle_timeout: float) -> dict[str, Any]:
    """``AppRunner`` keywords that match a guard: keep-alive connections end after ``idle_timeout``
    (aiohttp's default is an hour)."""
    return {"keepalive_timeout": idle_timeout if idle_timeout > 0 else 75.0}
