"""The refusals a restart tells again (livecart.store.codec.Refusals): a refusal makes no order, so only a
replay of the journal gives back the refusals whose replies were still queued when the process died."""

from __future__ import annotations

from pathlib import Path

import pytest

from livecart.core.catalogue import Catalogue, Product
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult, Reason, Status
from livecart.store import codec
from livecart.store.codec import Refusals
from livecart.store.sqlite import SqliteStore

CAT = Catalogue((Product("egg", "Eggs", stock=2, price=1.0),))
BUY = ParseResult(Intent.BUY, (Item("egg", None, 1),))


def sale(n: int) -> tuple[Ledger, list[codec.Entry]]:
    """``n`` buyers, one egg each, buyer i at time 100 + i: the first two hold one, the rest are sold out."""
    now = [100.0]
    led = Ledger(CAT, hold_seconds=0.0, featured="egg", clock=lambda: now[0])
    rows: list[codec.Entry] = []
    for i in range(1, n + 1):
        now[0] = 100.0 + i
        c = Comment("p", "r", f"m{i}", f"u{i}", f"u{i}", "鸡蛋+1", 0.0)
        led.decide(c, BUY)
        rows.append(codec.comment_row(led.seq, now[0], c, BUY))
    return led, rows


async def journal(p: Path, snapshots: tuple[int, ...], n: int = 10) -> None:
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0, featured="egg", clock=lambda: 100.0)
    _, rows = sale(n)
    done = 0
    for at in snapshots:
        await s.append(rows[done:at])
        assert s.checkpoint(at, sale(at)[0].state())
        await s.snapshot_written()
        done = at
    await s.append(rows[done:])
    await s.close()


async def refused_after(p: Path, told: float) -> tuple[list[str], tuple[int, int]]:
    s = await SqliteStore.open(p, readonly=True)
    try:
        refusals = Refusals(told)
        led = await s.rebuild(refusals=refusals)
        assert led.snapshot() == sale(10)[0].snapshot()
        assert all(o.status is Status.REJECTED and o.reason is Reason.SOLD_OUT for o in refusals.kept)
        return [o.user for o in refusals.kept], s.rebuilt_from
    finally:
        await s.close()


async def test_the_refusals_after_the_replies_progress_come_back_from_the_tail(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    await journal(p, (4,))
    users, start = await refused_after(p, 106.5)
    assert users == ["u7", "u8", "u9", "u10"]
    assert start == (4, 6)


async def test_a_latest_snapshot_holding_untold_refusals_is_passed_for_the_one_before(tmp_path: Path) -> None:
    """The replies' progress lagged behind the latest snapshot (a platform's rate limit held replies back
    while it was taken): the refusals in it are found by replaying from the snapshot before it."""
    p = tmp_path / "j.db"
    await journal(p, (4, 8))
    users, start = await refused_after(p, 105.5)
    assert users == ["u6", "u7", "u8", "u9", "u10"]
    assert start == (4, 6)
    users, start = await refused_after(p, 108.5)  # told past the latest snapshot: it is used
    assert users == ["u9", "u10"]
    assert start == (8, 2)


async def test_refusals_older_than_both_snapshots_are_said_to_be_lost(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "j.db"
    await journal(p, (4, 8))
    users, start = await refused_after(p, 102.5)
    assert users == ["u5", "u6", "u7", "u8", "u9", "u10"]  # u3 and u4 are in the older snapshot too
    assert start == (4, 6)
    assert ("the replies' progress (102.500) is before both of the journal's snapshots: refusals decided between "
            "it and event 4, if any, are not told again") in caplog.text


async def test_the_replay_keeps_the_orders_made_or_changed_after_the_progress_and_says_whether_it_reached_it(
        tmp_path: Path) -> None:
    """A cancel of an order made before the replies' progress makes no new order: the restart finds the order
    it changed in ``orders`` (and, with ``covered`` False, knows the replay began too late to see it all)."""
    p = tmp_path / "j.db"
    await journal(p, ())
    s = await SqliteStore.open(p, readonly=True)
    try:
        refusals = Refusals(101.5)
        await s.rebuild(refusals=refusals)
        assert list(refusals.orders) == ["o-000002"]  # made at 102; o-000001 at 101, before the progress
        assert refusals.covered
    finally:
        await s.close()
    p2 = tmp_path / "j2.db"
    await journal(p2, (4, 8))
    s = await SqliteStore.open(p2, readonly=True)
    try:
        refusals = Refusals(102.5)
        await s.rebuild(refusals=refusals)
        assert not refusals.covered
    finally:
        await s.close()
