"""``livecart.bench.crash_bench``: ``livecart run`` killed with SIGKILL, what the journal holds then, and the
restart after it. Speed is never asserted (STYLE.md 19): only what the kill left and that the restart decides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest


@pytest.mark.slow
def test_a_kill_at_a_journal_size_leaves_a_tail_after_the_last_snapshot_and_the_restart_decides(
        tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "livecart.bench.crash_bench", "--scale", "0.1",
                           "--at-events", "60000", "--snapshot-events", "10000", "--tmpdir", str(tmp_path)],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = orjson.loads(proc.stdout.splitlines()[-1])
    assert out["bench"] == "crash"
    assert out["snapshot_events"] == 10000
    (kill,) = out["kills"]
    assert "error" not in kill
    assert kill["at_events"] == 60000
    assert kill["events"] >= 60000  # killed once it held that many, read from the file beside the daemon
    assert 10000 <= kill["snapshot"] <= kill["events"]  # at least the first snapshot was whole by then
    assert kill["tail"] == kill["events"] - kill["snapshot"]
    assert kill["rebuilt_from"] == [kill["snapshot"], kill["tail"]]  # the restart replayed exactly that tail
    assert kill["outcome"] in ("reserved", "presale", "rejected")
    assert kill["restart_s"] > 0
    assert kill["restart_rss_mb"] > 0
    assert kill["live_rss_mb"] > 0
    assert out["max_tail"] == kill["tail"]
    assert set(out["targets"]) == {"restart_s", "restart_vs_live_rss"}
