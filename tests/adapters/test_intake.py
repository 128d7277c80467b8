"""The bounded intake between push-style receivers and ``batches()``, and the awaitable milestone."""

from __future__ import annotations

import asyncio

import pytest

from livecart.adapters._intake import Intake, Milestone
from livecart.core.records import Comment


def cs(*ids: int) -> list[Comment]:
    return [Comment("p", "r", f"m-{i}", "u", "u", "+1", float(i)) for i in ids]


async def test_get_merges_waiting_batches_in_order_up_to_max_batch() -> None:
    q = Intake(100, max_batch=3)
    for b in (cs(1), cs(2, 3), cs(4), cs(5)):
        assert q.offer(b)
    first = await q.get()
    second = await q.get()
    assert first is not None
    assert second is not None
    assert [c.id for c in first] == ["m-1", "m-2", "m-3"]
    assert [c.id for c in second] == ["m-4", "m-5"]
    assert len(q) == 0


async def test_offer_refuses_when_full_but_an_empty_intake_takes_any_batch() -> None:
    q = Intake(2)
    assert q.offer(cs(1, 2, 3))  # larger than the capacity, yet accepted: the intake was empty
    assert not q.offer(cs(4))
    await q.get()
    assert q.offer(cs(4))
    assert q.high_water == 3


async def test_put_waits_for_room_and_counts_the_wait() -> None:
    q = Intake(1)
    await q.put(cs(1))
    blocked = asyncio.create_task(q.put(cs(2)))
    await q.waits.reached(1)
    assert not blocked.done()
    assert len(q) == 1
    assert [c.id for c in await q.get() or []] == ["m-1"]
    assert await blocked
    assert [c.id for c in await q.get() or []] == ["m-2"]


async def test_close_drains_then_ends_and_releases_waiting_producers() -> None:
    q = Intake(1)
    await q.put(cs(1))
    blocked = asyncio.create_task(q.put(cs(2)))
    await q.waits.reached(1)
    q.close()
    q.close()
    assert await blocked is False  # refused, and the producer was not left hanging
    assert not q.offer(cs(3))
    assert [c.id for c in await q.get() or []] == ["m-1"]
    assert await q.get() is None


async def test_a_waiting_consumer_wakes_on_data_and_on_close() -> None:
    q = Intake(10)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.offer(cs(1))
    assert [c.id for c in await getter or []] == ["m-1"]
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close()
    assert await getter is None


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Intake(0)


async def test_milestone_wakes_waiters_when_their_count_is_reached() -> None:
    m = Milestone()
    two = asyncio.create_task(m.reached(2))
    m.advance()
    await asyncio.sleep(0)
    assert not two.done()
    m.advance()
    await two
    await m.reached(1)  # already reached: returns at once
    assert m.count == 2
