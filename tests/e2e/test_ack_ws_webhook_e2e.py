"""Acknowledge only what is durable, WebSocket and webhook, from outside: ``livecart run`` as a process,
senders that keep what was not acknowledged and send it again after a ``kill -9`` and a restart, and the
journal read back with ``livecart report --json``: nothing lost, nothing decided twice.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from pathlib import Path

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.e2e.proc import Daemon, livecart

CONFIG = """
[stream]
name = "E2E ack"
featured = "egg-10"
hold_minutes = 0

[storage]
path = "{db}"
durability = "fsync"

[[adapters]]
{adapter}

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg"]
link = 1
price = 29.9
stock = 1000000
"""

WS = 'type = "websocket"\nname = "companion"\nmode = "server"\nport = 0\nplatform = "bilibili"\nroom = "2233"'
HOOK = 'type = "webhook"\nname = "hook"\nport = 0\nplatform = "shop"\nroom = "1"\nretry_after = 1'


def write(tmp_path: Path, adapter: str) -> tuple[Path, Daemon]:
    db = tmp_path / "journal.db"
    cfg = tmp_path / "stream.toml"
    cfg.write_text(CONFIG.format(db=db, adapter=adapter), encoding="utf-8")
    return cfg, Daemon(cfg, db)


def report(cfg: Path) -> dict[str, object]:
    r = livecart("report", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = orjson.loads(r.stdout)
    return out


def message(i: int) -> str:
    return orjson.dumps({"id": f"m-{i}", "user": f"u-{i}", "text": "+1", "ts": 1700000000 + i}).decode()


class Companion:
    """A companion tool as the docs describe it: it keeps each message until an ack frame's ``frames``
    covers it, and on every new connection sends first whatever is still unacknowledged."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.next = 0
        self.unacked: OrderedDict[int, str] = OrderedDict()
        self.sent_here: list[int] = []
        self.covered = 0
        self.resent = 0

    def _ack(self, ws: ClientConnection, timeout: float | None) -> bool:
        try:
            raw = ws.recv(timeout=timeout)
        except TimeoutError:
            return False
        msg = orjson.loads(raw)
        if isinstance(msg, dict) and msg.get("type") == "ack":
            frames = int(msg["frames"])
            assert frames >= self.covered, "acknowledgements only grow"
            for i in self.sent_here[self.covered:frames]:
                self.unacked.pop(i, None)
            self.covered = frames
        return True

    def session(self, url: str, *, stop_at: int | None = None) -> None:
        """One connection: resend the unacknowledged, send on up to ``stop_at`` (or all), then wait for the
        acknowledgements. Returns when done, or when the connection breaks (the daemon was killed)."""
        self.sent_here, self.covered = [], 0
        try:
            with connect(url, max_size=None) as ws:
                for i, payload in list(self.unacked.items()):
                    ws.send(payload)
                    self.sent_here.append(i)
                    self.resent += 1
                last = self.n if stop_at is None else stop_at
                while self.next < last:
                    i = self.next
                    self.unacked[i] = payload = message(i)
                    ws.send(payload)
                    self.sent_here.append(i)
                    self.next += 1
                    while self._ack(ws, 0):
                        pass
                if stop_at is not None:
                    return
                while self.unacked:
                    assert self._ack(ws, 20), f"no acknowledgement for 20s with {len(self.unacked)} unacked"
        except (ConnectionClosed, OSError):
            return


@pytest.mark.slow
def test_websocket_companion_resending_the_unacknowledged_across_kill_9_loses_nothing(tmp_path: Path) -> None:
    cfg, d = write(tmp_path, WS)
    n = 30_000
    comp = Companion(n)
    try:
        state = d.start()
        comp.session(state["adapters"]["companion"], stop_at=15_000)
        d.kill()  # SIGKILL with comments read but not yet durable, and acks not yet sent
        unacked_at_kill = len(comp.unacked)
        state = d.start()
        comp.session(state["adapters"]["companion"])
        assert not comp.unacked
        assert d.stop() == 0
    finally:
        d.kill()
    r = report(cfg)
    assert r["comments"] == n  # nothing lost
    assert r["outcomes"] == {"reserved": n}  # nothing decided twice: one outcome per comment
    assert unacked_at_kill > 0, "the kill came after everything was acknowledged: the test proved nothing"
    assert comp.resent >= unacked_at_kill


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:  # noqa: S310 - 127.0.0.1 only
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.slow
def test_webhook_sender_retrying_on_5xx_across_kill_9_loses_nothing(tmp_path: Path) -> None:
    """A sender posts batches of 50 and retries a batch until it gets a 2xx (5xx or a broken connection:
    the daemon is down or was killed mid-request). After a kill -9 and a restart, everything is in the
    journal once."""
    cfg, d = write(tmp_path, HOOK)
    batches = [[orjson.loads(message(i)) for i in range(k, k + 50)] for k in range(0, 10_000, 50)]
    refused = 0
    try:
        state = d.start()
        url = state["adapters"]["hook"]
        killer = threading.Timer(0.0, d.kill)
        for k, b in enumerate(batches):
            if k == len(batches) // 2:
                killer.start()  # from another thread, so that it lands while a request is in flight
            while True:
                try:
                    status = post(url, orjson.dumps(b))
                except OSError:  # refused or cut: the daemon is not there
                    status = 0
                if 200 <= status < 300:
                    break
                refused += 1
                if d.proc is not None and d.proc.poll() is not None:
                    killer.join()
                    url = d.start()["adapters"]["hook"]  # the operator restarts it; the sender retries
        assert d.stop() == 0
    finally:
        d.kill()
    r = report(cfg)
    assert r["comments"] == 10_000
    assert r["outcomes"] == {"reserved": 10_000}
    assert refused >= 1
