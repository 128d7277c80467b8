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

from livecart.bench.__main__ import run_group, summarise
from livecart.bench.baselines import Buy, run_naive_e2e
from livecart.bench.checks import account, check_journal
from livecart.bench.runner import baseline_work, percentiles
from livecart.bench.scenario import generate
from livecart.config import load
from livecart.core.records import Outcome, Status
from livecart.runtime.pipeline import Engine

TINY = ["--scale", "0.01", "--seed", "5", "--timeout", "120"]


def run_bench(*args: str, timeout: float = 240) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run([sys.executable, "-m", "livecart.bench", *TINY, *args], capture_output=True,
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


def assert_baseline_ok(r: dict[str, Any]) -> None:
    """Both runs of a baseline case: end to end at the top level, allocation only under ``alloc``."""
    assert_case_ok(r)
    assert 0 < r["comments"] <= r["comments_in_scenario"]
    assert 0 < r["buy_items"] <= r["buy_items_in_scenario"]
    for key in ("comments_per_s", "buys_per_s", "outcomes_per_s"):
        assert isinstance(r[key], int), key
        assert r[key] > 0, key
    assert r["outcomes"] >= r["buy_items"]
    assert r["statuses"]["reserved"] > 0
    alloc = r["alloc"]
    assert alloc["buy_items"] == r["buy_items"]  # the same items, parsed outside the timing
    assert alloc["items_from"] == "parser"
    assert alloc["oversold"] == 0
    assert alloc["lost"] == 0
    assert isinstance(alloc["buys_per_s"], int)
    assert alloc["buys_per_s"] > 0
    assert alloc["outcomes"] >= alloc["buy_items"]
    lat = alloc["latency_ms"]
    assert lat["p50"] <= lat["p95"] <= lat["p99"]


def assert_ratios(summary: dict[str, Any], base: str, other: str) -> None:
    """Both ratio families against ``base`` are numbers and judged against their targets; ``other`` did
    not run, so its ratios and targets are ``None``."""
    ratios = summary["ratios"]
    assert set(ratios) == {"e2e_vs_naive", "e2e_vs_redis", "alloc_vs_naive", "alloc_vs_redis"}
    for family in ("e2e", "alloc"):
        got = ratios[f"{family}_vs_{base}"]
        assert isinstance(got, float), family
        assert got > 0, family
        target = summary["targets"][f"vs_{base}_{family}"]
        assert target["measured"] == got
        assert isinstance(target["met"], bool)
        assert ratios[f"{family}_vs_{other}"] is None
        assert summary["targets"][f"vs_{other}_{family}"]["met"] is None


def test_naive_baseline_runs_both_modes_and_its_checks_hold() -> None:
    code, out = run_bench("--cases", "ledger,pipeline,naive", "--offered", "0", "--naive-limit", "100")
    naive, summary = out[2], out[3]
    assert naive["case"] == "naive"
    assert naive["scenario"] == "flash"
    assert_baseline_ok(naive)
    # The limit stops the run after the comment holding its 100th buy item: a prefix of the scenario.
    assert naive["buy_items"] >= 100
    assert naive["comments"] < naive["comments_in_scenario"]
    assert naive["alloc"]["statuses"] == naive["statuses"]  # one transaction at a time, the same order
    assert summary["summary"] is True
    assert summary["checks_ok"] is True
    assert_ratios(summary, "naive", "redis")
    assert code == 0


def test_redis_baseline_runs_both_modes_and_cleans_up(redis_server: tuple[str, int]) -> None:
    import redis

    host, port = redis_server
    code, out = run_bench("--cases", "ledger,pipeline,redis", "--offered", "0", "--redis", f"{host}:{port}",
                          "--scenario", "simulcast")
    r, summary = out[2], out[3]
    assert r["case"] == "redis"
    assert_baseline_ok(r)
    assert r["comments"] == r["comments_in_scenario"]  # no --redis-limit: every comment
    assert r["buy_items"] == r["buy_items_in_scenario"]
    assert r["callers"] == 32
    assert summary["checks_ok"] is True
    assert_ratios(summary, "redis", "naive")
    client = redis.Redis(host=host, port=port)
    try:
        assert list(client.scan_iter(match="lcbench:*")) == []
    finally:
        client.close()
    assert code == 0


def test_unknown_case_is_refused_with_status_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "livecart.bench", "--cases", "nosuch"], capture_output=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert b"unknown case(s) nosuch" in proc.stderr


def test_percentiles_use_nearest_rank() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(samples) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_summary_gives_both_ratio_families_and_flags_a_failed_check() -> None:
    results = [
        {"case": "ledger", "comments_per_s": 500_000, "buys_per_s": 180_000, "oversold": 0, "lost": 0},
        {"case": "pipeline", "comments_per_s": 300_000, "buys_per_s": 100_000, "latency_ms": {"p99": 4.0},
         "oversold": 0, "lost": 0},
        {"case": "naive", "comments_per_s": 2_000, "buys_per_s": 1_000, "oversold": 0, "lost": 0,
         "alloc": {"buys_per_s": 1_200, "oversold": 0, "lost": 0}},
        {"case": "redis", "comments_per_s": 60_000, "buys_per_s": 20_000, "oversold": 0, "lost": 1,
         "alloc": {"buys_per_s": 40_000, "oversold": 0, "lost": 0}},
    ]
    s = summarise(results)
    assert s["ratios"] == {"e2e_vs_naive": 100.0, "e2e_vs_redis": 5.0,
                           "alloc_vs_naive": 150.0, "alloc_vs_redis": 4.5}
    assert s["targets"]["vs_naive_e2e"] == {"target": 100.0, "measured": 100.0, "met": True}
    assert s["targets"]["vs_naive_alloc"]["met"] is True
    assert s["targets"]["vs_redis_e2e"]["met"] is True
    assert s["targets"]["vs_redis_alloc"]["met"] is False
    assert s["targets"]["p99_ms_at_50k"]["met"] is True
    assert s["targets"]["pipeline_comments_per_s"]["met"] is True
    assert s["targets"]["websocket_comments_per_s"]["met"] is None
    assert s["checks_ok"] is False


def test_summary_ratios_are_none_without_their_cases() -> None:
    s = summarise([{"case": "pipeline", "buys_per_s": 100_000, "oversold": 0, "lost": 0},
                   {"case": "naive", "error": "runner exited 1"},
                   {"case": "redis", "buys_per_s": 20_000, "oversold": 0, "lost": 0}])
    assert s["ratios"] == {"e2e_vs_naive": None, "e2e_vs_redis": 5.0, "alloc_vs_naive": None,
                           "alloc_vs_redis": None}
    assert s["targets"]["vs_redis_alloc"]["met"] is None
    assert s["errors"] == {"naive": "runner exited 1"}


@pytest.mark.parametrize("bad", [["--scale", "0"], ["--cases", "parser,,bogus"]])
def test_bad_arguments_exit_2(bad: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "livecart.bench", *bad], capture_output=True, timeout=60, check=False)
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


def test_baseline_work_is_a_prefix_ending_with_the_limit_item(tmp_path: Path) -> None:
    scenario = generate("flash", seed=3, scale=0.005)
    cfg = load(scenario.write_config(tmp_path))
    whole = baseline_work(scenario, cfg, 0)
    assert len(whole.comments) == len(scenario.comments)
    assert len(whole.items) == whole.items_in_scenario > 40
    part = baseline_work(scenario, cfg, 40)
    assert part.comments == scenario.comments[:len(part.comments)]
    assert part.items == whole.items[:len(part.items)]
    assert len(part.items) >= 40
    assert part.items[-1].comment == part.comments[-1].id  # stops at the comment holding the 40th item
    assert len({b.comment for b in part.items}) - 1 < 40


async def test_naive_e2e_counts_an_expected_buy_it_never_stored(tmp_path: Path) -> None:
    from livecart.core.parser import Parser

    scenario = generate("flash", seed=2, scale=0.002)
    cfg = load(scenario.write_config(tmp_path))
    w = baseline_work(scenario, cfg, 0)
    parse = Parser.from_config(cfg).parse
    ok = await run_naive_e2e(w.units, w.comments, parse, cfg.stream.featured, w.items, tmp_path / "a.db")
    assert (ok.comments, ok.buys, ok.oversold, ok.lost) == (len(scenario.comments), len(w.items), 0, 0)
    forged = [*w.items, Buy("never-sent", "u", "egg-10", "egg-10", 1)]
    bad = await run_naive_e2e(w.units, w.comments, parse, cfg.stream.featured, forged, tmp_path / "b.db")
    assert bad.lost == 1


def test_livecart_bench_passes_its_options_through(capsys: pytest.CaptureFixture[str]) -> None:
    from livecart.cli.main import main as livecart

    assert livecart(["bench", "--cases", "nosuch"]) == 2
    assert "python -m livecart.bench: unknown case(s) nosuch" in capsys.readouterr().err


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


@pytest.mark.slow
def test_console_bench_runs_with_and_without_consoles_and_prints_its_json() -> None:
    proc = subprocess.run([sys.executable, "-m", "livecart.bench.console_bench", "--consoles", "2", "--scale",
                           "0.05", "--rate", "20000", "--rounds", "1", "--durability", "os"],
                          capture_output=True, timeout=240, check=False)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1, proc.stderr.decode()
    r = orjson.loads(lines[0])
    assert r["case"] == "console"
    assert set(r["cpu_us_per_comment"]) == {"without", "with"}
    assert isinstance(r["cpu_cost"], float)
    assert proc.returncode == (0 if r["ok"] else 1)
    without, with_ = r["runs"]
    assert without["consoles"] == 0
    assert with_["consoles"] == 2
    assert without["messages_per_s_per_console"] == 0
    # The open consoles got deltas while the sale ran, far fewer than the comments (never one per outcome).
    messages = with_["messages_per_s_per_console"] * with_["seconds"]
    assert 0 < messages < with_["comments"] / 10


def test_summary_reads_the_daemons_p99_from_the_paced_run_case() -> None:
    s = summarise([{"case": "run", "comments_per_s": 100_000, "vs_redis": 3.3, "oversold": 0, "lost": 0},
                   {"case": "run-latency", "comments_per_s": 50_000, "latency_ms": {"p99": 53.2}, "oversold": 0,
                    "lost": 0}])
    assert s["targets"]["run_p99_ms_at_50k"] == {"target": 5.0, "measured": 53.2, "met": False}
    assert s["targets"]["run_comments_per_s"]["met"] is False
    assert summarise([{"case": "run-latency", "latency_ms": {"p99": 4.0}, "oversold": 0, "lost": 0}]
                     )["targets"]["run_p99_ms_at_50k"]["met"] is True
