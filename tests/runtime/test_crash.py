"""The daemon end to end: a replay runs to its end, SIGTERM drains, and kill -9 loses nothing (docs/contract.md §6).

The crash test runs ``livecart run`` as a subprocess over a replayed stream, kills it with SIGKILL at random
points (each time after the journal has grown, read from the file itself), restarts it until it finishes,
and compares ``livecart report --json`` and the order export with a run that never crashed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from livecart.config import load
from livecart.runtime.daemon import serve

CONFIG = """
[stream]
name = "crash test"
featured = "egg-10"
hold_minutes = 30

[storage]
path = "{db}"
durability = "{durability}"
snapshot_events = 40

[[adapters]]
type = "replay"
path = "{replay}"
speed = {speed}
batch = 64

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg", "eggs"]
link = 1
price = 29.9
stock = 300
limit = 5
presale = 120

[[products]]
sku = "noodle-1kg"
name = "Rice noodles"
aliases = ["米粉", "noodles"]
link = 2
price = 19.8
stock = 150
limit = 10

[[products]]
sku = "honey-500"
name = "Wild honey"
aliases = ["蜂蜜", "honey"]
link = 4
price = 68
stock = 60
limit = 3
presale = 30
"""

TEXTS = [
    ("+1", 30), ("鸡蛋来两盒", 12), ("2号链接拍3", 10), ("SOLD honey 2", 8), ("蜂蜜要一瓶", 6), ("扣1", 8),
    ("取消", 4), ("不要了", 2), ("eggs x3", 5), ("主播好！", 10), ("蜂蜜多少钱", 5), ("米粉来5包", 4),
]


def make_replay(path: Path, n: int, seed: int, step: float) -> None:
    rnd = random.Random(seed)
    texts = [t for t, w in TEXTS for _ in range(w)]
    lines = []
    for i in range(n):
        user = f"u-{rnd.randrange(400)}"
        lines.append(orjson.dumps({"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": user,
                                   "name": user, "text": rnd.choice(texts), "ts": 1_584_250_000 + i * step}))
    path.write_bytes(b"\n".join(lines) + b"\n")


def write_config(d: Path, replay: Path, speed: float, durability: str = "fsync") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "stream.toml"
    cfg.write_text(CONFIG.format(db=d / "journal.db", replay=replay, speed=speed, durability=durability),
                   encoding="utf-8")
    return cfg


def livecart(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "livecart.cli.main", *args], capture_output=True, timeout=timeout,
                          check=False)


def start(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "livecart.cli.main", "run", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def read_row(db: Path, query: str) -> tuple[Any, ...] | None:
    """The first row of ``query`` on the journal file, read-only (None while the file or its schema does not
    exist yet, or when there is no row)."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row: tuple[Any, ...] | None = con.execute(query).fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:  # created but no schema yet
        return None
    return row


def journal_events(db: Path) -> int:
    """Events committed so far, read from the file (0 while it does not exist yet)."""
    row = read_row(db, "SELECT coalesce(max(last), 0) FROM batches")
    return 0 if row is None else int(row[0])


def wait_for_events(db: Path, proc: subprocess.Popen[bytes], at_least: int, deadline: float = 60.0) -> bool:
    """Poll the journal until it holds ``at_least`` events; False if the process ended first."""
    limit = time.monotonic() + deadline
    while time.monotonic() < limit:
        if journal_events(db) >= at_least:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)  # polling interval, bounded by the deadline above; nothing waits on a fixed sleep
    raise AssertionError(f"the journal did not reach {at_least} events in {deadline}s")


def report(cfg: Path) -> dict[str, object]:
    r = livecart("report", str(cfg), "--json")
    assert r.returncode == 0, r.stderr.decode()
    data: dict[str, object] = orjson.loads(r.stdout)
    return data


def orders(cfg: Path) -> list[tuple[object, ...]]:
    r = livecart("export", str(cfg), "--format", "jsonl")
    assert r.returncode == 0, r.stderr.decode()
    keys = ("order", "buyer", "product", "variant", "qty", "status", "comment")
    return [tuple(orjson.loads(x)[k] for k in keys) for x in r.stdout.splitlines()]


@pytest.mark.slow
def test_kill_9_at_random_points_then_restart_equals_an_uncrashed_run(tmp_path: Path) -> None:
    n = 3000
    replay = tmp_path / "comments.jsonl"
    # Paced so one pass takes about two seconds: long enough to be killed mid-way several times.
    make_replay(replay, n, seed=11, step=0.002)
    clean_cfg = write_config(tmp_path / "clean", replay, speed=0)
    r = livecart("run", str(clean_cfg))
    assert r.returncode == 0, r.stderr.decode()
    expected = report(clean_cfg)
    assert expected["comments"] == n

    cfg = write_config(tmp_path / "crashy", replay, speed=3)
    db = tmp_path / "crashy" / "journal.db"
    rnd = random.Random(5)
    kills = 0
    for _ in range(4):
        proc = start(cfg)
        target = journal_events(db) + rnd.randrange(100, 700)
        if wait_for_events(db, proc, target):
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            kills += 1
        else:
            proc.communicate(timeout=30)
            assert proc.returncode == 0
            break
    assert kills >= 3, "the run ended before it could be killed three times; slow the replay down"
    # Snapshots every 40 events: the kills landed between, and during, snapshot writes.
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM snapshots").fetchone()[0] >= 1
    finally:
        con.close()
    # The journal of a killed daemon (WAL not checkpointed) reads fine, read-only.
    mid = report(cfg)["comments"]
    assert isinstance(mid, int)
    assert 0 < mid < n
    for _ in range(5):
        proc = start(cfg)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        raise AssertionError(f"restart failed ({proc.returncode}): {err.decode()}")
    assert report(cfg) == expected
    assert orders(cfg) == orders(clean_cfg)


def kept_position(db: Path) -> dict[str, int] | None:
    """The replay adapter's position kept in the journal, read from the file (None: none yet)."""
    row = read_row(db, "SELECT value FROM meta WHERE key = 'position:replay-0'")
    return None if row is None else dict(orjson.loads(row[0]))


@pytest.mark.slow
def test_after_kill_9_the_replay_goes_on_from_its_kept_position_and_ends_as_an_uncrashed_run(
        tmp_path: Path) -> None:
    """The replay keeps its position in the journal as its batches become durable; killed with SIGKILL once
    one is there, the restarted daemon goes on from that line instead of the first (a 10M-comment recording
    killed near its end was otherwise sent again whole, each old comment an index lookup), and the sale ends
    as a run that never crashed."""
    n = 3000
    replay = tmp_path / "comments.jsonl"
    make_replay(replay, n, seed=12, step=0.002)
    clean_cfg = write_config(tmp_path / "clean", replay, speed=0)
    assert livecart("run", str(clean_cfg)).returncode == 0
    cfg = write_config(tmp_path / "crashy", replay, speed=2)
    db = tmp_path / "crashy" / "journal.db"
    proc = start(cfg)
    limit = time.monotonic() + 60
    kept = None
    while kept is None and time.monotonic() < limit and proc.poll() is None:
        kept = kept_position(db)
        time.sleep(0.01)  # polling interval, bounded by the deadline above
    assert kept is not None, "no position was kept before the replay ended; slow the replay down"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    kept = kept_position(db)
    assert kept is not None
    assert 0 < kept["line"] < n
    assert journal_events(db) >= kept["line"]  # never ahead of the comments it follows
    proc = start(cfg)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    log = err.decode()
    assert f"going on from line {kept['line'] + 1} (byte {kept['offset']})" in log
    assert f"replay-0: {n - kept['line']} received" in log
    assert report(cfg) == report(clean_cfg)
    assert orders(cfg) == orders(clean_cfg)
    assert kept_position(db) == {**kept_position(db), "line": n}  # at the end now: a third run reads nothing
    r = livecart("run", str(cfg))
    assert r.returncode == 0
    assert "replay-0: 0 received" in r.stderr.decode()


def test_a_replay_runs_to_its_end_and_the_daemon_exits_0(tmp_path: Path) -> None:
    replay = tmp_path / "c.jsonl"
    make_replay(replay, 200, seed=1, step=0.01)
    cfg = write_config(tmp_path / "s", replay, speed=0)
    assert asyncio.run(serve(load(cfg))) == 0
    first = report(cfg)
    assert first["comments"] == 200
    # Running again over the same input changes nothing: every comment is recognised.
    assert asyncio.run(serve(load(cfg))) == 0
    assert report(cfg) == first


def test_a_bad_line_in_the_replay_is_counted_not_fatal(tmp_path: Path) -> None:
    replay = tmp_path / "c.jsonl"
    make_replay(replay, 20, seed=2, step=0.01)
    with open(replay, "ab") as f:
        f.write(b"{not json\n")
    cfg = write_config(tmp_path / "s", replay, speed=0)
    assert asyncio.run(serve(load(cfg))) == 0
    assert report(cfg)["comments"] == 20


def test_sigterm_drains_flushes_and_exits_0(tmp_path: Path) -> None:
    replay = tmp_path / "c.jsonl"
    make_replay(replay, 2000, seed=3, step=0.01)  # 20 s at pace: SIGTERM arrives long before the end
    cfg = write_config(tmp_path / "s", replay, speed=1, durability="os")
    db = tmp_path / "s" / "journal.db"
    proc = start(cfg)
    try:
        assert wait_for_events(db, proc, 20)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err.decode()
    seen = report(cfg)["comments"]
    assert isinstance(seen, int)
    assert 20 <= seen < 2000


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], deadline: float = 60.0) -> None:
    limit = time.monotonic() + deadline
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the daemon ended early: {proc.communicate()[1].decode()}")
        if time.monotonic() > limit:
            raise AssertionError(f"{path} did not appear in {deadline}s")
        time.sleep(0.01)  # polling interval, bounded by the deadline above


def test_a_second_daemon_is_refused_and_the_first_keeps_its_controls(tmp_path: Path) -> None:
    replay = tmp_path / "c.jsonl"
    make_replay(replay, 5000, seed=4, step=0.01)  # 50 s at pace: the first daemon runs throughout
    cfg = write_config(tmp_path / "s", replay, speed=1, durability="os")
    db = tmp_path / "s" / "journal.db"
    state = Path(str(db) + ".ctl.json")
    first = start(cfg)
    try:
        wait_for_file(state, first)
        assert wait_for_events(db, first, 5)
        before = state.read_bytes()
        t0 = time.monotonic()
        second = livecart("run", str(cfg), timeout=60)
        took = time.monotonic() - t0
        err = second.stderr.decode()
        assert second.returncode == 2, err
        assert "Traceback" not in err
        assert f"pid {first.pid}" in err
        assert "started " in err
        assert "controls at http://127.0.0.1:" in err
        assert took < 15  # refused at once: it did not wait for the first to finish (generous for a busy box)
        # It touched none of the first daemon's files: the control state is the first's, and ctl still works.
        assert state.read_bytes() == before
        r = livecart("ctl", str(cfg), "status")
        assert r.returncode == 0, r.stderr.decode()
        answer = orjson.loads(r.stdout)
        assert answer["ok"], answer
        assert b"crash test" in r.stdout
        # A journal command that writes is refused the same way.
        r = livecart("journal", "repair", str(db))
        assert r.returncode == 2, r.stderr.decode()
        assert f"pid {first.pid}" in r.stderr.decode()
        # The same journal by another name (a symlink to it, a path through a symlinked folder, a relative
        # path with ..) is the same journal: refused the same way.
        (tmp_path / "link.db").symlink_to(db)
        (tmp_path / "dirlink").symlink_to(tmp_path / "s")
        other = tmp_path / "other"
        other.mkdir()
        for alias in (tmp_path / "link.db", tmp_path / "dirlink" / "journal.db", Path("..") / "s" / "journal.db"):
            alias_cfg = other / "stream.toml"
            alias_cfg.write_text(cfg.read_text(encoding="utf-8").replace(str(db), str(alias)), encoding="utf-8")
            r = subprocess.run([sys.executable, "-m", "livecart.cli.main", "run", "stream.toml"], cwd=other,
                               capture_output=True, timeout=60, check=False)
            assert r.returncode == 2, (alias, r.stderr.decode())
            assert f"pid {first.pid}" in r.stderr.decode()
            # ... and its controls answer through that name too (the refusal says to use them).
            r = subprocess.run([sys.executable, "-m", "livecart.cli.main", "ctl", "stream.toml", "status"],
                               cwd=other, capture_output=True, timeout=60, check=False)
            assert r.returncode == 0, (alias, r.stderr.decode())
        # A hard link is the same file by a name no path resolves to: refused too.
        os.link(db, tmp_path / "hard.db")
        alias_cfg.write_text(cfg.read_text(encoding="utf-8").replace(str(db), str(tmp_path / "hard.db")),
                             encoding="utf-8")
        r = subprocess.run([sys.executable, "-m", "livecart.cli.main", "run", "stream.toml"], cwd=other,
                           capture_output=True, timeout=60, check=False)
        assert r.returncode == 2, r.stderr.decode()
        assert "hard link" in r.stderr.decode()
        assert not (tmp_path / "hard.db-wal").exists()
        assert state.read_bytes() == before
        # Readers work beside the running daemon.
        assert livecart("report", str(cfg), "--json").returncode == 0
        assert livecart("journal", "verify", str(db)).returncode == 0
    finally:
        first.send_signal(signal.SIGTERM)
        _, err_first = first.communicate(timeout=60)
    assert first.returncode == 0, err_first.decode()
