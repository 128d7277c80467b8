"""Journal at scale: ``livecart report`` time and restart-to-selling time on big journals, and memory.

    python -m livecart.bench.journal_bench [--sizes 1000000,3000000] [--keep DIR]

For each size N it writes a journal of N comments by running the engine in process over a synthetic
flash sale (parsed beforehand, generated in chunks so the generator holds no memory of its own), as
``livecart run`` would decide and journal them (``durability = "os"``, snapshots at their defaults), and
records that run's decisions/s and peak RSS ("live"). Then, each in a fresh process:

* ``report``: ``livecart report CONFIG --json``, wall time and peak RSS;
* ``restart``: open the engine on the journal (what ``livecart run`` does before it takes comments),
  decide one new comment and have it durable: wall time from process start, and peak RSS.

Prints one JSON object. Targets (issue #12, not asserted): report <= 0.5 s and restart <= 1 s at 1M and 10M;
live RSS <= 250 MB at 10M; restart RSS <= 1.5x live. The machine is shared and noisy: read figures as such.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

import livecart
from livecart import build
from livecart.config import load
from livecart.core.records import NOTHING, Comment, Intent, Item, ParseResult
from livecart.runtime.pipeline import Engine, tune_gc, tune_malloc

CONFIG = """
[stream]
name = "journal bench"
featured = "egg"
hold_minutes = 30

[storage]
path = "journal.db"
durability = "os"

[[products]]
sku = "egg"
name = "Eggs"
stock = 20000
limit = 5
presale = 5000

[[products]]
sku = "honey"
name = "Honey"
stock = 3000
limit = 3
presale = 1000

[[products]]
sku = "tea"
name = "Tea"
  [[products.variants]]
  name = "s"
  stock = 2000
  [[products.variants]]
  name = "l"
  stock = 2000
  presale = 500
"""

CHUNK = 512


def chunks(n: int, seed: int = 7, start: int = 0) -> Iterator[list[tuple[Comment, ParseResult]]]:
    """A flash sale of ``n`` comments from 200,000 buyers, in chunks of :data:`CHUNK`."""
    rnd = random.Random(seed)
    users = [f"u-{i}" for i in range(200_000)]
    buys = [ParseResult(Intent.BUY, (Item("egg", None, q),)) for q in (1, 1, 1, 2, 3)]
    honey = [ParseResult(Intent.BUY, (Item("honey", None, q),)) for q in (1, 2)]
    tea = [ParseResult(Intent.BUY, (Item("tea", v, 1),)) for v in ("s", "l")]
    cancel = ParseResult(Intent.CANCEL)
    for lo in range(start, start + n, CHUNK):
        out = []
        for i in range(lo, min(lo + CHUNK, start + n)):
            user = users[rnd.randrange(200_000)]
            c = Comment("douyin", "7312", f"m-{i}", user, user, "", 1_584_250_000.0 + i / 1000)
            r = rnd.random()
            pr = (rnd.choice(buys) if r < 0.60 else rnd.choice(honey) if r < 0.72 else rnd.choice(tea) if r < 0.80
                  else cancel if r < 0.83 else NOTHING)
            out.append((c, pr))
        yield out


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def _open(cfg_path: Path) -> Engine:
    """The engine on ``cfg_path``'s journal, opened as ``livecart run`` opens it: the collector off and glibc's
    malloc tuned before the journal is read, tune_gc() once it is rebuilt."""
    gc.disable()
    cfg = load(cfg_path, adapter_options=lambda t: {}, hook_options=lambda t: {})
    tune_malloc()
    engine = await Engine.open(cfg, parse=lambda text, featured: NOTHING)
    tune_gc()
    return engine


async def generate(cfg_path: Path, n: int, inflight: int = 4) -> dict[str, Any]:
    engine = await _open(cfg_path)
    sem = asyncio.Semaphore(inflight)
    tasks: set[asyncio.Task[Any]] = set()

    async def one(chunk: list[tuple[Comment, ParseResult]]) -> None:
        try:
            await engine.submit_parsed(chunk)
        finally:
            sem.release()

    t0 = time.perf_counter()
    for chunk in chunks(n):
        await sem.acquire()
        t = asyncio.get_running_loop().create_task(one(chunk))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)
    seconds = time.perf_counter() - t0
    j = engine.journal
    snaps = getattr(j, "snapshots_written", 0)
    await engine.close()
    return {"comments": n, "seconds": round(seconds, 2), "comments_per_s": round(n / seconds),
            "snapshots": snaps, "peak_rss_mb": rss_mb()}


#: The children's environment: without PYTHONDONTWRITEBYTECODE, which some machines set (this one does). A
#: user's install has bytecode (pip writes it); without it every `livecart report` compiles ~20 modules
#: (~0.09 s here), which is the machine's setting, not livecart's cost.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


async def _restart_probe(cfg_path: Path, started: float) -> dict[str, Any]:
    engine = await _open(cfg_path)
    c = Comment("douyin", "7312", "restart-probe", "u-probe", "u-probe", "", 0.0)
    out = await engine.submit_parsed([(c, ParseResult(Intent.BUY, (Item("egg", None, 1),)))])
    selling = time.time() - started
    rebuilt = list(getattr(engine.journal, "rebuilt_from", (0, 0)))
    await engine.close()
    return {"selling_after_s": round(selling, 3), "outcome": out[0].status.value if out else None,
            "rebuilt_from": rebuilt, "peak_rss_mb": rss_mb()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000", help="journal sizes in comments, comma-separated")
    ap.add_argument("--keep", default=None, help="write the journals here and keep them")
    ap.add_argument("--snapshot-events", type=int, default=0,
                    help="[storage] snapshot_events for the live run (default: livecart's own)")
    ap.add_argument("--restart-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--started", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.restart_probe:
        res = asyncio.run(_restart_probe(Path(args.restart_probe), args.started))
        sys.stdout.write(orjson.dumps(res).decode() + "\n")
        return 0
    results: dict[str, Any] = {"bench": "journal", "build": build(), "cpus": os.cpu_count(),
                               "python": sys.version.split()[0], "snapshot_events": args.snapshot_events or None,
                               "sizes": {}}
    # The bytecode a user's install has (pip writes it; see _ENV), so the timed runs do not compile.
    top = Path(livecart.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(top), str(top / "adapters"), str(top / "bench")],
                   check=False, env=_ENV)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for n in (int(s) for s in args.sizes.split(",")):
            d = root / f"j{n}"
            d.mkdir(parents=True, exist_ok=True)
            cfg = d / "stream.toml"
            text = CONFIG
            if args.snapshot_events:
                text = text.replace('durability = "os"\n',
                                    f'durability = "os"\nsnapshot_events = {args.snapshot_events}\n')
            cfg.write_text(text, encoding="utf-8")
            (d / "journal.db").unlink(missing_ok=True)
            # The live run in its own process, so its peak RSS is its own.
            live = subprocess.run([sys.executable, "-c", "import asyncio, sys, orjson; "
                                   "from pathlib import Path; from livecart.bench.journal_bench import generate; "
                                   f"print(orjson.dumps(asyncio.run(generate(Path({str(cfg)!r}), {n}))).decode())"],
                                  capture_output=True, check=True)
            entry: dict[str, Any] = {"live": orjson.loads(live.stdout.splitlines()[-1]),
                                     "journal_mb": round((d / "journal.db").stat().st_size / 2**20, 1)}
            report = [sys.executable, "-m", "livecart.cli.main", "report", str(cfg), "--json"]
            runs = sorted(_run(report) for _ in range(3))
            wall, cpu, report_rss = runs[1]  # the median run by wall time
            entry["report"] = {"seconds": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_mb": report_rss,
                               "runs_s": [round(r[0], 3) for r in runs]}
            started = time.time()
            r = subprocess.run([sys.executable, "-m", "livecart.bench.journal_bench", "--restart-probe", str(cfg),
                                "--started", repr(started)], capture_output=True, check=True, env=_ENV)
            entry["restart"] = orjson.loads(r.stdout.splitlines()[-1])
            live_rss = entry["live"]["peak_rss_mb"]
            entry["restart_vs_live_rss"] = round(entry["restart"]["peak_rss_mb"] / live_rss, 2) if live_rss else None
            results["sizes"][str(n)] = entry
    results["targets"] = {"report_s": 0.5, "restart_s": 1.0, "live_rss_mb_at_10m": 250, "restart_vs_live_rss": 1.5}
    results["note"] = "noisy: 2-core machine shared with other work"
    sys.stdout.write(orjson.dumps(results).decode() + "\n")
    return 0


def _run(cmd: list[str]) -> tuple[float, float, float]:
    """One run of ``cmd``: wall seconds, CPU seconds (user + system) and peak RSS (MB), from wait4. The CPU
    seconds move less than the wall time when other work shares the machine."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{cmd} failed: {err.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, round(usage.ru_maxrss / 1024, 1)


if __name__ == "__main__":
    sys.exit(main())
