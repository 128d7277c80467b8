"""Connection hygiene from outside: ``livecart run`` as a process under ``prlimit --nofile=1024``, flooded with
2,000 idle connections on its public webhook listener; host controls (``livecart ctl ... status``) and
``/healthz`` still answer, the refusals and timeouts are counted in ``/metrics``."""

from __future__ import annotations

import contextlib
import resource
import shutil
import socket
from pathlib import Path

import pytest

from tests.e2e.proc import Daemon, http_get, wait_for

CONFIG = """
[stream]
name = "E2E listeners"
featured = "egg-10"

[storage]
path = "{db}"
durability = "os"

[[adapters]]
type = "webhook"
name = "hook"
port = 0
idle_timeout = 3
request_timeout = 2

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["egg"]
link = 1
price = 29.9
stock = 100
"""


def metric(d: Daemon, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in d.api("/metrics").splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}} in /metrics")


@pytest.mark.slow
def test_2000_idle_connections_at_a_1024_descriptor_limit_leave_ctl_and_healthz_answering(tmp_path: Path) -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("needs prlimit (util-linux)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2200:
        pytest.skip("the test process itself needs 2,200 descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096) if hard >= 4096 else hard, hard))
    db = tmp_path / "journal.db"
    cfg = tmp_path / "stream.toml"
    cfg.write_text(CONFIG.format(db=db), encoding="utf-8")
    d = Daemon(cfg, db, prefix=["prlimit", "--nofile=1024:1024", "--"])
    flood: list[socket.socket] = []
    try:
        state = d.start()
        host, _, port = state["adapters"]["hook"].removeprefix("http://").partition("/")[0].rpartition(":")
        for _ in range(2000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((host, int(port)))  # connects (or is refused) in the background; sends nothing
            flood.append(s)
        wait_for(lambda: metric(d, "livecart_connections_total", listener="webhook hook", event="refused") > 0,
                 "refusals over the webhook's cap")
        rc, answer, err = d.ctl("status")
        assert rc == 0, err
        assert answer.get("ok") is True
        status, _ = http_get(state["status"] + "/healthz")
        assert status == 200
        # The accepted ones said nothing: the request timeout closes them.
        wait_for(lambda: metric(d, "livecart_connections_total", listener="webhook hook",
                                event="request_timeout") > 0, "the request timeout to close silent ones")
        assert d.stop() == 0
    finally:
        for s in flood:
            with contextlib.suppress(OSError):
                s.close()
        d.kill()
