"""A restart after ``kill -9``: how much ``livecart run`` has to replay, and how long until it sells again.

    python -m livecart.bench.crash_bench [--at 2,3,4,5,6,7,8,9 | --at-events N,...] [--scale 1]
        [--snapshot-events N] [--pythonpath CHECKOUT]

A clean stop writes a last snapshot, so the restart after it replays nothing (``journal_bench`` measures
that one). A crash leaves everything since the last *whole* snapshot to replay: up to ``[storage]
snapshot_events`` events, plus those that came while the next snapshot was being written. For each moment
in ``--at`` (seconds after the start), or each journal size in ``--at-events`` (the journal read beside the
daemon every 5 ms until it holds that many events):

1. Starts ``livecart run`` as a process over the all-buy flash stream (``run_bench``'s file and config:
   replay adapter, ``speed = 0``, ``durability = "fsync"``) in a new directory, and kills it with SIGKILL at
   that moment. ``live_rss_mb`` is the killed process's peak RSS (``wait4``).
2. Reads the journal as the kill left it (read-only): its last event, its latest snapshot, and so ``tail``,
   the events a restart replays.
3. Restarts in a fresh process what ``livecart run`` does before it takes comments (load the config, open
   the engine on the journal) and has one new comment decided and durable: ``restart_s`` is from just
   before that process starts to that decision, ``restart_rss_mb`` its peak RSS.

Prints one JSON object: one entry per kill and, over them, the largest tail, the slowest restart and the
largest restart RSS over its live run's. Targets (issue #12, not asserted): restart <= 1 s; restart RSS <=
1.5x the live run's. The machine is shared and noisy: read figures as such.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

import livecart
from livecart.bench.run_bench import COMMENTS, _env, livecart_command, stream_file
from livecart.bench.scenario import flash_buys

TARGETS = {"restart_s": 1.0, "restart_vs_live_rss": 1.5}


def journal_at_kill(path: Path) -> dict[str, int]:
    """The last event and the latest snapshot of the journal at ``path`` (read-only, as the kill left it)."""
    if not path.exists():
        return {"events": 0, "snapshot": 0, "tail": 0}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        last = con.execute("SELECT coalesce(max(last), 0) FROM batches").fetchone()[0]
        snap = con.execute("SELECT coalesce(max(seq), 0) FROM snapshots WHERE seq <= ?", (last,)).fetchone()[0]
    except sqlite3.OperationalError:  # created, its tables not yet
        return {"events": 0, "snapshot": 0, "tail": 0}
    finally:
        con.close()
    return {"events": int(last), "snapshot": int(snap), "tail": int(last) - int(snap)}


def _events(path: Path) -> int:
    """Events in the journal at ``path`` now (0 before it exists), read beside its writer."""
    return journal_at_kill(path)["events"]


async def _probe(config: Path, started: float) -> dict[str, Any]:
    """In the restarted process: open the engine as ``livecart run`` does, decide one new comment."""
    from livecart.config import load
    from livecart.core.records import Comment, Intent, Item, ParseResult
    from livecart.runtime.pipeline import Engine, tune_gc, tune_malloc

    gc.disable()
    cfg = load(config)
    tune_malloc()
    engine = await Engine.open(cfg)
    tune_gc()
    sku = cfg.catalogue.products[0].sku
    c = Comment("douyin", "7312", "crash-bench-probe", "u-probe", "u-probe", "", 0.0)
    out = await engine.submit_parsed([(c, ParseResult(Intent.BUY, (Item(sku, None, 1),)))])
    selling = time.time() - started
    rebuilt = list(getattr(engine.journal, "rebuilt_from", (0, 0)))
    await engine.close()
    return {"restart_s": round(selling, 3), "outcome": out[0].status.value if out else None,
            "rebuilt_from": rebuilt, "restart_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def one_kill(at: float, stream: Path, directory: Path, snapshot_events: int = 0, *, events: bool = False
             ) -> dict[str, Any]:
    """Run, kill at ``at`` seconds (or, with ``events``, once the journal holds ``at`` events), restart."""
    scenario = flash_buys(1)  # the catalogue and featured product (they do not depend on the size)
    adapter = {"type": "replay", "name": "replay", "path": str(stream), "speed": 0, "platform": "douyin",
               "room": "7312"}
    config = scenario.write_config(directory, durability="fsync", adapters=[adapter],
                                   storage={"snapshot_events": snapshot_events} if snapshot_events else None)
    with config.open("a", encoding="utf-8") as f:
        f.write("\n[replies]\nenabled = false\n")
    journal = directory / "livecart.db"
    env = _env()
    t0 = time.perf_counter()
    child = subprocess.Popen([*livecart_command(), "run", str(config)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
    if events:
        while child.poll() is None and _events(journal) < at:
            time.sleep(0.005)
    else:
        time.sleep(at)
    killed_at = time.perf_counter() - t0
    child.send_signal(signal.SIGKILL)
    _, status, usage = os.wait4(child.pid, 0)
    entry: dict[str, Any] = {("at_events" if events else "at_s"): at, "killed_after_s": round(killed_at, 3),
                             "live_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if os.waitstatus_to_exitcode(status) != -signal.SIGKILL:
        entry["error"] = f"livecart run ended by itself (exit {os.waitstatus_to_exitcode(status)}) before the kill"
        return entry
    entry.update(journal_at_kill(journal))
    # This file as a script, not ``-m``: with --pythonpath the other checkout's livecart may not have it.
    # Bytecode as a user's install has it (pip writes it; main() compiled it): see journal_bench._ENV.
    probe_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.time()
    r = subprocess.run([sys.executable, __file__, "--probe", str(config), "--started", repr(started)],
                       capture_output=True, env=probe_env)
    if r.returncode:
        entry["error"] = r.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return entry
    entry.update(orjson.loads(r.stdout.splitlines()[-1]))
    entry["restart_vs_live_rss"] = round(entry["restart_rss_mb"] / entry["live_rss_mb"], 2)
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--at", default="2,3,4,5,6,7,8,9", help="seconds after the start to kill at, comma-separated")
    ap.add_argument("--at-events", default=None,
                    help="kill once the journal holds this many events instead (comma-separated; read beside it)")
    ap.add_argument("--scale", type=float, default=1.0, help=f"multiply the stream's {COMMENTS:,} comments")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tmpdir", default=None, help="where the stream file is cached (default: the system's)")
    ap.add_argument("--pythonpath", default=None, help="run livecart from these sources instead (before/after)")
    ap.add_argument("--snapshot-events", type=int, default=0,
                    help="[storage] snapshot_events (default: livecart's own)")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--started", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        sys.stdout.write(orjson.dumps(asyncio.run(_probe(Path(args.probe), args.started))).decode() + "\n")
        return 0
    if args.pythonpath:
        os.environ["LIVECART_BENCH_PYTHONPATH"] = str(Path(args.pythonpath).resolve())
    top = Path(args.pythonpath or Path(livecart.__file__).parent.parent) / "livecart"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(top), str(top / "adapters")], check=False,
                   env={k: v for k, v in _env().items() if k != "PYTHONDONTWRITEBYTECODE"})
    cache = Path(args.tmpdir or tempfile.gettempdir())
    stream, _ = stream_file(max(1, int(COMMENTS * args.scale)), args.seed, cache)
    kills = []
    points = args.at_events or args.at
    for at in (float(s) for s in points.split(",")):
        with tempfile.TemporaryDirectory(prefix="lcbench-crash-", dir=args.tmpdir) as tmp:
            kills.append(one_kill(at, stream, Path(tmp), args.snapshot_events, events=bool(args.at_events)))
    good = [k for k in kills if "error" not in k]
    result: dict[str, Any] = {"bench": "crash", "durability": "fsync",
                              "snapshot_events": args.snapshot_events or None, "kills": kills}
    if good:
        worst = max(good, key=lambda k: k["restart_s"])
        result["max_tail"] = max(k["tail"] for k in good)
        result["max_restart_s"] = worst["restart_s"]
        result["max_restart_vs_live_rss"] = max(k["restart_vs_live_rss"] for k in good)
        result["targets"] = {
            "restart_s": {"target": TARGETS["restart_s"], "measured": worst["restart_s"],
                          "met": worst["restart_s"] <= TARGETS["restart_s"]},
            "restart_vs_live_rss": {"target": TARGETS["restart_vs_live_rss"],
                                    "measured": result["max_restart_vs_live_rss"],
                                    "met": result["max_restart_vs_live_rss"] <= TARGETS["restart_vs_live_rss"]}}
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0 if good and len(good) == len(kills) else 1


if __name__ == "__main__":
    raise SystemExit(main())
