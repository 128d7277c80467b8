"""Replies name buyers by display name in every reply, and each adapter may have its own reply language:
``livecart run`` as a process with two WebSocket adapters (server mode), one with ``reply_language = "en"``."""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.proc import Daemon, livecart, wait_for

pytestmark = pytest.mark.slow

CONFIG = """
[stream]
name = "Two rooms"
featured = "egg-10"
hold_minutes = 30

[storage]
path = "{db}"
durability = "os"

[daemon]
drain_seconds = 1

[control]
token = "s3cret"

[replies]
language = "zh"

[[adapters]]
type = "websocket"
name = "douyin-room"
mode = "server"
port = 0

[[adapters]]
type = "websocket"
name = "youtube-room"
mode = "server"
port = 0
reply_language = "{lang}"

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg", "eggs"]
link = 1
price = 29.9
stock = 100
"""


def replies_of(ws: Any, n: int) -> list[str]:
    """The next ``n`` reply texts on ``ws`` (reply frames are arrays; ack frames, objects, are skipped)."""
    texts: list[str] = []
    while len(texts) < n:
        frame = orjson.loads(ws.recv(timeout=10))
        if isinstance(frame, list):
            texts.extend(r["text"] for r in frame)
    return texts


def douyin(i: int, user: str, name: str, text: str = "鸡蛋来两盒") -> str:
    """Comment ``d-i`` of Douyin room 7312, as a companion sends it."""
    return orjson.dumps({"platform": "douyin", "room": "7312", "id": f"d-{i}", "user": user, "name": name,
                         "text": text, "ts": 1_700_000_000 + i}).decode()


def two_rooms(tmp_path: Path, edit: Callable[[str], str] = str) -> Daemon:
    """The two-room sale of :data:`CONFIG` (the YouTube room in English), ``edit`` applied to its text."""
    db = tmp_path / "journal.db"
    cfg = tmp_path / "stream.toml"
    cfg.write_text(edit(CONFIG.format(db=db, lang="en")), encoding="utf-8")
    return Daemon(cfg, db)


def told_until(tmp_path: Path) -> float:
    return float(orjson.loads((tmp_path / "journal.db.replies.json").read_bytes())["told_until"])


def progress_settled(tmp_path: Path, after: float) -> None:
    """Wait until the replies' progress (kept every tenth of a second) is past ``after`` and stays put: what
    was sent by now is not told again after a crash (what went out in the last tenth of a second may be)."""
    last = [after]

    def still() -> bool:
        now = told_until(tmp_path)
        same, last[0] = now == last[0], now
        time.sleep(0.25)
        return same and now > after

    wait_for(still, "the replies' progress kept")


def crash(daemon: Daemon) -> None:
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait(10)


def test_each_adapter_answers_in_its_language_and_names_the_buyer_after_host_actions(tmp_path: Path) -> None:
    daemon = two_rooms(tmp_path)
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy, connect(state["adapters"]["youtube-room"]) as yt:
            dy.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-1", "user": "dy1", "name": "张三",
                                  "text": "鸡蛋来两盒", "ts": 1_700_000_000}).decode())
            yt.send(orjson.dumps({"platform": "youtube", "room": "live-9", "id": "y-1", "user": "tw1",
                                  "name": "Tina", "text": "eggs x2", "ts": 1_700_000_001}).decode())
            wait_for(lambda: daemon.api()["comments"] == 2, "both comments decided")
            zh = replies_of(dy, 1)
            en = replies_of(yt, 1)
            assert zh[0].startswith("@张三 ")
            assert "已" in zh[0]
            assert en[0].startswith("@Tina reserved Free-range eggs x2, order o-000002")
            # Host actions have no comment at hand: the buyer is still named by display name, not user id.
            assert daemon.ctl("pay", "o-000002")[0] == 0
            assert daemon.ctl("cancel", "o-000001")[0] == 0
            paid = replies_of(yt, 1)
            cancelled = replies_of(dy, 1)
            assert paid[0].startswith("@Tina "), paid
            assert "@tw1" not in paid[0]
            assert cancelled[0].startswith("@张三 "), cancelled
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_an_unknown_reply_language_is_refused_at_start(tmp_path: Path) -> None:
    cfg = tmp_path / "stream.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "j.db", lang="fr"), encoding="utf-8")
    r = livecart("run", str(cfg), timeout=30)
    assert r.returncode == 2
    assert "adapters[1].reply_language" in r.stderr
    assert "must be one of zh, en, got 'fr'" in r.stderr


def test_run_live_prints_a_compact_summary_line_every_few_seconds(tmp_path: Path) -> None:
    import subprocess
    import sys

    daemon = two_rooms(tmp_path)
    log = tmp_path / "live.log"
    with open(log, "wb") as out:
        daemon.proc = subprocess.Popen([sys.executable, "-m", "livecart.cli.main", "run", str(daemon.cfg), "--live"],
                                       stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: daemon.state_path.exists(), "the daemon to start")
        daemon.state = orjson.loads(daemon.state_path.read_bytes())
        with connect(daemon.state["adapters"]["douyin-room"]) as dy:
            for i in range(3):
                dy.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": f"d-{i}", "user": f"u{i}",
                                      "name": "张三", "text": "鸡蛋来两盒", "ts": 1_700_000_000 + i}).decode())
            line = wait_for(lambda: next((x for x in log.read_text().splitlines() if " comments " in x
                                          and "3 orders" in x), None), "a summary line", deadline=15)
        assert " 3 comments " in line
        assert "left 94 · held 6 · paid 0 · presale 0 · featured egg-10 · adapters 1/2" in line
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_after_kill_9_host_actions_still_reach_each_room_and_name_the_buyer(tmp_path: Path) -> None:
    """The rooms' reply routes and the buyers' names survive a crash: a pay or cancel after the restart, before
    anyone comments again, is answered in the right room by display name (it was dropped as unroutable and,
    once routed, named the user id). The same user id on two platforms is two buyers: each order is named by
    its own comment's name, not by the latest name of that id."""
    daemon = two_rooms(tmp_path)
    try:
        state = daemon.start()
        at_start = told_until(tmp_path)
        with connect(state["adapters"]["douyin-room"]) as dy, connect(state["adapters"]["youtube-room"]) as yt:
            dy.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-1", "user": "10086", "name": "张三",
                                  "text": "鸡蛋来两盒", "ts": 1_700_000_000}).decode())
            yt.send(orjson.dumps({"platform": "youtube", "room": "live-9", "id": "y-1", "user": "10086",
                                  "name": "Tina", "text": "eggs x2", "ts": 1_700_000_001}).decode())
            replies_of(dy, 1)
            replies_of(yt, 1)
        progress_settled(tmp_path, at_start)  # else the restart tells them again, as it should
        crash(daemon)
        assert (tmp_path / "journal.db.routes.json").exists()
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy, connect(state["adapters"]["youtube-room"]) as yt:
            assert daemon.ctl("pay", "o-000002")[0] == 0
            assert daemon.ctl("cancel", "o-000001")[0] == 0
            paid = replies_of(yt, 1)
            cancelled = replies_of(dy, 1)
            assert paid[0].startswith("@Tina order o-000002 is paid"), paid
            assert cancelled[0].startswith("@张三 "), cancelled
            assert "livecart_replies_unroutable_total 0" in daemon.api("/metrics")
        assert daemon.stop() == 0
    finally:
        daemon.kill()


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"routes": 7}', b'{"routes": [[1, 2, 3], "x"]}',
                                     b'{"routes": [["douyin", "1", "gone-room"]]}'])
def test_a_routes_file_that_cannot_be_read_is_said_and_the_daemon_runs(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "journal.db.routes.json").write_bytes(garbage)
    daemon = two_rooms(tmp_path)
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-1", "user": "dy1", "name": "张三",
                                  "text": "鸡蛋来两盒", "ts": 1_700_000_000}).decode())
            assert replies_of(dy, 1)[0].startswith("@张三 ")
        assert daemon.stop() == 0
        if b"gone-room" in garbage:  # an adapter removed from the config since
            assert "went through adapter(s) that no longer reply (gone-room: 1)" in daemon.log()
        elif garbage.startswith(b'{"routes": ['):
            assert "cannot be read" not in daemon.log()  # rows of the wrong shape are passed over
        else:
            assert "journal.db.routes.json cannot be read" in daemon.log()
        # Rewritten whole with the route learned from the comment.
        assert orjson.loads((tmp_path / "journal.db.routes.json").read_bytes()) == {
            "routes": [["douyin", "7312", "douyin-room"]]}
    finally:
        daemon.kill()


def test_replies_decided_before_the_companion_reconnects_wait_for_it(tmp_path: Path) -> None:
    """After a crash the holds that ran out meanwhile expire about a second after the start, usually before
    the companion has reconnected: their replies wait for it (they were counted failed and dropped)."""
    daemon = two_rooms(tmp_path, lambda t: t.replace("hold_minutes = 30", "hold_minutes = 0.02"))
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-1", "user": "dy1", "name": "张三",
                                  "text": "鸡蛋来两盒", "ts": 1_700_000_000}).decode())
            replies_of(dy, 1)
        crash(daemon)
        time.sleep(1.5)  # the hold (1.2 s) runs out while the daemon is down
        state = daemon.start()
        wait_for(lambda: daemon.api()["outcomes"].get("expired") == 1, "the hold to expire after the restart")
        assert daemon.ctl("restock", "egg-10", "1")[0] == 0  # a host action before anyone is back, too
        time.sleep(0.5)
        with connect(state["adapters"]["douyin-room"]) as dy:
            expired = replies_of(dy, 1)
        assert expired[0].startswith("@张三 "), expired
        assert "o-000001" in expired[0]
        metrics = daemon.api("/metrics")
        assert 'livecart_replies_total{adapter="douyin-room",result="failed"}' not in metrics
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_a_buy_resent_after_a_crash_before_its_reply_went_out_is_answered_once(tmp_path: Path) -> None:
    """The journal had the comment, the process died before the reply went out (here: no companion was
    connected to take it) and before the comment was acknowledged; the companion resends it to the new
    process, which knows it as a duplicate and used to say nothing: the buyer never heard of the order."""
    buy = orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-1", "user": "dy1", "name": "张三",
                        "text": "鸡蛋来两盒", "ts": 1_700_000_000}).decode()
    later = orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-2", "user": "dy2", "name": "李四",
                          "text": "鸡蛋来一盒", "ts": 1_700_000_001}).decode()
    daemon = two_rooms(tmp_path)
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(buy)
        # Durable and its reply queued (the ledger counts a comment when it decides it, before the commit).
        wait_for(lambda: 'livecart_replies_total{adapter="douyin-room",result="queued"} 1.0'
                 in daemon.api("/metrics"), "the buy committed and its reply queued")
        assert daemon.proc is not None
        daemon.proc.kill()  # its reply is still waiting for a companion
        daemon.proc.wait(10)
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(buy)  # resent: never acknowledged
            again = replies_of(dy, 1)
            assert again[0].startswith("@张三 已为您保留 Free-range eggs ×2，订单 o-000001"), again
            dy.send(later)  # a comment of this process ...
            replies_of(dy, 1)
            dy.send(buy)  # ... and resends of both: answered once only
            dy.send(later)
            dy.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-3", "user": "dy3", "name": "王五",
                                  "text": "鸡蛋来一盒", "ts": 1_700_000_002}).decode())
            assert replies_of(dy, 1)[0].startswith("@王五 "), "the next reply is the new buyer's"
        metrics = daemon.api("/metrics")
        assert "livecart_replies_again_total 1.0" in metrics, [x for x in metrics.splitlines() if "again" in x]
        assert daemon.api()["outcomes"] == {"reserved": 3}
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_replies_still_waiting_at_a_crash_go_out_after_the_restart_once(tmp_path: Path) -> None:
    """An acknowledged buy whose reply was still queued when the process died (a companion away, a flash
    peak, a platform's rate limit): its comment never comes back, so only the replies' progress, kept beside
    the journal, tells the next run that its buyer was never told."""
    told = orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-0", "user": "dy0", "name": "赵六",
                         "text": "鸡蛋来一盒", "ts": 1_699_999_999}).decode()
    buy = orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-1", "user": "dy1", "name": "张三",
                        "text": "鸡蛋来两盒", "ts": 1_700_000_000}).decode()
    daemon = two_rooms(tmp_path)
    progress = tmp_path / "journal.db.replies.json"
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(told)
            assert replies_of(dy, 1)[0].startswith("@赵六 ")  # told before the crash: not again
        wait_for(lambda: progress.exists(), "the replies' progress kept")
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(buy)  # and gone: whether its ack arrived or not, this comment is not sent again
        wait_for(lambda: 'livecart_replies_total{adapter="douyin-room",result="queued"} 2.0'
                 in daemon.api("/metrics"), "the buy committed and its reply queued")
        # Its reply waits for a companion; the progress, kept every half second, stays just behind it.
        time.sleep(0.7)
        kept = orjson.loads(progress.read_bytes())["told_until"]
        time.sleep(0.7)
        assert orjson.loads(progress.read_bytes())["told_until"] == kept
        crash(daemon)
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            first = replies_of(dy, 1)
            assert first[0].startswith("@张三 已为您保留 Free-range eggs ×2，订单 o-000002"), first
            dy.send(buy)  # a resend as well (the ack may have been lost): not told twice
            dy.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-3", "user": "dy3", "name": "王五",
                                  "text": "鸡蛋来一盒", "ts": 1_700_000_002}).decode())
            assert replies_of(dy, 1)[0].startswith("@王五 ")
        assert "1 order(s) decided before the restart had not been announced" in daemon.log()
        assert "livecart_replies_again_total 1.0" in daemon.api("/metrics")
        # Told now: a second crash does not tell them again.
        time.sleep(1.2)
        crash(daemon)
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(orjson.dumps({"platform": "douyin", "room": "7312", "id": "d-4", "user": "dy4", "name": "钱七",
                                  "text": "鸡蛋来一盒", "ts": 1_700_000_003}).decode())
            assert replies_of(dy, 1)[0].startswith("@钱七 ")
        assert "had not been announced" not in daemon.log()
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def _last_box_then_two_refused(daemon: Daemon, state: dict[str, Any]) -> None:
    """On a sale with one box left, from a companion that goes at once: 张三 gets the last box, 李四 is
    told it is sold out, 王五 that there is nothing to cancel; their replies are queued, none sent."""
    with connect(state["adapters"]["douyin-room"]) as dy:
        dy.send(douyin(1, "dy1", "张三", "鸡蛋来一盒"))  # the last box
        dy.send(douyin(2, "dy2", "李四", "鸡蛋来一盒"))  # sold out
        dy.send(douyin(3, "dy3", "王五", "取消"))  # nothing to cancel
    wait_for(lambda: 'livecart_replies_total{adapter="douyin-room",result="queued"} 4.0'
             in daemon.api("/metrics"), "the three committed and their replies queued")


def _told_last_box_then_two_refused(told: list[str]) -> None:
    assert told[0].startswith("@张三 已为您保留 Free-range eggs ×1"), told
    assert told[1].startswith("@李四 "), told
    assert "售罄" in told[1], told
    assert told[2].startswith("@王五 "), told
    assert "取消" in told[2], told


def test_refusals_still_waiting_at_a_crash_are_told_after_it(tmp_path: Path) -> None:
    """A sold-out refusal whose reply was still queued when the process died: a refusal makes no order, so
    the restart told the buyer who got the last box and never the one who was too late."""
    daemon = two_rooms(tmp_path, lambda text: text.replace("stock = 100", "stock = 2"))
    try:
        state = daemon.start()
        # Kept from the start (an outside check: a first run killed within its first tenth of a second told
        # no one after the restart, for want of the file).
        at_start = told_until(tmp_path)
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(douyin(0, "dy0", "赵六", "鸡蛋来一盒"))
            assert replies_of(dy, 1)[0].startswith("@赵六 ")  # told before the crash: not again
        progress_settled(tmp_path, at_start)
        _last_box_then_two_refused(daemon, state)
        time.sleep(0.7)  # the progress, kept every tenth of a second, stays behind them
        crash(daemon)
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            told = replies_of(dy, 3)
        _told_last_box_then_two_refused(told)
        assert "1 order(s) and 2 refusal(s) decided before the restart had not been announced" in daemon.log()
        assert "livecart_replies_again_total 3.0" in daemon.api("/metrics")
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_replies_waiting_for_an_absent_companion_at_a_stop_are_told_by_the_next_start(tmp_path: Path) -> None:
    """An outside check: SIGTERM while replies waited for a companion that had gone. The stop's drain counted
    them failed at once and kept the progress past them, and its last snapshot came after the refusals, so
    the next start told nobody: neither the buyer of the last box nor the two refused."""
    daemon = two_rooms(tmp_path, lambda text: text.replace("stock = 100", "stock = 2"))
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(douyin(0, "dy0", "赵六", "鸡蛋来一盒"))
            assert replies_of(dy, 1)[0].startswith("@赵六 ")  # told before the stop: not again
        _last_box_then_two_refused(daemon, state)
        assert daemon.stop() == 0
        assert "3 replies were not sent before this stop" in daemon.log()
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            told = replies_of(dy, 3)
            with pytest.raises(TimeoutError):
                dy.recv(timeout=1.5)  # and nothing more
        _told_last_box_then_two_refused(told)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def _cancels_untold(tmp_path: Path, daemon: Daemon) -> tuple[dict[str, Any], bytes]:
    """Four buyers order and are told; then, with the companion gone, the first two cancel. The daemon's
    state and the progress file as it was kept before the cancels."""
    state = daemon.start()
    at_start = told_until(tmp_path)
    with connect(state["adapters"]["douyin-room"]) as dy:
        for i in range(4):
            dy.send(douyin(i, f"dy{i}", f"买家{i}", "鸡蛋来一盒"))
        assert len(replies_of(dy, 4)) == 4
    progress_settled(tmp_path, at_start)
    before = (tmp_path / "journal.db.replies.json").read_bytes()
    with connect(state["adapters"]["douyin-room"]) as dy:
        dy.send(douyin(10, "dy0", "买家0", "取消"))
        dy.send(douyin(11, "dy1", "买家1", "取消"))
    wait_for(lambda: 'livecart_replies_total{adapter="douyin-room",result="queued"} 6.0'
             in daemon.api("/metrics"), "the cancels committed and their replies queued")
    return state, before


def _told_after_restart(daemon: Daemon) -> list[str]:
    state = daemon.start()
    with connect(state["adapters"]["douyin-room"]) as dy:
        told = replies_of(dy, 2)
        with contextlib.suppress(TimeoutError):
            told += replies_of(dy, 1)  # nothing more, or the test fails below with what came
    return told


def test_a_cancel_of_an_earlier_order_decided_just_before_a_crash_is_told_after_it(tmp_path: Path) -> None:
    """An outside check: kill -9 within a few ms of cancels of orders made (and told) earlier; the progress
    kept by when orders were made was still past those orders, so the next start told none of the cancels,
    and the buyers went on believing they held the orders. The kill is made to come before the next keeping
    of the progress by putting back the file as it was before the cancels."""
    daemon = two_rooms(tmp_path)
    try:
        _, before = _cancels_untold(tmp_path, daemon)
        crash(daemon)
        (tmp_path / "journal.db.replies.json").write_bytes(before)
        told = _told_after_restart(daemon)
        assert len(told) == 2, told
        assert told[0].startswith("@买家0 "), told
        assert told[1].startswith("@买家1 "), told
        assert all("取消" in t for t in told), told
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_cancels_untold_at_a_stop_are_told_next_without_the_orders_told_before(tmp_path: Path) -> None:
    """An outside check: SIGTERM with cancels of earlier orders untold (the companion gone). The progress
    fell back to when the cancelled orders were made, and the next start told again every buyer of every
    order made since (35 of 35 told twice)."""
    daemon = two_rooms(tmp_path)
    try:
        _cancels_untold(tmp_path, daemon)
        assert daemon.stop() == 0
        told = _told_after_restart(daemon)
        assert len(told) == 2, told
        assert told[0].startswith("@买家0 "), told
        assert told[1].startswith("@买家1 "), told
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_a_promotion_and_a_cancel_still_waiting_at_a_crash_are_told_after_it(tmp_path: Path) -> None:
    """The kept progress counts by when the orders were made: a promotion's order was made (queued for
    presale) long before the restock or cancel that promoted it, so counting by the outcome's time left it
    out of what the next start announced."""

    daemon = two_rooms(tmp_path, lambda t: t.replace("stock = 100", "stock = 2\npresale = 5"))
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            dy.send(douyin(1, "a", "张三"))  # o-000001 held x2: the stock
            dy.send(douyin(2, "b", "李四"))  # o-000002 queued for presale
            replies_of(dy, 2)
        # No companion now: the cancel and the promotion it makes wait.
        assert daemon.ctl("cancel", "o-000001")[0] == 0
        wait_for(lambda: 'livecart_replies_total{adapter="douyin-room",result="queued"} 4.0'
                 in daemon.api("/metrics"), "the cancel's and the promotion's replies queued")
        time.sleep(1.2)  # the progress kept behind them
        crash(daemon)
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            told = replies_of(dy, 2)
        assert any(t.startswith("@李四 已为您保留 Free-range eggs ×2，订单 o-000002") for t in told), told
        assert any(t.startswith("@张三 ") and "o-000001" in t and "取消" in t for t in told), told
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_buyers_whose_replies_a_full_queue_shed_are_told_after_a_restart(tmp_path: Path) -> None:
    """Replies shed for a full queue (here 5 messages, 30 rooms that cannot be merged, no companion) had
    moved the kept progress past them: the next start told only the buyers of the replies still queued.
    And a start announces as the queue has room, not all at once into it."""
    daemon = two_rooms(tmp_path, lambda t: t.replace('language = "zh"', 'language = "zh"\nqueue = 5'))
    frames = [orjson.dumps({"platform": "douyin", "room": f"r-{i}", "id": f"d-{i}", "user": f"u{i}",
                            "name": f"买家{i}", "text": "鸡蛋来一盒", "ts": 1_700_000_000 + i}).decode()
              for i in range(30)]
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            for f in frames:
                dy.send(f)  # and gone: no companion to tell
        wait_for(lambda: 'livecart_replies_total{adapter="douyin-room",result="shed"} 25.0'
                 in daemon.api("/metrics"), "25 replies shed")
        time.sleep(0.5)  # the progress kept
        crash(daemon)
        # The same small queue: the start hands its 30 announcements over as the queue has room (all at once,
        # it shed the same oldest 25 again at every start).
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            told = " ".join(replies_of(dy, 30))
            told += " " + " ".join(_more(dy))
        assert sorted(set(re.findall(r"o-\d{6}", told))) == [f"o-{i:06d}" for i in range(1, 31)]
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def _more(ws: Any) -> list[str]:
    """Reply texts that come within a second more."""
    texts: list[str] = []
    with contextlib.suppress(TimeoutError):
        while True:
            frame = orjson.loads(ws.recv(timeout=1))
            if isinstance(frame, list):
                texts.extend(r["text"] for r in frame)
    return texts


def test_a_restart_announcing_thousands_of_orders_reaches_a_companion_with_the_usual_frame_limit(
        tmp_path: Path) -> None:
    """3,000 buys while the companion is away, kill -9: the restart's announcement of all 3,000 went out
    as one 1 MB+ frame, which a websockets client (1 MiB limit) refused with 1009: every reply lost."""
    daemon = two_rooms(tmp_path, lambda t: t.replace("stock = 100", "stock = 5000"))
    n = 3000
    try:
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            for k in range(0, n, 100):
                dy.send(orjson.dumps([{"platform": "douyin", "room": "7312", "id": f"d-{i}", "user": f"u{i}",
                                       "name": f"买家{i}", "text": "鸡蛋来一盒", "ts": 1_700_000_000 + i}
                                      for i in range(k, k + 100)]).decode())
        wait_for(lambda: f'livecart_replies_total{{adapter="douyin-room",result="queued"}} {n}.0'
                 in daemon.api("/metrics"), "every buy committed and its reply queued")
        time.sleep(0.5)  # the progress kept
        crash(daemon)
        state = daemon.start()
        told: set[str] = set()
        with connect(state["adapters"]["douyin-room"], max_size=2**20) as dy:  # the library's default
            deadline = time.monotonic() + 30
            while len(told) < n and time.monotonic() < deadline:
                frame = orjson.loads(dy.recv(timeout=10))
                if isinstance(frame, list):
                    for r in frame:
                        told.update(re.findall(r"o-\d{6}", r["text"]))
        assert len(told) == n
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def _named(ws: Any, told: set[str], want: int) -> None:
    """Add to ``told`` the buyers (买家N) named in the reply frames on ``ws`` until ``want`` are, the
    connection closes or nothing comes for 10 s."""
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        while len(told) < want:
            frame = orjson.loads(ws.recv(timeout=10))
            if isinstance(frame, list):
                told.update(re.findall(r"@(买家\d+)", " ".join(r["text"] for r in frame)))


def _buy_then_stop(daemon: Daemon, n: int, told: set[str]) -> None:
    """Start ``daemon``, send ``n`` buys by 买家0..n-1 from one companion, SIGTERM it once their replies are
    queued, and add to ``told`` the buyers named in what comes until the connection closes; exit status 0."""
    state = daemon.start()
    with connect(state["adapters"]["douyin-room"]) as dy:
        for i in range(n):
            dy.send(douyin(i, f"dy{i}", f"买家{i}", "鸡蛋来一盒"))
        wait_for(lambda: f'livecart_replies_total{{adapter="douyin-room",result="queued"}} {n}.0'
                 in daemon.api("/metrics"), f"{n} buys committed and their replies queued")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        _named(dy, told, n)
    assert daemon.proc.wait(20) == 0


def test_replies_shed_when_the_stops_drain_ends_are_told_by_the_next_start(tmp_path: Path) -> None:
    """An outside check: 100 buys, SIGTERM, the drain ended with 17 messages shed, and the next start told
    none of their buyers (the progress kept after the drain had moved past them)."""
    daemon = two_rooms(tmp_path, lambda text: text.replace(
        'name = "douyin-room"\n', 'name = "douyin-room"\nreply_limit = 1\nreply_window = 1\n'))
    told: set[str] = set()
    try:
        _buy_then_stop(daemon, 30, told)
        assert "shed" in daemon.log()
        assert len(told) < 30
        state = daemon.start()
        with connect(state["adapters"]["douyin-room"]) as dy:
            _named(dy, told, 30)
        assert "had not been announced to their buyers; announcing them now" in daemon.log()
        assert told == {f"买家{i}" for i in range(30)}
    finally:
        daemon.kill()


def test_replies_held_back_by_the_rate_limit_go_out_during_the_stops_drain(tmp_path: Path) -> None:
    """A SIGTERM shed at once what the platform's rate limit held back (a plugin author's companion: 413
    replies counted as shed 1 ms after the signal), although replies get ``drain_seconds`` to go out."""
    daemon = two_rooms(tmp_path, lambda text: text.replace("drain_seconds = 1", "drain_seconds = 3").replace(
        'name = "douyin-room"\n', 'name = "douyin-room"\nreply_limit = 2\nreply_window = 1\n'))
    try:
        told: set[str] = set()
        _buy_then_stop(daemon, 12, told)
        assert told == {f"买家{i}" for i in range(12)}  # 2 messages a second, up to 3 buyers each: ~2 s
        assert "0 shed" in daemon.log()
    finally:
        daemon.kill()
