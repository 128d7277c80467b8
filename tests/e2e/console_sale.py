"""A ``livecart run`` subprocess with the console on a fixed status port, fed through its WebSocket adapter.

Shared by the console's browser tests and its security tests.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from websockets.sync.client import connect

from tests.e2e.proc import Daemon

TOKEN = "console-s3cret-token"

CONFIG = """
[stream]
name = "Console sale"
featured = "egg-10"
hold_minutes = 30

[storage]
path = "{db}"
durability = "os"

[daemon]
drain_seconds = 1

[status]
port = {status_port}

[control]
token = "{token}"

[replies]
language = "{language}"

[[adapters]]
type = "websocket"
name = "companion"
mode = "server"
port = 0

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg", "eggs"]
link = 1
price = 29.9
stock = {stock}
limit = 5
presale = 20

[[products]]
sku = "honey-500"
name = "Wild honey"
aliases = ["蜂蜜", "honey"]
link = 4
price = 68
stock = 30
limit = 3

[[products]]
sku = "tea"
name = "Chrysanthemum tea"
aliases = ["菊花茶", "tea"]
link = 3
price = 38
  [[products.variants]]
  name = "50g"
  aliases = ["50克", "small"]
  stock = 10
  [[products.variants]]
  name = "100g"
  aliases = ["100克", "large"]
  stock = 5
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sale:
    """The daemon, its console's URL and a way to feed comments."""

    def __init__(self, d: Path, *, stock: int = 40, language: str = "zh") -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.db = d / "journal.db"
        self.cfg = d / "stream.toml"
        self.port = free_port()
        self.cfg.write_text(CONFIG.format(db=self.db, stock=stock, token=TOKEN, status_port=self.port,
                                          language=language), encoding="utf-8")
        self.daemon = Daemon(self.cfg, self.db)
        self.url = f"http://127.0.0.1:{self.port}"
        self.sent = 0

    def start(self) -> Sale:
        self.daemon.start()
        return self

    def feed(self, items: list[dict[str, Any]]) -> None:
        with connect(self.daemon.state["adapters"]["companion"]) as ws:
            for c in items:
                ws.send(orjson.dumps(c).decode())
        self.sent += len(items)

    def say(self, user: str, name: str, text: str) -> dict[str, Any]:
        self.sent += 1
        c = {"platform": "douyin", "room": "7312", "id": f"m-{self.sent}-{user}", "user": user, "name": name,
             "text": text, "ts": 1_700_000_000 + self.sent}
        with connect(self.daemon.state["adapters"]["companion"]) as ws:
            ws.send(orjson.dumps(c).decode())
        return c

    def state(self) -> dict[str, Any]:
        return dict(self.daemon.api())

    def close(self) -> None:
        self.daemon.kill()


def running_sale(tmp_path: Path, language: str = "zh") -> Iterator[Sale]:
    """The body of the tests' ``sale`` fixture: the sale of 40 eggs (in Chinese unless ``language``), started,
    killed after the test."""
    s = Sale(tmp_path / "sale", stock=40, language=language).start()
    try:
        yield s
    finally:
        s.close()


def request(url: str, *, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - 127.0.0.1 only
            return int(r.status), dict(r.headers), r.read(65536)
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), exc.read()
