from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from livecart.core.records import Outcome, Status
from livecart.plugin import AdapterStats
from livecart.runtime.metrics import Registry
from livecart.runtime.status import PROMETHEUS_CONTENT_TYPE, DaemonMetrics, StatusServer


def outcome(status: Status) -> Outcome:
    return Outcome("m", "u", "o", "egg", None, 1, status)


class Health:
    def __init__(self) -> None:
        self.ok = True

    def __call__(self) -> tuple[bool, Mapping[str, Any]]:
        return self.ok, {"stream": "Spring", "adapters": {"replay-0": "connected"}}


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def test_endpoints_serve_health_metrics_and_state() -> None:
    m = DaemonMetrics()
    m.comments.inc(3, platform="douyin")
    m.count_outcomes([outcome(Status.RESERVED), outcome(Status.RESERVED), outcome(Status.PRESALE)])
    m.journal_batch(0.004)
    m.journal_batch(0.002)
    health = Health()
    srv = StatusServer("127.0.0.1", 0, m.registry, lambda: {"products": {"egg": {"left": 3}}}, health)
    async with srv:
        assert srv.port != 0
        status, _, body = await get(srv.url + "/healthz")
        assert status == 200
        assert '"ok":true' in body
        assert '"stream":"Spring"' in body
        health.ok = False
        status, _, body = await get(srv.url + "/healthz")
        assert status == 503
        assert '"ok":false' in body
        status, ctype, body = await get(srv.url + "/metrics")
        assert status == 200
        assert ctype == PROMETHEUS_CONTENT_TYPE
        assert 'livecart_comments_total{platform="douyin"} 3' in body
        assert 'livecart_outcomes_total{status="reserved"} 2' in body
        assert "livecart_journal_batch_seconds_count 2" in body
        assert "livecart_journal_batch_seconds_max 0.004" in body
        status, ctype, body = await get(srv.url + "/api/state")
        assert status == 200
        assert ctype.startswith("application/json")
        assert body == '{"products":{"egg":{"left":3}}}'


async def test_a_failing_state_callable_gives_500_and_the_server_keeps_serving() -> None:
    def broken() -> Mapping[str, Any]:
        raise RuntimeError("ledger busy")

    srv = StatusServer("127.0.0.1", 0, Registry(), broken, lambda: (True, {}))
    async with srv:
        status, _, body = await get(srv.url + "/api/state")
        assert status == 500
        assert "ledger busy" in body
        status, _, _ = await get(srv.url + "/healthz")
        assert status == 200
    assert srv.errors == 1


async def test_start_and_close_are_idempotent() -> None:
    srv = StatusServer("127.0.0.1", 0, Registry(), dict, lambda: (True, {}))
    await srv.start()
    port = srv.port
    await srv.start()
    assert srv.port == port
    await srv.close()
    await srv.close()
    assert "stopped" in repr(srv)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"http://127.0.0.1:{port}/healthz")


def test_adapter_stats_and_queue_depths_are_exported_at_render() -> None:
    m = DaemonMetrics()
    stats = AdapterStats("mqtt-0")
    m.watch_adapters([stats])
    depths = {"journal": 4}
    m.watch_queues(lambda: depths)
    stats.reconnects = 2
    stats.connected = True
    stats.malformed("bad_json")
    text = m.registry.render()
    assert 'livecart_reconnects_total{adapter="mqtt-0"} 2' in text
    assert 'livecart_adapter_connected{adapter="mqtt-0"} 1' in text
    assert 'livecart_malformed_total{adapter="mqtt-0",reason="bad_json"} 1' in text
    assert 'livecart_queue_depth{queue="journal"} 4' in text
