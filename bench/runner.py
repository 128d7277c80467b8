"""One benchmark case in one process: ``python -m livecart.bench.runner --case CASE ...`` prints one JSON object.

``python -m livecart.bench`` runs each case in a fresh child process through this module, so every case's peak RSS
is its own (``ru_maxrss`` only ever grows within a process) and a case whose code is missing or that fails
reports ``{"case": ..., "error": ...}`` without taking the other cases down.

Cases (see ``bench/README.md`` for what each one measures):

``parser``     the comment parser alone over every comment.
``ledger``     ledger + journal: comments parsed beforehand, decided and journalled in batches.
``pipeline``   the whole engine in process: ``await engine.submit(batch)`` until durable.
``websocket``  the whole engine fed by the ``websocket`` adapter (server mode) from a generator process.
``mqtt``       the whole engine fed by the ``mqtt`` adapter through the real Mosquitto broker.
``naive``      one fsynced aiosqlite transaction per buy item (:mod:`livecart.bench.baselines`).
``redis``      one Redis ``EVALSHA`` per buy item (:mod:`livecart.bench.baselines`).

Engine cases measure throughput flat out, then latency at a fixed offered rate on a fresh journal, and
verify ``oversold`` and ``lost`` by reading the journal back (:mod:`livecart.bench.checks`).

A baseline case runs the first comments of the scenario, up to and including the one that brings its buy
items to ``--naive-limit`` / ``--redis-limit`` (all of them when the limit is 0 or never reached), twice:

* end to end, reported at the top level: those comments in order, each parsed inside the timing by a fresh
  ``livecart.core.parser.Parser`` (cache cold, as in the ``pipeline`` case), non-buys dropped, then one call per buy
  item. ``comments``, ``comments_per_s``, ``buy_items``, ``buys_per_s`` (buy items/s), ``outcomes``,
  ``outcomes_per_s``, ``latency_ms`` (per call, the parse not included), ``statuses``, ``parsed_by``; the
  counterpart of the ``pipeline`` case. It runs first.
* allocation only, in the ``alloc`` object: the same buy items parsed beforehand, outside the timing.
  ``buy_items``, ``buys_per_s``, ``outcomes``, ``outcomes_per_s``, ``latency_ms``, ``statuses``,
  ``oversold``, ``lost``; the counterpart of the ``ledger`` case.

Top-level ``oversold`` and ``lost`` are the sums over both runs (as the pipeline case adds its paced run's).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from livecart.bench import baselines
from livecart.bench.common import Unavailable, _import, parse_all, peak_rss_mb, percentiles
from livecart.bench.scenario import Scenario, generate
from livecart.config import load
from livecart.core.records import Comment, Intent
from livecart.core.settings import Config

CASES = ("parser", "ledger", "pipeline", "websocket", "mqtt", "naive", "redis")
ENGINE_CASES = ("pipeline", "websocket", "mqtt")


def baseline_units(scenario: Scenario) -> dict[str, baselines.Unit]:
    """What every ledger key of the scenario starts with."""
    units = {}
    for p in scenario.products:
        for key, (stock, presale) in p.units.items():
            units[key] = baselines.Unit(stock, presale, p.limit)
    return units


@dataclass(frozen=True, slots=True)
class BaselineWork:
    """What both runs of a baseline case get: the scenario's first ``comments`` (the end-to-end run parses
    them itself) and their buy ``items`` parsed beforehand (the allocation-only run's input, and what the
    end-to-end run must store)."""

    units: dict[str, baselines.Unit]
    comments: Sequence[Comment]
    items: list[baselines.Buy]
    items_in_scenario: int
    items_from: str


def baseline_work(scenario: Scenario, cfg: Config, limit: int) -> BaselineWork:
    """The comments up to and including the one that brings the buy items to ``limit`` (every comment when
    ``limit`` is 0 or never reached), so a comment's items are never split between runs."""
    parsed, source = parse_all(scenario, cfg)
    units = baseline_units(scenario)
    items: list[baselines.Buy] = []
    end = 0
    total = 0
    for i, (c, r) in enumerate(zip(scenario.comments, parsed, strict=True)):
        found = baselines.buy_items(c, r, units)
        total += len(found)
        if not limit or len(items) < limit:
            items.extend(found)
            end = i + 1
    return BaselineWork(units, scenario.comments[:end], items, total, source)


# --- cases --------------------------------------------------------------------------------------------------

Result = dict[str, Any]


def case_parser(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    parser_cls = _import("livecart.core.parser", "Parser")
    parser = parser_cls.from_config(cfg)
    featured = cfg.stream.featured
    texts = [c.text for c in scenario.comments]
    parse = parser.parse
    gc.collect()
    t0 = time.perf_counter()
    results = [parse(t, featured) for t in texts]
    seconds = time.perf_counter() - t0
    agree = buy_total = 0
    for r, lab in zip(results, scenario.labels, strict=True):
        if lab.intent is Intent.BUY:
            buy_total += 1
            if (r.intent is Intent.BUY and len(r.items) == 1 and r.items[0].sku == lab.sku
                    and r.items[0].variant == lab.variant and r.items[0].qty == lab.qty):
                agree += 1
    return {
        "comments": len(texts),
        "seconds": round(seconds, 4),
        "comments_per_s": round(len(texts) / seconds),
        "buys_understood": round(agree / buy_total, 4) if buy_total else None,
    }


def _fresh_parse(cfg: Config) -> baselines.Parse:
    """``parse`` of a new ``livecart.core.parser.Parser``: its result cache starts cold, as in the pipeline case."""
    parse: baselines.Parse = _import("livecart.core.parser", "Parser").from_config(cfg).parse
    return parse


async def case_naive(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    w = baseline_work(scenario, cfg, opts.naive_limit)
    work = Path(opts.workdir)
    parse = _fresh_parse(cfg)
    gc.collect()
    e2e = await baselines.run_naive_e2e(w.units, w.comments, parse, cfg.stream.featured, w.items,
                                        work / "naive-e2e.db")
    gc.collect()
    alloc = await baselines.run_naive(w.units, w.items, work / "naive-alloc.db")
    return _baseline_result(e2e, alloc, w)


async def case_redis(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    w = baseline_work(scenario, cfg, opts.redis_limit)
    host, _, p = opts.redis.partition(":")
    port, tasks = int(p or 6379), opts.redis_tasks
    parse = _fresh_parse(cfg)
    gc.collect()
    e2e = await baselines.run_redis_e2e(w.units, w.comments, parse, cfg.stream.featured, w.items, host=host,
                                        port=port, concurrency=tasks)
    gc.collect()
    alloc = await baselines.run_redis(w.units, w.items, host=host, port=port, concurrency=tasks)
    return {**_baseline_result(e2e, alloc, w), "callers": opts.redis_tasks}


def _per_s(n: int, seconds: float) -> int | None:
    return round(n / seconds) if seconds else None


def _run_figures(r: baselines.BaselineResult) -> Result:
    """What both runs of a baseline case report the same way."""
    return {
        "buy_items": r.buys,
        "seconds": round(r.seconds, 4),
        "buys_per_s": _per_s(r.buys, r.seconds),
        "outcomes": r.outcomes,
        "outcomes_per_s": _per_s(r.outcomes, r.seconds),
        "latency_ms": {**percentiles(r.latencies), "mode": "flat-out, per call"},
        "statuses": r.statuses,
    }


def _baseline_result(e2e: baselines.BaselineResult, alloc: baselines.BaselineResult, w: BaselineWork) -> Result:
    comments = e2e.comments or 0
    return {
        "comments": comments,
        **_run_figures(e2e),
        "buy_items_in_scenario": w.items_in_scenario,
        "parsed_by": "livecart.core.parser.Parser, fresh (cache cold), every comment inside the timing",
        "comments_per_s": _per_s(comments, e2e.seconds),
        "oversold": e2e.oversold + alloc.oversold,
        "lost": e2e.lost + alloc.lost,
        "alloc": {**_run_figures(alloc), "items_from": w.items_from, "oversold": alloc.oversold,
                  "lost": alloc.lost},
    }


def _registry() -> dict[str, Any]:
    from livecart.bench import engine_cases

    return {
        "parser": case_parser,
        "naive": case_naive,
        "redis": case_redis,
        "ledger": engine_cases.case_ledger,
        "pipeline": engine_cases.case_pipeline,
        "websocket": engine_cases.case_websocket,
        "mqtt": engine_cases.case_mqtt,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", default="flash", help="flash | steady | simulcast (default flash)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every count; 0.01 = a 1%% model")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--durability", default="fsync", choices=("fsync", "os"))
    p.add_argument("--offered", type=float, default=50_000.0,
                   help="comments/s offered by the paced latency run (0 = skip it)")
    p.add_argument("--batch", type=int, default=512, help="comments per submit when flat out")
    p.add_argument("--naive-limit", type=int, default=5_000,
                   help="the naive baseline runs the comments up to its this-many-th buy item "
                        "(it fsyncs per buy; 0 = all)")
    p.add_argument("--redis-limit", type=int, default=0,
                   help="the Redis baseline runs the comments up to its this-many-th buy item (0 = all)")
    p.add_argument("--redis", default="127.0.0.1:6379", help="host:port of the Redis server")
    p.add_argument("--redis-tasks", type=int, default=32, help="concurrent callers of the Redis baseline")
    p.add_argument("--mqtt", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    p.add_argument("--gc", default="default", choices=("default", "off"),
                   help="Python's cyclic GC during the case: as configured (default) or disabled")


def run_one(case: str, opts: argparse.Namespace) -> Result:
    """Run ``case`` on the scenario ``opts`` describes; never raises, failures become ``error``."""
    head: Result = {"case": case, "scenario": opts.scenario, "seed": opts.seed, "scale": opts.scale}
    try:
        head["build"] = _import("livecart", "build")()  # "python" or "compiled" (LIVECART_COMPILE=1)
        scenario = generate(opts.scenario, seed=opts.seed, scale=opts.scale)
        # The scenario stands for the outside world: in the daemon comments arrive on sockets and die young.
        # Frozen, its ~1M long-lived objects are not traversed by the engine's gen-2 collections (which
        # otherwise stalled the paced run for up to 0.4 s); what the engine itself allocates is still counted.
        gc.collect()
        gc.freeze()
        if opts.gc == "off":
            gc.disable()  # what a daemon tuned for the flash moment could do; reported as "gc": "off"
        head["gc"] = opts.gc
        head["comments_in_scenario"] = len(scenario.comments)
        head["buys_in_scenario"] = scenario.buy_count
        head["distinct_texts"] = len({c.text for c in scenario.comments})
        with tempfile.TemporaryDirectory(prefix=f"lcbench-{case}-", dir=opts.tmpdir) as tmp:
            opts.workdir = tmp
            cfg = load(scenario.write_config(tmp, durability=opts.durability))
            fn = _registry()[case]
            res = fn(scenario, cfg, opts)
            if asyncio.iscoroutine(res):
                res = _run_async(res)
            head.update(res)
    except Unavailable as exc:
        head["error"] = f"not available: {exc}"
    except Exception as exc:  # a failing case is reported, and the run goes on with the next one
        head["error"] = f"{type(exc).__name__}: {exc}"
        head["traceback"] = traceback.format_exc(limit=-3).splitlines()[-8:]
    head["peak_rss_mb"] = peak_rss_mb(children=case in ("websocket", "mqtt"))
    return head


def _run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livecart.bench.runner", description="run one benchmark case")
    p.add_argument("--case", required=True, choices=CASES)
    p.add_argument("--tmpdir", default=None, help="where case work directories go (default: the system's)")
    add_arguments(p)
    opts = p.parse_args(argv)
    result = run_one(opts.case, opts)
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    sys.stdout.flush()
    return 1 if "error" in result else 0


if __name__ == "__main__":
    # Run through the importable module, so that bench.engine_cases and this entry share one
    # ``Unavailable`` class rather than one in ``__main__`` and one in ``livecart.bench.runner``.
    from livecart.bench import runner

    sys.exit(runner.main())

