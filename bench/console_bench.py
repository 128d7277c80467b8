"""What open host consoles cost the daemon: ``livecart run`` fed at an offered rate, with and without pages.

    python -m livecart.bench.console_bench --consoles 10 --rate 50000 --scale 2 --rounds 2

Each run starts ``livecart run`` as a process (WebSocket adapter in server mode, the console on its status
port), opens ``--consoles`` live connections to the console (logged in once, each reading the Server-Sent
Events stream as a page does), and has ``python -m livecart.bench.feeder`` offer the ``flash`` scenario at
``--rate`` comments/s. Runs without and with consoles alternate (``--rounds`` of each) so that a busier
moment of the shared machine does not land on one side only.

Measured per run: from outside, the daemon process's CPU seconds (``/proc/PID/stat``) from the first comment
decided to the last, the wall time of the same span, so comments/s achieved, and the messages and bytes each
console received per second; from inside, ``livecart_console_seconds_total`` (the daemon's own count of the
time its console spent: feed, deltas, pushes to the pages). Printed as one JSON object:

* ``console_share``: the console's seconds over the daemon's CPU seconds (the worst run with consoles open):
  the share of the daemon's throughput the consoles take. ``ok`` is this below 5 %.
* ``console_ms_per_s``: per run, the console's milliseconds per second of the sale (its cost is per tick
  and per page, not per comment, so this share of one core stays put as the comment rate grows).
* ``cpu_cost``: the extra daemon CPU per comment with the consoles open over the CPU per comment without
  them, and ``throughput_cost``, the drop in comments/s achieved (medians of the rounds): the same question
  from outside, but only as exact as the machine is quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from livecart.bench.scenario import generate

TOKEN = "bench-console-token"
TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _read_state(path: Path) -> dict[str, Any]:
    """The daemon's state file (a few hundred bytes, read synchronously), or {} while it is not there."""
    try:
        state = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


async def _console_seconds(session: aiohttp.ClientSession, url: str) -> float:
    """``livecart_console_seconds_total``: the daemon's own count of time spent on the console's updates."""
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("livecart_console_seconds_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class _Reader:
    """One open console: reads the event stream, counting messages and bytes."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def run(self, session: aiohttp.ClientSession, url: str) -> None:
        async with session.get(url + "/console/api/events") as resp:
            resp.raise_for_status()
            async for line in resp.content:
                self.bytes += len(line)
                if line.startswith(b"data: "):
                    self.messages += 1


async def one_run(opts: argparse.Namespace, consoles: int, directory: Path) -> dict[str, Any]:
    scenario = generate("flash", seed=opts.seed, scale=opts.scale)
    status_port = _free_port()
    cfg = scenario.write_config(directory, durability=opts.durability,
                                adapters=[{"type": "websocket", "name": "feed", "mode": "server", "port": 0}])
    with cfg.open("a", encoding="utf-8") as f:
        f.write(f'\n[status]\nport = {status_port}\n\n[control]\ntoken = "{TOKEN}"\n')
    state_path = Path(str(directory / "livecart.db") + ".ctl.json")
    log = (directory / "daemon.log").open("wb")
    daemon = await asyncio.create_subprocess_exec(sys.executable, "-m", "livecart.cli.main", "run", str(cfg),
                                                  "--no-live", stdout=log, stderr=log)
    url = f"http://127.0.0.1:{status_port}"
    readers = [_Reader() for _ in range(consoles)]
    tasks: list[asyncio.Task[None]] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            if daemon.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start: {(directory / 'daemon.log').read_text()[-2000:]}")
            state = _read_state(state_path)
            if state.get("pid") == daemon.pid:
                break
            await asyncio.sleep(0.05)  # waiting for the daemon to start, bounded by the deadline
        # unsafe: the cookie jar keeps cookies of an IP address (127.0.0.1) only when told to.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.post(url + "/console/login", json={"token": TOKEN}) as r:
                r.raise_for_status()
            tasks = [asyncio.create_task(rd.run(session, url)) for rd in readers]
            await asyncio.sleep(0.5)  # let the pages get their first full state before the clock starts
            for t in tasks:
                if t.done():
                    t.result()  # a console that could not connect fails the run
            total = len(scenario.comments)
            feeder = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "livecart.bench.feeder", "websocket", state["adapters"]["feed"],
                "--scenario", "flash", "--seed", str(opts.seed), "--scale", str(opts.scale), "--batch", "64",
                "--rate", str(opts.rate), stdout=asyncio.subprocess.DEVNULL)
            # The clock starts with the first comment decided: the feeder first spends seconds generating
            # the scenario, which is not the daemon's time.
            done = 0
            while done == 0:
                await asyncio.sleep(0.01)  # polling the daemon's own figure of comments decided
                async with session.get(url + "/api/state") as r:
                    done = int((await r.json())["comments"])
                if feeder.returncode is not None:
                    raise RuntimeError("the feeder ended before the daemon decided anything")
            cpu0, t0, start = _cpu_seconds(daemon.pid), time.perf_counter(), done
            work0 = await _console_seconds(session, url)
            m0 = [(rd.messages, rd.bytes) for rd in readers]
            while done < total:
                await asyncio.sleep(0.05)  # polling the daemon's own figure of comments decided
                async with session.get(url + "/api/state") as r:
                    done = int((await r.json())["comments"])
                if time.perf_counter() - t0 > opts.timeout:
                    raise RuntimeError(f"only {done} of {total} comments decided after {opts.timeout}s")
            wall = time.perf_counter() - t0
            cpu = _cpu_seconds(daemon.pid) - cpu0
            work = await _console_seconds(session, url) - work0
            await feeder.wait()
            msgs = [rd.messages - a for rd, (a, _) in zip(readers, m0, strict=True)]
            byts = [rd.bytes - b for rd, (_, b) in zip(readers, m0, strict=True)]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(daemon.wait(), 30)
            except TimeoutError:
                daemon.kill()
        log.close()
    measured = total - start
    return {"consoles": consoles, "comments": measured, "seconds": round(wall, 3),
            "achieved_per_s": round(measured / wall), "daemon_cpu_s": round(cpu, 3),
            "cpu_us_per_comment": round(cpu / measured * 1e6, 3), "console_s": round(work, 4),
            "console_share": round(work / cpu, 4) if cpu > 0 else None,
            "console_ms_per_s": round(work / wall * 1000, 2),
            "messages_per_s_per_console": round(statistics.fmean(msgs) / wall, 2) if msgs else 0,
            "bytes_per_s_per_console": round(statistics.fmean(byts) / wall) if byts else 0}


async def amain(opts: argparse.Namespace) -> dict[str, Any]:
    runs: dict[int, list[dict[str, Any]]] = {0: [], opts.consoles: []}
    with tempfile.TemporaryDirectory(prefix="lc-console-bench-") as tmp:
        n = 0
        for _ in range(opts.rounds):
            for consoles in (0, opts.consoles):
                n += 1
                runs[consoles].append(await one_run(opts, consoles, Path(tmp) / f"run-{n}"))
    without, with_ = runs[0], runs[opts.consoles]
    cpu0 = statistics.median(r["cpu_us_per_comment"] for r in without)
    cpu1 = statistics.median(r["cpu_us_per_comment"] for r in with_)
    ach0 = statistics.median(r["achieved_per_s"] for r in without)
    ach1 = statistics.median(r["achieved_per_s"] for r in with_)
    cost = (cpu1 - cpu0) / cpu0
    share = max(r["console_share"] or 0.0 for r in with_)
    return {"case": "console", "offered_per_s": opts.rate, "consoles": opts.consoles, "scale": opts.scale,
            "durability": opts.durability, "rounds": opts.rounds,
            "cpu_us_per_comment": {"without": cpu0, "with": cpu1},
            "achieved_per_s": {"without": ach0, "with": ach1},
            "cpu_cost": round(cost, 4), "throughput_cost": round(1 - ach1 / ach0, 4),
            "console_share": {"without": max(r["console_share"] or 0.0 for r in without), "with": share},
            "target": {"console_share_below": 0.05}, "ok": share < 0.05, "runs": without + with_}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livecart.bench.console_bench", description=__doc__.split("\n")[0])
    p.add_argument("--consoles", type=int, default=10, help="open console pages (event streams)")
    p.add_argument("--rate", type=float, default=50_000, help="comments/s offered by the feeder")
    p.add_argument("--scale", type=float, default=2.0, help="size of the flash scenario (1 = 143,000 comments)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="runs without and with consoles, alternating")
    p.add_argument("--durability", default="fsync", choices=("fsync", "os"))
    p.add_argument("--timeout", type=float, default=300.0)
    opts = p.parse_args(argv)
    result = asyncio.run(amain(opts))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
