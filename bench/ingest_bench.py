"""Ingest per process: how many comments per second the generic adapters take in, acknowledged after durable.

``python -m livecart.bench.ingest_bench [--n N] [--cases websocket,mqtt] [--mqtt-batch B] [--ack durable|early]``
prints one JSON object per case:

* ``websocket_ingest`` — a generator *process* connects to the websocket adapter in server mode (with a
  token) and sends ``N`` comments, one JSON comment per frame; the adapter decodes and validates each and
  yields batches. Target: 80,000 comments/s.
* ``mqtt_ingest`` — a generator process publishes ``N`` comments as JSON arrays of ``B`` comments (QoS 1) to
  the real broker on 127.0.0.1:1883; the mqtt adapter subscribed to the topic decodes them. Target: 200,000
  comments/s.

``--ack durable`` (the default) runs each batch through an engine on a fresh SQLite journal
(``durability = "fsync"``, as the daemon does: a few submits in flight, settlements in order) and settles
it, i.e. sends the PUBACKs / ack frames, once the journal has committed it; ``--ack early`` settles each
batch as it is yielded (the adapter alone, acknowledged on receipt: the figure before acknowledgement
followed durability). ``ack_ms`` gives, per comment, the time from the adapter yielding its batch to the
acknowledgement being sent (p50 / p99 / max).

The clock runs from the first comment the adapter yields to the ``N``-th being acknowledged, so the
generator's start-up is not counted; every comment is checked to arrive (none lost, none malformed). The
generator does as little as it can (pre-built frames written with ``sendall``; pre-built payloads), so the
adapter is what is measured. Figures on a shared 2-core machine are noisy; run it a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from livecart.adapters.mqtt import MqttAdapter
from livecart.adapters.websocket import WebSocketAdapter

TARGETS = {"websocket_ingest": 80_000, "mqtt_ingest": 200_000}
TOKEN = "bench-token"


def comment(i: int) -> dict[str, Any]:
    return {"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": f"u-{i % 5000}", "name": "张三",
            "text": "鸡蛋来两盒" if i % 3 else "2号链接拍3", "ts": 1584250000.0 + i / 1000}


# -- generators (run in a child process) --------------------------------------------------------------------


def _client_frame(payload: bytes) -> bytes:
    """One masked text frame (RFC 6455 §5.2); the all-zero masking key leaves the payload as it is."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


def generate_ws(port: int, n: int) -> None:
    frames = b"".join(_client_frame(orjson.dumps(comment(i))) for i in range(n))
    with socket.create_connection(("127.0.0.1", port)) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("server closed during the handshake")
            resp += chunk
        if not resp.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"handshake refused: {resp[:80]!r}")
        view = memoryview(frames)
        for i in range(0, len(frames), 1 << 16):
            s.sendall(view[i:i + (1 << 16)])
        s.sendall(struct.pack("!BB", 0x88, 0x80 | 2) + b"\x00\x00\x00\x00" + struct.pack("!H", 1000))
        while s.recv(4096):  # wait for the server's close
            pass


def generate_mqtt(host: str, port: int, topic: str, n: int, batch: int) -> None:
    import aiomqtt

    payloads = [orjson.dumps([comment(i) for i in range(j, min(n, j + batch))]) for j in range(0, n, batch)]

    async def run() -> None:
        # 100 publishes in flight is the point of the window; aiomqtt warns from 10 on, once per publish.
        # (An attribute: aiomqtt 2.5 no longer takes it as a constructor argument.)
        client = aiomqtt.Client(host, port, max_inflight_messages=100)
        client.pending_calls_threshold = 200
        async with client:
            for i in range(0, len(payloads), 100):  # windows of the broker's in-flight limit
                await asyncio.gather(*(client.publish(topic, p, qos=1) for p in payloads[i:i + 100]))

    asyncio.run(run())


# -- cases (run in this process) ----------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "livecart.bench.ingest_bench", *args])


CONFIG = """
[stream]
name = "ingest bench"
featured = "egg-10"

[storage]
path = "{db}"
durability = "{durability}"

[[products]]
sku = "egg-10"
name = "Eggs"
aliases = ["鸡蛋"]
link = 2
price = 29.9
stock = 1000000000
"""

#: Submits in flight at once, as the daemon keeps them.
INFLIGHT = 4


class _Acker:
    """The daemon's consumer in small: submits batches to an engine (``None``: no engine, settle at once),
    settles each in order once durable, and records when."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.slots = asyncio.Semaphore(INFLIGHT)
        self.prev: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.lat: list[tuple[float, int]] = []
        self.acked = 0
        self.last = 0.0

    def _settle(self, batch: Sequence[Any], t_in: float) -> None:
        settle = getattr(batch, "settle", None)
        if settle is not None:
            settle()
        now = time.perf_counter()
        self.lat.append((now - t_in, len(batch)))
        self.acked += len(batch)
        self.last = now

    async def _one(self, batch: Sequence[Any], t_in: float, prev: asyncio.Task[None] | None) -> None:
        try:
            await self.engine.submit(batch)
            if prev is not None and not prev.done():
                await asyncio.wait((prev,))
            self._settle(batch, t_in)
        finally:
            self.slots.release()

    async def put(self, batch: Sequence[Any]) -> None:
        t_in = time.perf_counter()
        if self.engine is None:
            self._settle(batch, t_in)
            return
        await self.slots.acquire()
        self.prev = task = asyncio.create_task(self._one(batch, t_in, self.prev))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    def percentiles(self) -> dict[str, float | None]:
        if not self.lat:
            return {"p50": None, "p99": None, "max": None}
        lat = sorted(self.lat)
        total = sum(n for _, n in lat)
        out: dict[str, float | None] = {}
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            want, seen = q * total, 0
            for sec, n in lat:
                seen += n
                if seen >= want:
                    out[name] = round(sec * 1000, 3)
                    break
        out["max"] = round(lat[-1][0] * 1000, 3)
        return out


async def _consume(ad: Any, n: int, limit: float, acker: _Acker) -> tuple[int, float, int]:
    """Comments received, seconds from the first yielded to the last acknowledged, batches (stops after
    ``limit`` seconds)."""
    got = 0
    batches = 0
    start = 0.0
    it = ad.batches()
    try:
        async with asyncio.timeout(limit):
            while got < n:
                batch = await anext(it)
                if not got:
                    start = time.perf_counter()
                got += len(batch)
                batches += 1
                await acker.put(batch)
            await acker.drain()
    except TimeoutError:
        pass
    return got, (acker.last - start) if acker.acked else 0.0, batches


def _result(case: str, n: int, got: int, elapsed: float, batches: int, ad: Any, err: str | None,
            **extra: Any) -> dict[str, Any]:
    rate = (got - 1) / elapsed if got > 1 and elapsed > 0 else 0.0
    out = {"case": case, "n": n, "received": got, "comments_per_s": round(rate), "target": TARGETS[case],
           "met": got == n and rate >= TARGETS[case], "elapsed_s": round(elapsed, 4), "batches": batches,
           "malformed": ad.stats.malformed_total, "loop": type(asyncio.get_running_loop()).__module__}
    out.update(extra)
    if err or got != n:
        out["error"] = err or f"only {got} of {n} comments arrived"
    return out


async def _run(ad: Any, n: int, gen_args: list[str], acker: _Acker,
               ready: Any = None) -> tuple[int, float, int, str | None]:
    """Consume from ``ad`` while a generator process produces; stop early if the generator fails."""
    consume = asyncio.create_task(_consume(ad, n, 120, acker))
    if ready is not None:
        await asyncio.wait([consume, asyncio.create_task(ready)], return_when=asyncio.FIRST_COMPLETED)
    gen = _spawn(*gen_args)
    waiter = asyncio.create_task(asyncio.to_thread(gen.wait))
    await asyncio.wait([consume, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not consume.done() and gen.returncode:
        consume.cancel()
        return 0, 0.0, 0, f"generator failed with exit code {gen.returncode}"
    got, elapsed, batches = await consume
    await waiter
    return got, elapsed, batches, None


@contextlib.asynccontextmanager
async def _acker(ack: str) -> AsyncIterator[_Acker]:
    """An :class:`_Acker` on a fresh journal in a temporary folder (``ack == "durable"``), or none."""
    if ack != "durable":
        yield _Acker(None)
        return
    from livecart.config import load
    from livecart.runtime.pipeline import Engine

    with tempfile.TemporaryDirectory(prefix="livecart-ingest-") as tmp:
        cfg_path = Path(tmp) / "stream.toml"
        cfg_path.write_text(CONFIG.format(db=Path(tmp) / "journal.db", durability="fsync"), encoding="utf-8")
        engine = await Engine.open(load(cfg_path))
        try:
            yield _Acker(engine)
        finally:
            await engine.close()


async def websocket_case(n: int, ack: str = "durable") -> dict[str, Any]:
    ad = WebSocketAdapter({"mode": "server", "port": 0, "token": TOKEN, "max_pending": 50_000}, name="bench-ws")
    async with _acker(ack) as acker, ad:
        got, elapsed, batches, err = await _run(ad, n, ["--generate-ws", str(ad.bound_port), str(n)], acker)
    return _result("websocket_ingest", n, got, elapsed, batches, ad, err, frames=n, ack=ack,
                   ack_ms=acker.percentiles())


async def mqtt_case(n: int, batch: int, host: str, port: int, ack: str = "durable") -> dict[str, Any]:
    topic = f"livecart-bench/{uuid.uuid4().hex}"
    ad = MqttAdapter({"host": host, "port": port, "topic": topic, "qos": 1, "session_expiry": 0,
                      "client_id": f"bench-{uuid.uuid4().hex[:12]}"}, name="bench-mqtt")
    async with _acker(ack) as acker, ad:
        got, elapsed, batches, err = await _run(
            ad, n, ["--generate-mqtt", host, str(port), topic, str(n), str(batch)], acker, ad.subscribed.reached(1))
    return _result("mqtt_ingest", n, got, elapsed, batches, ad, err, comments_per_payload=batch,
                   payloads=-(-n // batch), ack=ack, ack_ms=acker.percentiles())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livecart.bench.ingest_bench", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="comments per case")
    p.add_argument("--cases", default="websocket,mqtt")
    p.add_argument("--mqtt-batch", type=int, default=200, help="comments per MQTT payload")
    p.add_argument("--mqtt", default="127.0.0.1:1883", help="broker HOST:PORT")
    p.add_argument("--ack", default="durable", choices=("durable", "early"),
                   help="acknowledge after the journal commit (durable) or on receipt (early)")
    p.add_argument("--generate-ws", nargs=2, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    p.add_argument("--generate-mqtt", nargs=5, metavar=("HOST", "PORT", "TOPIC", "N", "B"), help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.generate_ws:
        generate_ws(int(opts.generate_ws[0]), int(opts.generate_ws[1]))
        return 0
    if opts.generate_mqtt:
        h, pt, t, n, b = opts.generate_mqtt
        generate_mqtt(h, int(pt), t, int(n), int(b))
        return 0
    runner: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]]
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency where it exists
        runner = asyncio.run
    host, _, port = opts.mqtt.rpartition(":")
    for case in opts.cases.split(","):
        if case == "websocket":
            res = runner(websocket_case(opts.n, opts.ack))
        elif case == "mqtt":
            res = runner(mqtt_case(opts.n, opts.mqtt_batch, host, int(port), opts.ack))
        else:
            p.error(f"unknown case {case!r}")
        print(orjson.dumps(res).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
