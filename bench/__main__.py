"""``python -m bench`` / ``livecart bench``: run benchmark cases and print one JSON object per line.

Each case runs in its own child process (:mod:`bench.runner`) so its peak RSS is its own; after the cases a
``summary`` object gives the ratios of livecart to the two baselines and whether each target was met.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from bench.runner import CASES, add_arguments

#: The issue's targets on a 2-core machine.
TARGETS = {
    "pipeline_comments_per_s": 250_000,
    "websocket_comments_per_s": 80_000,
    "p99_ms_at_50k": 5.0,
    "vs_naive": 100.0,
    "vs_redis": 5.0,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated cases to run, in order (default: all of {','.join(CASES)})")
    p.add_argument("--tmpdir", default=None, help="where case work directories go (default: the system's)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a case is killed")
    add_arguments(p)
    return p


def _forward(opts: argparse.Namespace) -> list[str]:
    args = ["--scenario", opts.scenario, "--scale", repr(opts.scale), "--seed", str(opts.seed),
            "--durability", opts.durability, "--offered", repr(opts.offered), "--batch", str(opts.batch),
            "--naive-limit", str(opts.naive_limit), "--redis-limit", str(opts.redis_limit),
            "--redis", opts.redis, "--redis-tasks", str(opts.redis_tasks), "--mqtt", opts.mqtt, "--gc", opts.gc]
    if opts.tmpdir:
        args += ["--tmpdir", opts.tmpdir]
    return args


def run_group(cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` in a process group of its own and capture its output. On timeout the whole group is
    killed (the case's sender and feeder processes too, not just the case) and TimeoutExpired raised."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                          env=env) as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise
    return subprocess.CompletedProcess(list(cmd), child.returncode, stdout, stderr)


def run_case(case: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Run one case in a child process and return its JSON object (an ``error`` one if it failed)."""
    cmd = [sys.executable, "-m", "bench.runner", "--case", case, *_forward(opts)]
    try:
        proc = run_group(cmd, timeout=opts.timeout, env={**os.environ, "PYTHONHASHSEED": "0"})
    except subprocess.TimeoutExpired:
        return {"case": case, "scenario": opts.scenario, "error": f"timed out after {opts.timeout:g}s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith(b"{")]
    if lines:
        try:
            out: dict[str, Any] = orjson.loads(lines[-1])
            return out
        except orjson.JSONDecodeError:
            pass
    tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
    return {"case": case, "scenario": opts.scenario, "error": f"runner exited {proc.returncode}", "stderr": tail}


def _rate(results: dict[str, dict[str, Any]], case: str, key: str) -> float | None:
    r = results.get(case)
    if r is None or "error" in r:
        return None
    v = r.get(key)
    return float(v) if isinstance(v, int | float) else None


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Ratios against the baselines (buy items per second, the unit both baselines work in) and targets."""
    by = {r["case"]: r for r in results}
    pipeline_buys = _rate(by, "pipeline", "buys_per_s")
    ratios: dict[str, float | None] = {}
    for base in ("naive", "redis"):
        b = _rate(by, base, "buys_per_s")
        ratios[f"pipeline_vs_{base}"] = round(pipeline_buys / b, 2) if pipeline_buys and b else None
    p99 = None
    pl = by.get("pipeline", {}).get("latency_ms")
    if isinstance(pl, dict):
        p99 = pl.get("p99")
    measured = {
        "pipeline_comments_per_s": _rate(by, "pipeline", "comments_per_s"),
        "websocket_comments_per_s": _rate(by, "websocket", "comments_per_s"),
        "p99_ms_at_50k": p99,
        "vs_naive": ratios["pipeline_vs_naive"],
        "vs_redis": ratios["pipeline_vs_redis"],
    }
    targets: dict[str, Any] = {}
    for name, goal in TARGETS.items():
        got = measured[name]
        met = None if got is None else (got <= goal if name.startswith("p99") else got >= goal)
        targets[name] = {"target": goal, "measured": got, "met": met}
    # Cases that allocate carry the checks; the parser case allocates nothing.
    checks_ok = all(r["oversold"] == 0 and r["lost"] == 0 for r in results
                    if "error" not in r and ("oversold" in r or "lost" in r))
    return {
        "summary": True,
        "cases": [r["case"] for r in results],
        "errors": {r["case"]: r["error"] for r in results if "error" in r},
        "ratios": ratios,
        "targets": targets,
        "checks_ok": checks_ok,
        "cpus": os.cpu_count(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    cases = [c.strip() for c in opts.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"python -m bench: unknown case(s) {', '.join(unknown)}; expected {', '.join(CASES)}", file=sys.stderr)
        return 2
    if opts.scale <= 0:
        print("python -m bench: --scale must be above 0", file=sys.stderr)
        return 2
    results = []
    for case in cases:
        r = run_case(case, opts)
        results.append(r)
        sys.stdout.buffer.write(orjson.dumps(r) + b"\n")
        sys.stdout.flush()
    summary = summarise(results)
    sys.stdout.buffer.write(orjson.dumps(summary) + b"\n")
    sys.stdout.flush()
    return 0 if summary["checks_ok"] and not summary["errors"] else 1


def cli_main(args: argparse.Namespace) -> int:
    """Entry for ``livecart bench ...`` (engine.cli): ``args.rest`` holds the arguments after ``bench``."""
    rest = list(getattr(args, "rest", []) or [])
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return main(rest)


if __name__ == "__main__":
    sys.exit(main())
