"""The generator process of the ``websocket`` and ``mqtt`` cases: sends a scenario's comments to livecart.

    python -m livecart.bench.feeder websocket ws://127.0.0.1:PORT --scenario flash --seed 1 --scale 1
    python -m livecart.bench.feeder mqtt 127.0.0.1:1883 --topic livecart/bench/XYZ --scenario flash

It regenerates the scenario from its seed (so nothing large crosses the process boundary), encodes the
comments as JSON arrays of ``--batch`` comments before connecting, then sends them flat out or, with
``--rate R``, paced so that comment ``i`` leaves at ``start + i / R``; with ``--stamp`` each comment's ``ts`` is
then its send time, for the receiver's ingest -> durable latency. It ends with
a normal close and prints one JSON object: comments and frames sent, seconds spent sending.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson

from livecart.bench.scenario import generate


def frames(comments: Sequence[dict[str, object]], batch: int) -> list[tuple[int, bytes]]:
    """``(index of the frame's last comment + 1, JSON array)`` per frame."""
    out = []
    for i in range(0, len(comments), batch):
        chunk = comments[i:i + batch]
        out.append((i + len(chunk), orjson.dumps(chunk)))
    return out


def stamped(chunk: Sequence[dict[str, object]]) -> bytes:
    """The frame with every comment's ``ts`` set to now (epoch seconds), so the receiver can measure
    ingest -> durable outcome on the machine's shared clock."""
    now = time.time()
    return orjson.dumps([{**c, "ts": now} for c in chunk])


async def pace(encoded: Sequence[tuple[int, bytes]], rate: float, send: Callable[[bytes], Awaitable[None]],
               clock: Callable[[], float] = time.perf_counter,
               restamp: Sequence[Sequence[dict[str, object]]] | None = None) -> None:
    """Send ``encoded`` flat out (``rate`` 0) or so that comment ``i`` is not sent before ``start + i/rate``.

    With ``restamp`` (the frames' comments), each frame is encoded again at its send time by :func:`stamped`.
    """
    if rate <= 0:
        for _, payload in encoded:
            await send(payload)
        return
    start = clock()
    sent_until = 0
    for n, (end, payload) in enumerate(encoded):
        # A frame leaves once its first comment is due; frames are small (``--batch``) when paced.
        due = start + sent_until / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the offered load, not waiting for an event
        await send(stamped(restamp[n]) if restamp is not None else payload)
        sent_until = end


Chunks = Sequence[Sequence[dict[str, object]]] | None


async def feed_websocket(url: str, encoded: Sequence[tuple[int, bytes]], rate: float, restamp: Chunks) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, compression=None) as ws:
        await pace(encoded, rate, ws.send, restamp=restamp)
        await ws.close(1000)


async def feed_mqtt(target: str, topic: str, encoded: Sequence[tuple[int, bytes]], rate: float, qos: int,
                    restamp: Chunks) -> None:
    import aiomqtt

    host, _, port = target.partition(":")
    async with aiomqtt.Client(host, int(port or 1883)) as client:

        async def send(payload: bytes) -> None:
            await client.publish(topic, payload, qos=qos)

        await pace(encoded, rate, send, restamp=restamp)


async def amain(opts: argparse.Namespace) -> None:
    scenario = generate(opts.scenario, seed=opts.seed, scale=opts.scale)
    dicts = [c.to_dict() for c in scenario.comments]
    encoded = frames(dicts, opts.batch)
    restamp = ([dicts[i:i + opts.batch] for i in range(0, len(dicts), opts.batch)]
               if opts.stamp and opts.rate > 0 else None)
    t0 = time.perf_counter()
    if opts.transport == "websocket":
        await feed_websocket(opts.target, encoded, opts.rate, restamp)
    else:
        await feed_mqtt(opts.target, opts.topic, encoded, opts.rate, opts.qos, restamp)
    seconds = time.perf_counter() - t0
    sys.stdout.buffer.write(orjson.dumps({"sent": len(scenario.comments), "frames": len(encoded),
                                          "seconds": round(seconds, 4)}) + b"\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livecart.bench.feeder")
    p.add_argument("transport", choices=("websocket", "mqtt"))
    p.add_argument("target", help="ws://HOST:PORT for websocket, HOST:PORT of the broker for mqtt")
    p.add_argument("--topic", default="livecart/bench")
    p.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    p.add_argument("--scenario", default="flash")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=256, help="comments per frame / message")
    p.add_argument("--rate", type=float, default=0.0, help="comments/s to offer; 0 = flat out")
    p.add_argument("--stamp", action="store_true", help="when paced, set each comment's ts to its send time")
    opts = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(amain(opts))
    else:
        uvloop.run(amain(opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
