"""Benchmark cases that need the engine: ledger + journal, the pipeline in process, over WebSocket, over MQTT.

Every case measures flat out first, then (for the pipeline cases) latency at a fixed offered rate on a
fresh journal, and verifies ``oversold`` and ``lost`` by reading the journal back (:mod:`livecart.bench.checks`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from livecart.bench import checks
from livecart.bench.common import Unavailable, _import, parse_all, percentiles
from livecart.bench.scenario import Scenario
from livecart.config import load
from livecart.core.records import Comment, Outcome
from livecart.core.settings import Config

Result = dict[str, Any]
#: Submits in flight at once when flat out: the journal commits what is queued together (group commit).
INFLIGHT = 8
#: Seconds without a new batch after which a fed case gives up and says how many comments arrived.
STALL = 30.0


def _fresh_config(scenario: Scenario, opts: argparse.Namespace, name: str) -> Config:
    d = Path(opts.workdir) / name
    return load(scenario.write_config(d, durability=opts.durability))


async def _open_engine(cfg: Config, **kwargs: Any) -> Any:
    """Open an engine as ``livecart run`` does: :func:`livecart.runtime.pipeline.tune_malloc` before (in a build that
    has it), :func:`livecart.runtime.pipeline.tune_gc` right after the journal rebuild (the daemon's
    ``serve(tune=True)``), and nothing more."""
    engine_cls = _import("livecart.runtime.pipeline", "Engine")
    with contextlib.suppress(Unavailable):
        _import("livecart.runtime.pipeline", "tune_malloc")()
    engine = await engine_cls.open(cfg, **kwargs)
    _import("livecart.runtime.pipeline", "tune_gc")()
    return engine


def settle_all(batches: Sequence[Sequence[Comment]], error: BaseException | None = None) -> None:
    """Settle adapters' batches (:func:`livecart.plugin.settle_all`; a build without it has none to settle)."""
    for b in batches:
        settle = getattr(b, "settle", None)
        if settle is not None:
            settle(error)


class _Sink:
    """Submits batches to the engine with at most ``inflight`` in flight; keeps what came back."""

    def __init__(self, engine: Any, inflight: int = INFLIGHT, submit: Any = None) -> None:
        self.submit = submit if submit is not None else engine.submit
        self.sem = asyncio.Semaphore(inflight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.acked: list[Outcome] = []
        self.submitted = 0
        self.errors: list[BaseException] = []

    async def _one(self, batch: Sequence[Any]) -> None:
        try:
            outs = await self.submit(batch)
            self.acked.extend(outs)
            settle_all((batch,))  # an adapter's Batch: durable now, so its sender is acknowledged
        except Exception as exc:  # reported in the result, never swallowed
            self.errors.append(exc)
            settle_all((batch,), exc)
        finally:
            self.sem.release()

    async def put(self, batch: Sequence[Any]) -> None:
        await self.sem.acquire()
        self.submitted += len(batch)
        t = asyncio.create_task(self._one(batch))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))
        if self.errors:
            raise self.errors[0]


def _rates(scenario: Scenario, n: int, outcomes: int, seconds: float) -> Result:
    share = n / len(scenario.comments)
    return {
        "comments": n,
        "seconds": round(seconds, 4),
        "comments_per_s": round(n / seconds) if seconds else None,
        "buys_per_s": round(scenario.buy_count * share / seconds) if seconds else None,
        "outcomes": outcomes,
        "outcomes_per_s": round(outcomes / seconds) if seconds else None,
    }


async def _paced(scenario: Scenario, cfg: Config, rate: float, tick: float = 0.001) -> Result:
    """Open loop at ``rate`` comments/s: every ``tick`` the comments now due are submitted as one batch,
    without waiting for earlier batches; latency is durable-outcome time minus each comment's *scheduled*
    time, so a stall shows up in the figures rather than slowing the offered load down."""
    engine = await _open_engine(cfg)
    comments = scenario.comments
    n = len(comments)
    lat: list[float] = [0.0] * n
    acked: list[Outcome] = []
    clock = time.perf_counter
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []

    async def submit(lo: int, hi: int, start: float) -> None:
        try:
            outs = await engine.submit(comments[lo:hi])
        except Exception as exc:
            errors.append(exc)
            return
        done = clock()
        acked.extend(outs)
        for i in range(lo, hi):
            lat[i] = done - (start + i / rate)

    try:
        start = clock()
        sent = 0
        while sent < n:
            due = min(n, int((clock() - start) * rate) + 1)
            if due > sent:
                t = asyncio.create_task(submit(sent, due, start))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                sent = due
            await asyncio.sleep(tick)  # the feeder's schedule, not a wait for something to happen
        while tasks:
            await asyncio.gather(*list(tasks))
        seconds = clock() - start
    finally:
        await engine.close()
    if errors:
        raise errors[0]
    report = checks.check_journal(cfg, scenario, acked)
    return {"offered_per_s": rate, "achieved_per_s": round(n / seconds), **percentiles(lat),
            "mode": "paced, open loop", "oversold": report.oversold, "lost": report.lost}


async def case_pipeline(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    engine = await _open_engine(cfg)
    comments = scenario.comments
    size = opts.batch
    batches = [comments[i:i + size] for i in range(0, len(comments), size)]
    sink = _Sink(engine)
    gc.collect()
    try:
        t0 = time.perf_counter()
        for b in batches:
            await sink.put(b)
        await sink.drain()
        seconds = time.perf_counter() - t0
    finally:
        await engine.close()
    report = checks.check_journal(cfg, scenario, sink.acked)
    out = {**_rates(scenario, len(comments), len(sink.acked), seconds), "batch": size, "inflight": INFLIGHT,
           "oversold": report.oversold, "lost": report.lost, "journal": report.summary()}
    if opts.offered > 0:
        paced = await _paced(scenario, _fresh_config(scenario, opts, "paced"), opts.offered)
        out["latency_ms"] = paced
        out["oversold"] += paced["oversold"]
        out["lost"] += paced["lost"]
    return out


# --- fed from a separate generator process -----------------------------------------------------------------


async def _feed_through(scenario: Scenario, cfg: Config, opts: argparse.Namespace, adapter: Any,
                        feeder_args: list[str], ready: Any, rate: float) -> Result:
    """Run the engine on ``adapter``'s batches while ``python -m livecart.bench.feeder`` sends the scenario.

    With ``rate`` 0 it is a throughput run (first batch in -> last outcome durable); otherwise latency is
    measured from each comment's send time in the feeder (its ``ts``) to its outcomes being durable.
    """
    engine = await _open_engine(cfg)
    expected = len(scenario.comments)
    sink = _Sink(engine)
    lat: list[float] = []
    clock = time.perf_counter
    feeder: asyncio.subprocess.Process | None = None
    nxt: asyncio.Future[Sequence[Comment]] | None = None
    pending: list[asyncio.Future[Any]] = []
    first = 0.0
    try:
        batches: AsyncIterator[Sequence[Comment]] = adapter.batches().__aiter__()
        nxt = asyncio.ensure_future(batches.__anext__())
        await ready()
        feeder = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "livecart.bench.feeder", *feeder_args, "--scenario", scenario.name,
            "--seed", str(scenario.seed), "--scale", repr(scenario.scale), "--rate", repr(rate),
            # Paced: about one frame per millisecond, stamped with its send time.
            *(["--batch", str(max(1, int(rate / 1000))), "--stamp"] if rate > 0 else ["--batch", "256"]),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        received = 0
        feeder_done = asyncio.ensure_future(feeder.wait())
        pending.append(feeder_done)
        while received < expected:
            # A safety bound, not a wait for something to happen: fail with counts instead of hanging
            # when the feeder died or comments stopped arriving.
            done, _ = await asyncio.wait({nxt, feeder_done}, timeout=STALL, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                if feeder_done.done() and feeder.returncode != 0:
                    tail = (await feeder.stderr.read()).decode(errors="replace") if feeder.stderr else ""
                    raise RuntimeError(f"feeder exited {feeder.returncode} after {received}/{expected} "
                                       f"comments arrived: {tail[-500:]}")
                if done:  # the feeder has sent everything; what it sent may still be on its way
                    done, _ = await asyncio.wait({nxt}, timeout=STALL)
                if not done:
                    raise RuntimeError(f"no comments for {STALL:g}s with {received}/{expected} arrived")
            batch = nxt.result()
            if not first:
                first = clock()
            received += len(batch)
            if received < expected:
                nxt = asyncio.ensure_future(batches.__anext__())
            if rate > 0:

                async def timed(b: Sequence[Comment] = batch) -> None:
                    outs = await engine.submit(b)
                    durable = time.time()
                    settle_all((b,))
                    sink.acked.extend(outs)
                    # ``ts`` is when the feeder sent the comment (``--stamp``), on the machine's clock.
                    lat.extend([durable - c.ts for c in b])

                await sink.sem.acquire()
                task = asyncio.create_task(timed())
                task.add_done_callback(lambda _t: sink.sem.release())
                sink.tasks.add(task)
                task.add_done_callback(sink.tasks.discard)
            else:
                await sink.put(batch)
        await sink.drain()
        seconds = clock() - first
        out, err = await feeder.communicate()
        if feeder.returncode != 0:
            raise RuntimeError(f"feeder exited {feeder.returncode}: {err.decode(errors='replace')[-500:]}")
        fed = orjson.loads(out.splitlines()[-1])
    finally:
        for fut in [nxt, *pending]:
            if fut is not None and not fut.done():
                fut.cancel()
        if feeder is not None and feeder.returncode is None:
            feeder.kill()
            await feeder.wait()
        await engine.close()
    report = checks.check_journal(cfg, scenario, sink.acked)
    res = {**_rates(scenario, expected, len(sink.acked), seconds), "feeder": fed,
           "oversold": report.oversold, "lost": report.lost, "journal": report.summary()}
    if rate > 0:
        res["latency_ms"] = {"offered_per_s": rate, **percentiles(lat), "mode": "paced by the feeder process; "
                             "sent by the feeder -> durable outcome"}
    return res


async def _over(transport: str, scenario: Scenario, opts: argparse.Namespace) -> Result:
    adapter_class = _import("livecart.registry", "adapter_class")
    out: Result = {}
    runs = [("throughput", 0.0)] + ([("latency", opts.offered)] if opts.offered > 0 else [])
    for label, rate in runs:
        cfg = _fresh_config(scenario, opts, f"{transport}-{label}")
        if transport == "websocket":
            adapter = adapter_class("websocket")({"mode": "server", "port": 0, "max_pending": 100_000},
                                                 name="bench-ws")
            await adapter.open()

            async def ready(a: Any = adapter) -> None:
                return None

            args = ["websocket", f"ws://127.0.0.1:{adapter.bound_port}"]
        else:
            topic = f"livecart/bench/{uuid.uuid4().hex[:10]}"
            host, _, port = opts.mqtt.partition(":")
            adapter = adapter_class("mqtt")({"host": host, "port": int(port or 1883), "topic": topic, "qos": 1,
                                             "max_pending": 100_000, "max_attempts": 3}, name="bench-mqtt")
            await adapter.open()

            async def ready(a: Any = adapter) -> None:
                await asyncio.wait_for(a.subscribed.reached(1), 10)

            args = ["mqtt", opts.mqtt, "--topic", topic]
        try:
            r = await _feed_through(scenario, cfg, opts, adapter, args, ready, rate)
        finally:
            await adapter.close()
        if label == "throughput":
            out.update(r)
        else:
            out["latency_ms"] = r.get("latency_ms")
            out["oversold"] += r["oversold"]
            out["lost"] += r["lost"]
    return out


async def case_websocket(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    return await _over("websocket", scenario, opts)


async def case_mqtt(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    return await _over("mqtt", scenario, opts)


# --- ledger + journal --------------------------------------------------------------------------------------


async def case_ledger(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    """The ledger deciding and the journal committing, with parsing done beforehand and outside the timing:
    the engine's :meth:`submit_parsed` path, batches of ``--batch`` comments, ``INFLIGHT`` at once."""
    from livecart.core.records import NOTHING

    parsed, source = parse_all(scenario, cfg)
    engine = await _open_engine(cfg, parse=lambda text, featured: NOTHING)  # never called by submit_parsed
    pairs = list(zip(scenario.comments, parsed, strict=True))
    size = opts.batch
    sink = _Sink(engine, submit=engine.submit_parsed)
    gc.collect()
    try:
        t0 = time.perf_counter()
        for lo in range(0, len(pairs), size):
            await sink.put(pairs[lo:lo + size])
        await sink.drain()
        seconds = time.perf_counter() - t0
    finally:
        await engine.close()
    report = checks.check_journal(cfg, scenario, sink.acked, parsed)
    return {**_rates(scenario, len(pairs), len(sink.acked), seconds), "items_from": source, "batch": size,
            "inflight": INFLIGHT, "oversold": report.oversold, "lost": report.lost, "journal": report.summary(),
            "latency_ms": {"p50": None, "p95": None, "p99": None,
                           "mode": "not measured here; see the pipeline cases"}}


__all__ = ["case_ledger", "case_mqtt", "case_pipeline", "case_websocket", "parse_all"]
