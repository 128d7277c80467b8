"""``livecart report FILE [--json]``, ``livecart export FILE --format csv|jsonl`` (docs/contract.md §5) and
``livecart journal verify|repair FILE``.

Both read the journal of FILE's stream read-only: they never create a journal (a stream that has not run
is an error), never write to one and take no lock, so they run beside a live daemon without slowing it
(SQLite WAL readers do not block the writer). The state is rebuilt from the journal alone, with the
catalogue the journal was started with - its latest snapshot plus the events after it - so it is exactly
what the daemon announced. With ``[storage] backend = "jetstream"`` both read the sale's log in the cluster
instead (the state up to the log's end when they start; docs/contract.md §7).

The CSV is for spreadsheets: UTF-8 with a byte-order mark (so Excel reads Chinese names), one row per order
with the columns ``order, buyer, product, variant, qty, status, price, time`` (then ``name, platform, room,
comment``); ``time`` is UTC as ``YYYY-MM-DD HH:MM:SS``; a text cell that a spreadsheet would take for a
formula (starting with ``= + - @``) is prefixed with ``'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import io
import math
import os
import sqlite3
import struct
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from livecart.config import load_for_reading
from livecart.core.errors import JournalError
from livecart.core.events import EventDetector, outcome_key
from livecart.core.ledger import Ledger
from livecart.core.records import Outcome, Status
from livecart.core.settings import Config
from livecart.store.codec import COMMENT, Entry, Header, apply_data, rebuild_entries
from livecart.store.lock import lock_path
from livecart.store.sqlite import SqliteStore, inspect_file, repair_file

if TYPE_CHECKING:
    from livecart.store.jetstream import SaleState

COLUMNS = ("order", "buyer", "product", "variant", "qty", "status", "price", "time",
           "name", "platform", "room", "comment")


@contextlib.asynccontextmanager
async def _journal(path: Any) -> AsyncIterator[SqliteStore]:
    """The journal at ``path`` open for reading (never created, never written), closed after."""
    j = await SqliteStore.open(path, readonly=True)
    try:
        yield j
    finally:
        await j.close()


async def _read(path: Any, with_names: bool) -> tuple[Ledger, dict[str, str]]:
    async with _journal(path) as j:
        ledger = await j.rebuild()  # the latest snapshot plus the events after it
        # Display names are not ledger state: an export reads them from every comment.
        names = _names(await j.entries()) if with_names else {}
    return ledger, names


async def _report(path: Any) -> dict[str, Any]:
    async with _journal(path) as j:
        return await j.report()


async def _entries(path: Any) -> tuple[Header, list[Entry]]:
    async with _journal(path) as j:
        return j.header, await j.entries()


def _names(entries: list[Entry]) -> dict[str, str]:
    names: dict[str, str] = {}
    for _, _, kind, data in entries:
        if kind == COMMENT and len(data) > 6 and data[6]:
            names[data[3]] = data[6]
    return names


async def _cluster_state(cfg: Config, *, snapshot: bool = True, record: list[Entry] | None = None) -> SaleState:
    """The sale's state from its JetStream log (docs/contract.md §7), from any machine reaching the cluster
    (``snapshot`` and ``record`` as :func:`~livecart.store.jetstream.load_state` takes them)."""
    from livecart.core.parser import Parser  # imported here: `report` on a journal file needs neither
    from livecart.store.jetstream import SaleLog, load_state, parser_json

    parse = Parser.from_config(cfg).parse
    sale_log = await SaleLog.open(cfg.storage.servers, cfg.storage.sale)
    try:
        # The log's comments are parsed here again: by another parser, the report would not be the sale's.
        await sale_log.check_parser(parser_json(cfg), keep=False)
        return await load_state(sale_log, parse, snapshot=snapshot, record=record)
    finally:
        await sale_log.close()


async def _read_cluster(cfg: Config) -> tuple[Ledger, dict[str, str]]:
    state = await _cluster_state(cfg)
    return state.ledger, state.names


async def _cluster_entries(cfg: Config) -> tuple[Header, list[Entry]]:
    """The journal entries a SQLite journal would hold for the sale in the cluster: its whole log replayed
    (a snapshot has no history, and the summary's timeline needs all of it), each ledger event recorded as
    the entry the SQLite engine writes, stamped with the log's time of its message."""
    entries: list[Entry] = []
    state = await _cluster_state(cfg, snapshot=False, record=entries)
    return state.header, entries


def _ledger(file: str, with_names: bool = False) -> tuple[Ledger, dict[str, str]]:
    cfg = load_for_reading(file)
    if cfg.storage.backend == "jetstream":
        return asyncio.run(_read_cluster(cfg))
    return asyncio.run(_read(cfg.storage.path, with_names))


#: Most points of the timeline in the HTML summary (the sale is cut into at most this many equal steps).
TIMELINE_POINTS = 600


def summary(file: str) -> dict[str, Any]:
    """The after-sale summary of ``file``'s stream from its journal: what the console's summary page shows
    (per product sold, presale, paid, revenue; comments and orders per second over the sale; the events)."""
    cfg = load_for_reading(file)
    if cfg.storage.backend == "jetstream":
        header, entries = asyncio.run(_cluster_entries(cfg))
    else:
        header, entries = asyncio.run(_entries(cfg.storage.path))
    comment_ts = [ts for _, ts, kind, _ in entries if kind == COMMENT]
    order_ts: list[float] = []
    events: list[dict[str, Any]] = []
    detector = EventDetector(header.catalogue)
    ledger: list[Ledger] = []
    before: dict[str, dict[str, Any]] = {}

    def on_outcomes(outs: list[Outcome]) -> None:
        order_ts.extend(o.ts for o in outs if o.status is Status.RESERVED or o.status is Status.PRESALE)
        if not ledger:
            return
        keys = {k for o in outs if (k := outcome_key(o)) is not None}
        products = ledger[0].snapshot()["products"]
        after = {k: {**products[k], "presale_cap": products[k]["cap"]} for k in keys if k in products}
        for e in detector.detect({k: before[k] for k in after if k in before}, after, outs):
            events.append({"kind": "event", "event": e.kind.value, "key": e.key, "ts": outs[0].ts, **e.data})
        before.update(after)

    # A fresh ledger for the header's catalogue, replayed here entry by entry so that the events can read
    # its figures after each batch (rebuild_entries hands its ledger back only at the end).
    ledger.append(rebuild_entries(header, []))
    final = _replay(header, entries, ledger[0], on_outcomes)
    snap = final.snapshot()
    history: list[list[float]] = []
    if comment_ts:
        t0, t1 = comment_ts[0], max(comment_ts[-1], order_ts[-1] if order_ts else 0.0)
        step = max(1.0, float(math.ceil((t1 - t0 + 1) / TIMELINE_POINTS)))
        n = int((t1 - t0) // step) + 1
        cs, os_ = [0] * n, [0] * n
        for ts in comment_ts:
            cs[min(n - 1, max(0, int((ts - t0) // step)))] += 1
        for ts in order_ts:
            os_[min(n - 1, max(0, int((ts - t0) // step)))] += 1
        history = [[round(t0 + i * step, 1), round(cs[i] / step, 1), round(os_[i] / step, 1)] for i in range(n)]
    products = {k: {**p, "held": p["reserved"] - p["paid"]} for k, p in snap["products"].items()}
    names = {p.sku: p.name for p in header.catalogue.products}
    prices = {p.sku: p.price for p in header.catalogue.products}
    for p in header.catalogue.products:
        for v in p.variants:
            names[f"{p.sku}/{v.name}"] = f"{p.name} · {v.name}"
            prices[f"{p.sku}/{v.name}"] = v.price if v.price is not None else p.price
    language = str(cfg.sections.get("replies", {}).get("language", "zh") or "zh")
    from livecart.runtime.console import summary_data  # the console (and aiohttp) only for the summary

    return summary_data(cfg.stream.name, products, names, prices, snap, history, events, language=language)


def _replay(header: Header, entries: list[Entry], ledger: Ledger,
            on_outcomes: Callable[[list[Outcome]], None]) -> Ledger:
    """:func:`rebuild_entries` into a given fresh ledger (its clock follows the entries' times)."""
    now = [header.created]
    ledger.clock = lambda: now[0]
    for seq, ts, kind, data in entries:
        now[0] = ts
        out = apply_data(ledger, kind, data)
        if ledger.seq != seq:
            raise JournalError(f"journal is inconsistent at event {seq} (replay reached {ledger.seq})")
        if out:
            on_outcomes(out)
    return ledger


def report_main(args: argparse.Namespace) -> int:
    """Print the state in the journal of ``args.file``'s stream; ``args.json`` for one JSON object;
    ``args.html`` writes the after-sale summary as one self-contained HTML file instead."""
    if getattr(args, "html", None):
        from livecart.runtime.console import summary_html

        if (why := refused_output(args.html, args.file)) is not None:
            print(f"livecart report: {why}", file=sys.stderr)
            return 2
        # Written only once the whole page is made, through a temporary file: a report that fails (no
        # journal, a damaged one) leaves an existing OUT as it was.
        write_output(args.html, summary_html(summary(args.file)).encode("utf-8"))
        print(f"livecart report: wrote {args.html}", file=sys.stderr)
        return 0
    _one_pass()
    cfg = load_for_reading(args.file)
    if cfg.storage.backend == "jetstream":
        snap = asyncio.run(_read_cluster(cfg))[0].snapshot()
    else:
        snap = asyncio.run(_report(cfg.storage.path))
    if args.json:
        sys.stdout.write(orjson.dumps(snap).decode() + "\n")
        return 0
    out = [f"{snap['comments']:,} comments processed, {snap['orders']:,} orders, featured: "
           f"{snap['featured'] or '-'}"]
    out.append("outcomes: " + (", ".join(f"{k} {v:,}" for k, v in snap["outcomes"].items()) or "none"))
    width = max((len(k) for k in snap["products"]), default=7)
    out.append(f"{'product':<{width}}  {'stock':>8} {'left':>8} {'reserved':>9} {'presale':>8} {'cap':>6}")
    for key, p in snap["products"].items():
        out.append(f"{key:<{width}}  {p['stock']:>8,} {p['left']:>8,} {p['reserved']:>9,} {p['presale']:>8,} "
                   f"{p['cap']:>6,}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _rows(ledger: Ledger, names: dict[str, str]) -> Iterator[dict[str, Any]]:
    for o in ledger.orders():
        name = ledger.order_name(o["order"]) or names.get(o["user"], o["user"])
        yield {
            "order": o["order"], "buyer": o["user"], "product": o["sku"], "variant": o["variant"],
            "qty": o["qty"], "status": o["status"], "price": o["price"],
            "time": datetime.fromtimestamp(o["time"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "name": name if name.strip() else o["user"], "platform": o["platform"],  # "   " is no name
            "room": o["room"],
            "comment": o["comment"],
        }


def _one_pass() -> None:
    """No cyclic garbage collection in a process that reads a journal once and exits (``report``,
    ``export``): what it builds (the decoded snapshot, an object per order) is acyclic, and a collector
    would scan it again and again for nothing (~40 ms at 10M comments: the first young collection after a
    restore walks every object the restore made)."""
    gc.disable()


def export_main(args: argparse.Namespace) -> int:
    """Write one row per order of ``args.file``'s stream as ``args.format`` to ``args.output``."""
    if args.output not in (None, "-") and (why := refused_output(args.output, args.file)) is not None:
        print(f"livecart export: {why}", file=sys.stderr)
        return 2
    _one_pass()
    ledger, names = _ledger(args.file, with_names=True)
    if args.format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow(COLUMNS)
        for row in _rows(ledger, names):
            w.writerow([_safe(row[c]) if row[c] is not None else "" for c in COLUMNS])
        data = ("\ufeff" + buf.getvalue()).encode("utf-8")
    else:
        data = b"".join(orjson.dumps(row) + b"\n" for row in _rows(ledger, names))
    if args.output in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_output(args.output, data)
    return 0


#: Files livecart keeps beside a journal (its name + one of these): SQLite's WAL, shared memory and rollback
#: journal, the writer's lock, the daemon's control address, reply routes and reply progress.
SIDE_SUFFIXES = ("-wal", "-shm", "-journal", ".lock", ".ctl.json", ".routes.json", ".replies.json")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # a hard link is another name of the same file
    except OSError:
        return False


def refused_output(out: str, file: str) -> str | None:
    """Why ``out`` must not be written as the output of a command reading ``file``'s stream, or None.

    Refused: the stream config itself, its journal, and every file livecart keeps beside the journal
    (:data:`SIDE_SUFFIXES`, the control address of a JetStream sale, the backups ``journal repair`` keeps),
    compared after symlinks are followed (and as the same file for a hard link). Writing one of them over
    used to destroy the sale's history or its config."""
    target = Path(out)
    if _same_file(target, Path(file)):
        return f"will not write the output over the stream config {file}; name another file"
    cfg = load_for_reading(file)
    journal = Path(cfg.storage.path)
    if _same_file(target, journal):
        return f"will not write the output over the sale's journal {journal}; name another file"
    suffixes = [*SIDE_SUFFIXES, f".{cfg.storage.sale}.ctl.json"] if cfg.storage.sale else list(SIDE_SUFFIXES)
    real = target.resolve()
    for base in {journal, journal.resolve()}:
        sides = [Path(str(base) + s) for s in suffixes] + [lock_path(base)]
        if any(real == side.resolve() or _same_file(target, side) for side in sides) or (
                real.parent == base.resolve().parent and real.name.startswith(base.name + ".bak-")):
            return (f"will not write the output over {out}: livecart keeps it beside the sale's journal "
                    f"{journal}; name another file")
    return None


def write_output(out: str, data: bytes) -> None:
    """Write ``data`` to the file ``out`` whole or not at all: into a temporary file in the same folder,
    flushed to disk, then renamed over ``out`` (an existing file keeps its permissions). Nothing is
    truncated before the output is ready, and an error leaves an existing ``out`` as it was. A symlink
    ``out`` has the file it points to replaced."""
    real = Path(os.path.realpath(out))
    try:
        mode: int | None = real.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _journal_path(file: str) -> Path:
    """FILE as given to ``livecart journal``: a stream config (its ``[storage] path``) or the journal itself."""
    p = Path(file)
    if p.suffix == ".toml":
        return load_for_reading(file).storage.path
    return p


def journal_main(args: argparse.Namespace) -> int:
    """``livecart journal verify FILE`` (exit 0 whole, 1 damaged) and ``livecart journal repair FILE``.

    Damage that the checks do not foresee (content that fails to decode in a way no check names) is still
    reported as damage, in one message with what to do, never as a traceback."""
    path = _journal_path(args.file)
    try:
        return _journal_action(args, path)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error, sqlite3.DatabaseError) as exc:
        what = f"{type(exc).__name__}: {exc}"
        what = what if len(what) <= 160 else what[:157] + "..."
        if args.journal_command == "verify":
            print(f"{path}: DAMAGED: part of it cannot be decoded ({what}). `livecart journal repair {args.file}` "
                  "keeps a backup copy and cuts back to the last good batch, or restore it from a backup")
        else:
            print(f"livecart journal repair: {path} cannot be repaired: part of it cannot be decoded ({what}). "
                  "The journal was not changed; restore it from a backup", file=sys.stderr)
        return 1


def _journal_action(args: argparse.Namespace, path: Path) -> int:
    if args.journal_command == "verify":
        rep = inspect_file(path)
        print(f"{path}: journal format {rep.schema}, {rep.batches:,} batches, {rep.snapshots:,} snapshots")
        if rep.unchecked:
            print(f"  {rep.unchecked:,} batches were written before checksums (format 1): checked for order only")
        if rep.problem is not None:
            print(f"  DAMAGED: {rep.problem}")
            print(f"  the good part: batches 1-{rep.good_batches:,} (events 1-{rep.good_events:,})", end="")
            if rep.carried is None:
                print(f"; `livecart journal repair {args.file}` keeps a backup copy and cuts back to it")
            else:
                print(f".\n  The sale is intact: the snapshot at event {rep.carried:,} is whole and lies past the "
                      f"damage, and run, report and export read the sale from it and the batches after it. "
                      f"Repair would drop events {rep.good_events + 1:,}-{rep.last_event:,} (it refuses without "
                      f"--cut); keep the file, and copy it aside for the record.")
        for seq in rep.bad_snapshots:
            if seq in rep.late_snapshots:
                if seq == rep.carried:
                    continue
                print(f"  the snapshot at event {seq:,} is whole but of events past the good part (a cut drops it)")
            else:
                print(f"  DAMAGED: the snapshot at event {seq:,} fails its checksum (repair drops it)")
        for what in rep.unreadable_snapshots:
            print(f"  DAMAGED: a snapshot is damaged past reading ({what}); repair drops it")
        if rep.ok:
            print(f"  OK: events 1-{rep.good_events:,} check")
            return 0
        return 1
    res = repair_file(path, cut=args.cut)
    if res.backup is None:
        print(f"{path}: whole ({res.inspection.good_events:,} events); nothing to repair, nothing changed")
        return 0
    if res.wal_cut:
        print(f"{path}: the WAL was cut short; kept its whole frames: batches 1-{res.kept_batches:,} (events "
              f"1-{res.kept_events:,}) and {res.inspection.snapshots - res.dropped_snapshots} snapshots. What the cut "
              "frames held (the end of a commit the disk never finished) is only in the backup")
    else:
        print(f"{path}: kept batches 1-{res.kept_batches:,} (events 1-{res.kept_events:,}); dropped "
              f"{res.inspection.batches - res.kept_batches:,} batches and {res.dropped_snapshots} snapshots")
    print(f"  the original is kept as {res.backup}")
    return 0
