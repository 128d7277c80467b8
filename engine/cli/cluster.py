"""``livecart cluster status FILE [--json]``: the sale's JetStream log as the cluster sees it (README: "Distributed mode").

Prints the decider (the lease holder, and how long ago it last showed itself: a decider silent for more
than :data:`MEMBER_FRESH` seconds is said to be, until a standby takes over), the standbys (every process that showed
itself in the last :data:`MEMBER_FRESH` seconds, with how far behind the log's end it is), the log's length
and replicas, and the last snapshot. Works from any machine that reaches the cluster; reads only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import nats.errors
import nats.js.errors
import orjson

from livecart.config import load_for_reading
from livecart.core.errors import ConfigError, Problem
from livecart.store.jetstream import SaleLog

#: A member entry older than this (s) is a process that stopped or lost the cluster.
MEMBER_FRESH = 15.0


async def status(servers: tuple[str, ...], sale: str) -> dict[str, Any]:
    """The status of ``sale`` as one JSON-ready dict."""
    s = await SaleLog.open(servers, sale)
    try:
        info = await s.info()
        end = int(info.state.last_seq)
        now = time.time()
        out: dict[str, Any] = {
            "sale": sale, "stream": s.names.stream,
            "log": {"messages": int(info.state.messages), "last_seq": end, "bytes": int(info.state.bytes),
                    "replicas": int(info.config.num_replicas or 1)},
            "decider": None, "standbys": [], "snapshot": None,
        }
        cl = info.cluster
        if cl is not None:
            out["log"]["leader"] = cl.leader
            out["log"]["followers"] = [{"name": r.name, "current": r.current} for r in (cl.replicas or [])]
        lease_member = None
        try:
            lease = await s.kv.get("lease")
            if lease.value:
                data = orjson.loads(lease.value)
                lease_member = data.get("member")
                out["decider"] = {"member": lease_member, "host": data.get("host"), "pid": data.get("pid"),
                                  "lease_revision": lease.revision}
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            pass
        snap = await s.snapshots.info()
        if snap is not None:
            out["snapshot"] = {"seq": snap.seq, "behind": max(0, end - snap.seq), "bytes": snap.size,
                               "chunks": snap.chunks, "format": snap.version, "age": round(now - snap.at, 1)}
        try:
            keys = [k for k in await s.kv.keys() if k.startswith("member.")]
        except nats.js.errors.NoKeysError:
            keys = []
        for key in sorted(keys):
            try:
                entry = await s.kv.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue
            if not entry.value:
                continue
            m = orjson.loads(entry.value)
            age = now - float(m.get("at", 0))
            deciding = m.get("member") == lease_member and out["decider"] is not None
            # A standby silent for long is gone; the decider is shown however long it has been silent (the
            # lease still names it), with how long: a killed decider looks killed until a standby takes over.
            if age > MEMBER_FRESH and not deciding:
                continue
            row = {"member": m.get("member"), "host": m.get("host"), "pid": m.get("pid"),
                   "applied": m.get("applied"), "lag": max(0, end - int(m.get("applied") or 0)),
                   "seen": round(age, 1), "announced": m.get("announced")}
            if deciding:
                out["decider"].update(row, silent=age > MEMBER_FRESH)
            else:
                out["standbys"].append(row)
        return out
    finally:
        await s.close()


def main(args: argparse.Namespace) -> int:
    """``livecart cluster status FILE``."""
    cfg = load_for_reading(args.file)
    if cfg.storage.backend != "jetstream":
        raise ConfigError([Problem(str(cfg.path), "storage.backend",
                                   f"livecart cluster needs backend = 'jetstream', got {cfg.storage.backend!r}")])
    try:
        data = asyncio.run(status(cfg.storage.servers, cfg.storage.sale))
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        print(f"livecart cluster: {exc!r}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
        return 0
    lg = data["log"]
    print(f"sale {data['sale']}: log of {lg['messages']:,} messages (last seq {lg['last_seq']:,}), "
          f"{lg['replicas']} replicas" + (f", stream leader {lg['leader']}" if lg.get("leader") else ""))
    d = data["decider"]
    if d is None:
        print("decider: none (no process holds the lease)")
    else:
        lag = f", lag {d['lag']:,}, seen {d['seen']} s ago" if "lag" in d else ""
        print(f"decider: {d['member']} (pid {d['pid']} on {d['host']}{lag})")
        if d.get("silent"):
            print(f"  not heard from for {d['seen']:.0f} s (stopped, killed or cut off from the cluster?): a standby "
                  f"takes over once the lease has gone {cfg.storage.lease_seconds:g} s without renewal")
    for sb in data["standbys"]:
        print(f"standby: {sb['member']} (pid {sb['pid']} on {sb['host']}, lag {sb['lag']:,}, seen {sb['seen']} s ago)")
    if not data["standbys"]:
        print("standbys: none")
    sn = data["snapshot"]
    if sn is None:
        print("last snapshot: none (a process that starts replays the whole log)")
    else:
        print(f"last snapshot: at log message {sn['seq']:,} ({sn['behind']:,} behind the end), {sn['bytes']:,} "
              f"bytes, {sn['age']} s ago")
    return 0
