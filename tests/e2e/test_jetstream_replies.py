"""Buyer replies in the JetStream mode across a decider's crash: the replies a killed decider had queued (a
platform's rate limit) are told by the next decider, from the progress the decider keeps in the sale's
bucket."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
import uuid
from pathlib import Path

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from livecart.bench.natscluster import free_ports
from tests.e2e.proc import wait_for
from tests.e2e.test_jetstream_ctl import _delete, _Run

CONFIG = """
[stream]
name = "Replies across a takeover"
featured = "egg"
hold_minutes = 30

[storage]
backend = "jetstream"
servers = ["{server}"]
sale = "{sale}"
lease_seconds = 5

[status]
enabled = false

[replies]
language = "zh"

[[adapters]]
type = "websocket"
name = "companion"
mode = "server"
port = {port}
reply_limit = 1
reply_window = 1

[[products]]
sku = "egg"
name = "Eggs"
aliases = ["鸡蛋", "egg"]
link = 1
stock = 100
limit = 5
"""
BUYERS = 18


def _buy(i: int) -> str:
    return orjson.dumps({"platform": "douyin", "room": "7312", "id": f"d-{i}", "user": f"u{i}", "name": f"买家{i}",
                         "text": "鸡蛋来一盒", "ts": 1_700_000_000 + i}).decode()


def _told(ws: object, until: float, told: set[str]) -> None:
    """Buyers named in the reply frames that come on ``ws`` within ``until`` seconds (or until it closes)."""
    end = time.monotonic() + until
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        while time.monotonic() < end:
            frame = orjson.loads(ws.recv(timeout=max(0.05, end - time.monotonic())))  # type: ignore[attr-defined]
            if isinstance(frame, list):
                told.update(re.findall(r"@(买家\d+)", " ".join(r["text"] for r in frame)))


def test_replies_a_killed_decider_had_queued_are_told_by_the_next_one(nats_server: str, tmp_path: Path) -> None:
    # A plugin author's check: three kill -9 of the decider with a rate-limited reply queue left 631 of 1,683
    # buyers of orders untold (the SQLite mode's next start tells them; a takeover did not).
    second = _takeover(nats_server, tmp_path)
    assert "order(s) decided before this takeover had not been announced" in second


def test_refusals_a_killed_decider_had_queued_are_told_by_the_next_one(nats_server: str, tmp_path: Path) -> None:
    # Twelve boxes for eighteen buyers: the last six are refused (sold out), and their replies wait at the end
    # of the queue. A refusal makes no order, and the next decider told the buyers of orders only.
    second = _takeover(nats_server, tmp_path, stock=12)
    said = re.search(r"(\d+) order\(s\) and (\d+) refusal\(s\) decided before this takeover", second)
    assert said is not None, second
    assert int(said.group(2)) >= 1


def _takeover(nats_server: str, tmp_path: Path, stock: int = 100) -> str:
    """Every buyer told across a kill -9 of the decider (``stock`` boxes for :data:`BUYERS` buyers of one);
    the second process's log."""
    sale = f"rep-{uuid.uuid4().hex[:8]}"
    ports = free_ports(2)
    runs = []
    for i, port in enumerate(ports):
        d = tmp_path / f"p{i + 1}"
        d.mkdir()
        cfg = d / "sale.toml"
        cfg.write_text(CONFIG.format(server=nats_server, sale=sale, port=port).replace("stock = 100",
                                                                                   f"stock = {stock}"),
                       encoding="utf-8")
        runs.append(_Run(cfg, "run.log"))
    first, second = runs
    told: set[str] = set()
    try:
        first.start()
        wait_for(lambda: "deciding sale" in first.text(), "the first process to decide", 60)
        second.start()
        wait_for(lambda: "websocket server listening" in second.text(), "the standby", 60)
        with connect(f"ws://127.0.0.1:{ports[0]}/") as ws1, connect(f"ws://127.0.0.1:{ports[1]}/") as ws2:
            for i in range(BUYERS):  # every comment to both processes, as the docs advise
                ws1.send(_buy(i))
                ws2.send(_buy(i))
            wait_for(lambda: sum(int(n) for n in re.findall(r"announced (\d+) outcomes", first.text())) >= BUYERS,
                     "the decider to announce every outcome", 30)
            _told(ws1, 1.5, told)  # one message a second, up to three buyers each: most are still queued
            assert len(told) < BUYERS
            first.signal(signal.SIGKILL)
            wait_for(lambda: "deciding sale" in second.text(), "the standby to take over", 60)
            _told(ws2, 12.0, told)
        assert told == {f"买家{i}" for i in range(BUYERS)}, sorted(told)
        return second.text()
    finally:
        for r in runs:
            r.stop()
        asyncio.run(_delete(nats_server, [sale]))
