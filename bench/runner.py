"""One benchmark case in one process: ``python -m bench.runner --case CASE ...`` prints one JSON object.

``python -m bench`` runs each case in a fresh child process through this module, so every case's peak RSS
is its own (``ru_maxrss`` only ever grows within a process) and a case whose code is missing or that fails
reports ``{"case": ..., "error": ...}`` without taking the other cases down.

Cases (see ``bench/README.md`` for what each one measures):

``parser``     the comment parser alone over every comment.
``ledger``     ledger + journal: comments parsed beforehand, decided and journalled in batches.
``pipeline``   the whole engine in process: ``await engine.submit(batch)`` until durable.
``websocket``  the whole engine fed by the ``websocket`` adapter (server mode) from a generator process.
``mqtt``       the whole engine fed by the ``mqtt`` adapter through the real Mosquitto broker.
``naive``      one fsynced aiosqlite transaction per buy (:mod:`bench.baselines`).
``redis``      one Redis ``EVALSHA`` per buy (:mod:`bench.baselines`).

Engine cases measure throughput flat out, then latency at a fixed offered rate on a fresh journal, and
verify ``oversold`` and ``lost`` by reading the journal back (:mod:`bench.checks`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import baselines
from bench.scenario import Label, Scenario, generate
from engine.config import Config, load
from engine.records import Intent, ParseResult

CASES = ("parser", "ledger", "pipeline", "websocket", "mqtt", "naive", "redis")
ENGINE_CASES = ("pipeline", "websocket", "mqtt")


class Unavailable(Exception):
    """The code a case needs is not in this build (yet)."""


def percentiles(samples: Sequence[float], ps: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles of ``samples`` (seconds) as milliseconds, rounded to 3 decimals."""
    if not samples:
        return {f"p{p:g}": None for p in ps}
    s = sorted(samples)
    out: dict[str, float | None] = {}
    for p in ps:
        rank = max(1, -(-len(s) * p // 100))  # ceil(n * p / 100), 1-based
        out[f"p{p:g}"] = round(s[int(rank) - 1] * 1000, 3)
    return out


def peak_rss_mb(*, children: bool = False) -> float:
    """Peak resident set size of this process (and, if asked, of its waited-for children) in MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        kb = max(kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(kb / 1024, 1)


def _import(module: str, attr: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise Unavailable(f"{module} is not in this build") from exc
        raise
    try:
        return getattr(mod, attr)
    except AttributeError as exc:
        raise Unavailable(f"{module}.{attr} is not in this build") from exc


def item_key(sku: str, variant: str | None) -> str:
    return sku if variant is None else f"{sku}/{variant}"


def label_result(lab: Label) -> ParseResult:
    from engine.records import Item

    if lab.intent in (Intent.BUY, Intent.CANCEL) and lab.sku is not None:
        return ParseResult(lab.intent, (Item(lab.sku, lab.variant, max(1, lab.qty)),))
    return ParseResult(lab.intent)


def parse_all(scenario: Scenario, cfg: Config) -> tuple[list[ParseResult], str]:
    """Every comment parsed once by the real parser (or, where it is missing, the generator's labels)."""
    try:
        parser_cls = _import("engine.parser", "Parser")
    except Unavailable:
        return [label_result(lab) for lab in scenario.labels], "labels"
    parser = parser_cls.from_config(cfg)
    featured = cfg.stream.featured
    return [parser.parse(c.text, featured) for c in scenario.comments], "parser"


def baseline_inputs(scenario: Scenario, parsed: Sequence[ParseResult]) -> tuple[dict[str, baselines.Unit],
                                                                                list[baselines.Buy]]:
    units = {}
    for p in scenario.products:
        for key, (stock, presale) in p.units.items():
            units[key] = baselines.Unit(stock, presale, p.limit)
    out: list[baselines.Buy] = []
    for c, r in zip(scenario.comments, parsed, strict=True):
        if r.intent is not Intent.BUY:
            continue
        for item in r.items:
            # Items the ledger would reject without touching stock (unknown product, bad quantity, a
            # product with variants and none named) cost the baselines nothing either: leave them out.
            if item.sku is None or item.reason is not None or item_key(item.sku, item.variant) not in units:
                continue
            out.append(baselines.Buy(c.id, c.user, item.sku, item_key(item.sku, item.variant), item.qty))
    return units, out


# --- cases --------------------------------------------------------------------------------------------------

Result = dict[str, Any]


def case_parser(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    parser_cls = _import("engine.parser", "Parser")
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


async def case_naive(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    parsed, source = parse_all(scenario, cfg)
    units, items = baseline_inputs(scenario, parsed)
    sample = items[: opts.naive_limit] if opts.naive_limit else items
    r = await baselines.run_naive(units, sample, Path(opts.workdir) / "naive.db")
    return _baseline_result(r, source, len(items))


async def case_redis(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> Result:
    parsed, source = parse_all(scenario, cfg)
    units, items = baseline_inputs(scenario, parsed)
    sample = items[: opts.redis_limit] if opts.redis_limit else items
    host, _, port = opts.redis.partition(":")
    r = await baselines.run_redis(units, sample, host=host, port=int(port or 6379), concurrency=opts.redis_tasks)
    return _baseline_result(r, source, len(items))


def _baseline_result(r: baselines.BaselineResult, source: str, total: int) -> Result:
    return {
        "buy_items": r.buys,
        "buy_items_in_scenario": total,
        "items_from": source,
        "seconds": round(r.seconds, 4),
        "buys_per_s": round(r.buys / r.seconds) if r.seconds else None,
        "outcomes": r.outcomes,
        "outcomes_per_s": round(r.outcomes / r.seconds) if r.seconds else None,
        "latency_ms": {**percentiles(r.latencies), "mode": "flat-out, per call"},
        "statuses": r.statuses,
        "oversold": r.oversold,
        "lost": r.lost,
    }


def _registry() -> dict[str, Any]:
    from bench import engine_cases

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
                   help="most buy items the naive baseline runs (it fsyncs per buy; 0 = all)")
    p.add_argument("--redis-limit", type=int, default=0, help="most buy items the Redis baseline runs (0 = all)")
    p.add_argument("--redis", default="127.0.0.1:6379", help="host:port of the Redis server")
    p.add_argument("--redis-tasks", type=int, default=32, help="concurrent callers of the Redis baseline")
    p.add_argument("--mqtt", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    p.add_argument("--gc", default="default", choices=("default", "off"),
                   help="Python's cyclic GC during the case: as configured (default) or disabled")


def run_one(case: str, opts: argparse.Namespace) -> Result:
    """Run ``case`` on the scenario ``opts`` describes; never raises, failures become ``error``."""
    head: Result = {"case": case, "scenario": opts.scenario, "seed": opts.seed, "scale": opts.scale}
    try:
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
    p = argparse.ArgumentParser(prog="python -m bench.runner", description="run one benchmark case")
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
    # ``Unavailable`` class rather than one in ``__main__`` and one in ``bench.runner``.
    from bench import runner

    sys.exit(runner.main())

