"""Hostile payloads against ``livecart run`` as a process: each is counted as malformed and skipped, and the
daemon goes on taking, journaling and acknowledging the good comments around it.

Found from outside: a 2 KB payload of ``[[[[...]]]]`` made msgspec raise ``RecursionError`` (it nests as deep
as Python's stack allows, and the daemon's stack is deeper than a test's), which stopped the MQTT daemon
(exit 1, the message never acknowledged, so the broker delivered it again to every restart), failed the
WebSocket transport, answered a webhook with 500 and stopped a replay.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from websockets.sync.client import connect

from tests.e2e.proc import Daemon, livecart, wait_for
from tests.e2e.test_ack_ws_webhook_e2e import post
from tests.e2e.test_mqtt_e2e import Broker

CONFIG = """
[stream]
name = "E2E hostile input"
featured = "egg-10"

[storage]
path = "{db}"
durability = "fsync"

[[adapters]]
type = "mqtt"
name = "relay"
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

[[adapters]]
type = "webhook"
name = "hook"
port = 0
platform = "shop"
room = "1"

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg"]
link = 1
price = 29.9
stock = 1000
"""

DEEP = b"[" * 1000 + b"]" * 1000
#: Deep nesting at the top, as an array element, inside a field, and too deep for any decoder.
HOSTILE = [
    DEEP,
    b'[{"id":"x","user":"u","text":"+1","ts":1},' + DEEP + b"]",
    b'{"id":"y","user":"u","ts":1,"text":' + DEEP + b"}",
    b"[" * 20000 + b"]" * 20000,
]


def good(i: int, tag: str) -> bytes:
    return orjson.dumps({"id": f"{tag}-{i}", "user": f"{tag}{i}", "text": "鸡蛋来一盒", "ts": 1_700_000_000 + i})


def small_sale(d: Path, adapters: str, *, stock: int = 10) -> Path:
    """A one-product sale in ``d`` (journal ``d/j.db``) with the given ``[[adapters]]`` tables."""
    cfg = d / "stream.toml"
    cfg.write_text(f'[stream]\nname = "{d.name}"\n[storage]\npath = "{d / "j.db"}"\n{adapters}\n[[products]]\n'
                   f'sku = "egg-10"\nname = "Eggs"\naliases = ["鸡蛋"]\nstock = {stock}\n', encoding="utf-8")
    return cfg


def test_deeply_nested_payloads_are_counted_and_skipped_on_every_transport(
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
        wait_for(lambda: daemon.api()["adapters"]["relay"]["connected"], "the mqtt subscription")
        for i, payload in enumerate(HOSTILE):
            broker.publish(f"{base}/comments", payload)
            broker.publish(f"{base}/comments", good(i, "m"))
        with connect(state["adapters"]["companion"], max_size=None) as ws:
            for i, payload in enumerate(HOSTILE):
                ws.send(payload.decode())
                ws.send(good(i, "w").decode())
            # Every frame, hostile ones included, is covered by an acknowledgement once the good are durable.
            acked = 0
            while acked < 2 * len(HOSTILE):
                msg = orjson.loads(ws.recv(timeout=20))
                if msg.get("type") == "ack":
                    acked = msg["frames"]
        hook = state["adapters"]["hook"]
        codes = [post(hook, p) for p in HOSTILE]
        assert codes == [400, 200, 400, 400], codes  # the second holds one good comment
        assert post(hook, good(0, "h")) == 200
        # Each transport: its good ones, and the good element of the array beside a deep one.
        n = (len(HOSTILE) + 1) * 2 + 1 + 1
        wait_for(lambda: daemon.api()["comments"] == n, f"{n} good comments")
        adapters = daemon.api()["adapters"]
        assert adapters["relay"]["connected"]
        assert adapters["hook"]["connected"]  # listening (it said 'disconnected' on the board before)
        for name in ("relay", "companion", "hook"):
            assert adapters[name]["malformed"] == len(HOSTILE), (name, adapters[name])
        assert daemon.stop() == 0, daemon.log()
        assert "Traceback" not in daemon.log()
    finally:
        daemon.kill()
        broker.close()
    r = livecart("report", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["comments"] == n


def test_a_replay_with_a_deeply_nested_line_reads_the_rest(tmp_path: Path) -> None:
    lines = tmp_path / "chat.jsonl"
    lines.write_bytes(b"\n".join([good(0, "r"), *HOSTILE, good(1, "r")]) + b"\n")
    cfg = small_sale(tmp_path, f'[[adapters]]\ntype = "replay"\npath = "{lines}"\n')
    r = livecart("run", str(cfg), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    rep = livecart("report", str(cfg), "--json")
    assert orjson.loads(rep.stdout)["comments"] == 3  # the two lines and the good element beside a deep one


PLUGIN = '''
import math
from pathlib import Path
from livecart.core.records import Comment
from livecart.plugin import Adapter, Batch, Option

def c(i, **kw):
    d = dict(platform="chirp", room="1", id=f"c-{i}", user=f"u{i}", name=f"u{i}", text="鸡蛋来一盒", ts=1.0 + i)
    d.update(kw)
    return Comment(**d)

class Chirp(Adapter):
    type = "chirp"
    OPTIONS = {"out": Option(str, required=True, doc="where to write how the first batch settled")}

    async def batches(self):
        settled = []
        batch = Batch([c(0), c(1, text=None), {"id": "d"}, c(2, ts=math.nan), c(3, user=""), c(4)],
                      on_settled=settled.append)
        yield batch
        yield c(5)      # not a list
        yield None      # nothing
        yield [c(6, text=7), c(7)]
        await batch.durable()
        Path(self.options["out"]).write_text(repr((settled, [x.id for x in batch])))
'''


def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str,
                   types: dict[str, str]) -> None:
    """``module`` (``source``) as an installed package registering ``types`` (type -> class) in the
    ``livecart.adapters`` group, on the PYTHONPATH of the processes the test starts."""
    site = tmp_path / "site"
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n",
                                   encoding="utf-8")
    lines = "".join(f"{t} = {module}:{cls}\n" for t, cls in types.items())
    (info / "entry_points.txt").write_text(f"[livecart.adapters]\n{lines}", encoding="utf-8")
    (site / f"{module}.py").write_text(source, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(site))


def test_a_plugin_yielding_invalid_comments_has_them_counted_and_the_rest_journaled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found from outside: a plugin's Comment(text=None) made the parser fail, then the parser's error log
    # (text[:200]) raise, which failed the journal and stopped the daemon (exit 1), losing the good comments
    # of the batch; on restart the plugin did it again. A dict in a batch stopped it the same way.
    install_plugin(tmp_path, monkeypatch, "chirp_plugin", PLUGIN, {"chirp": "Chirp"})
    out = tmp_path / "settled.txt"
    cfg = small_sale(tmp_path, f'[[adapters]]\ntype = "chirp"\nname = "chirp"\nout = "{out}"\n')
    r = livecart("run", str(cfg), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "malformed input (bad_comment) element 1: 'text' must be a string" in r.stderr
    # The plugin's batch settled as durable, holding only its good comments.
    assert out.read_text() == "([None], ['c-0', 'c-4'])"
    rep = orjson.loads(livecart("report", str(cfg), "--json").stdout)
    assert rep["comments"] == 3
    assert rep["outcomes"] == {"reserved": 3}
    # On a machine without the plugin (the office's, reading a copy of the journal), the commands that only
    # read the journal still work: the plugin's table is taken as it is.
    monkeypatch.delenv("PYTHONPATH")
    for args in (("report", str(cfg), "--json"), ("export", str(cfg), "--format", "csv"),
                 ("journal", "verify", str(cfg))):
        r = livecart(*args)
        assert r.returncode == 0, (args, r.stderr)
    r = livecart("run", str(cfg))
    assert r.returncode == 2  # running it needs the plugin
    assert "unknown adapter type 'chirp'" in r.stderr


LIFECYCLE = '''
import asyncio, time
from pathlib import Path
from livecart.core.records import Comment
from livecart.plugin import Adapter, Option

def c(i):
    return Comment("p", "1", f"c-{i}", f"u{i}", f"u{i}", "鸡蛋来一盒", 1.0 + i)

class Base(Adapter):
    OPTIONS = {"out": Option(str, required=True, doc="a folder to leave marks in")}

    def mark(self, what):
        Path(self.options["out"], f"{self.name}.{what}").write_text("1")

class Sleepy(Base):
    type = "sleepy"

    async def batches(self):
        self.stats.connected = True
        yield [c(0)]
        await asyncio.sleep(0.5)
        time.sleep(3)  # the bug under test: a blocking call in a coroutine
        yield [c(1)]
        while True:
            await asyncio.sleep(1)

class Failing(Base):
    type = "failing"

    async def batches(self):
        self.stats.connected = True
        yield [c(10)]
        await asyncio.sleep(0.2)
        raise RuntimeError("the platform changed its protocol")

    async def close(self):
        self.mark("closed")
        await super().close()

class BadClose(Base):
    type = "badclose"

    async def batches(self):
        yield [c(20)]

    async def close(self):
        raise OSError("socket already gone")

class BadOpen(Base):
    type = "badopen"

    async def open(self):
        raise RuntimeError("no credentials in the environment")

    async def batches(self):
        yield []
'''


def lifecycle_config(tmp_path: Path, *tables: str) -> Path:
    adapters = "".join(f'[[adapters]]\ntype = "{t}"\nname = "{t}"\nout = "{tmp_path}"\n' for t in tables)
    return small_sale(tmp_path, adapters, stock=100)


def test_a_plugin_that_blocks_fails_or_breaks_on_close_is_said_and_contained(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found from outside: a failed adapter still showed connected, had no error counted and was closed only at
    # shutdown; an error in close() made a clean stop exit 1 with a traceback; a plugin blocking the event loop
    # stalled everything with no trace of where.
    install_plugin(tmp_path, monkeypatch, "lifecycle_plugin", LIFECYCLE,
                   {"sleepy": "Sleepy", "failing": "Failing", "badclose": "BadClose", "badopen": "BadOpen"})
    cfg = lifecycle_config(tmp_path, "sleepy", "failing", "badclose")
    d = Daemon(cfg, tmp_path / "j.db")
    try:
        d.start()
        wait_for(lambda: (tmp_path / "failing.closed").exists(), "the failed adapter closed at once", 10)
        state = d.api()
        assert state["adapters"]["failing"]["connected"] is False
        assert any("the platform changed its protocol" in f for f in state["failed"])
        wait_for(lambda: "livecart_loop_stalls_total 1" in d.api("/metrics"), "the stall counted", 15)
        wait_for(lambda: d.api()["comments"] == 4, "every good comment")
        assert 'livecart_adapter_errors_total{adapter="failing"} 1' in d.api("/metrics")
        assert d.stop() == 1  # an adapter failed: said in the exit status
    finally:
        d.kill()
    log = d.log()
    assert "the event loop has not run for" in log
    assert "lifecycle_plugin.py" in log
    assert "time.sleep(3)" in log
    assert "the event loop runs again after" in log
    assert "adapter badclose failed to close: OSError('socket already gone')" in log
    # A plugin whose open() fails: one line, exit 1, no traceback.
    (tmp_path / "b").mkdir()
    r = livecart("run", str(lifecycle_config(tmp_path / "b", "badopen")), timeout=60)
    assert r.returncode == 1, r.stderr
    assert "adapter badopen (badopen) failed to open: RuntimeError('no credentials in the environment')" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_body_that_is_not_what_its_content_encoding_says_is_a_counted_400(tmp_path: Path) -> None:
    """Found from outside: a body sent as ``Content-Encoding: gzip`` that is not gzip got a 500 and a
    40-line traceback per request (the Douyin and Kuaishou pushes need no credentials to send one), counted
    nowhere; a 500 also tells a platform to send it again, forever."""
    import gzip
    import urllib.request

    cfg = small_sale(tmp_path, '[control]\ntoken = "ctok"\n[status]\nport = 0\n'
                               '[[adapters]]\ntype = "webhook"\nname = "hook"\nport = 0\n', stock=5)
    daemon = Daemon(cfg, tmp_path / "j.db")

    def send(url: str, body: bytes, **headers: str) -> int:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:  # noqa: S310 - 127.0.0.1 only
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    try:
        state = daemon.start()
        hook = state["adapters"]["hook"]
        control = f"http://{state['host']}:{state['port']}/control"
        for _ in range(3):
            assert send(hook, b"not gzip at all", **{"Content-Encoding": "gzip"}) == 400
            assert send(control, b"zz", Authorization="Bearer ctok", **{"Content-Encoding": "gzip"}) == 400
        # A real gzip body is read; the connection after a bad one is a new one and works.
        assert send(hook, gzip.compress(good(1, "h")), **{"Content-Encoding": "gzip"}) == 200
        wait_for(lambda: daemon.api()["comments"] == 1, "the gzipped comment")
        metrics = daemon.api("/metrics")
        assert 'livecart_malformed_total{adapter="hook",reason="bad_encoding"} 3' in metrics
        assert 'livecart_controls_total{action="",result="bad",transport="http"} 3' in metrics
        assert daemon.stop() == 0
        log = daemon.log()
        assert "Traceback" not in log
        assert "Unhandled exception" not in log
        assert "cannot be decoded as its Content-Encoding (gzip) says" in log  # said once, with the reason
    finally:
        daemon.kill()
