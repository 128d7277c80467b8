"""Status endpoints on 127.0.0.1: ``/healthz``, ``/metrics`` (Prometheus text 0.0.4), ``/api/state`` (JSON),
and the host's console at ``/`` when one is attached (:mod:`livecart.runtime.console`).

A thin aiohttp shell: what it serves comes from callables the daemon passes in, so this module knows
nothing about the engine. :class:`DaemonMetrics` declares the metric names the issue asks for, so every
part of the daemon counts into the same names::

    livecart_comments_total{platform}            comments in, by platform
    livecart_intents_total{intent}               parsed intents
    livecart_outcomes_total{status}              durable outcomes by status
    livecart_queue_depth{queue}                  items waiting in each internal queue
    livecart_journal_batch_seconds_sum / _count  journal commit latency (sum and count of batches)
    livecart_journal_batch_seconds_max           slowest journal batch so far
    livecart_reconnects_total{adapter}           adapter reconnects
    livecart_malformed_total{adapter,reason}     malformed input, by adapter and reason
    livecart_adapter_connected{adapter}          1 while an adapter's source is connected
    livecart_adapter_errors_total{adapter}       adapter errors (failed connects, unsent replies, failure, close)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web

from livecart.core.records import Outcome
from livecart.listen import DEFAULT_IDLE, Guard, GuardedSite, runner_options
from livecart.plugin import AdapterStats
from livecart.runtime.console import Console
from livecart.runtime.metrics import Registry

log = logging.getLogger("livecart.status")

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DaemonMetrics:
    """The daemon's metrics in one :class:`Registry` (names in the module docstring).

    :meth:`watch_adapters` adds a collector that copies :class:`AdapterStats` into the registry at render
    time, so adapters keep counting into their plain dataclass on the hot path.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        r = self.registry
        self.comments = r.counter("comments_total", "Comments received, by platform")
        self.intents = r.counter("intents_total", "Parsed comment intents")
        self.outcomes = r.counter("outcomes_total", "Durable outcomes by status")
        self.queue_depth = r.gauge("queue_depth", "Items waiting in each internal queue")
        self.journal = r.summary("journal_batch_seconds", "Journal batch commits: how many, and seconds spent")
        self.journal_max = r.gauge("journal_batch_seconds_max", "Slowest journal batch commit (seconds)")
        self.reconnects = r.counter("reconnects_total", "Adapter reconnects")
        self.malformed = r.counter("malformed_total", "Malformed input by adapter and reason")
        self.connected = r.gauge("adapter_connected", "1 while the adapter's source is connected")
        self.errors = r.counter("adapter_errors_total", "Adapter errors: failed connection attempts, replies not "
                                "sent, the adapter ending with an error or failing to close")

    def count_outcomes(self, outcomes: Iterable[Outcome]) -> None:
        """Count a batch of durable outcomes by status."""
        by: dict[str, int] = {}
        for o in outcomes:
            by[o.status.value] = by.get(o.status.value, 0) + 1
        for status, n in by.items():
            self.outcomes.inc(n, status=status)

    def journal_batch(self, seconds: float) -> None:
        """Record one journal commit's latency."""
        self.journal.observe(seconds)
        if seconds > self.journal_max.get():
            self.journal_max.set(seconds)

    def watch_adapters(self, stats: Iterable[AdapterStats]) -> None:
        """Export each adapter's counters (reconnects, malformed by reason, connected) at render time."""
        watched = list(stats)

        def collect() -> None:
            for s in watched:
                self.reconnects.set(s.reconnects, adapter=s.name)
                self.connected.set(1 if s.connected else 0, adapter=s.name)
                self.errors.set(s.errors, adapter=s.name)
                for reason, n in s.malformed_by_reason.items():
                    self.malformed.set(n, adapter=s.name, reason=reason)

        self.registry.collector(collect)

    def watch_queues(self, depths: Callable[[], Mapping[str, int]]) -> None:
        """Export ``depths()`` (queue name -> items waiting) at render time."""
        def collect() -> None:
            for queue, n in depths().items():
                self.queue_depth.set(n, queue=queue)

        self.registry.collector(collect)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


class StatusServer:
    """Serves the status endpoints. ``state()`` returns the ``/api/state`` object; ``health()`` returns
    ``(ok, details)``: 200 ``{"ok": true, ...details}`` or 503 ``{"ok": false, ...}``.

    ``port=0`` binds a free port; :attr:`port` holds the bound one after :meth:`start`. A callable that
    raises gives a 500 with the error's text (logged once); the server keeps serving.
    """

    def __init__(self, host: str, port: int, registry: Registry, state: Callable[[], Mapping[str, Any]],
                 health: Callable[[], tuple[bool, Mapping[str, Any]]], *, stream: str = "") -> None:
        self.stream = stream
        self.host = host
        self.port = port
        self.registry = registry
        self._state = state
        self._health = health
        self._runner: web.AppRunner | None = None
        #: Open connections at most (0 = from the descriptor limit); see :mod:`livecart.listen`.
        self.max_connections = 0
        self.guard: Guard | None = None
        self._errors_logged: set[str] = set()
        self.errors = 0
        #: The host's console (``/`` and ``/console/...``), when the daemon attaches one before :meth:`start`.
        self.console: Console | None = None

    def _failed(self, what: str, exc: Exception) -> web.Response:
        self.errors += 1
        level = logging.DEBUG if what in self._errors_logged else logging.WARNING
        self._errors_logged.add(what)
        log.log(level, "status %s failed: %r", what, exc)
        return _json({"ok": False, "error": f"{what} failed: {exc}"}, status=500)

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            ok, details = self._health()
        except Exception as exc:
            return self._failed("/healthz", exc)
        return _json({**details, "ok": bool(ok)}, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            text = self.registry.render()
        except Exception as exc:
            return self._failed("/metrics", exc)
        return web.Response(body=text.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def _api_state(self, request: web.Request) -> web.Response:
        try:
            return _json(dict(self._state()))
        except Exception as exc:
            return self._failed("/api/state", exc)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve. Idempotent."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/state", self._api_state)
        if self.console is not None:
            self.console.add_routes(app)
        runner = web.AppRunner(app, access_log=None, **runner_options(DEFAULT_IDLE))
        await runner.setup()
        self.guard = Guard("status", max_connections=self.max_connections)
        if self.console is not None:
            self.console.streaming = self.guard.streaming  # its event streams are not idle connections
        site = GuardedSite(runner, self.host, self.port, self.guard)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("status endpoints on %s (/healthz, /metrics, /api/state)", self.url)

    async def close(self) -> None:
        """Stop serving. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "serving" if self._runner is not None else "stopped"
        return f"<StatusServer {self.host}:{self.port} {state}, {self.errors} errors>"
