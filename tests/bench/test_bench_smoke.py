"""A tiny bench run works and prints well-formed JSON whose correctness checks hold.

Speed is never asserted here (STYLE.md 19): only that each case runs, prints one JSON object with the
documented fields, and that ``oversold`` and ``lost`` - verified from the stored orders or the journal - are 0.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.__main__ import run_group, summarise
from bench.checks import account, check_journal
from bench.runner import percentiles
from bench.scenario import generate
from engine.config import load
from engine.core import Engine
from engine.records import Outcome, Status

TINY = ["--scale", "0.01", "--seed", "5", "--timeout", "120"]


def run_bench(*args: str, timeout: float = 240) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run([sys.executable, "-m", "bench", *TINY, *args], capture_output=True,
                          timeout=timeout, check=False)
    lines = proc.stdout.decode().splitlines()
    assert lines, proc.stderr.decode()
    return proc.returncode, [orjson.loads(line) for line in lines]


def assert_case_ok(r: dict[str, Any]) -> None:
    assert "error" not in r, r
    assert r["oversold"] == 0
    assert r["lost"] == 0
    assert r["peak_rss_mb"] > 0
    assert set(r["latency_ms"]) >= {"p50", "p95", "p99"}
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["p99"]


def test_naive_baseline_runs_and_its_checks_hold() -> None:
    code, out = run_bench("--cases", "naive")
    naive, summary = out
    assert naive["case"] == "naive"
    assert naive["scenario"] == "flash"
    assert_case_ok(naive)
    assert naive["buy_items"] > 0
    assert naive["outcomes"] >= naive["buy_items"]
    assert naive["statuses"]["reserved"] > 0
    assert summary["summary"] is True
    assert summary["checks_ok"] is True
    assert code == 0


def test_redis_baseline_runs_and_cleans_up(redis_server: tuple[str, int]) -> None:
    import redis

    host, port = redis_server
    code, out = run_bench("--cases", "redis", "--redis", f"{host}:{port}", "--scenario", "simulcast")
    assert_case_ok(out[0])
    assert out[0]["buys_per_s"] > 0
    client = redis.Redis(host=host, port=port)
    try:
        assert list(client.scan_iter(match="lcbench:*")) == []
    finally:
        client.close()
    assert code == 0


def test_unknown_case_is_refused_with_status_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--cases", "nosuch"], capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert b"unknown case(s) nosuch" in proc.stderr


def test_percentiles_use_nearest_rank() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(samples) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_summary_gives_ratios_and_flags_a_failed_check() -> None:
    results = [
        {"case": "pipeline", "comments_per_s": 300_000, "buys_per_s": 100_000, "latency_ms": {"p99": 4.0},
         "oversold": 0, "lost": 0},
        {"case": "naive", "buys_per_s": 1_000, "oversold": 0, "lost": 0},
        {"case": "redis", "buys_per_s": 40_000, "oversold": 0, "lost": 1},
    ]
    s = summarise(results)
    assert s["ratios"] == {"pipeline_vs_naive": 100.0, "pipeline_vs_redis": 2.5}
    assert s["targets"]["vs_redis"]["met"] is False
    assert s["targets"]["p99_ms_at_50k"]["met"] is True
    assert s["targets"]["websocket_comments_per_s"]["met"] is None
    assert s["checks_ok"] is False


@pytest.mark.parametrize("bad", [["--scale", "0"], ["--cases", "parser,,bogus"]])
def test_bad_arguments_exit_2(bad: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", *bad], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 2


def test_engine_cases_run_and_the_journal_confirms_no_oversell_and_no_loss() -> None:
    code, out = run_bench("--cases", "parser,ledger,pipeline,websocket", "--offered", "20000")
    by = {r["case"]: r for r in out if "case" in r}
    assert by["parser"]["comments_per_s"] > 0
    assert 0 <= by["parser"]["buys_understood"] <= 1
    for case in ("ledger", "pipeline", "websocket"):
        r = by[case]
        assert "error" not in r, r
        assert r["oversold"] == 0
        assert r["lost"] == 0
        j = r["journal"]
        assert j["comments"] == r["comments_in_scenario"]  # every comment sent was journalled
        assert j["missing_comments"] == 0
        assert j["statuses"]["reserved"] > 0
    for case in ("pipeline", "websocket"):
        lat = by[case]["latency_ms"]
        assert lat["offered_per_s"] == 20000
        assert lat["p50"] <= lat["p95"] <= lat["p99"]
    assert by["websocket"]["feeder"]["sent"] == by["websocket"]["comments_in_scenario"]
    assert out[-1]["checks_ok"] is True
    assert code == 0


def test_mqtt_case_runs_through_the_real_broker(mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    code, out = run_bench("--cases", "mqtt", "--mqtt", f"{host}:{port}", "--offered", "20000")
    assert_case_ok(out[0])
    assert out[0]["feeder"]["sent"] == out[0]["comments_in_scenario"]
    assert code == 0


# --- the checks themselves: they must be able to fail -----------------------------------------------------


def _o(order: str, qty: int, status: Status, comment: str = "m") -> Outcome:
    return Outcome(comment, "u", order, "egg-10", None, qty, status)


def test_account_flags_units_held_beyond_stock() -> None:
    outs = [_o("o1", 3, Status.RESERVED), _o("o2", 2, Status.RESERVED)]
    assert account(outs, {"egg-10": (5, 0)}) == (0, 0)
    assert account(outs, {"egg-10": (4, 0)}) == (1, 0)


def test_account_credits_cancelled_and_promoted_units() -> None:
    outs = [_o("o1", 3, Status.RESERVED), _o("o2", 2, Status.PRESALE), _o("o1", 3, Status.CANCELLED),
            _o("o2", 2, Status.PROMOTED), _o("o3", 1, Status.RESERVED)]
    assert account(outs, {"egg-10": (3, 2)}) == (0, 0)
    assert account(outs, {"egg-10": (3, 1)}) == (0, 1)  # two queued at once, cap one


def test_check_journal_counts_an_acknowledged_outcome_the_journal_lacks(tmp_path: Path) -> None:
    scenario = generate("flash", seed=2, scale=0.002)
    cfg = load(scenario.write_config(tmp_path))

    async def run() -> list[Outcome]:
        engine = await Engine.open(cfg)
        try:
            return await engine.submit(scenario.comments)
        finally:
            await engine.close()

    acked = asyncio.run(run())
    assert acked
    assert check_journal(cfg, scenario, acked).lost == 0
    forged = [*acked, _o("o-999999", 1, Status.RESERVED, comment="never-sent")]
    report = check_journal(cfg, scenario, forged)
    assert report.lost_acked == 1
    assert report.lost == 1


def test_livecart_bench_passes_its_options_through(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main as livecart

    assert livecart(["bench", "--cases", "nosuch"]) == 2
    assert "python -m bench: unknown case(s) nosuch" in capsys.readouterr().err


def test_a_case_that_times_out_is_killed_with_the_processes_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"open({str(pidfile)!r}, 'w').write(str(g.pid))\n"
        "time.sleep(120)\n"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        run_group([sys.executable, "-c", script], timeout=3)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # reaped by init once killed; a bound, not a wait for an event
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        if stat[2] == "Z":  # killed, waiting to be reaped
            return
        time.sleep(0.05)
    pytest.fail(f"the grandchild {pid} outlived its timed-out case")
