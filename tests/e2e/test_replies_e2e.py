"""Buyer replies end to end: the daemon (in-process ``serve()``) reads a fake Twitch chat speaking real IRC
over WebSocket and answers each buyer with a ``PRIVMSG`` reply to the very message.

Time is virtual (injected into the reply queues and the Twitch adapter), so the test shows, without
sleeping, that no more than ``reply_limit`` replies go out in any ``reply_window`` and that the rest go out
as the window moves on; and every reply is checked at the moment the daemon hands it to the adapter: its
comment is already in the journal file, read through a separate SQLite connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from livecart.adapters.twitch import TwitchAdapter
from livecart.config import load
from livecart.core.settings import PluginSettings
from livecart.plugin import Adapter, Reply
from livecart.runtime.daemon import Daemon, serve
from tests.adapters.fakes.fake_twitch import FakeTwitch, privmsg

CHAN = "tonggu"

CONFIG = """
[stream]
name = "E2E replies"
featured = "egg-10"
hold_minutes = 30

[storage]
path = "{db}"
durability = "fsync"

[replies]
language = "en"
max_len = 60         # long enough for one reply, too short to merge two: every reply is its own message

[[adapters]]
type = "twitch"
name = "tw"
url = "{url}"
channel = "{chan}"
nick = "livecartbot"
token = "oauth:good"
reply_limit = 5
reply_window = 30

[[products]]
sku = "egg-10"
name = "Eggs"
aliases = ["egg", "eggs"]
link = 1
price = 29.9
stock = 100
limit = 5
"""


class VirtualClock:
    """A clock that moves only when the test says so; sleepers wake when it reaches their time."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self._moved = asyncio.Event()

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        until = self.t + seconds
        while self.t < until:
            await self._moved.wait()


def journalled_comment_ids(db: Path) -> set[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT body FROM events WHERE kind = 'c'").fetchall()
    finally:
        con.close()
    return {orjson.loads(body)[2] for (body,) in rows}


async def until(cond: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    limit = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > limit:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)  # polling interval; bounded by the deadline


async def test_replies_answer_each_buyer_after_the_journal_within_the_platform_rate_limit(tmp_path: Path) -> None:
    clock = VirtualClock()
    handed: list[tuple[float, str, bool]] = []  # (virtual time, comment id, was it journalled already)
    db = tmp_path / "journal.db"
    async with FakeTwitch() as fake:
        cfg_path = tmp_path / "stream.toml"
        cfg_path.write_text(CONFIG.format(db=db, url=fake.url, chan=CHAN), encoding="utf-8")
        cfg = load(cfg_path)
        made: list[TwitchAdapter] = []

        def make(ps: PluginSettings) -> Adapter:
            adapter = TwitchAdapter(ps.options, name=ps.name, clock=clock, sleep=clock.sleep)
            send = adapter.send_replies

            async def checked(replies: Sequence[Reply]) -> None:
                on_disk = journalled_comment_ids(db)
                for r in replies:
                    assert r.comment is not None
                    handed.append((clock(), r.comment.id, r.comment.id in on_disk))
                await send(replies)

            adapter.send_replies = checked  # type: ignore[method-assign]
            made.append(adapter)
            return adapter

        stop = asyncio.Event()
        box: dict[str, Daemon] = {}

        def ready(d: Daemon) -> None:
            box["d"] = d

        task = asyncio.create_task(serve(cfg, stop=stop, make_adapter=make, reply_clock=clock,
                                         reply_sleep=clock.sleep, on_ready=ready))
        try:
            async with asyncio.timeout(10):
                await fake.joined.wait()
            d = box["d"]
            q = d.reply_queues["tw"]
            lines = "".join(privmsg(CHAN, f"buyer{i}", "egg x2", msg_id=f"m-{i}", user_id=str(100 + i),
                                    ts_ms=1_700_000_000_000 + i, display=f"Buyer {i}") + "\r\n" for i in range(12))
            fake.send(lines)
            await until(lambda: d.engine.ledger.comments == 12 and q.count("queued") == 12, "12 durable outcomes")
            # The first window: exactly reply_limit messages, the rest wait.
            await until(lambda: len(fake.privmsgs) == 5, "the first 5 replies")
            assert q.depth == 7
            assert q.limiter.available(clock()) == 0
            clock.advance(10)  # still inside the window: nothing more may go
            await asyncio.sleep(0)
            assert q.count("taken") == 5
            clock.advance(20)  # the window has moved on: the next five
            await until(lambda: len(fake.privmsgs) == 10, "replies 6-10")
            assert q.depth == 2
            clock.advance(30)
            await until(lambda: len(fake.privmsgs) == 12, "the last 2 replies")
            stop.set()
            async with asyncio.timeout(20):
                assert await task == 0
        finally:
            if not task.done():
                task.cancel()
    # Never before durability: every reply's comment was in the journal file when it was handed over.
    assert len(handed) == 12
    assert all(journalled for _, _, journalled in handed)
    # Never over the limit: at most 5 in any 30 s of virtual time.
    times = [t for t, _, _ in handed]
    assert all(sum(1 for u in times if t <= u < t + 30) <= 5 for t in times)
    # Each answers its own message, in order, naming the buyer.
    parents = [line.split(" ", 1)[0] for line in fake.privmsgs]
    assert parents == [f"@reply-parent-msg-id=m-{i}" for i in range(12)]
    assert "PRIVMSG #tonggu :@Buyer 0 reserved Eggs x2, order o-000001" in fake.privmsgs[0]
    assert q.count("sent") == 12
    assert q.count("shed") == 0
    assert q.count("merged") == 0

