"""Decisions per second through ledger + journal (``durability = "fsync"``), against a naive design.

    python -m livecart.bench.ledger_bench [--n N] [--naive-n M] [--batch B] [--inflight K] [--durability fsync|os]

Prints one JSON object. Comments are parsed beforehand (a fixed table of buys, cancels and chat), so the
parser is not measured; the timing covers :meth:`livecart.runtime.pipeline.Engine.submit_parsed` deciding every comment and
the journal committing it (submit returns only once the batch is durable). The naive design is what a hobby
tool does: one aiosqlite transaction per buy comment (``UPDATE stock SET left = left - ? WHERE sku = ? AND
left >= ?``, ``INSERT`` the order, ``COMMIT``), on the same comments, in a default rollback-journal SQLite
file with ``synchronous=FULL``; it is run on the first ``--naive-n`` comments and reported per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from livecart import build
from livecart.config import load
from livecart.core.records import NOTHING, Comment, Intent, Item, ParseResult
from livecart.runtime.pipeline import Engine, tune_gc

CONFIG = """
[stream]
name = "bench"
featured = "egg"
hold_minutes = 30

[storage]
path = "livecart.bench.db"
durability = "{durability}"
batch_max = {batch_max}

[[products]]
sku = "egg"
name = "Eggs"
stock = {stock}
limit = 5
presale = {presale}

[[products]]
sku = "honey"
name = "Honey"
stock = {small}
limit = 3
presale = {small}

[[products]]
sku = "tea"
name = "Tea"
  [[products.variants]]
  name = "s"
  stock = {small}
  [[products.variants]]
  name = "l"
  stock = {small}
  presale = {small}
"""


def workload(n: int, seed: int = 7) -> list[tuple[Comment, ParseResult]]:
    """A flash sale: mostly buys of the featured product, some other products, cancels and chat."""
    rnd = random.Random(seed)
    users = [f"u-{i}" for i in range(max(10, n // 4))]
    out: list[tuple[Comment, ParseResult]] = []
    for i in range(n):
        user = rnd.choice(users)
        c = Comment("douyin", "7312", f"m-{i}", user, user, "", 1_584_250_000.0 + i / 1000)
        r = rnd.random()
        if r < 0.60:
            pr = ParseResult(Intent.BUY, (Item("egg", None, rnd.choice((1, 1, 1, 2, 3))),))
        elif r < 0.72:
            pr = ParseResult(Intent.BUY, (Item("honey", None, rnd.choice((1, 2))),))
        elif r < 0.80:
            pr = ParseResult(Intent.BUY, (Item("tea", rnd.choice(("s", "l")), 1),))
        elif r < 0.83:
            pr = ParseResult(Intent.CANCEL)
        else:
            pr = NOTHING
        out.append((c, pr))
    return out


async def run_engine(pairs: list[tuple[Comment, ParseResult]], workdir: Path, durability: str, batch: int,
                     inflight: int, batch_max: int) -> dict[str, Any]:
    n = len(pairs)
    cfg_path = workdir / "livecart.bench.toml"
    cfg_path.write_text(CONFIG.format(durability=durability, batch_max=batch_max, stock=n // 3, presale=n // 10, small=n // 50),
                        encoding="utf-8")
    cfg = load(cfg_path, adapter_options=lambda t: {}, hook_options=lambda t: {})
    engine = await Engine.open(cfg, parse=lambda text, featured: NOTHING)
    tune_gc()  # as the daemon does
    sem = asyncio.Semaphore(inflight)
    tasks: set[asyncio.Task[Any]] = set()
    outcomes = 0

    async def one(chunk: list[tuple[Comment, ParseResult]]) -> None:
        nonlocal outcomes
        try:
            got = await engine.submit_parsed(chunk)
            outcomes += len(got)
        finally:
            sem.release()

    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        await sem.acquire()
        t = asyncio.get_running_loop().create_task(one(pairs[lo:lo + batch]))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)
    seconds = time.perf_counter() - t0
    j = engine.journal
    stats = {"batch_max": engine.cfg.storage.batch_max, "batches": j.batches, "largest_batch": j.largest_batch,
             "mean_batch_ms": round(1000 * j.batch_seconds_total / max(j.batches, 1), 3)}
    await engine.close()
    buys = sum(1 for _, pr in pairs if pr.intent is Intent.BUY or pr.intent is Intent.CANCEL)
    return {"comments": n, "decisions": buys, "outcomes": outcomes, "seconds": round(seconds, 4),
            "comments_per_s": round(n / seconds), "decisions_per_s": round(buys / seconds), "journal": stats}


async def run_naive(pairs: list[tuple[Comment, ParseResult]], workdir: Path, stock: dict[str, int]
                    ) -> dict[str, Any]:
    db = await aiosqlite.connect(workdir / "naive.db")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("CREATE TABLE stock (sku TEXT PRIMARY KEY, left INTEGER NOT NULL)")
    await db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, comment TEXT, user TEXT, sku TEXT, qty INTEGER)")
    await db.executemany("INSERT INTO stock VALUES (?, ?)", stock.items())
    await db.commit()
    decisions = 0
    t0 = time.perf_counter()
    for c, pr in pairs:
        if pr.intent is not Intent.BUY:
            continue
        for item in pr.items:
            key = item.sku if item.variant is None else f"{item.sku}/{item.variant}"
            cur = await db.execute("UPDATE stock SET left = left - ? WHERE sku = ? AND left >= ?",
                                   (item.qty, key, item.qty))
            if cur.rowcount:
                await db.execute("INSERT INTO orders (comment, user, sku, qty) VALUES (?, ?, ?, ?)",
                                 (c.id, c.user, key, item.qty))
            await db.commit()
        decisions += 1
    seconds = time.perf_counter() - t0
    await db.close()
    return {"decisions": decisions, "seconds": round(seconds, 4), "decisions_per_s": round(decisions / seconds)}


async def main_async(opts: argparse.Namespace) -> dict[str, Any]:
    pairs = workload(opts.n)
    with tempfile.TemporaryDirectory(prefix="livecart-bench-", dir=opts.dir) as d:
        work = Path(d)
        engine = await run_engine(pairs, work, opts.durability, opts.batch, opts.inflight, opts.batch_max)
        small = opts.n // 50
        stock = {"egg": opts.n // 3, "honey": small, "tea/s": small, "tea/l": small}
        naive = await run_naive(pairs[: opts.naive_n], work, stock)
    ratio = engine["decisions_per_s"] / naive["decisions_per_s"] if naive["decisions_per_s"] else None
    return {
        "bench": "ledger",
        "durability": opts.durability,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "build": build(),
        "engine": engine,
        "naive": naive,
        "ratio": round(ratio, 1) if ratio is not None else None,
        "targets": {"decisions_per_s": 250_000, "ratio": 100},
        "note": "noisy: 2-core machine shared with other work; decisions = buy and cancel comments",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livecart.bench.ledger_bench", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="comments through ledger + journal")
    p.add_argument("--naive-n", type=int, default=2_000, help="comments through the naive design")
    p.add_argument("--batch", type=int, default=1024, help="comments per submit")
    p.add_argument("--inflight", type=int, default=8, help="submits in flight at once")
    p.add_argument("--batch-max", type=int, default=2048, help="[storage] batch_max: most entries per commit")
    p.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    p.add_argument("--dir", default=None, help="where to put the temporary journals (default: system temp)")
    opts = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        result = asyncio.run(main_async(opts))
    else:
        result = uvloop.run(main_async(opts))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
