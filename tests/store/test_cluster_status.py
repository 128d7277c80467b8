"""``livecart cluster status`` against a sale's log on a real JetStream server: who decides, who stands by,
and a decider that has gone silent."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson
import pytest

from livecart.cli.cluster import MEMBER_FRESH
from livecart.cli.cluster import status as cluster_status
from tests.store.test_jetstream import CONFIG, _cfg, _open


def _member(name: str, at: float, applied: int = 0) -> bytes:
    return orjson.dumps({"member": name, "host": "box", "pid": 4242, "role": "x", "applied": applied,
                         "announced": 0, "at": at})


@pytest.mark.usefixtures("cleanup")
async def test_a_silent_decider_is_shown_silent_and_a_silent_standby_is_left_out(nats_server: str, sale: str,
                                                                                  tmp_path: Path) -> None:
    log = await _open(nats_server, sale, _cfg(nats_server, sale))
    try:
        now = time.time()
        await log.kv.put("lease", orjson.dumps({"member": "m-dead", "host": "box", "pid": 4242, "at": now - 60}))
        await log.kv.put("member.m-dead", _member("m-dead", now - 40))  # killed 40 s ago: the lease names it
        await log.kv.put("member.m-gone", _member("m-gone", now - 40))  # a standby that went away
        await log.kv.put("member.m-live", _member("m-live", now))
        st = await cluster_status([nats_server], sale)
    finally:
        await log.close()
    assert st["decider"]["member"] == "m-dead"
    assert st["decider"]["silent"] is True
    assert st["decider"]["seen"] > MEMBER_FRESH
    assert [s["member"] for s in st["standbys"]] == ["m-live"]
    cfg = tmp_path / "sale.toml"
    cfg.write_text(CONFIG.format(server=nats_server, sale=sale, stock=5, hold=0), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "livecart.cli.main", "cluster", "status",
                                                str(cfg), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "decider: m-dead (pid 4242 on box, lag 0, seen 4" in text
    assert "not heard from for 4" in text
    assert "a standby takes over once the lease has gone 10 s without renewal" in text
    assert "standby: m-live" in text
