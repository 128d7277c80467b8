"""``python -m livecart.bench`` / ``livecart bench``: run benchmark cases and print one JSON object per line.

Each case runs in its own child process (:mod:`livecart.bench.runner`; the ``run`` cases,
:mod:`livecart.bench.run_bench`, time ``livecart run`` as a process of its own: ``run`` over a replay file,
``run-websocket`` and ``run-mqtt`` fed by a client process, ``run-latency`` paced at ``--offered`` over
WebSocket for its p99) so its peak RSS is its own; after the cases a
``summary`` object gives the ratios of livecart to the two baselines and whether each target was met.

``ratios`` come in two families, each comparing the same work (buy items per second, the unit both
baselines work in; ``None`` when a case it needs did not run or failed):

``e2e_vs_naive``, ``e2e_vs_redis``
    the ``pipeline`` case's ``buys_per_s`` over the baseline's end-to-end ``buys_per_s``: both parse every
    comment they are given inside the timing with livecart's parser and store every buy. Buys, not
    comments, per second: a baseline stopped by ``--naive-limit`` runs a prefix of the scenario, and the
    flash prefix is mostly warm-up chatter (at full size 5,000 buys come with 68,674 comments, against
    51,022 in 143,000 for the whole), so its comments/s would flatter it several times over, while its cost
    per buy, the fsynced transaction, hardly changes. Over the whole scenario the two ratios are the same.
``alloc_vs_naive``, ``alloc_vs_redis``
    the ``ledger`` case's ``buys_per_s`` over the baseline's ``alloc.buys_per_s``: both get comments parsed
    beforehand.

``targets`` holds each target with its goal, the measured figure and ``met`` (``None`` when not measured);
the two baseline targets are reported for both families (``vs_naive_e2e``, ``vs_naive_alloc``, ...).
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

from livecart.bench.runner import CASES as ENGINE_RUNNER_CASES
from livecart.bench.runner import add_arguments

#: ``run`` (``livecart run`` as a process, :mod:`livecart.bench.run_bench`) first: it is what users run; then
#: the same daemon fed over WebSocket and MQTT by a client process, and paced for its p99.
RUN_CASES = ("run", "run-websocket", "run-mqtt", "run-latency")
CASES = (*RUN_CASES, *ENGINE_RUNNER_CASES)

#: The issue's targets on a 2-core machine.
TARGETS = {
    "run_comments_per_s": 250_000,
    "run_vs_redis": 5.0,
    "run_p99_ms_at_50k": 5.0,
    "pipeline_comments_per_s": 250_000,
    "websocket_comments_per_s": 80_000,
    "p99_ms_at_50k": 5.0,
    "vs_naive_e2e": 100.0,
    "vs_naive_alloc": 100.0,
    "vs_redis_e2e": 5.0,
    "vs_redis_alloc": 5.0,
}

#: Ratio family -> (the livecart case doing the same work, where the baseline's figure is in its JSON).
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "e2e": ("pipeline", ()),
    "alloc": ("ledger", ("alloc",)),
}
BASELINES = ("naive", "redis")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m livecart.bench", description=__doc__.splitlines()[0] if __doc__ else None)
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
    if case in RUN_CASES:
        # Its own stream (every comment a buy, 1M at --scale 1) and its own Redis baseline (pipelined); the
        # network cases skip the baseline (``run`` has it), the paced one runs 30 % of the stream.
        scale = opts.scale * 0.3 if case == "run-latency" else opts.scale
        cmd = [sys.executable, "-m", "livecart.bench.run_bench", "--scale", repr(scale), "--seed",
               str(opts.seed), "--durability", opts.durability, "--redis", opts.redis, "--timeout",
               repr(opts.timeout)]
        if case == "run-websocket":
            cmd += ["--transport", "websocket", "--no-redis"]
        elif case == "run-mqtt":
            cmd += ["--transport", "mqtt", "--mqtt", opts.mqtt, "--no-redis"]
        elif case == "run-latency":
            cmd += ["--transport", "websocket", "--rate", repr(opts.offered or 50_000.0)]
        if opts.tmpdir:
            cmd += ["--tmpdir", opts.tmpdir]
    else:
        cmd = [sys.executable, "-m", "livecart.bench.runner", "--case", case, *_forward(opts)]
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


def _figure(results: dict[str, dict[str, Any]], case: str, *path: str) -> float | None:
    """The number at ``path`` in ``case``'s JSON; ``None`` when the case is missing, failed or lacks it."""
    node: Any = results.get(case)
    if node is None or "error" in node:
        return None
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Ratios of both families against the baselines (see the module docstring), the targets, and whether
    every check (``oversold``, ``lost``) of every case that ran held."""
    by = {r["case"]: r for r in results}
    ratios: dict[str, float | None] = {}
    for family, (ours, where) in FAMILIES.items():
        mine = _figure(by, ours, "buys_per_s")
        for base in BASELINES:
            theirs = _figure(by, base, *where, "buys_per_s")
            ratios[f"{family}_vs_{base}"] = round(mine / theirs, 2) if mine and theirs else None
    measured: dict[str, float | None] = {
        "run_comments_per_s": _figure(by, "run", "comments_per_s"),
        "run_vs_redis": _figure(by, "run", "vs_redis"),
        "run_p99_ms_at_50k": _figure(by, "run-latency", "latency_ms", "p99"),
        "pipeline_comments_per_s": _figure(by, "pipeline", "comments_per_s"),
        "websocket_comments_per_s": _figure(by, "websocket", "comments_per_s"),
        "p99_ms_at_50k": _figure(by, "pipeline", "latency_ms", "p99"),
    }
    for family in FAMILIES:
        for base in BASELINES:
            measured[f"vs_{base}_{family}"] = ratios[f"{family}_vs_{base}"]
    targets: dict[str, Any] = {}
    for name, goal in TARGETS.items():
        got = measured[name]
        met = None if got is None else (got <= goal if "p99" in name else got >= goal)
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
        print(f"python -m livecart.bench: unknown case(s) {', '.join(unknown)}; expected {', '.join(CASES)}", file=sys.stderr)
        return 2
    if opts.scale <= 0:
        print("python -m livecart.bench: --scale must be above 0", file=sys.stderr)
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
    """Entry for ``livecart bench ...`` (livecart.cli.main): ``args.rest`` holds the arguments after ``bench``."""
    rest = list(getattr(args, "rest", []) or [])
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return main(rest)


if __name__ == "__main__":
    sys.exit(main())
