"""The store contract (livecart.store.base): every backend in ``conftest.BACKENDS`` passes every test here."""

from __future__ import annotations

import asyncio

import pytest

from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.control import Kind
from livecart.core.errors import JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult
from livecart.store import codec
from livecart.store.base import Store
from livecart.store.codec import Entry
from tests.store.conftest import Opener

CAT = Catalogue((Product("egg", "Eggs", stock=3, presale=2, limit=4, price=29.9),
                 Product("tea", "Tea", variants=(Variant("s", stock=1),))))
OTHER = Catalogue((Product("egg", "Eggs", stock=99),))


async def start(open_store: Opener, **kw: object) -> Store:
    return await open_store(catalogue=CAT, hold_seconds=60.0, featured="egg", clock=lambda: 100.0, **kw)


def buy(sku: str = "egg", qty: int = 1) -> ParseResult:
    return ParseResult(Intent.BUY, (Item(sku, None, qty),))


def decided(n: int, start_at: int = 0) -> tuple[Ledger, list[Entry]]:
    """A ledger that decided ``n`` comments, and the entries recording them."""
    led = Ledger(CAT, hold_seconds=60.0, featured="egg", clock=lambda: 100.0)
    rows: list[Entry] = []
    for i in range(start_at, start_at + n):
        c = Comment("p", "r", f"m{i}", f"u{i % 3}", f"u{i % 3}", "", 0.0)
        pr = buy() if i % 2 else ParseResult(Intent.NONE)
        led.decide(c, pr)
        rows.append(codec.comment_row(led.seq, 100.0, c, pr))
    return led, rows


def norm(state: dict[str, object]) -> dict[str, object]:
    """A ledger state with its seen-id lists as sets (a set's order is its history, not its content)."""
    return {**state, "seen": {(p, r): set(ids) for p, r, ids in state["seen"]}}  # type: ignore[attr-defined]


def test_every_backend_is_a_store(open_store: Opener) -> None:
    async def go() -> None:
        s = await start(open_store)
        assert isinstance(s, Store)
        await s.close()
    asyncio.run(go())


async def test_appended_entries_come_back_in_order_once_durable(open_store: Opener) -> None:
    s = await start(open_store)
    _, rows = decided(5)
    await s.append(rows[:2])
    await s.append(rows[2:])
    assert s.last_seq == 5
    back = await s.entries()
    assert [e[0] for e in back] == [1, 2, 3, 4, 5]
    assert back[0][2] == codec.COMMENT
    assert back[1][3][:3] == ["p", "r", "m1"]  # data comes back as JSON decodes it: lists
    await s.close()


async def test_entries_after_a_seq_are_the_tail(open_store: Opener) -> None:
    s = await start(open_store)
    _, rows = decided(6)
    for r in rows:
        s.append([r])
    await s.flush()
    assert [e[0] for e in await s.entries(after=4)] == [5, 6]
    assert await s.entries(after=6) == []
    await s.close()


async def test_futures_resolve_in_append_order(open_store: Opener) -> None:
    s = await start(open_store)
    _, rows = decided(20)
    order: list[int] = []
    futs = []
    for r in rows:
        f = s.append([r])
        f.add_done_callback(lambda _f, seq=r[0]: order.append(seq))
        futs.append(f)
    await asyncio.gather(*futs)
    assert order == list(range(1, 21))
    await s.close()


async def test_an_entry_out_of_seq_order_is_refused(open_store: Opener) -> None:
    s = await start(open_store)
    _, rows = decided(3)
    await s.append(rows[:2])
    with pytest.raises(ValueError, match="seq order"):
        await s.append([rows[0]])
    await s.close()


async def test_close_commits_what_is_pending_and_a_reopen_sees_it(open_store: Opener) -> None:
    s = await start(open_store)
    led, rows = decided(7)
    futs = [s.append([r]) for r in rows]
    await s.close()
    await s.close()  # idempotent
    assert all(f.done() and f.exception() is None for f in futs)
    again = await start(open_store)
    assert again.last_seq == 7
    rebuilt = await again.rebuild()
    assert rebuilt.snapshot() == led.snapshot()
    assert list(rebuilt.orders()) == list(led.orders())
    await again.close()


async def test_a_closed_store_refuses_appends(open_store: Opener) -> None:
    s = await start(open_store)
    await s.close()
    _, rows = decided(1)
    with pytest.raises(JournalError, match="closed"):
        await s.append(rows)


async def test_rebuild_gives_the_ledger_that_decided(open_store: Opener) -> None:
    s = await start(open_store)
    led, rows = decided(9)
    led.restock("egg", None, 2)
    rows.append(codec.control_row(led.seq, 100.0, Kind.RESTOCK, ("egg", None, 2)))
    await s.append(rows)
    seen: list[int] = []
    rebuilt = await s.rebuild(on_outcomes=lambda out: seen.extend(o.seq for o in out))
    assert rebuilt.snapshot() == led.snapshot()
    assert list(rebuilt.orders()) == list(led.orders())
    assert seen  # outcomes of the replayed entries were reported
    await s.close()


async def test_another_catalogue_is_refused(open_store: Opener) -> None:
    s = await start(open_store)
    await s.close()
    with pytest.raises(JournalError, match="different catalogue"):
        await open_store(catalogue=OTHER, hold_seconds=60.0)


async def test_the_header_is_what_the_journal_was_started_with(open_store: Opener) -> None:
    s = await start(open_store)
    await s.close()
    again = await open_store(readonly=True)
    assert again.header.catalogue_json == codec.catalogue_json(CAT)
    assert again.header.hold_seconds == 60.0
    assert again.header.featured == "egg"
    assert again.header.created == 100.0
    await again.close()


async def test_read_only_without_a_journal_is_an_error(open_store: Opener) -> None:
    with pytest.raises(JournalError, match="no journal"):
        await open_store(readonly=True)


async def test_an_entry_that_cannot_be_encoded_fails_the_store_for_good(open_store: Opener) -> None:
    s = await start(open_store)
    _, rows = decided(2)
    with pytest.raises(JournalError):
        await s.append([(1, 100.0, codec.COMMENT, [object()])])
    with pytest.raises(JournalError, match="failed earlier"):
        await s.append(rows[1:])
    await s.close()


async def test_a_snapshot_and_the_tail_rebuild_the_ledger_a_full_replay_gives(open_store: Opener) -> None:
    s = await start(open_store)
    led, rows = decided(12)
    await s.append(rows[:8])
    assert s.checkpoint(8, decided(8)[0].state())
    await s.append(rows[8:])
    await s.close()  # the snapshot is written before close returns
    assert s.snapshots_written == 1
    again = await start(open_store)
    rebuilt = await again.rebuild()
    assert again.rebuilt_from == (8, 4)  # from the snapshot, replaying only the tail
    assert rebuilt.snapshot() == led.snapshot()
    assert list(rebuilt.orders()) == list(led.orders())
    assert norm(rebuilt.state()) == norm(led.state())
    await again.close()


async def test_a_second_snapshot_is_refused_while_one_is_written_and_taken_once_it_is(open_store: Opener) -> None:
    """What a clean stop relies on for its last snapshot: checkpoint refuses while one is being written, and
    snapshot_written waits for that one."""
    s = await start(open_store)
    led, rows = decided(12)
    await s.append(rows[:8])
    assert s.checkpoint(8, decided(8)[0].state())
    fut = s.append(rows[8:])
    assert not s.checkpoint(12, led.state())  # the one at 8 is still being written
    await fut
    await s.snapshot_written()
    assert s.checkpoint(12, led.state())
    await s.close()
    assert s.snapshots_written == 2
    again = await start(open_store)
    rebuilt = await again.rebuild()
    assert again.rebuilt_from == (12, 0)
    assert norm(rebuilt.state()) == norm(led.state())
    await again.close()


async def test_a_snapshot_is_taken_only_at_the_last_appended_entry(open_store: Opener) -> None:
    s = await start(open_store)
    _, rows = decided(3)
    await s.append(rows)
    with pytest.raises(ValueError, match="last appended"):
        s.checkpoint(2, {})
    await s.close()
    assert not s.checkpoint(3, {})  # closed: nothing
