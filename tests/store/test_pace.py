"""The pacer of a store's background work: after each burst of work it sleeps, so the worker takes at most
its share of the time and lets go of the interpreter's lock often (a clock of our own, no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livecart.core.catalogue import Catalogue, Product
from livecart.core.records import Comment, Intent, ParseResult
from livecart.store import codec, pace, sqlite
from livecart.store.pace import Pacer
from livecart.store.sqlite import SqliteStore

CAT = Catalogue((Product("egg", "Eggs", stock=5),))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(pace.time, "perf_counter", c.perf_counter)
    monkeypatch.setattr(pace.time, "sleep", c.sleep)
    return c


def test_it_sleeps_after_each_burst_so_the_work_takes_its_share_of_the_time(clock: Clock) -> None:
    p = Pacer(burst=0.001, share=0.25)
    p()  # the work begins
    worked = 0.0
    for _ in range(100):  # steps of 0.3 ms of work
        clock.now += 0.0003
        worked += 0.0003
        p()
    assert len(clock.sleeps) == 25  # a pause every fourth step (1.2 ms of work)
    assert all(s == pytest.approx(0.0036) for s in clock.sleeps)  # 1.2 ms worked: 3.6 ms asleep
    assert sum(clock.sleeps) == pytest.approx(3 * worked)  # the worker had a quarter of the time
    assert worked / (clock.now - 100.0) == pytest.approx(0.25)


def test_short_work_never_sleeps_and_the_time_before_the_first_step_is_not_work(clock: Clock) -> None:
    p = Pacer(burst=0.001, share=0.5)
    clock.now += 5.0  # handed to the worker thread: not work
    p()
    clock.now += 0.0009
    p()
    assert clock.sleeps == []
    clock.now += 0.0002  # the burst is over: as long asleep as it worked (share 1/2)
    p()
    assert clock.sleeps == [pytest.approx(0.0011)]


def test_a_share_of_one_never_sleeps(clock: Clock) -> None:
    p = Pacer(burst=0.001, share=1.0)
    for _ in range(10):
        clock.now += 0.01
        p()
    assert clock.sleeps == []


def test_it_does_not_sleep_while_the_event_loop_has_nothing_to_do(clock: Clock) -> None:
    busy = [True]
    p = Pacer(burst=0.001, share=0.5, busy=lambda: busy[0])
    p()
    clock.now += 0.002
    p()
    assert clock.sleeps == [pytest.approx(0.002)]
    busy[0] = False  # e.g. a clean stop waiting for its last snapshot
    for _ in range(5):
        clock.now += 0.002
        p()
    assert len(clock.sleeps) == 1
    busy[0] = True  # a new burst starts at the last step, not when the work began
    clock.now += 0.002
    p()
    assert clock.sleeps[1:] == [pytest.approx(0.002)]


async def test_the_journal_paces_its_background_work_only_while_comments_come_in(tmp_path: Path) -> None:
    s = await SqliteStore.open(tmp_path / "j.db", catalogue=CAT, hold_seconds=0.0)
    try:
        assert not s._pacer().busy()  # type: ignore[misc]
        await s.append([codec.comment_row(1, 1.0, Comment("p", "r", "m1", "u", "", "", 0.0),
                                          ParseResult(Intent.NONE))])
        assert s._pacer().busy()  # type: ignore[misc]
        s._appended_at -= sqlite.PACE_IDLE
        assert not s._pacer().busy()  # type: ignore[misc]
    finally:
        await s.close()


@pytest.mark.parametrize(("burst", "share"), [(0, 0.5), (0.001, 0), (0.001, 1.5), (-1, 0.5)])
def test_a_pacer_that_could_not_work_is_refused(burst: float, share: float) -> None:
    with pytest.raises(ValueError, match="burst > 0"):
        Pacer(burst, share)
