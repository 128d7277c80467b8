"""The journal: SQLite WAL file, group commit, rebuild, refusal of foreign or damaged files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.control import Kind
from livecart.core.errors import ForeignDatabase, JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult, Reason
from livecart.store import codec
from livecart.store import journal as jr
from livecart.store.journal import Journal

CAT = Catalogue((Product("egg", "Eggs", stock=3, presale=2, limit=4, price=29.9),
                 Product("tea", "Tea", variants=(Variant("s", stock=1),))))


def comment(n: int, user: str = "u") -> Comment:
    return Comment("p", "r", f"m{n}", user, user, "", 0.0)


def buy(sku: str = "egg", qty: int = 1, variant: str | None = None) -> ParseResult:
    return ParseResult(Intent.BUY, (Item(sku, variant, qty),))


async def open_journal(path: Path, **kw: object) -> Journal:
    return await Journal.open(path, catalogue=CAT, hold_seconds=60.0, featured="egg", **kw)  # type: ignore[arg-type]


def led(now: float = 0.0) -> Ledger:
    return Ledger(CAT, hold_seconds=60.0, featured="egg", clock=lambda: now)


async def test_new_journal_is_sqlite_wal_with_application_id(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "j.db")
    await j.close()
    con = sqlite3.connect(tmp_path / "j.db")
    try:
        assert con.execute("PRAGMA application_id").fetchone()[0] == jr.APPLICATION_ID
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(con.execute("SELECT key, value FROM meta"))
    finally:
        con.close()
    assert meta["app"] == "livecart"
    assert meta["schema"] == str(jr.SCHEMA_VERSION)


async def test_rows_are_committed_and_rebuild_the_same_ledger(tmp_path: Path) -> None:
    a = led(5.0)
    rows = []
    for n, (user, pr) in enumerate([("a", buy(qty=2)), ("b", buy(qty=3)), ("c", buy("tea", 1, "s")),
                                     ("a", ParseResult(Intent.CANCEL)), ("d", ParseResult(Intent.NONE))]):
        c = comment(n, user)
        a.decide(c, pr)
        rows.append(jr.comment_row(a.seq, 5.0, c, pr))
    a.restock("egg", None, 2)
    rows.append(jr.control_row(a.seq, 5.0, Kind.RESTOCK, ("egg", None, 2)))
    j = await open_journal(tmp_path / "j.db")
    await j.append(rows)
    assert j.last_seq == a.seq
    await j.close()
    j = await Journal.open(tmp_path / "j.db", readonly=True)
    b = await j.rebuild()
    await j.close()
    assert b.snapshot() == a.snapshot()
    assert list(b.orders()) == list(a.orders())


async def test_reserved_reason_round_trips(tmp_path: Path) -> None:
    a = led()
    pr = ParseResult(Intent.BUY, (Item(None, None, 1, Reason.UNKNOWN_PRODUCT),))
    a.decide(comment(1), pr)
    j = await open_journal(tmp_path / "j.db")
    await j.append([jr.comment_row(a.seq, 0.0, comment(1), pr)])
    b = await j.rebuild()
    await j.close()
    assert b.snapshot()["outcomes"] == {"rejected": 1}


async def test_group_commit_puts_many_appends_in_one_transaction(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "j.db", batch_delay=0.05, batch_max=1000)
    a = led()
    futs = []
    for n in range(50):
        a.decide(comment(n), ParseResult(Intent.NONE))
        futs.append(j.append([jr.comment_row(a.seq, 0.0, comment(n), ParseResult(Intent.NONE))]))
    await asyncio.gather(*futs)
    assert j.batches == 1
    assert j.rows_written == 50
    await j.close()


async def test_a_full_batch_is_written_without_waiting_for_the_delay(tmp_path: Path) -> None:
    # A delay far longer than the test may take: the batch can only be written because it is full.
    j = await open_journal(tmp_path / "j.db", batch_delay=3600.0, batch_max=10)
    a = led()
    rows = []
    for n in range(25):
        a.decide(comment(n), ParseResult(Intent.NONE))
        rows.append(jr.comment_row(a.seq, 0.0, comment(n), ParseResult(Intent.NONE)))
    first = j.append(rows[:20])
    await asyncio.wait_for(first, 30)
    assert j.batches == 2
    rest = j.append(rows[20:])
    await j.close()  # close flushes what is pending
    assert rest.done()
    assert rest.exception() is None
    j = await Journal.open(tmp_path / "j.db", readonly=True)
    assert len(await j.rows()) == 25
    await j.close()


async def test_durability_os_uses_synchronous_normal(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "j.db", durability="os")
    async with j._db.execute("PRAGMA synchronous") as cur:
        row = await cur.fetchone()
    await j.close()
    assert row is not None
    assert row[0] == 1  # NORMAL
    j = await open_journal(tmp_path / "j.db", durability="fsync")
    async with j._db.execute("PRAGMA synchronous") as cur:
        row = await cur.fetchone()
    await j.close()
    assert row is not None
    assert row[0] == 2  # FULL


async def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    p = tmp_path / "notes.db"
    p.write_bytes(b"my shopping list\n" * 100)
    with pytest.raises(ForeignDatabase, match="not an SQLite database"):
        await open_journal(p)
    assert p.read_bytes() == b"my shopping list\n" * 100


async def test_an_sqlite_file_of_another_application_is_refused_and_left_alone(tmp_path: Path) -> None:
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    con.close()
    before = p.read_bytes()
    with pytest.raises(ForeignDatabase, match="another application"):
        await open_journal(p)
    assert p.read_bytes() == before


async def test_a_damaged_journal_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    j = await open_journal(p)
    await j.close()
    data = bytearray(p.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # wreck the schema page after the header
    p.write_bytes(bytes(data))
    with pytest.raises(ForeignDatabase):
        await open_journal(p)
    assert p.read_bytes() == bytes(data)


async def test_readonly_never_creates_a_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal"):
        await Journal.open(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


async def test_a_different_catalogue_is_refused(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "j.db")
    await j.close()
    other = Catalogue((Product("egg", "Eggs", stock=99),))
    with pytest.raises(JournalError, match="different catalogue"):
        await Journal.open(tmp_path / "j.db", catalogue=other, hold_seconds=60.0)


async def test_a_gap_in_the_events_is_an_error(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "j.db")
    await j.append([jr.comment_row(2, 0.0, comment(1), ParseResult(Intent.NONE))])
    with pytest.raises(JournalError, match="missing or repeated"):
        await j.rebuild()
    await j.close()


async def test_entries_out_of_seq_order_are_refused(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "j.db")
    row = jr.comment_row(1, 0.0, comment(1), ParseResult(Intent.NONE))
    await j.append([row])
    with pytest.raises(ValueError, match="seq order"):
        await j.append([row])
    await j.close()


async def test_a_write_failure_fails_the_waiters_and_later_appends(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "j.db")
    await j._db.close()  # the file goes away under the writer
    with pytest.raises(JournalError, match="cannot write"):
        await j.append([jr.comment_row(1, 0.0, comment(1), ParseResult(Intent.NONE))])
    with pytest.raises(JournalError, match="failed earlier"):
        await j.append([jr.comment_row(2, 0.0, comment(2), ParseResult(Intent.NONE))])
    await j.close()
    await j.close()  # idempotent


async def test_the_events_view_shows_one_row_per_entry(tmp_path: Path) -> None:
    j = await open_journal(tmp_path / "j.db")
    a = led()
    for n in range(3):
        a.decide(comment(n), buy())
        await j.append([jr.comment_row(a.seq, 7.5, comment(n), buy())])
    expected = await j.rows()
    await j.close()
    con = sqlite3.connect(tmp_path / "j.db")
    try:
        rows = con.execute("SELECT seq, ts, kind, body FROM events ORDER BY seq").fetchall()
    finally:
        con.close()
    assert [(s, t, k, bytes(b)) for s, t, k, b in rows] == expected
    assert [r[0] for r in rows] == [1, 2, 3]
    assert jr.rebuild(j.header, expected).snapshot() == a.snapshot()


def test_replayed_comment_rows_share_their_parse_results_and_damaged_ones_still_fail() -> None:
    """A replay rebuilds each row's parse result once per distinct (intent, items) and shares it; a row whose
    items or intent are damaged is refused as before, and never remembered."""
    rows = [orjson.dumps(["douyin", "7312", f"m{n}", f"u{n}", "buy", [["egg", None, 1, None]], "n"])
            for n in range(3)]
    first, second = led(), led()
    for body in rows:
        jr.apply(first, jr.COMMENT, body)
    shared = [codec._parsed("buy", [["egg", None, 1, None]]) for _ in range(2)]
    assert shared[0] is shared[1]
    assert shared[0].items[0].qty == 1
    assert codec._parsed("buy", [["egg", None, 2, None]]).items[0].qty == 2  # other items, another result
    assert codec._parsed("buy", [["egg", None, 1, "bad_quantity"]]).items[0].reason is not None
    for body in rows:  # the same rows replayed again with the shared results decide the same
        jr.apply(second, jr.COMMENT, body)
    assert first.snapshot() == second.snapshot()
    for damaged in (b'["douyin", "7312", "x", "u", "buy", [["egg", null, 1]], "n"]',  # an item field short
                    b'["douyin", "7312", "x", "u", "nonsense", [], "n"]',  # an intent no livecart writes
                    b'["douyin", "7312", "x", "u", "buy", [["egg", null, 1, "no_such_reason"]], "n"]',
                    b'["douyin", "7312", "x", "u", "buy", 7, "n"]'):  # items that are not a list
        with pytest.raises(JournalError, match="damaged"):
            jr.apply(led(), jr.COMMENT, damaged)
        with pytest.raises(JournalError, match="damaged"):  # and again: the first failure left nothing behind
            jr.apply(led(), jr.COMMENT, damaged)


def test_apply_refuses_unknown_kinds_and_damaged_rows() -> None:
    with pytest.raises(JournalError, match="unknown kind"):
        jr.apply(led(), "z", b"[]")
    with pytest.raises(JournalError, match="damaged"):
        jr.apply(led(), jr.COMMENT, b"{not json")
    with pytest.raises(JournalError, match="cannot be replayed"):
        jr.apply(led(), Kind.RESTOCK, b'["nope", null, 1]')
    with pytest.raises(JournalError, match="damaged"):
        jr.apply(led(), Kind.PAUSE, b"[]")  # a row with too few fields
