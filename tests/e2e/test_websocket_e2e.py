"""``livecart run`` as a subprocess fed through its WebSocket adapter (server mode, port 0).

* a live session: comments in, replies back on the same socket, host controls through ``livecart ctl``
  (restock, pay, cancel, feature, pause/resume), the status endpoints, a hook endpoint that hangs without
  stalling orders, SIGTERM -> exit 0, then ``livecart report --json``;
* SIGTERM mid-stream, restart, the sender re-sends everything: the report and the export equal those of
  an uninterrupted run (nothing lost, nothing doubled).
"""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.proc import Daemon, HangingHttp, livecart, wait_for

CONFIG = """
[stream]
name = "E2E websocket sale"
featured = "egg-10"
hold_minutes = 30

[storage]
path = "{db}"
durability = "os"

[daemon]
hook_timeout = 1
drain_seconds = 1

[control]
token = "s3cret"

[replies]
language = "en"

[[adapters]]
type = "websocket"
name = "companion"
mode = "server"
port = 0
{extra}

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg", "eggs"]
link = 1
price = 29.9
stock = {stock}
limit = 5
presale = 20

[[products]]
sku = "honey-500"
name = "Wild honey"
aliases = ["蜂蜜", "honey"]
link = 4
price = 68
stock = 30
limit = 3
"""

TEXTS = ["+1", "鸡蛋来两盒", "蜂蜜要一瓶", "egg x3", "主播好！", "取消", "SOLD honey 2", "4号链接拍1"]


def write(d: Path, *, stock: int, extra: str = "") -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    db = d / "journal.db"
    cfg = d / "stream.toml"
    cfg.write_text(CONFIG.format(db=db, stock=stock, extra=extra), encoding="utf-8")
    return cfg, db


def comments(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        user = f"u-{rnd.randrange(120)}"
        out.append({"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": user, "name": f"buyer {user}",
                    "text": rnd.choice(TEXTS), "ts": 1_700_000_000 + i})
    return out


def report(cfg: Path) -> dict[str, Any]:
    r = livecart("report", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = orjson.loads(r.stdout)
    return data


def export(cfg: Path) -> list[dict[str, Any]]:
    r = livecart("export", str(cfg), "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    return [orjson.loads(line) for line in r.stdout.splitlines()]


def test_a_live_session_over_websocket_with_ctl_status_replies_and_a_hanging_hook(tmp_path: Path) -> None:
    hook = HangingHttp()
    extra = f'\n[[hooks]]\ntype = "http_post"\nurl = "{hook.url}"\ntimeout = 30\nretries = 0\n'
    cfg, db = write(tmp_path, stock=40, extra=extra)
    daemon = Daemon(cfg, db)
    try:
        state = daemon.start()
        assert state["stream"] == "E2E websocket sale"
        ws_url = state["adapters"]["companion"]
        assert ws_url.startswith("ws://127.0.0.1:")
        with connect(ws_url) as ws:
            for i in range(30):
                ws.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": f"u-{i}",
                                      "name": f"买家{i}", "text": "鸡蛋来两盒", "ts": 1_700_000_000 + i}).decode())
            wait_for(lambda: daemon.api()["comments"] == 30, "30 comments processed")
            # The hook endpoint has taken a call and will never answer; ordering went on regardless.
            wait_for(lambda: hook.requests >= 1, "the hook to be called")
            api = daemon.api()
            assert api["products"]["egg-10"] == {"stock": 40, "left": 0, "reserved": 40, "presale": 20}
            assert api["outcomes"] == {"reserved": 20, "presale": 10}
            # Replies come back on the socket the comments came in on, for durable outcomes only.
            # Replies are JSON arrays; acknowledgement frames (objects) say what is durable.
            replies: list[dict[str, Any]] = []
            acked = 0
            while len(replies) < 30 or acked < 30:
                frame = orjson.loads(ws.recv(timeout=10))
                if isinstance(frame, dict):
                    assert frame["type"] == "ack"
                    acked = frame["frames"]
                else:
                    replies.extend(frame)
            assert all(r["type"] == "reply" and r["outcome"]["seq"] is not None for r in replies)
            assert replies[0]["text"].startswith("@买家0 reserved Free-range eggs x2, order o-000001")

            # Host controls through `livecart ctl` (token from the config).
            rc, answer, err = daemon.ctl("restock", "egg-10", "5")
            assert rc == 0, err
            assert [o["status"] for o in answer["result"]["outcomes"]] == ["promoted"] * 3  # 2 + 2 + 1 of a 2
            rc, answer, _ = daemon.ctl("pay", "o-000001")
            assert rc == 0
            assert answer["result"]["outcomes"][0]["status"] == "paid"
            rc, answer, _ = daemon.ctl("取消", "o-000002")
            assert rc == 0
            assert answer["result"]["outcomes"][0]["status"] == "cancelled"
            rc, answer, err = daemon.ctl("pay", "o-999999")
            assert rc == 1
            assert "no order" in err
            rc, answer, _ = daemon.ctl("上链接", "honey-500")
            assert answer["result"]["featured"] == "honey-500"

            rc, answer, _ = daemon.ctl("pause")
            assert rc == 0
            assert answer["result"]["paused"] is True
            for i in range(30, 35):
                ws.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": f"m-{i}", "user": f"v-{i}",
                                      "text": "+1", "ts": 1_700_000_100 + i}).decode())
            wait_for(lambda: daemon.api()["adapters"]["companion"]["received"] == 35, "the paused comments in")
            assert daemon.api()["comments"] == 30  # taken in, held: not decided while paused
            assert daemon.ctl("resume")[0] == 0
            wait_for(lambda: daemon.api()["comments"] == 35, "the held comments after resume")
            assert daemon.api()["products"]["honey-500"]["reserved"] == 5  # "+1" now buys honey

        metrics = daemon.api("/metrics")
        assert 'livecart_comments_total{platform="douyin"} 35' in metrics
        assert 'livecart_controls_total{action="restock",result="ok",transport="http"} 1' in metrics
        assert 'livecart_controls_total{action="pay",result="refused",transport="http"} 1' in metrics
        assert 'livecart_replies_total{adapter="companion",result="sent"}' in metrics
        assert "livecart_journal_batch_seconds_count" in metrics
        status = daemon.stop()
        log = daemon.log()
        assert status == 0, log
        assert not daemon.state_path.exists()
        assert "stopped" in log
        assert 'stream="E2E websocket sale"' in log
        assert "m-3" not in log  # no per-comment logging above DEBUG
    finally:
        daemon.kill()
        hook.close()
    rep = report(cfg)
    assert rep["comments"] == 35
    assert rep["products"]["egg-10"]["stock"] == 45
    assert rep["products"]["honey-500"]["reserved"] == 5


def _send_all(url: str, items: list[dict[str, Any]], pace: threading.Event | None = None) -> None:
    """Send every comment as one frame each; stop quietly when the daemon goes away."""
    try:
        with connect(url) as ws:
            for i, c in enumerate(items):
                ws.send(orjson.dumps(c).decode())
                if pace is not None and i % 20 == 19:
                    pace.wait(0.01)  # pacing so SIGTERM lands mid-stream (never set: a bounded pause)
    except (ConnectionClosed, OSError):
        pass


def test_sigterm_mid_stream_then_restart_and_resend_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    items = comments(1500, seed=7)
    # The uninterrupted run.
    clean_cfg, clean_db = write(tmp_path / "clean", stock=300)
    clean = Daemon(clean_cfg, clean_db)
    try:
        state = clean.start()
        _send_all(state["adapters"]["companion"], items)
        wait_for(lambda: clean.api()["comments"] == len(items), "the clean run to take every comment")
        assert clean.stop() == 0, clean.log()
    finally:
        clean.kill()
    expected = report(clean_cfg)
    assert expected["comments"] == len(items)

    cfg, db = write(tmp_path / "interrupted", stock=300)
    daemon = Daemon(cfg, db)
    try:
        state = daemon.start()
        sender = threading.Thread(target=_send_all, args=(state["adapters"]["companion"], items, threading.Event()))
        sender.start()
        wait_for(lambda: daemon.api()["comments"] >= 300, "some comments before the SIGTERM")
        assert daemon.stop() == 0, daemon.log()  # mid-stream: drains what it took in, flushes, exits 0
        sender.join(timeout=30)
        first = report(cfg)["comments"]
        assert 300 <= first < len(items)
        # Restart: the companion re-sends everything; comments already journalled are recognised.
        state = daemon.start()
        _send_all(state["adapters"]["companion"], items)
        wait_for(lambda: daemon.api()["adapters"]["companion"]["received"] == len(items), "the re-send")
        wait_for(lambda: daemon.api()["comments"] == len(items), "every comment once")
        assert daemon.stop() == 0, daemon.log()
    finally:
        daemon.kill()
    assert report(cfg) == expected
    keys = ("order", "buyer", "product", "variant", "qty", "status", "comment")
    assert [tuple(o[k] for k in keys) for o in export(cfg)] == [tuple(o[k] for k in keys) for o in export(clean_cfg)]


def test_a_second_sigterm_exits_at_once_and_the_journal_stays_readable(tmp_path: Path) -> None:
    hook = HangingHttp()
    # A hook that never answers and a long drain: the first SIGTERM's shutdown waits on it.
    extra = f'\n[[hooks]]\ntype = "http_post"\nurl = "{hook.url}"\ntimeout = 60\nretries = 0\n'
    cfg, db = write(tmp_path, stock=40, extra=extra)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("hook_timeout = 1\ndrain_seconds = 1",
                                                           "hook_timeout = 60\ndrain_seconds = 60"),
                   encoding="utf-8")
    daemon = Daemon(cfg, db)
    try:
        state = daemon.start()
        _send_all(state["adapters"]["companion"], comments(200, seed=3))
        wait_for(lambda: daemon.api()["comments"] == 200, "200 comments")
        wait_for(lambda: hook.requests >= 1, "the hook to hang")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopping intake" in daemon.log(), "the first signal's shutdown to begin")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=10) == 1
        assert "again, exiting at once" in daemon.log()
    finally:
        daemon.kill()
        hook.close()
    assert report(cfg)["comments"] == 200  # every acknowledged decision is in the journal, readable
    # And the next start works on that journal, recognising what it holds.
    again = Daemon(cfg, db)
    try:
        again.start()
        assert again.api()["comments"] == 200
        assert again.stop() == 0, again.log()
    finally:
        again.kill()
