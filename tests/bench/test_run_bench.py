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


def test_frames_hold_the_files_first_comments_as_json_arrays(tmp_path: Path) -> None:
    from livecart.bench.run_bench import read_frames

    path = tmp_path / "s.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"m{i}"}) + b"\n" for i in range(10)))
    frames = read_frames(path, 7, 3)
    assert [len(orjson.loads(f)) for f in frames] == [3, 3, 1]
    assert [c["id"] for f in frames for c in orjson.loads(f)] == [f"m{i}" for i in range(7)]


def test_latency_percentiles_are_in_ms_over_the_sorted_samples() -> None:
    from livecart.bench.run_bench import percentiles_ms

    p = percentiles_ms([i / 1000 for i in range(1, 1001)])  # 1 ms .. 1000 ms
    assert p["p50"] == 501.0
    assert p["p99"] == 991.0
    assert p["max"] == 1000.0
    assert p["samples"] == 1000
    assert percentiles_ms([]) == {}


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["websocket", "mqtt"])
def test_a_tiny_run_over_the_network_is_acknowledged_durable_and_checked(
        tmp_path: Path, transport: str, mosquitto: tuple[str, int]) -> None:
    """The daemon fed by this process as a WebSocket client (acks after durable) or an MQTT publisher; the
    run ends once every comment is durable, then SIGTERM; the journal holds every comment once."""
    proc = subprocess.run([sys.executable, "-m", "livecart.bench.run_bench", "--comments", "3000",
                           "--tmpdir", str(tmp_path), "--transport", transport, "--no-redis", "--frame", "100",
                           "--mqtt", f"{mosquitto[0]}:{mosquitto[1]}", "--timeout", "120"],
                          capture_output=True, timeout=240, check=False)
    out = orjson.loads(proc.stdout.splitlines()[-1])
    assert proc.returncode == 0, out
    assert out["transport"] == transport
    assert out["exit"] == 0  # stopped by SIGTERM after the last comment was durable: a clean exit
    assert out["comments"] == 3000 == out["journal"]["comments"]
    assert out["frames"] == 30
    assert out["oversold"] == 0
    assert out["lost"] == 0
    if transport == "websocket":
        assert out["acks"] >= 1


@pytest.mark.slow
def test_a_paced_websocket_run_reports_latency_per_frame(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "livecart.bench.run_bench", "--comments", "2000",
                           "--tmpdir", str(tmp_path), "--transport", "websocket", "--rate", "4000",
                           "--timeout", "120"], capture_output=True, timeout=240, check=False)
    out = orjson.loads(proc.stdout.splitlines()[-1])
    assert proc.returncode == 0, out
    lat = out["latency_ms"]
    assert lat["offered_per_s"] == 4000
    assert lat["samples"] == out["frames"] == 500  # 4 comments a frame, one frame a millisecond
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert out["targets"]["p99_ms"]["met"] is None  # 4,000/s offered is not the target's 50,000/s
    assert "redis" not in out
    assert out["lost"] == 0
