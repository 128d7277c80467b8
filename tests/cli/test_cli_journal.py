"""``livecart report`` and ``livecart export`` over a journal written by the engine."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sqlite3
from pathlib import Path

import orjson
import pytest

from livecart.cli import main as cli
from livecart.config import load
from livecart.core.records import Comment, Intent, Item, ParseResult
from livecart.runtime.pipeline import Engine

TOML = """
[stream]
name = "cli test"
featured = "egg"

[storage]
path = "j.db"

[[products]]
sku = "egg"
name = "Eggs"
price = 29.9
stock = 2
presale = 5

[[products]]
sku = "tea"
name = "Tea"
price = 38
  [[products.variants]]
  name = "50g"
  stock = 3
"""


def parse(text: str, featured: str | None) -> ParseResult:
    sku, _, rest = text.partition(" ")
    if sku == "egg":
        return ParseResult(Intent.BUY, (Item("egg", None, int(rest)),))
    if sku == "tea":
        return ParseResult(Intent.BUY, (Item("tea", "50g", int(rest)),))
    return ParseResult(Intent.NONE)


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(TOML, encoding="utf-8")
    return p


async def run_sale(cfg_path: Path) -> None:
    eng = await Engine.open(load(cfg_path), parse=parse, clock=lambda: 1_584_250_000.0)
    await eng.submit([
        Comment("douyin", "7312", "m1", "u-1", "张三", "egg 3", 0.0),
        Comment("douyin", "7312", "m2", "u-2", "=HYPERLINK(\"x\")", "tea 1", 0.0),
        Comment("douyin", "7312", "m3", "u-3", "李四", "hello", 0.0),
    ])
    await eng.close()


def test_report_json_has_the_contract_shape(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(run_sale(stream))
    assert cli.main(["report", str(stream), "--json"]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["comments"] == 3
    assert data["outcomes"] == {"presale": 1, "reserved": 2}
    assert data["products"]["egg"] == {"stock": 2, "left": 0, "reserved": 2, "presale": 1, "cap": 5, "queue": 1, "paid": 0}
    assert data["products"]["tea/50g"]["reserved"] == 1


def test_report_text_is_readable(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(run_sale(stream))
    assert cli.main(["report", str(stream)]) == 0
    out = capsys.readouterr().out
    assert "3 comments processed, 3 orders" in out
    assert "tea/50g" in out


def test_export_csv_opens_in_a_spreadsheet(stream: Path, tmp_path: Path) -> None:
    asyncio.run(run_sale(stream))
    target = tmp_path / "orders.csv"
    assert cli.main(["export", str(stream), "--format", "csv", "-o", str(target)]) == 0
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert list(rows[0])[:8] == ["order", "buyer", "product", "variant", "qty", "status", "price", "time"]
    assert [(r["order"], r["buyer"], r["product"], r["variant"], r["qty"], r["status"]) for r in rows] == [
        ("o-000001", "u-1", "egg", "", "2", "reserved"),
        ("o-000002", "u-1", "egg", "", "1", "presale"),
        ("o-000003", "u-2", "tea", "50g", "1", "reserved"),
    ]
    assert rows[0]["price"] == "29.9"
    assert rows[0]["time"] == "2020-03-15 05:26:40"
    assert rows[0]["name"] == "张三"
    assert rows[2]["name"].startswith("'=")  # never a live formula


def test_export_jsonl_one_object_per_order(stream: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    asyncio.run(run_sale(stream))
    assert cli.main(["export", str(stream), "--format", "jsonl"]) == 0
    lines = capsysbinary.readouterr().out.splitlines()
    assert [orjson.loads(x)["order"] for x in lines] == ["o-000001", "o-000002", "o-000003"]


def test_report_never_creates_a_journal(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(stream), "--json"]) == 1
    assert "no journal" in capsys.readouterr().err
    assert not (stream.parent / "j.db").exists()


def test_report_refuses_a_foreign_file(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (stream.parent / "j.db").write_bytes(b"PK\x03\x04 a zip file, not a journal" * 50)
    assert cli.main(["report", str(stream)]) == 1
    assert "not a livecart journal" in capsys.readouterr().err
    assert (stream.parent / "j.db").read_bytes().startswith(b"PK")


def test_report_html_writes_the_sale_summary_as_one_self_contained_file(
        stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(run_sale(stream))
    out = tmp_path / "summary.html"
    assert cli.main(["report", str(stream), "--html", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert "<script src" not in html
    assert "<link" not in html
    assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//", html)  # nothing loaded from elsewhere
    start = html.index('<script id="summary-data" type="application/json">') + len(
        '<script id="summary-data" type="application/json">')
    data = orjson.loads(html[start:html.index("</script>", start)].replace("<\\/", "</"))
    egg = next(p for p in data["products"] if p["key"] == "egg")
    assert (egg["sold"], egg["presale"], egg["paid"], egg["revenue_held"]) == (2, 1, 0, 59.8)
    assert data["comments"] == 3
    assert [e["event"] for e in data["events"]] == ["sold_out", "presale_opened"]
    assert data["history"][0][1:] == [3.0, 3.0]  # 3 comments, 3 orders (2 held + 1 presale) in the first second


def _reports(path: Path) -> tuple[dict[str, object], tuple[int, int], dict[str, object]]:
    """The store's report, where it came from, and the report of a full replay of the entries."""
    from livecart.store.codec import rebuild_entries
    from livecart.store.sqlite import SqliteStore

    async def go() -> tuple[dict[str, object], tuple[int, int], dict[str, object]]:
        j = await SqliteStore.open(path, readonly=True)
        try:
            report = await j.report()
            full = rebuild_entries(j.header, await j.entries()).snapshot()
            return report, j.rebuilt_from, full
        finally:
            await j.close()

    return asyncio.run(go())


def test_report_of_an_ended_sale_is_the_closing_snapshots_and_a_tail_is_replayed(
        stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    asyncio.run(run_sale(stream))
    journal = stream.parent / "j.db"
    report, source, full = _reports(journal)
    assert source == (3, 0)  # the closing snapshot at the last event: no ledger restored
    assert report == full
    assert cli.main(["report", str(stream), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == full

    # A sale that goes on after that snapshot: a report restores it and replays what follows.
    async def more() -> None:
        eng = await Engine.open(load(stream), parse=parse, clock=lambda: 1_584_250_100.0)
        await eng.submit([Comment("douyin", "7312", "m4", "u-4", "王五", "tea 2", 0.0)])
        await eng.close()

    asyncio.run(more())
    # Its closing snapshot as one written before snapshots carried a report: restored, as before.
    from livecart.store.sqlite import _snapshot_crc

    with sqlite3.connect(journal) as db:
        version, body = db.execute("SELECT version, body FROM snapshots WHERE seq = 4").fetchone()
        sale, nl, rest = bytes(body).partition(b"\n")
        state = orjson.loads(sale)
        del state["report"]
        old = orjson.dumps(state) + nl + rest
        db.execute("UPDATE snapshots SET body = ?, crc = ? WHERE seq = 4", (old, _snapshot_crc(4, version, old)))
    report, source, full = _reports(journal)
    assert source == (4, 0)
    assert report == full
    assert report["comments"] == 4
    assert report["products"]["tea/50g"]["reserved"] == 3  # type: ignore[index]

    with sqlite3.connect(journal) as db:  # as if killed before its closing snapshot
        db.execute("DELETE FROM snapshots WHERE seq = 4")
    report, source, full = _reports(journal)
    assert source == (3, 1)
    assert report == full


def test_export_names_each_order_by_the_name_on_its_own_comment(stream: Path,
                                                                capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """The same user id on two platforms (or a viewer who renamed between orders): each order keeps its
    comment's name (export used the latest name of the user id for all of them)."""
    async def sale() -> None:
        eng = await Engine.open(load(stream), parse=parse, clock=lambda: 1_584_250_000.0)
        await eng.submit([Comment("douyin", "7312", "m1", "10086", "张三", "egg 1", 0.0),
                          Comment("kuaishou", "k9", "k1", "10086", "李四", "tea 1", 0.0),
                          Comment("douyin", "7312", "m2", "777", "   ", "egg 1", 0.0)])  # a blank nickname
        await eng.close()

    asyncio.run(sale())
    assert cli.main(["export", str(stream), "--format", "jsonl"]) == 0
    rows = [orjson.loads(x) for x in capsysbinary.readouterr().out.splitlines()]
    assert [(r["order"], r["buyer"], r["name"]) for r in rows] == [("o-000001", "10086", "张三"),
                                                                  ("o-000002", "10086", "李四"),
                                                                  ("o-000003", "777", "777")]


def _snapshot_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("target", ["j.db", "j.db-wal", "j.db-shm", "j.db.lock", "j.db.ctl.json",
                                    "j.db.replies.json", "j.db.routes.json", "s.toml", "link-to-journal",
                                    "j.db.bak-20260101T000000"])
@pytest.mark.parametrize("how", ["export", "html"])
def test_an_output_over_the_config_the_journal_or_its_side_files_is_refused(
        stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, how: str) -> None:
    # `export -o j.db` wrote CSV over the journal (exit 0); `report --html j.db` emptied it before reading.
    asyncio.run(run_sale(stream))
    for side in ("j.db.lock", "j.db.ctl.json", "j.db.replies.json", "j.db.routes.json",
                 "j.db.bak-20260101T000000"):
        if not (tmp_path / side).exists():
            (tmp_path / side).write_bytes(b"kept")
    (tmp_path / "link-to-journal").symlink_to(tmp_path / "j.db")
    before = _snapshot_files(tmp_path)
    out = str(tmp_path / target)
    argv = (["export", str(stream), "--format", "csv", "-o", out] if how == "export"
            else ["report", str(stream), "--html", out])
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "will not write" in err
    assert "Traceback" not in err
    assert _snapshot_files(tmp_path) == before
    assert cli.main(["report", str(stream), "--json"]) == 0


def test_outputs_are_written_whole_or_not_at_all(stream: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # A report that fails (here: no journal yet) used to leave OUT truncated to nothing.
    out = tmp_path / "summary.html"
    out.write_text("last week's summary", encoding="utf-8")
    csv_out = tmp_path / "orders.csv"
    csv_out.write_text("last week's orders", encoding="utf-8")
    assert cli.main(["report", str(stream), "--html", str(out)]) == 1
    assert cli.main(["export", str(stream), "--format", "csv", "-o", str(csv_out)]) == 1
    assert out.read_text(encoding="utf-8") == "last week's summary"
    assert csv_out.read_text(encoding="utf-8") == "last week's orders"
    asyncio.run(run_sale(stream))
    assert cli.main(["report", str(stream), "--html", str(out)]) == 0
    assert cli.main(["export", str(stream), "--format", "csv", "-o", str(csv_out)]) == 0
    assert out.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert csv_out.read_bytes().startswith("\ufefforder,".encode())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _finished_journal(stream: Path) -> Path:
    asyncio.run(run_sale(stream))
    journal = stream.with_name("j.db")
    for side in ("-wal", "-shm"):
        Path(str(journal) + side).unlink(missing_ok=True)
    return journal


def _journal_cmd(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli.main(["journal", *argv])
    got = capsys.readouterr()
    return rc, got.out + got.err


def test_verify_and_repair_report_an_unreadable_batch_or_snapshot_row_without_a_traceback(
        stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Damaged pages can hand back text where an event number belongs: verify and repair used to die with
    # "ValueError: invalid literal for int() with base 10: '\"orders\":{\"sealed\":...'".
    journal = _finished_journal(stream)
    con = sqlite3.connect(journal)
    with con:
        con.execute("""UPDATE snapshots SET version = '"orders":{"sealed":1}'""")
    con.close()
    rc, text = _journal_cmd(["verify", str(stream)], capsys)
    assert rc == 1
    assert "DAMAGED: the snapshot at event" in text
    rc, text = _journal_cmd(["repair", str(stream)], capsys)
    assert rc == 0, text
    assert "kept batches 1-1 (events 1-3)" in text
    assert "the original is kept as" in text
    assert _journal_cmd(["verify", str(stream)], capsys)[0] == 0
    assert cli.main(["report", str(stream), "--json"]) == 0

    con = sqlite3.connect(journal)
    with con:
        con.execute("""UPDATE batches SET last = ',1584270014.917,"c",["douyin"' WHERE first = 1""")
    con.close()
    rc, text = _journal_cmd(["verify", str(stream)], capsys)
    assert rc == 1
    assert "DAMAGED: batch 1 (after event 0) is damaged: its event numbers cannot be read" in text
    assert "journal repair" in text
    rc, text = _journal_cmd(["repair", str(stream)], capsys)
    assert rc == 0, text
    assert "kept batches 1-0 (events 1-0)" in text
    assert "Traceback" not in text


def test_verify_and_repair_of_a_journal_with_bytes_flipped_never_give_a_traceback(
        stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 200 bytes flipped in the middle of a finished sale's journal, and at every 100th byte after it (some of
    # them hit a snapshot row's event number: "invalid literal for int()" from inspect_file before).
    good = _finished_journal(stream).read_bytes()
    middle = len(good) // 2
    for n, at in enumerate(range(middle, len(good) - 200, 100)):
        folder = tmp_path / f"flip{n}"
        folder.mkdir()
        damaged = bytearray(good)
        for i in range(at, at + 200):
            damaged[i] ^= 0x5A
        journal = folder / "j.db"
        journal.write_bytes(damaged)
        rc, text = _journal_cmd(["verify", str(journal)], capsys)
        assert rc in (0, 1), (at, text)
        assert "Traceback" not in text
        verified = rc
        rc, text = _journal_cmd(["repair", str(journal)], capsys)
        assert rc in (0, 1), (at, text)
        if verified == 0:
            assert "nothing to repair" in text
        elif rc == 0:  # repaired: a backup kept, and what is left checks
            assert list(folder.glob("j.db.bak-*")), (at, text)
            assert _journal_cmd(["verify", str(journal)], capsys)[0] == 0, (at, text)
        else:  # refused: one message saying why
            assert text.startswith("livecart journal"), (at, text)
