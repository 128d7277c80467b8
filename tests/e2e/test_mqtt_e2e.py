"""``livecart run`` as a subprocess fed through the MQTT adapter on the real Mosquitto broker, with host
controls on an MQTT control topic (answers on ``<topic>/result``), and a simulcast: the same sale also
takes comments from a WebSocket companion, one inventory for both."""

from __future__ import annotations

import queue
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from websockets.sync.client import connect

from tests.e2e.proc import Daemon, livecart, wait_for

CONFIG = """
[stream]
name = "E2E mqtt sale"
featured = "egg-10"
hold_minutes = 30

[storage]
path = "{db}"
durability = "fsync"

[control]
token = "mq-token"
mqtt_host = "{host}"
mqtt_port = {port}
mqtt_topic = "{base}/control"

[[adapters]]
type = "mqtt"
name = "douyin-relay"
host = "{host}"
port = {port}
topic = "{base}/comments"
platform = "douyin"
room = "7312"

[[adapters]]
type = "websocket"
name = "companion"
mode = "server"
port = 0
platform = "bilibili"
room = "2233"

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg", "eggs"]
link = 1
price = 29.9
stock = 50
limit = 5
"""


class Broker:
    """A paho client for the test side: publish, and collect messages of subscribed topics."""

    def __init__(self, host: str, port: int) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"e2e-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.connect(host, port)
        self.client.loop_start()

    def subscribe(self, topic: str) -> None:
        info = self.client.subscribe(topic, qos=1)
        assert info[0] == paho.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: Any) -> None:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        self.client.publish(topic, raw, qos=1).wait_for_publish(timeout=10)

    def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        topic, payload = self.messages.get(timeout=timeout)
        return topic, orjson.loads(payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_mqtt_comments_and_mqtt_controls_with_a_websocket_simulcast_on_one_inventory(
        tmp_path: Path, mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    base = f"livecart-e2e/{uuid.uuid4().hex}"
    db = tmp_path / "journal.db"
    cfg = tmp_path / "stream.toml"
    cfg.write_text(CONFIG.format(db=db, host=host, port=port, base=base), encoding="utf-8")
    broker = Broker(host, port)
    daemon = Daemon(cfg, db)
    try:
        state = daemon.start()
        # Subscriptions are made after start-up; wait for both (comments adapter and control topic).
        wait_for(lambda: daemon.api()["adapters"]["douyin-relay"]["connected"], "the mqtt adapter subscription")
        wait_for(lambda: daemon.api()["mqtt_control"]["subscribed"], "the mqtt control subscription")
        broker.subscribe(f"{base}/control/result")

        # 20 from Douyin over MQTT (one message holds a JSON array of 10), 40 from Bilibili over WebSocket.
        batch = [{"id": f"d-{i}", "user": f"d{i}", "text": "鸡蛋来两盒", "ts": 1_700_000_000 + i} for i in range(20)]
        broker.publish(f"{base}/comments", batch[:10])
        for c in batch[10:]:
            broker.publish(f"{base}/comments", c)
        broker.publish(f"{base}/comments", b"{not json")  # counted, not fatal
        with connect(state["adapters"]["companion"]) as ws:
            for i in range(40):
                ws.send(orjson.dumps({"id": f"b-{i}", "user": f"b{i}", "text": "+1", "ts": 1_700_000_100 + i}))
        wait_for(lambda: daemon.api()["comments"] == 60, "60 comments from two platforms")
        api = daemon.api()
        # 40 + 40 units asked of 50: one inventory, never oversold.
        assert api["products"]["egg-10"] == {"stock": 50, "left": 0, "reserved": 50, "presale": 0}
        assert api["adapters"]["douyin-relay"]["malformed"] == 1

        # Host controls on the MQTT topic, in field form and in command-line form; the token is checked.
        broker.publish(f"{base}/control", {"action": "restock", "sku": "egg-10", "qty": 30, "token": "mq-token",
                                           "id": "1"})
        topic, answer = broker.next()
        assert topic == f"{base}/control/result"
        assert answer["id"] == "1"
        assert answer["ok"] is True
        assert answer["result"]["product"]["stock"] == 80
        broker.publish(f"{base}/control", {"action": "限购", "params": ["egg-10", "1"], "token": "mq-token",
                                           "id": "2"})
        assert broker.next()[1]["ok"] is True
        broker.publish(f"{base}/control", {"action": "restock", "sku": "egg-10", "qty": 1, "token": "wrong"})
        refused = broker.next()[1]
        assert refused["ok"] is False
        assert "token" in refused["error"]
        # The new limit holds for new buyers: 2 asked, 1 allowed.
        broker.publish(f"{base}/comments", {"id": "d-late", "user": "late", "text": "鸡蛋来两盒", "ts": 1_700_000_500})
        wait_for(lambda: daemon.api()["comments"] == 61, "the late comment")
        assert daemon.api()["products"]["egg-10"]["reserved"] == 51

        metrics = daemon.api("/metrics")
        assert 'livecart_comments_total{platform="douyin"} 21' in metrics
        assert 'livecart_comments_total{platform="bilibili"} 40' in metrics
        assert 'livecart_controls_total{action="",result="unauthorized",transport="mqtt"} 1' in metrics
        assert 'livecart_malformed_total{adapter="douyin-relay",reason="bad_json"} 1' in metrics
        assert daemon.stop() == 0, daemon.log()
    finally:
        daemon.kill()
        broker.close()
    r = livecart("report", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    rep = orjson.loads(r.stdout)
    assert rep["comments"] == 61
    egg = {k: rep["products"]["egg-10"][k] for k in ("stock", "left", "reserved", "presale")}
    assert egg == {"stock": 80, "left": 29, "reserved": 51, "presale": 0}
