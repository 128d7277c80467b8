"""The latency trace (``LIVECART_TRACE``): what the daemon writes, and how the summary splits a batch's time."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from livecart.plugin import Batch
from livecart.runtime import trace as tr

from .test_daemon import Fed, Running, comment, fed_factory, until, write

EXTRA = '[[adapters]]\ntype = "fed"\nname = "feed"\n'


async def test_the_daemon_writes_a_trace_of_every_batch_and_commit_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "trace.json"
    monkeypatch.setenv(tr.ENV, str(out))
    made: dict[str, Fed] = {}
    running = Running(write(tmp_path, EXTRA), make_adapter=fed_factory(made))
    async with running as d:
        assert d.trace is not None
        settled: list[BaseException | None] = []
        for k in range(3):
            made["feed"].push(Batch([comment(10 * k + i) for i in range(4)], on_settled=settled.append))
        await until(lambda: len(settled) == 3, "three settlements")
        assert await running.finish() == 0
    data = orjson.loads(out.read_bytes())
    assert data["frames"]["total"]["n"] == 3
    assert data["frames"]["statement"]["n"] == 3  # each batch found the commit that carried it
    assert data["commits"]["n"] >= 1
    assert sum(1 for _ in data["threads"]) >= 2  # the loop's thread and the journal's


async def test_no_trace_without_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tr.ENV, raising=False)
    async with Running(write(tmp_path, EXTRA), make_adapter=fed_factory({})) as d:
        assert d.trace is None
        assert d.engine.journal.on_commit is None  # type: ignore[union-attr]


def test_a_batch_s_time_is_split_into_stages_and_its_wait_for_the_cpu(tmp_path: Path) -> None:
    t = tr.Trace(tmp_path / "t.json")
    # Born at 0, taken at 1 ms, decided 2-3 ms, its commit (rows up to seq 10) cut at 4, picked up by the
    # writer thread at 5, written by 7, back on the loop at 8, settled at 9 ms.
    t.submits.append(([0.0], 0.001, 0.002, 0.003, 10, 0.009))
    t.commits.append((10, 10, 0.004, 0.004, 0.005, 0.007, 0.008))
    # The main thread ran 3 ms and waited 4 ms in the run queue between 0 and 9 ms.
    t.ticks = [(0.0, 0, 0, 0, 0), (0.009, 3_000_000, 4_000_000, 0, 0)]
    t.gcs.append((0.0025, 0.0005, 0, 0))
    s = t.summary()
    f = s["frames"]
    assert [f[k]["p50"] for k in ("total", "queue", "start", "decide", "to_cut", "to_thread", "statement",
                                  "to_loop", "settle")] == [9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0]
    tail = s["tail"]["mean_ms"]
    assert tail["main_cpu"] == 3.0
    assert tail["main_runqueue_wait"] == 4.0
    assert tail["main_other"] == 2.0
    assert tail["gc"] == 0.5
    over = s["over_target"]
    assert over["frames"] == 1
    assert over["overlapping"]["gc"] == 1.0
