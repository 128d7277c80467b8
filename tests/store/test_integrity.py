"""Integrity: chained batch checksums, empty / foreign / newer / cut files refused, verify and repair."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import orjson
import pytest

from livecart.cli import main as cli
from livecart.core.catalogue import Catalogue, Product
from livecart.core.control import Kind
from livecart.core.errors import ForeignDatabase, JournalDamaged, JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult
from livecart.store import codec
from livecart.store.sqlite import SCHEMA_VERSION, SqliteStore, inspect_file, repair_file

CAT = Catalogue((Product("egg", "Eggs", stock=50, presale=5, price=29.9),))


async def write(path: Path, batches: int, per: int = 5, close: bool = True) -> tuple[SqliteStore, Ledger]:
    """A journal of ``batches`` batches of ``per`` comments, buyers named alice-0000, alice-0001 ..."""
    s = await SqliteStore.open(path, catalogue=CAT, hold_seconds=0.0, clock=lambda: 1.0)
    led = Ledger(CAT, clock=lambda: 1.0)
    n = 0
    for _ in range(batches):
        rows = []
        for _ in range(per):
            user = f"alice-{n:04d}"
            c = Comment("p", "r", f"m{n}", user, user, "", 0.0)
            pr = ParseResult(Intent.BUY, (Item("egg", None, 1),))
            led.decide(c, pr)
            rows.append(codec.comment_row(led.seq, 1.0, c, pr))
            n += 1
        await s.append(rows)  # one batch each: the store is idle when each arrives
    if close:
        await s.close()
    return s, led


async def reopen(path: Path) -> Ledger:
    s = await SqliteStore.open(path, catalogue=CAT, hold_seconds=0.0)
    try:
        return await s.rebuild()
    finally:
        await s.close()


def flip(path: Path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(needle)
    data[at + len(needle) - 1] ^= 0x01  # alice-0012 -> alice-0013: still valid JSON, another buyer
    path.write_bytes(bytes(data))


def files(d: Path, pattern: str) -> list[Path]:
    return sorted(d.glob(pattern))


def run_cli(*args: str) -> int:
    return cli.main(list(args))


async def test_every_batch_carries_a_checksum_chained_to_the_one_before(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    await write(p, 4)
    con = sqlite3.connect(p)
    try:
        rows = con.execute("SELECT first, last, body, crc FROM batches ORDER BY first").fetchall()
        schema = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
    finally:
        con.close()
    assert schema == str(SCHEMA_VERSION)
    from livecart.store.sqlite import batch_crc
    prev = 0
    for first, last, body, crc in rows:
        assert crc == batch_crc(first, last, body, prev)
        prev = crc
    # The same body under another predecessor gets another checksum: a batch moved or dropped is noticed.
    assert batch_crc(rows[1][0], rows[1][1], rows[1][2], 0) != rows[1][3]


async def test_a_flipped_byte_in_a_row_is_refused_at_open_naming_the_batch(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    await write(p, 4)
    flip(p, b"alice-0012")  # batch 3 holds comments 10-14
    before = p.read_bytes()
    with pytest.raises(JournalDamaged, match=r"batch 3 \(events 11-15\) fails its checksum") as info:
        await reopen(p)
    assert info.value.batch == 3
    assert "livecart journal repair" in str(info.value)
    assert p.read_bytes() == before  # refused, untouched


async def test_verify_reports_the_bad_batch_and_repair_cuts_back_to_the_last_good_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "j.db"
    _, full = await write(p, 4)
    flip(p, b"alice-0012")
    damaged = p.read_bytes()
    assert run_cli("journal", "verify", str(p)) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out
    assert "batch 3" in out
    assert "events 1-10" in out
    assert run_cli("journal", "repair", str(p)) == 0
    out = capsys.readouterr().out
    assert "kept batches 1-2 (events 1-10)" in out
    backups = [b for b in files(tmp_path, "j.db.bak-*") if not b.name.endswith("-wal")]
    assert len(backups) == 1
    assert backups[0].read_bytes() == damaged
    assert run_cli("journal", "verify", str(p)) == 0
    led = await reopen(p)
    assert led.seq == 10
    assert led.comments == 10
    # Writing goes on from the cut.
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0)
    await s.append([codec.control_row(11, 1.0, Kind.RESTOCK, ("egg", None, 1))])
    await s.close()
    assert inspect_file(p).ok
    assert full.seq == 20


async def test_repair_refuses_to_drop_events_a_whole_snapshot_past_the_damage_still_carries(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Found from outside: run and report read the sale from the latest snapshot and its tail, so a batch damaged
    # before that snapshot goes unnoticed by them (by design: restart reads only the tail); then `journal
    # repair` cut back to before the damage and dropped every later event, all acknowledged.
    p = tmp_path / "j.db"
    s, led = await write(p, 4, close=False)
    assert s.checkpoint(led.seq, led.state())
    await s.snapshot_written()
    await s.close()
    flip(p, b"alice-0007")  # batch 2 (events 6-10), before the snapshot at event 20
    assert (await reopen(p)).snapshot() == led.snapshot()  # run reads the sale whole
    damaged = p.read_bytes()
    assert run_cli("journal", "verify", str(p)) == 1
    out = capsys.readouterr().out
    assert "batch 2 (events 6-10) fails its checksum" in out
    assert "The sale is intact: the snapshot at event 20 is whole" in out
    assert "Repair would drop events 6-20" in out
    assert run_cli("journal", "repair", str(p)) == 1
    err = capsys.readouterr().err
    assert "would drop events 6-20, which were acknowledged" in err
    assert "Nothing was changed" in err
    assert "journal repair --cut" in err
    assert p.read_bytes() == damaged
    assert files(tmp_path, "j.db.bak-*") == []
    # --cut does what the operator asks: the good prefix, the rest in the backup.
    assert run_cli("journal", "repair", "--cut", str(p)) == 0
    assert "kept batches 1-1 (events 1-5)" in capsys.readouterr().out
    assert (await reopen(p)).seq == 5


async def test_an_edited_quantity_is_noticed(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    await write(p, 2)
    con = sqlite3.connect(p)
    con.execute("UPDATE batches SET body = replace(body, '[\"egg\",null,1,null]', '[\"egg\",null,9,null]') "
                "WHERE first = 6")
    con.commit()
    con.close()
    with pytest.raises(JournalDamaged, match="batch 2"):
        await reopen(p)


async def test_a_zero_length_file_is_refused_not_restarted(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    p.write_bytes(b"")
    with pytest.raises(JournalDamaged, match=r"empty \(0 bytes\)"):
        await SqliteStore.open(p, catalogue=CAT)
    assert p.read_bytes() == b""
    with pytest.raises(JournalDamaged, match="empty"):
        await SqliteStore.open(p, readonly=True)


async def test_a_new_journal_never_leaves_an_empty_file_behind(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    s = await SqliteStore.open(p, catalogue=CAT)
    assert p.stat().st_size > 0  # complete before open returns: created aside and renamed into place
    await s.close()
    assert not files(tmp_path, ".j.db.*")


async def test_a_cut_wal_is_refused_and_repair_keeps_its_whole_frames(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    s, _ = await write(live, 6, close=False)
    # What a crash plus a copy cut short leaves: the database and half of its WAL.
    p = tmp_path / "j.db"
    shutil.copy2(live, p)
    wal = (tmp_path / "live.db-wal").read_bytes()
    await s.close()
    page = int.from_bytes(wal[8:12], "big")
    cut = len(wal) // 2
    if (cut - 32) % (page + 24) == 0:
        cut -= 7
    (tmp_path / "j.db-wal").write_bytes(wal[:cut])
    with pytest.raises(JournalDamaged, match="cut short"):
        await reopen(p)
    with pytest.raises(JournalDamaged, match="cut short"):
        await SqliteStore.open(p, readonly=True)
    res = repair_file(p)
    assert res.backup is not None
    assert res.wal_cut
    assert files(tmp_path, res.backup.name + "-wal")[0].read_bytes() == wal[:cut]
    assert inspect_file(p).ok
    led = await reopen(p)
    assert 0 <= led.seq < 30  # what the whole frames held; the rest is in the backup
    assert led.seq == res.kept_events


async def test_repair_of_a_cut_wal_says_so_rather_than_dropped_0_batches(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = tmp_path / "live.db"
    s, _ = await write(live, 6, close=False)
    p = tmp_path / "j.db"
    shutil.copy2(live, p)
    wal = (tmp_path / "live.db-wal").read_bytes()
    await s.close()
    (tmp_path / "j.db-wal").write_bytes(wal[:len(wal) // 2 - 5])
    assert run_cli("journal", "repair", str(p)) == 0
    out = capsys.readouterr().out
    assert "the WAL was cut short; kept its whole frames" in out
    assert "dropped 0 batches" not in out


async def test_a_foreign_sqlite_file_is_refused_by_open_verify_and_repair(tmp_path: Path) -> None:
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = p.read_bytes()
    with pytest.raises(ForeignDatabase, match="another application"):
        await SqliteStore.open(p, catalogue=CAT)
    assert run_cli("journal", "verify", str(p)) == 1
    assert run_cli("journal", "repair", str(p)) == 1
    assert p.read_bytes() == before
    assert not files(tmp_path, "other.db.bak-*")


async def test_a_journal_from_a_newer_format_is_refused_clearly(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    await write(p, 1)
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    before = p.read_bytes()
    for readonly in (False, True):
        with pytest.raises(JournalError, match=r"newer livecart \(journal format 3; this livecart reads formats "
                                               r"1 to 2\)"):
            await SqliteStore.open(p, catalogue=None if readonly else CAT, readonly=readonly)
    assert p.read_bytes() == before


_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE batches (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, ts REAL NOT NULL, body BLOB NOT NULL);
"""


def write_v1(p: Path) -> Ledger:
    """A journal as livecart wrote it before checksums (format 1), with 3 comments in 2 batches."""
    led = Ledger(CAT, clock=lambda: 1.0)
    rows = []
    for n in range(3):
        c = Comment("p", "r", f"m{n}", "bob", "bob", "", 0.0)
        pr = ParseResult(Intent.BUY, (Item("egg", None, 1),))
        led.decide(c, pr)
        rows.append(codec.comment_row(led.seq, 1.0, c, pr))
    con = sqlite3.connect(p, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript("BEGIN;" + _V1_SCHEMA + "PRAGMA application_id=1280721748;COMMIT;")
    meta = {"app": "livecart", "schema": "1", "catalogue": codec.catalogue_json(CAT), "hold_seconds": "0.0",
            "featured": "", "created": "1.0"}
    con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    con.execute("INSERT INTO batches VALUES (1, 2, 1.0, ?)", (orjson.dumps(rows[:2]),))
    con.execute("INSERT INTO batches VALUES (3, 3, 1.0, ?)", (orjson.dumps(rows[2:]),))
    con.close()
    return led


async def test_a_journal_from_before_checksums_still_opens_and_is_upgraded(tmp_path: Path) -> None:
    p = tmp_path / "j.db"
    want = write_v1(p)
    ro = await SqliteStore.open(p, readonly=True)
    assert (await ro.rebuild()).snapshot() == want.snapshot()
    await ro.close()
    s = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0)
    assert (await s.rebuild()).snapshot() == want.snapshot()
    await s.append([codec.control_row(4, 1.0, Kind.RESTOCK, ("egg", None, 1))])
    await s.close()
    rep = inspect_file(p)
    assert rep.ok
    assert rep.schema == SCHEMA_VERSION
    assert rep.unchecked == 2
    assert rep.batches == 3
    led = await reopen(p)
    assert led.seq == 4


@pytest.mark.parametrize("readonly", [True, False])
async def test_a_batch_from_before_checksums_that_cannot_be_decoded_is_named(tmp_path: Path, readonly: bool) -> None:
    p = tmp_path / "j.db"
    write_v1(p)
    con = sqlite3.connect(p)
    con.execute("UPDATE batches SET body = CAST('[[3, 1.0, \"comment\", [' AS BLOB) WHERE first = 3")
    con.commit()
    con.close()
    s = await SqliteStore.open(p, catalogue=None if readonly else CAT, hold_seconds=0.0, readonly=readonly)
    try:
        with pytest.raises(JournalDamaged, match="batch 2 \\(events 3-3\\) cannot be read") as got:
            await s.rebuild()
        assert (got.value.batch, got.value.seq) == (2, 3)
    finally:
        await s.close()


async def test_a_tail_batch_that_cannot_be_decoded_is_refused_not_replayed_from_an_older_snapshot(
        tmp_path: Path) -> None:
    """The tail after a snapshot is decoded while it is replayed; a batch of it that cannot be read (one with no
    checksum, as format 1 wrote) is the journal's damage, named as such, not a reason to pass over the
    snapshot and try the one before (which has the same batch in its tail)."""
    p = tmp_path / "j.db"
    s, led = await write(p, 3, close=False)
    assert s.checkpoint(led.seq, led.state())
    await s.snapshot_written()
    await s.close()
    w = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0, clock=lambda: 1.0)
    more = []
    for n in range(15, 20):
        c = Comment("p", "r", f"m{n}", f"alice-{n:04d}", "", "", 0.0)
        pr = ParseResult(Intent.BUY, (Item("egg", None, 1),))
        led.decide(c, pr)
        more.append(codec.comment_row(led.seq, 1.0, c, pr))
    await w.append(more[:2])
    await w.append(more[2:])
    await w.close()
    con = sqlite3.connect(p)
    assert con.execute("SELECT seq FROM snapshots").fetchall() == [(15,)]
    con.execute("UPDATE batches SET crc = NULL, body = CAST('[[18, 1.0' AS BLOB) WHERE first = 18")
    con.commit()
    con.close()
    r = await SqliteStore.open(p, catalogue=CAT, hold_seconds=0.0)
    try:
        with pytest.raises(JournalDamaged, match="events 18-20\\) cannot be read"):
            await r.rebuild()
        assert r.snapshot_fallbacks == 0
    finally:
        await r.close()


async def test_a_wal_torn_by_kill_9_past_its_last_commit_opens_and_loses_nothing(tmp_path: Path) -> None:
    # kill -9 during a large write (a snapshot's blob, spilled into the WAL before its commit) can stop the
    # write between two pages of the page cache: the WAL then ends in part of a frame, all of it after the
    # writer's last commit, which the wal-index (-shm) the writer leaves behind records. Seen from outside:
    # a `livecart run` killed while writing a snapshot, whose restart was refused as "cut short".
    live = tmp_path / "live.db"
    s, _ = await write(live, 6, close=False)
    other = sqlite3.connect(live, isolation_level=None)
    other.execute("PRAGMA cache_size=2")  # a transaction larger than the cache spills into the WAL uncommitted
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO meta (key, value) VALUES ('big', zeroblob(1000000))")
    # What the kill leaves on disk, with the last (uncommitted) frame written in part.
    db, wal, shm = ((tmp_path / f"live.db{x}").read_bytes() for x in ("", "-wal", "-shm"))
    other.execute("ROLLBACK")
    other.close()
    await s.close()
    page = int.from_bytes(wal[8:12], "big")
    committed = int.from_bytes(shm[16:20], sys.byteorder)  # the wal-index header's mxFrame
    assert committed + 2 < (len(wal) - 32) // (page + 24)  # the spilled, uncommitted frames follow it

    def crashed(name: str, wal_size: int) -> Path:
        p = tmp_path / name
        p.write_bytes(db)
        (tmp_path / f"{name}-shm").write_bytes(shm)
        (tmp_path / f"{name}-wal").write_bytes(wal[:wal_size])
        return p

    p = crashed("j.db", len(wal) - 8)
    assert inspect_file(p).ok
    assert (await reopen(p)).seq == 30
    # A copy cut inside the committed frames, beside the same wal-index, is still refused.
    q = crashed("k.db", 32 + (committed - 1) * (page + 24) + 100)
    with pytest.raises(JournalDamaged, match="cut short"):
        await SqliteStore.open(q, readonly=True)


async def test_a_replay_decodes_its_tail_a_group_at_a_time_and_lets_each_batch_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a restart holds while it replays: the tail's batches as read, and one group decoded, not every entry
    decoded at once; the entries and the ledger are the same as decoding them all first."""
    from livecart.store import sqlite as sq
    monkeypatch.setattr(sq, "DECODE_GROUP", 12)
    p = tmp_path / "j.db"
    _, want = await write(p, 10)  # 10 batches of 5
    s = await SqliteStore.open(p, readonly=True)
    try:
        batches = await s._batches(after=7)
        assert [(b[1], b[2]) for b in batches][:2] == [(6, 10), (11, 15)]
        counted = [0]
        it = s._decoded(batches, 7, counted)
        first = next(it)
        assert first[0] == 8
        # The first group: batches (6-10), (11-15), (16-20) give 3 + 5 + 5 >= 12 entries, and are let go of.
        assert counted == [13]
        assert [b[3] for b in batches[:3]] == [b"", b"", b""]
        assert all(b[3] for b in batches[3:])
        rest = list(it)
        assert [e[0] for e in [first, *rest]] == list(range(8, 51))
        assert counted == [43]
        assert [first, *rest] == await s.entries(after=7)
        assert (await s.rebuild()).snapshot() == want.snapshot()
        assert s.rebuilt_from == (0, 50)
    finally:
        await s.close()
