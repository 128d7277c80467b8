"""``livecart run`` as users run it: a separate process over a replay file, timed from outside.

``python -m livecart.bench.run_bench`` prints one JSON object. What it does:

1. Writes the all-buy flash stream (:func:`livecart.bench.scenario.flash_buys`: ``--comments`` buy comments
   inside five seconds, times ``--scale``) as a JSON Lines file (cached between runs under ``--tmpdir``), and
   a stream config with one ``replay`` adapter over it, ``speed = 0`` (flat out), the durability asked for.
2. Starts ``livecart run CONFIG`` (the installed command; ``python -m livecart.cli.main`` when there is none)
   and times it from just before the process is started to its own exit: interpreter start-up, imports,
   opening the journal, the replay, every decision durable, the shutdown. ``peak_rss_mb`` is the child's own
   ``ru_maxrss`` (from ``wait4``), not this process's.
3. Checks the journal from outside with ``livecart report CONFIG --json``: every comment counted
   (``comments`` equals the comments in the file; ``lost`` is the difference) and no unit oversold (units
   reserved within stock, presale units within the cap; ``oversold`` sums what is above them).
4. Unless ``--no-redis``: the Redis + Lua baseline on the same file, pipelined (``--redis-pipeline`` calls,
   default 100, per round trip): read and decode each line, parse its text with livecart's parser and
   queue one ``EVALSHA`` per buy item, all inside the timing (:func:`livecart.bench.baselines.run_redis_file`).
   ``vs_redis`` = ``livecart run``'s comments/s over the baseline's. The baseline runs the first
   ``--redis-comments`` lines (200,000 by default: by then the sale has long been in its sold-out steady
   state, and a million calls take this machine several minutes).

**Over the network** (``--transport websocket|mqtt``): the same daemon with one ``websocket`` adapter in
server mode, or one ``mqtt`` adapter (QoS 1) on the local broker, instead of the replay; this process is the
client, sending the file's comments as JSON arrays of ``--frame`` comments. ``seconds`` is then from the
first frame sent to the last comment durable: for WebSocket, the arrival of the acknowledgement frame that
covers the last frame (the adapter acknowledges only what is in the journal); for MQTT, where the daemon
acknowledges the broker and the publisher cannot see it, the daemon's ``/api/state`` reporting every event
durable (``journal.durable_seq``, polled every 5 ms). The publisher keeps at most 131,072 comments ahead of
what is durable (a broker queues a subscriber's messages only up to a limit and drops the rest). Then the
daemon is stopped with SIGTERM; ``process_seconds`` is start to exit and ``cpu_seconds`` covers it all.
With ``--rate R`` (WebSocket) the frames are paced (about one frame per millisecond, ``R / 1000`` comments
each) and ``latency_ms`` gives, per frame, the time from just before it was sent to the arrival of the
acknowledgement that covers it: ingest to durable outcome, as a companion sees it.

``targets`` gives the issue's goals (#17: >= 250,000 comments/s, >= 5x the Redis baseline, p99 <= 5 ms at
50,000 comments/s offered) with the measured figure and ``met``; nothing is asserted. The exit status is 0
when the run exited 0 and the checks held.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from livecart.bench import baselines
from livecart.bench.scenario import Scenario, flash_buys
from livecart.runtime.trace import percentiles

#: Issue #17's goals for ``livecart run`` on the all-buy flash stream (2 cores, default install).
TARGETS = {"run_comments_per_s": 250_000, "vs_redis": 5.0}
#: Issue #17's latency goal: p99 ingest -> durable outcome in ms, at 50,000 comments/s offered.
P99_TARGET_MS = 5.0
#: Comments in the full-size stream (``--scale 1``).
COMMENTS = 1_000_000


def livecart_command() -> list[str]:
    """How to start ``livecart``: the console script beside this interpreter, else ``python -m``.

    With ``LIVECART_BENCH_PYTHONPATH`` set (``--pythonpath``: another checkout's sources, to compare two
    versions back to back on one machine), ``python -m livecart.cli.main`` with that path first."""
    if os.environ.get("LIVECART_BENCH_PYTHONPATH"):
        return [sys.executable, "-m", "livecart.cli.main"]
    script = Path(sys.executable).with_name("livecart")
    if script.exists():
        return [str(script)]
    found = shutil.which("livecart")
    return [found] if found else [sys.executable, "-m", "livecart.cli.main"]


def stream_file(n: int, seed: int, directory: Path) -> tuple[Path, Scenario | None]:
    """The JSON Lines file of ``flash_buys(n, seed)`` in ``directory``, written once and reused after.

    The stream is generated in a child process, never in this one: a process started from this one reports
    (in ``wait4``'s ``ru_maxrss``) the resident size this one had when it forked, so a 1M-comment scenario
    held here (~600 MB) showed as the daemon's peak RSS. Returns the path and ``None`` (the scenario stays
    in the child)."""
    path = directory / f"livecart-flash-buys-{n}-{seed}.jsonl"
    if path.exists():
        return path, None
    directory.mkdir(parents=True, exist_ok=True)  # a --tmpdir that does not exist yet
    tmp = path.with_suffix(".part")
    code = ("import sys; from pathlib import Path; from livecart.bench.scenario import flash_buys; "
            "flash_buys(int(sys.argv[1]), seed=int(sys.argv[2])).write_jsonl(Path(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(n), str(seed), str(tmp)], check=True)
    tmp.replace(path)
    return path, None


def run_livecart(config: Path, *, timeout: float) -> dict[str, Any]:
    """``livecart run CONFIG`` in a child process: wall seconds from start to exit, exit status, peak RSS."""
    t0 = time.perf_counter()
    child = start_livecart(config)
    return wait_livecart(child, t0, timeout=timeout)


def start_livecart(config: Path) -> subprocess.Popen[bytes]:
    """``livecart run CONFIG`` started as a child process (stdout discarded, stderr kept for its tail)."""
    cmd = [*livecart_command(), "run", str(config)]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    child.args = cmd
    return child


def wait_livecart(child: subprocess.Popen[bytes], t0: float, *, timeout: float) -> dict[str, Any]:
    """Wait for ``child`` (killed after ``timeout`` seconds from ``t0``): exit status, wall seconds since
    ``t0``, the child's own peak RSS and CPU seconds (``wait4``), the tail of its stderr."""
    assert child.stderr is not None
    deadline = t0 + timeout
    # wait4 gives this child's own rusage; stderr is read afterwards (the daemon logs a few lines only).
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            child.kill()
            pid, status, usage = os.wait4(child.pid, 0)
            break
        time.sleep(0.002)
    seconds = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode(errors="replace").strip().splitlines()
    child.stderr.close()
    cmd = [str(a) for a in child.args] if isinstance(child.args, list) else [str(child.args)]
    return {"command": " ".join(Path(cmd[0]).name if i == 0 else a for i, a in enumerate(cmd)),
            "exit": child.returncode, "seconds": seconds, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3), "cpu_user_seconds": round(usage.ru_utime, 3),
            "cpu_system_seconds": round(usage.ru_stime, 3), "stderr_tail": stderr[-5:]}


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    other = os.environ.get("LIVECART_BENCH_PYTHONPATH")
    if other:
        env["PYTHONPATH"] = other
    return env


# --------------------------------------------------------------------------- over WebSocket and MQTT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_frames(path: Path, n: int, size: int) -> list[bytes]:
    """The first ``n`` lines of the stream file as JSON arrays of ``size`` comments (one per message)."""
    lines: list[bytes] = []
    with path.open("rb") as f:
        for line in islice(f, n):
            lines.append(line.rstrip(b"\n"))
    return [b"[" + b",".join(lines[i:i + size]) + b"]" for i in range(0, len(lines), size)]


def percentiles_ms(values: Sequence[float]) -> dict[str, float]:
    return {**percentiles(values), "samples": len(values)} if values else {}


async def feed_websocket(url: str, frames: Sequence[bytes], size: int, rate: float, *, give_up: float,
                         ready_url: str | None = None) -> dict[str, Any]:
    """Send ``frames`` to the daemon's websocket adapter (server mode) and wait for its acknowledgement of
    every one (docs/contract.md: an ack says the comments are durable). Flat out (``rate`` 0), or paced so
    that comment ``i`` is not sent before ``start + i / rate``; then ``latency_ms`` is per frame, from just
    before its send to the arrival of the ack that covers it.

    With ``ready_url`` (the daemon's ``/api/state``) nothing is sent before it answers: the adapter's port
    opens before the journal is opened and the collector tuned, and frames sent in between wait for that
    start-up (35-45 ms here, the first ~50-130 frames at 50,000/s), which is not the latency of a running
    daemon."""
    from websockets.asyncio.client import connect

    deadline = time.perf_counter() + 30
    if ready_url is not None:
        while True:
            try:
                await _get_json(ready_url)
                break
            except (OSError, ValueError):
                if time.perf_counter() > deadline:
                    raise
                await asyncio.sleep(0.02)
    while True:  # the daemon is starting (or, without ready_url, its adapter not yet up)
        try:
            ws = await connect(url, max_size=None, compression=None, ping_interval=None)
            break
        except OSError:
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.02)
    sent_at = [0.0] * len(frames)
    lat: list[float] = []
    acked = 0
    acks = 0

    async def reader() -> None:
        nonlocal acked, acks
        async for msg in ws:
            t = time.perf_counter()
            data = orjson.loads(msg)
            if isinstance(data, dict) and data.get("type") == "ack":
                upto = int(data["frames"])
                if rate > 0:
                    lat.extend(t - sent_at[j] for j in range(acked, min(upto, len(frames))))
                acked = upto
                acks += 1
                if acked >= len(frames):
                    return

    async with ws:
        read = asyncio.create_task(reader())
        t0 = time.perf_counter()
        for j, frame in enumerate(frames):
            if rate > 0:
                delay = t0 + j * size / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the offered load
                sent_at[j] = time.perf_counter()
            await ws.send(frame)
        sent = time.perf_counter() - t0
        await asyncio.wait_for(read, give_up)
        seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"frames": len(frames), "frame_comments": size, "acks": acks,
                           "send_seconds": round(sent, 3), "seconds": seconds}
    if rate > 0:
        out["latency_ms"] = {"offered_per_s": rate, **percentiles_ms(lat),
                             "measured": "per frame: sent by the client -> the ack saying it is durable"}
    return out


async def _get_json(url: str) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return orjson.loads(await resp.read())


async def feed_mqtt(broker: str, topic: str, frames: Sequence[bytes], size: int, state_url: str, adapter: str,
                    n: int, *, give_up: float, window: int = 131_072) -> dict[str, Any]:
    """Publish ``frames`` (QoS 1) to ``topic`` once the daemon's ``mqtt`` adapter is subscribed, then poll the
    daemon's ``/api/state`` until its journal has ``n`` events durable. The broker acknowledges a publisher
    at once; the daemon acknowledges the broker only once durable, which the publisher cannot see, so the
    end is read from the daemon (every 5 ms)."""
    import aiomqtt

    deadline = time.perf_counter() + 30
    while True:
        try:
            st = await _get_json(state_url)
            if st["adapters"][adapter]["connected"]:
                break
        except (OSError, KeyError, ValueError):
            pass
        if time.perf_counter() > deadline:
            raise RuntimeError("the daemon's mqtt adapter did not subscribe within 30 s")
        await asyncio.sleep(0.05)
    host, _, port = broker.partition(":")
    durable = 0
    waits = 0

    async def durable_now() -> int:
        st = await _get_json(state_url)
        return int(st["journal"]["durable_seq"])

    async with aiomqtt.Client(host, int(port or 1883)) as client:
        t0 = time.perf_counter()
        end = t0 + give_up
        sent_comments = 0
        for frame in frames:
            # A producer that keeps at most `window` comments ahead of what is durable: the broker queues a
            # subscriber's messages only up to its limit (Mosquitto: 1,000 beyond those in flight) and drops
            # the rest, so a publisher far ahead of the daemon would lose comments in the broker.
            while sent_comments - durable > window:
                durable = await durable_now()
                if sent_comments - durable > window:
                    waits += 1
                    await asyncio.sleep(0.005)
            await client.publish(topic, frame, qos=1)
            sent_comments = min(n, sent_comments + size)
        sent = time.perf_counter() - t0
        while durable < n:
            durable = await durable_now()
            if durable >= n:
                break
            if time.perf_counter() > end:
                raise RuntimeError(f"{durable} of {n} events durable after {give_up:g} s")
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - t0
    return {"frames": len(frames), "frame_comments": size, "window": window, "window_waits": waits,
            "send_seconds": round(sent, 3), "seconds": seconds}


def run_over(transport: str, config: Path, path: Path, n: int, opts: argparse.Namespace, *, rate: float,
             status_port: int, ws_port: int, topic: str) -> dict[str, Any]:
    """``livecart run`` fed over ``transport`` by this process; stopped (SIGTERM) once everything is durable."""
    size = max(1, int(rate / 1000)) if rate > 0 else opts.frame  # paced: about one frame a millisecond
    frames = read_frames(path, n, size)
    t0 = time.perf_counter()
    child = start_livecart(config)
    try:
        if transport == "websocket":
            fed = asyncio.run(feed_websocket(f"ws://127.0.0.1:{ws_port}", frames, size, rate, give_up=opts.timeout,
                                             ready_url=f"http://127.0.0.1:{status_port}/api/state"))
        else:
            fed = asyncio.run(feed_mqtt(opts.mqtt, topic, frames, size, f"http://127.0.0.1:{status_port}/api/state",
                                        "mqtt", n, give_up=opts.timeout))
    except BaseException:
        child.kill()
        wait_livecart(child, t0, timeout=opts.timeout)
        raise
    child.send_signal(signal.SIGTERM)
    run = wait_livecart(child, t0, timeout=opts.timeout)
    run["process_seconds"] = round(run.pop("seconds"), 3)
    return {**fed, **run}


def report(config: Path) -> dict[str, Any]:
    """``livecart report CONFIG --json`` (docs/contract.md §5), from outside."""
    out = subprocess.run([*livecart_command(), "report", str(config), "--json"], capture_output=True,
                         check=True, timeout=600, env=_env())
    data: dict[str, Any] = orjson.loads(out.stdout)
    return data


def check_report(rep: dict[str, Any], scenario_units: dict[str, tuple[int, int]], comments: int
                 ) -> dict[str, int]:
    """``oversold``: units reserved above stock plus presale units above the cap, summed over the units;
    ``lost``: comments in the file the journal does not count."""
    oversold = 0
    for key, (stock, cap) in scenario_units.items():
        p = rep["products"].get(key)
        if p is None:
            continue
        oversold += max(0, p["reserved"] - stock) + max(0, p["presale"] - cap) + max(0, -p["left"])
    return {"oversold": oversold, "lost": max(0, comments - int(rep["comments"]))}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m livecart.bench.run_bench", description=__doc__.splitlines()[0])
    p.add_argument("--comments", type=int, default=COMMENTS, help="buy comments at --scale 1 (default 1,000,000)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply --comments (0.1 = a quick run)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--durability", default="fsync", choices=("fsync", "os"))
    p.add_argument("--batch", type=int, default=512, help="the replay adapter's batch (its default, 512)")
    p.add_argument("--snapshot-events", type=int, default=0,
                   help="[storage] snapshot_events of the daemon (default: livecart's own)")
    p.add_argument("--transport", default="replay", choices=("replay", "websocket", "mqtt"),
                   help="how comments reach the daemon: a replay file, or this process as a WebSocket client of "
                        "the websocket adapter (server mode, acks after durable) or an MQTT publisher")
    p.add_argument("--rate", type=float, default=0.0,
                   help="websocket: offer this many comments/s (paced, ~1 frame/ms) and measure the latency "
                        "from send to durable acknowledgement; 0 = flat out")
    p.add_argument("--frame", type=int, default=256, help="comments per WebSocket frame / MQTT message flat out")
    p.add_argument("--mqtt", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    p.add_argument("--redis", default="127.0.0.1:6379", help="host:port of the Redis server")
    p.add_argument("--redis-pipeline", type=int, default=100, help="EVALSHA calls per round trip")
    p.add_argument("--redis-comments", type=int, default=200_000,
                   help="the Redis baseline runs the file's first this-many comments (0 = all; at ~10k-40k/s "
                        "a million take minutes, and past the first ~15,000 the sale is in its steady state)")
    p.add_argument("--no-redis", action="store_true", help="skip the Redis baseline")
    p.add_argument("--parse-process", choices=("auto", "on", "off"),
                   help="[daemon] parse_process of the daemon (default: livecart's own, auto)")
    p.add_argument("--tmpdir", default=None, help="where the stream file is cached (default: the system's)")
    p.add_argument("--pythonpath", default=None,
                   help="run the daemon from these sources instead (another checkout, for before/after)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before the daemon is killed")
    return p


def _units(scenario_products: Sequence[Any]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for p in scenario_products:
        out.update(p.units)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.pythonpath:
        os.environ["LIVECART_BENCH_PYTHONPATH"] = opts.pythonpath
    n = max(1, round(opts.comments * opts.scale))
    cache = Path(opts.tmpdir or tempfile.gettempdir())
    t_gen = time.perf_counter()
    path, scenario = stream_file(n, opts.seed, cache)
    if scenario is None:
        # The catalogue and featured product do not depend on n; a tiny stream gives them without the file.
        scenario = flash_buys(1, seed=opts.seed)
    gen_seconds = time.perf_counter() - t_gen
    units = _units(scenario.products)
    result: dict[str, Any] = {"case": "run", "stream": "flash-buys", "comments": n, "seed": opts.seed,
                              "scale": opts.scale, "durability": opts.durability,
                              "snapshot_events": opts.snapshot_events or None,
                              "parse_process": opts.parse_process or "auto",
                              "file_mb": round(path.stat().st_size / 2**20, 1),
                              "file_seconds": round(gen_seconds, 2)}
    result["transport"] = opts.transport
    if opts.rate > 0:
        result["case"] = "run-latency"
    elif opts.transport != "replay":
        result["case"] = f"run-{opts.transport}"
    with tempfile.TemporaryDirectory(prefix="lcbench-run-", dir=opts.tmpdir) as tmp:
        status_port, ws_port = free_port(), free_port()
        topic = f"livecart/bench/run-{os.getpid()}-{time.time_ns() % 10**9}"
        adapter: dict[str, Any]
        if opts.transport == "websocket":
            adapter = {"type": "websocket", "name": "ws", "mode": "server", "host": "127.0.0.1", "port": ws_port,
                       "platform": "douyin", "room": "7312"}
        elif opts.transport == "mqtt":
            mhost, _, mport = opts.mqtt.partition(":")
            adapter = {"type": "mqtt", "name": "mqtt", "host": mhost, "port": int(mport or 1883), "topic": topic,
                       "qos": 1, "platform": "douyin", "room": "7312"}
        else:
            adapter = {"type": "replay", "name": "replay", "path": str(path), "speed": 0, "platform": "douyin",
                       "room": "7312", "batch": opts.batch}
        config = scenario.write_config(tmp, durability=opts.durability, adapters=[adapter],
                                       storage={"snapshot_events": opts.snapshot_events} if opts.snapshot_events else None)
        with config.open("a", encoding="utf-8") as f:
            # Nobody to answer in a benchmark (replies would go back over the WebSocket, unread).
            f.write(f'\n[replies]\nenabled = false\n\n[status]\nport = {status_port}\n')
            if opts.parse_process:
                f.write(f'\n[daemon]\nparse_process = "{opts.parse_process}"\n')
        if opts.transport == "replay":
            run = run_livecart(config, timeout=opts.timeout)
        else:
            if opts.rate > 0 and opts.transport != "websocket":
                raise SystemExit("--rate needs --transport websocket (the transport with acknowledgements "
                                 "the client can time)")
            run = run_over(opts.transport, config, path, n, opts, rate=opts.rate, status_port=status_port,
                           ws_port=ws_port, topic=topic)
        result["build"] = _build_of_child()
        result["exit"] = run.pop("exit")
        seconds = run.pop("seconds")
        result["seconds"] = round(seconds, 3)
        result["comments_per_s"] = round(n / seconds)
        # Less sensitive than wall time to other processes on a shared machine (still not immune).
        result["comments_per_cpu_s"] = round(n / run["cpu_seconds"]) if run["cpu_seconds"] else None
        result.update(run)
        rep = report(config)
        result["journal"] = {"comments": rep["comments"], "outcomes": rep["outcomes"]}
        result.update(check_report(rep, units, n))
    if not opts.no_redis and opts.rate <= 0:
        host, _, port = opts.redis.partition(":")
        try:
            base = asyncio.run(baselines.run_redis_file(
                {k: baselines.Unit(s, c, scenario.product(k.split("/")[0]).limit) for k, (s, c) in units.items()},
                path, _parse(config_text=scenario.config_text()), scenario.featured, host=host,
                port=int(port or 6379), pipeline=opts.redis_pipeline, limit=opts.redis_comments))
        except Exception as exc:  # the baseline failing must not hide livecart's figures
            result["redis"] = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            result["redis"] = {
                "pipeline": opts.redis_pipeline, "comments": base.comments, "buy_items": base.buys,
                "seconds": round(base.seconds, 3),
                "comments_per_s": round((base.comments or 0) / base.seconds) if base.seconds else None,
                "outcomes": base.outcomes, "statuses": base.statuses, "oversold": base.oversold, "lost": base.lost,
                "durable": False}
    ratio = None
    rb = result.get("redis", {})
    if rb.get("comments_per_s"):
        ratio = round(result["comments_per_s"] / rb["comments_per_s"], 2)
    result["vs_redis"] = ratio
    if opts.pythonpath:
        result["pythonpath"] = opts.pythonpath
    if opts.rate > 0:
        p99 = result.get("latency_ms", {}).get("p99")
        result["targets"] = {"p99_ms": {"target": P99_TARGET_MS, "at_offered_per_s": 50_000, "offered_per_s": opts.rate,
                                        "measured": p99, "met": None if p99 is None or opts.rate < 50_000
                                        else p99 <= P99_TARGET_MS}}
    else:
        measured = {"run_comments_per_s": result["comments_per_s"], "vs_redis": ratio}
        result["targets"] = {k: {"target": goal, "measured": measured[k],
                                 "met": None if measured[k] is None else measured[k] >= goal}
                             for k, goal in TARGETS.items()}
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "cpu": _cpu_model(), "platform": platform.platform()}
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    sys.stdout.flush()
    ok = result["exit"] == 0 and result["oversold"] == 0 and result["lost"] == 0
    return 0 if ok else 1


def _parse(*, config_text: str) -> baselines.Parse:
    """A fresh parser for the scenario's catalogue (cache cold, as the daemon's starts)."""
    from livecart.config import loads
    from livecart.core.parser import Parser

    parse: baselines.Parse = Parser.from_config(loads(config_text)).parse
    return parse


def _build_of_child() -> str:
    """``python`` or ``compiled``: what ``livecart --version`` says the installed build is."""
    out = subprocess.run([*livecart_command(), "--version"], capture_output=True, text=True, check=False,
                         env=_env())
    text = out.stdout.strip()
    return text[text.rfind("(") + 1:-1] if text.endswith(")") else text


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
