"""``livecart.bench.run_bench``: ``livecart run`` as a process over a replay file, checked from outside.

Speed is never asserted (STYLE.md 19): only that a tiny run prints one JSON object whose checks, read from
the journal through ``livecart report --json``, hold, and that the Redis baseline stored every buy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from livecart.bench.run_bench import check_report
from livecart.bench.scenario import flash_buys


def test_flash_buys_is_every_comment_a_buy_and_pure() -> None:
    a = flash_buys(500, seed=3)
    assert len(a.comments) == 500 == a.buy_count
    assert a.comments == flash_buys(500, seed=3).comments
    assert len({c.id for c in a.comments}) == 500


def test_report_check_counts_oversold_units_and_uncounted_comments() -> None:
    units = {"egg-10": (10, 2)}
    fine = {"comments": 50, "products": {"egg-10": {"stock": 10, "left": 0, "reserved": 10, "presale": 2}}}
    assert check_report(fine, units, 50) == {"oversold": 0, "lost": 0}
    bad = {"comments": 48, "products": {"egg-10": {"stock": 10, "left": -1, "reserved": 11, "presale": 3}}}
    assert check_report(bad, units, 50) == {"oversold": 3, "lost": 2}


@pytest.mark.slow
def test_a_tiny_run_is_timed_from_outside_and_checked_from_the_journal(
        tmp_path: Path, redis_server: tuple[str, int]) -> None:
    host_port = f"{redis_server[0]}:{redis_server[1]}"
    proc = subprocess.run([sys.executable, "-m", "livecart.bench.run_bench", "--comments", "3000",
                           "--tmpdir", str(tmp_path), "--redis", host_port, "--timeout", "120"],
                          capture_output=True, timeout=240, check=False)
    out = orjson.loads(proc.stdout.splitlines()[-1])
    assert proc.returncode == 0, out
    assert out["exit"] == 0
    assert out["comments"] == 3000 == out["journal"]["comments"]
    assert out["oversold"] == 0
    assert out["lost"] == 0
    assert out["comments_per_s"] > 0
    assert out["peak_rss_mb"] > 0
    assert sum(out["journal"]["outcomes"].values()) >= 3000  # one outcome per item at least
    r = out["redis"]
    assert r["comments"] == 3000
    assert r["oversold"] == 0
    assert r["lost"] == 0
    assert r["statuses"]["reserved"] > 0
