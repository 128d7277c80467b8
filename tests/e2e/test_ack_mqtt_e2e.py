"""Acknowledge only what is durable, MQTT, from outside: ``livecart run`` as a process on a private Mosquitto
configured as the docs say (persistence, a large queue), publishers that count what the broker acknowledged
to them, ``kill -9`` of the daemon, and the journal read back with ``livecart report --json``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.e2e.proc import Daemon, livecart, wait_for
from tests.mqtt_broker import PrivateBroker

CONFIG = """
[stream]
name = "E2E mqtt ack"
featured = "egg-10"
hold_minutes = 0

[storage]
path = "{db}"
durability = "fsync"

[[adapters]]
type = "mqtt"
name = "relay"
port = {port}
topic = "{topic}"
client_id = "e2e-ack-relay"
platform = "douyin"
room = "7312"

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg"]
link = 1
price = 29.9
stock = 1000000
"""


class Publisher:
    """Publishes ``n`` QoS 1 messages (one comment each) from a thread, as fast as the broker takes them or at
    ``rate`` per second, and counts the ones the broker acknowledged (PUBACK to this publisher)."""

    def __init__(self, port: int, topic: str, n: int, *, rate: float = 0.0) -> None:
        self.n = n
        self.topic = topic
        self.rate = rate
        self.acked = 0
        self._lock = threading.Lock()  # never held while calling paho: its callbacks hold paho's own locks
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(100)
        # A bounded queue: paho scans its whole queue on every PUBACK, so a publisher that queued all 50,000
        # at once would crawl; full speed is "as fast as the broker acknowledges".
        self.client.max_queued_messages_set(100)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, c: paho.Client, u: object, mid: int, rc: object, p: object) -> None:
        with self._lock:
            self.acked += 1

    def _run(self) -> None:
        t0 = time.monotonic()
        for i in range(self.n):
            body = orjson.dumps({"id": f"m-{i}", "user": f"u-{i % 997}", "text": "+1", "ts": 1700000000 + i})
            while self.client.publish(self.topic, body, qos=1).rc == paho.MQTT_ERR_QUEUE_SIZE:
                time.sleep(0.001)  # the publisher's own queue is full: as a real one, it waits for room
            if self.rate:
                delay = t0 + (i + 1) / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the publisher, not waiting for an outcome

    def run(self) -> Publisher:
        self.thread.start()
        return self

    def wait(self, deadline: float = 60.0) -> None:
        self.thread.join(deadline)
        wait_for(lambda: self.acked == self.n, f"the broker to acknowledge all {self.n} publishes", deadline)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def report(cfg: Path) -> dict[str, object]:
    r = livecart("report", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = orjson.loads(r.stdout)
    return out


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    b = PrivateBroker(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.kill()


def setup(tmp_path: Path, broker: PrivateBroker) -> tuple[Path, Daemon, str]:
    topic = f"e2e/{uuid.uuid4().hex}/comments"
    db = tmp_path / "journal.db"
    cfg = tmp_path / "stream.toml"
    cfg.write_text(CONFIG.format(db=db, port=broker.port, topic=topic), encoding="utf-8")
    return cfg, Daemon(cfg, db), topic


def start(d: Daemon) -> None:
    """Start the daemon and wait for its subscription: what is published to a topic nobody has subscribed to
    yet goes to nobody (the session exists from the first subscription on)."""
    d.start()
    wait_for(lambda: d.api()["adapters"]["relay"]["connected"], "the mqtt adapter to subscribe")


def comments_in(d: Daemon) -> int:
    return int(d.api()["comments"])


def until_all(d: Daemon, n: int, deadline: float = 90.0) -> None:
    """Wait for ``n`` comments in the journal; on timeout say how many there are and what the daemon said."""
    try:
        wait_for(lambda: comments_in(d) == n, f"all {n} comments in the journal", deadline)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {comments_in(d)} there; daemon log tail:\n{d.log()[-3000:]}") from None


@pytest.mark.slow
def test_fifty_thousand_qos1_at_full_speed_are_all_journalled(tmp_path: Path, broker: PrivateBroker) -> None:
    cfg, d, topic = setup(tmp_path, broker)
    n = 50_000
    try:
        start(d)
        pub = Publisher(broker.port, topic, n).run()
        pub.wait()
        until_all(d, n)
        assert d.stop() == 0
        pub.close()
    finally:
        d.kill()
    assert report(cfg)["comments"] == n
    assert "dropped" not in broker.log()


@pytest.mark.slow
def test_kill_9_mid_burst_and_5s_away_lose_nothing_the_broker_acknowledged(tmp_path: Path,
                                                                            broker: PrivateBroker) -> None:
    """The daemon is killed while a paced burst goes on, stays away 5 s while publishing continues, and is
    started again: every message the broker acknowledged to the publisher is in the journal, once."""
    cfg, d, topic = setup(tmp_path, broker)
    n = 20_000
    try:
        start(d)
        pub = Publisher(broker.port, topic, n, rate=2000).run()
        wait_for(lambda: comments_in(d) >= 4000, "the burst to be under way", 30)
        d.kill()  # SIGKILL: whatever was read but not yet journalled was never acknowledged
        taken_at_kill = pub.acked
        time.sleep(5)  # 5 s of downtime while the publisher goes on: the broker queues for the session
        assert pub.acked > taken_at_kill + 5000, "the publisher was not publishing during the downtime"
        d.start()
        pub.wait()
        until_all(d, n)
        assert d.stop() == 0
        pub.close()
    finally:
        d.kill()
    assert pub.acked == n
    assert report(cfg)["comments"] == n
