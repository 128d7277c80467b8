"""The daemon in-process: several adapters on one inventory, host controls, pause, backpressure, hooks and
events, status endpoints. Adapters are real ones (replay) or a queue-fed test adapter built through
``serve(make_adapter=...)``; hooks are the shipped ``http_post`` against a local aiohttp server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from livecart import registry
from livecart.config import load
from livecart.core.control import Control, ControlAction, parse_params
from livecart.core.errors import ControlError, FatalAdapterError, JournalLocked
from livecart.core.records import Comment
from livecart.core.settings import PluginSettings
from livecart.plugin import Adapter
from livecart.runtime.control import control_state_path
from livecart.runtime.daemon import Daemon, serve
from livecart.store.journal import Journal

CONFIG = """
[stream]
name = "Daemon test"
featured = "egg-10"
hold_minutes = 30

[storage]
path = "{db}"
durability = "os"

[daemon]
queue = {queue}
hook_timeout = 0.5
drain_seconds = 1

{extra}

[[products]]
sku = "egg-10"
name = "Free-range eggs"
aliases = ["鸡蛋", "egg", "eggs"]
link = 1
price = 29.9
stock = {stock}
limit = 5
presale = 3

[[products]]
sku = "honey-500"
name = "Wild honey"
aliases = ["蜂蜜", "honey"]
link = 4
price = 68
stock = 50
limit = 3
"""


def write(tmp_path: Path, extra: str = "", *, stock: int = 20, queue: int = 64) -> Path:
    p = tmp_path / "stream.toml"
    p.write_text(CONFIG.format(db=tmp_path / "journal.db", extra=extra, stock=stock, queue=queue),
                 encoding="utf-8")
    return p


def comment(i: int, text: str = "+1", *, platform: str = "douyin", user: str | None = None) -> Comment:
    u = user or f"u-{i}"
    return Comment(platform, "r1", f"m-{i}", u, u, text, 1_700_000_000.0 + i)


class Fed(Adapter):
    """A test adapter fed from the test through :meth:`push`; ends when :meth:`end` is called."""

    type = "fed"

    def __init__(self, options: Any, *, name: str) -> None:
        super().__init__(options, name=name)
        self.inbox: asyncio.Queue[Sequence[Comment] | Exception | None] = asyncio.Queue()

    def push(self, batch: Sequence[Comment]) -> None:
        self.inbox.put_nowait(batch)

    def end(self) -> None:
        self.inbox.put_nowait(None)

    def fail(self, exc: Exception) -> None:
        self.inbox.put_nowait(exc)

    async def _gen(self) -> AsyncIterator[Sequence[Comment]]:
        while (batch := await self.inbox.get()) is not None:
            if isinstance(batch, Exception):
                raise batch
            self.stats.received += len(batch)
            yield batch

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        return self._gen()


def options_of(type_name: str) -> Any:
    return Fed.OPTIONS if type_name == "fed" else registry.adapter_class(type_name).OPTIONS


def fed_factory(made: dict[str, Fed]) -> Callable[[PluginSettings], Adapter]:
    def make(ps: PluginSettings) -> Adapter:
        if ps.type == "fed":
            a = made[ps.name] = Fed(ps.options, name=ps.name)
            return a
        return registry.adapter_class(ps.type)(ps.options, name=ps.name)

    return make


async def until(cond: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Poll ``cond`` (the state moves on the event loop); the deadline is only a safety bound."""
    limit = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > limit:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Running:
    """``serve()`` as a background task with its :class:`Daemon` at hand."""

    def __init__(self, cfg_path: Path, **kwargs: Any) -> None:
        self.cfg = load(cfg_path, adapter_options=options_of)
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.daemon: Daemon | None = None
        self.kwargs = kwargs
        self.task: asyncio.Task[int] | None = None

    def _on_ready(self, d: Daemon) -> None:
        self.daemon = d
        self.ready.set()

    async def __aenter__(self) -> Daemon:
        self.task = asyncio.create_task(serve(self.cfg, stop=self.stop, on_ready=self._on_ready, **self.kwargs))
        waiter = asyncio.create_task(self.ready.wait())
        await asyncio.wait({waiter, self.task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()
        assert self.daemon is not None
        return self.daemon

    async def finish(self) -> int:
        assert self.task is not None
        self.stop.set()
        async with asyncio.timeout(20):
            return await self.task

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            self.stop.set()
            async with asyncio.timeout(20):
                await self.task


def ctl(action: str, *params: str) -> Control:
    return parse_params(action, list(params))


# --- several adapters, one inventory ----------------------------------------------------------------------

async def test_two_platforms_share_one_inventory_and_each_comment_is_counted_by_platform(tmp_path: Path) -> None:
    extra = '[[adapters]]\ntype = "fed"\nname = "douyin"\n\n[[adapters]]\ntype = "fed"\nname = "bili"\n'
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra, stock=20), make_adapter=fed_factory(made))
    async with run as d:
        made["douyin"].push([comment(i, "鸡蛋来两盒") for i in range(10)])
        made["bili"].push([comment(100 + i, "egg x2", platform="bilibili") for i in range(10)])
        made["douyin"].end()
        made["bili"].end()
        assert await run.finish() == 0
    snap = d.engine.ledger.snapshot()
    egg = snap["products"]["egg-10"]
    assert egg["reserved"] == 20
    assert egg["left"] == 0
    assert egg["presale"] == 3
    assert snap["comments"] == 20
    text = d.registry.render()
    assert 'livecart_comments_total{platform="douyin"} 10' in text
    assert 'livecart_comments_total{platform="bilibili"} 10' in text
    assert 'livecart_outcomes_total{status="reserved"} 10' in text


async def test_the_daemons_metrics_show_the_engines_snapshot_and_duplicate_id_gauges(tmp_path: Path) -> None:
    # They are refreshed by the engine's own registry's collector: the daemon mirrors them, and showed 0 for
    # every one while a sale wrote snapshots and held ids.
    p = write(tmp_path, '[[adapters]]\ntype = "fed"\nname = "feed"\n')
    p.write_text(p.read_text(encoding="utf-8").replace('durability = "os"', 'durability = "os"\nsnapshot_events = 4'),
                 encoding="utf-8")
    made: dict[str, Fed] = {}
    run = Running(p, make_adapter=fed_factory(made))
    async with run as d:
        for i in range(3):
            made["feed"].push([comment(10 * i + k, "chat") for k in range(5)])
        await until(lambda: d.engine.journal.snapshots_written >= 1, "a snapshot written")
        text = d.registry.render()
        made["feed"].end()
        assert await run.finish() == 0
    assert "livecart_journal_snapshots_written 0.0" not in text
    assert "livecart_journal_last_snapshot_seq 0.0" not in text
    assert "livecart_dedupe_memory_ids 15.0" in text  # every id of the sale, inside the window


# --- host controls ------------------------------------------------------------------------------------------

async def test_controls_are_applied_and_journalled_so_a_restart_keeps_them(tmp_path: Path) -> None:
    extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n'
    made: dict[str, Fed] = {}
    path = write(tmp_path, extra, stock=5)
    run = Running(path, make_adapter=fed_factory(made))
    async with run as d:
        made["feed"].push([comment(1, "+1"), comment(2, "+1")])
        await until(lambda: d.engine.ledger.comments == 2 and d.engine.journal.pending == 0, "two comments")
        first_order = d.engine.ledger.snapshot()
        assert first_order["products"]["egg-10"]["reserved"] == 2
        paid = await d.handle_control(ctl("pay", "o-000001"))
        assert [o["status"] for o in paid["outcomes"]] == ["paid"]
        cancelled = await d.handle_control(ctl("取消", "o-000002"))
        assert [o["status"] for o in cancelled["outcomes"]] == ["cancelled"]
        restocked = await d.handle_control(ctl("补货", "egg-10", "10"))
        assert restocked["product"]["stock"] == 15
        assert (await d.handle_control(ctl("上链接", "honey-500")))["featured"] == "honey-500"
        await d.handle_control(ctl("limit", "honey-500", "1"))
        made["feed"].push([comment(3, "+1", user="u-9"), comment(4, "+1", user="u-9")])  # honey, limit 1
        await until(lambda: d.engine.ledger.comments == 4, "honey comments")
        with pytest.raises(ControlError, match="no order"):
            await d.handle_control(ctl("pay", "o-999999"))
        with pytest.raises(ControlError, match="no product"):
            await d.handle_control(ctl("restock", "nope", "1"))
        made["feed"].end()
        assert await run.finish() == 0
    before = d.engine.ledger.snapshot()
    assert before["featured"] == "honey-500"
    assert before["products"]["honey-500"]["reserved"] == 1
    # The journal alone reproduces every control (restock, feature, limit, pay, cancel).
    j = await Journal.open(tmp_path / "journal.db", readonly=True)
    try:
        rebuilt = await j.rebuild()
    finally:
        await j.close()
    assert rebuilt.snapshot() == before


async def test_presale_on_without_a_number_uses_the_configured_cap_and_off_closes_it(tmp_path: Path) -> None:
    extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n'
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra, stock=1), make_adapter=fed_factory(made))
    async with run as d:
        await d.handle_control(ctl("presale", "egg-10", "off"))
        made["feed"].push([comment(1, "鸡蛋来两盒")])
        await until(lambda: d.engine.ledger.comments == 1, "comment")
        assert d.engine.snapshot()["products"]["egg-10"]["presale"] == 0
        await d.handle_control(ctl("预售", "egg-10", "on"))
        assert d.engine.snapshot()["products"]["egg-10"]["cap"] == 3
        with pytest.raises(ControlError, match="no presale quantity"):
            await d.handle_control(ctl("presale", "honey-500", "on"))
        made["feed"].end()
        assert await run.finish() == 0


async def test_pause_holds_intake_and_resume_processes_everything_in_order(tmp_path: Path) -> None:
    extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n'
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra, queue=2), make_adapter=fed_factory(made))
    async with run as d:
        answer = await d.handle_control(Control(ControlAction.PAUSE))
        assert answer["paused"] is True
        assert answer["changed"] is True
        for i in range(6):
            made["feed"].push([comment(i)])
        # The intake queue (2 batches) fills, then the adapter waits: counted, nothing dropped.
        await until(lambda: d._waits.total() >= 1, "intake to wait for room")
        assert d.engine.ledger.comments == 0
        assert d.state()["paused"] is True
        assert "livecart_paused 1" in d.registry.render()
        await d.handle_control(Control(ControlAction.RESUME))
        await until(lambda: d.engine.ledger.comments == 6, "all six comments after resume")
        made["feed"].end()
        assert await run.finish() == 0
    text = d.registry.render()
    assert 'livecart_pauses_total{action="pause"} 1' in text
    assert 'livecart_intake_waits_total{adapter="feed"}' in text
    orders = [o["comment"] for o in d.engine.ledger.orders()]
    assert orders == [f"m-{i}" for i in range(6)]


async def test_pause_is_journalled_and_a_restart_comes_back_paused(tmp_path: Path) -> None:
    extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n'
    made: dict[str, Fed] = {}
    cfg_path = write(tmp_path, extra)
    run = Running(cfg_path, make_adapter=fed_factory(made))
    async with run as d:
        await d.handle_control(Control(ControlAction.PAUSE))
        made["feed"].end()
        assert await run.finish() == 0
    j = await Journal.open(tmp_path / "journal.db", readonly=True)
    try:
        kinds = [row[2] for row in await j.rows()]
        assert (await j.rebuild()).intake_paused is True
    finally:
        await j.close()
    assert kinds[-1] == "i"

    made = {}
    run = Running(cfg_path, make_adapter=fed_factory(made))
    async with run as d:
        assert d.state()["paused"] is True  # the host's pause outlived the restart
        made["feed"].push([comment(1)])
        await until(lambda: d.metrics.comments.total() == 1, "the batch taken in")
        assert d.engine.ledger.comments == 0
        await d.handle_control(Control(ControlAction.RESUME))
        await until(lambda: d.engine.ledger.comments == 1, "the comment after resume")
        made["feed"].end()
        assert await run.finish() == 0
    assert d.engine.ledger.intake_paused is False


async def test_a_stop_while_paused_still_drains_what_was_taken_in(tmp_path: Path) -> None:
    extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n'
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra, queue=4), make_adapter=fed_factory(made))
    async with run as d:
        await d.handle_control(Control(ControlAction.PAUSE))
        made["feed"].push([comment(i) for i in range(3)])
        # Counted at intake just before it is queued: from then on the batch is the daemon's to drain.
        await until(lambda: d.metrics.comments.total() == 3, "the batch taken in")
        assert d.engine.ledger.comments == 0
        assert await run.finish() == 0
    assert d.engine.ledger.comments == 3


# --- hooks and events ----------------------------------------------------------------------------------------

class HookServer:
    """A local HTTP endpoint for the ``http_post`` hook; ``hang`` makes it never answer."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self.got = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _post(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.got.set()
        if self.hang:
            await self._release.wait()
        self.bodies.append(orjson.loads(await request.read()))
        return web.json_response({"ok": True})

    async def __aenter__(self) -> HookServer:
        app = web.Application()
        app.router.add_post("/hook", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._runner is not None
        await self._runner.cleanup()


def hook_table(url: str) -> str:
    return f'[[hooks]]\ntype = "http_post"\nurl = "{url}"\ntimeout = 0.3\nretries = 0\n'


async def test_hooks_get_durable_outcomes_and_sold_out_and_presale_events(tmp_path: Path) -> None:
    made: dict[str, Fed] = {}
    async with HookServer() as server:
        extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n\n' + hook_table(server.url)
        run = Running(write(tmp_path, extra, stock=4), make_adapter=fed_factory(made))
        async with run as d:
            made["feed"].push([comment(i, "鸡蛋来两盒") for i in range(3)])  # 6 asked: 4 reserved, 2 presale
            made["feed"].end()
            assert await run.finish() == 0
    assert d.hooks is not None
    events = [b["event"]["kind"] for b in server.bodies if "event" in b]
    assert "sold_out" in events
    assert "presale_opened" in events
    outcomes = [o for b in server.bodies if "outcomes" in b for o in b["outcomes"]]
    assert sorted(o["status"] for o in outcomes) == ["presale", "reserved", "reserved"]
    assert all(o["seq"] is not None for o in outcomes)
    assert d.state()["events"]["sold_out"] == 1


async def test_a_hanging_hook_does_not_stall_ordering_and_is_counted(tmp_path: Path) -> None:
    made: dict[str, Fed] = {}
    async with HookServer(hang=True) as server:
        extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n\n' + hook_table(server.url)
        run = Running(write(tmp_path, extra, stock=100), make_adapter=fed_factory(made))
        async with run as d:
            made["feed"].push([comment(0)])
            async with asyncio.timeout(10):
                await server.got.wait()  # the hook is now stuck inside its first call
            for i in range(1, 50):
                made["feed"].push([comment(i)])
            await until(lambda: d.engine.ledger.comments == 50, "ordering to go on past the stuck hook")
            assert d.engine.snapshot()["products"]["egg-10"]["reserved"] == 50
            made["feed"].end()
            assert await run.finish() == 0
    assert d.hooks is not None
    assert d.hooks.count("http_post-0", "outcomes", "timeout") + d.hooks.count("http_post-0", "outcomes",
                                                                              "error") >= 1


# --- status endpoints and the state file ----------------------------------------------------------------------

async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def test_status_endpoints_and_the_state_file_name_every_address(tmp_path: Path) -> None:
    extra = ('[[adapters]]\ntype = "websocket"\nname = "ws"\nmode = "server"\nport = 0\n\n'
             '[control]\ntoken = "t0k"\n')
    path = write(tmp_path, extra)
    run = Running(path)
    async with run as d:
        state_file = control_state_path(run.cfg)
        state = orjson.loads(state_file.read_bytes())
        assert state["status"].startswith("http://127.0.0.1:")
        assert state["adapters"]["ws"].startswith("ws://127.0.0.1:")
        assert "token" not in state  # configured, so not written
        status, body = await get(state["status"] + "/healthz")
        assert status == 200
        assert orjson.loads(body)["ok"] is True
        status, body = await get(state["status"] + "/api/state")
        api = orjson.loads(body)
        assert api["adapters"]["ws"]["address"] == state["adapters"]["ws"]
        assert api["products"]["egg-10"] == {"stock": 20, "left": 20, "reserved": 0, "presale": 0}
        status, text = await get(state["status"] + "/metrics")
        for name in ("livecart_comments_total", "livecart_intents_total", "livecart_outcomes_total",
                     'livecart_queue_depth{queue="intake"}', "livecart_journal_batch_seconds_sum",
                     "livecart_reconnects_total", "livecart_malformed_total", 'livecart_queue_depth{queue="replies:ws"}'):
            assert name in text, name
        assert await run.finish() == 0
    assert not state_file.exists()  # removed at stop
    assert d.failed == []


async def test_a_journal_write_failure_is_unhealthy_at_once_and_stops_the_daemon_without_another_comment(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Found from outside: after a failed write /healthz said ok until the next comment came (which at night
    # may be never), and asyncio logged "_GatheringFuture exception was never retrieved" on the way out.
    extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n'
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra), make_adapter=fed_factory(made))
    async with run as d:
        made["feed"].push([comment(0)])
        await until(lambda: d.engine.ledger.comments == 1, "the first comment")
        await d.engine.journal.flush()
        con = sqlite3.connect(tmp_path / "journal.db", timeout=10)  # another writer, behind the lock's back
        with con:
            last = con.execute("SELECT max(last) FROM batches").fetchone()[0]
            con.execute("INSERT INTO batches (first, last, ts, body, crc) VALUES (?, ?, 0, '[]', 0)",
                        (last + 1, last + 1))
        con.close()
        made["feed"].push([comment(1)])
        await until(lambda: d.journal_error is not None, "the failed write")
        ok, details = d.health()
        assert not ok
        assert details["failed"][0].startswith("journal: cannot write the journal")
        assert run.task is not None
        async with asyncio.timeout(10):  # stops by itself: no third comment, no stop signal
            assert await asyncio.shield(run.task) == 1
    assert "never retrieved" not in caplog.text


async def test_a_second_daemon_on_a_hard_link_is_refused_before_it_opens_anything(tmp_path: Path) -> None:
    # Found from outside: refused through a hard link, a second daemon had already opened its adapters (its
    # WebSocket listener bound a port) before the journal refused it.
    extra = '[[adapters]]\ntype = "fed"\nname = "feed"\n'
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra), make_adapter=fed_factory(made))
    async with run as d:
        made["feed"].push([comment(0)])
        await until(lambda: d.engine.ledger.comments == 1, "the first comment")
        other = tmp_path / "other"
        other.mkdir()
        await asyncio.to_thread(os.link, tmp_path / "journal.db", other / "journal.db")
        second: dict[str, Fed] = {}
        cfg = load(write(other, extra), adapter_options=options_of)
        with pytest.raises(JournalLocked, match="hard link"):
            await serve(cfg, make_adapter=fed_factory(second))
        assert second == {}  # no adapter was even made, let alone opened
        made["feed"].end()
        assert await run.finish() == 0


async def test_an_adapter_that_fails_mid_stream_ends_with_status_1_after_the_others_drain(tmp_path: Path) -> None:
    extra = '[[adapters]]\ntype = "fed"\nname = "good"\n\n[[adapters]]\ntype = "fed"\nname = "bad"\n'
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra), make_adapter=fed_factory(made))
    async with run as d:
        made["bad"].stats.reconnects = 3  # it retried, then gave up: failed, not reconnecting, on /healthz
        made["bad"].fail(FatalAdapterError("adapter bad: gave up after 3 failed attempts"))
        await until(lambda: bool(d.failed), "the bad adapter to fail")
        assert d.health()[1]["adapters"]["bad"] == "failed"
        made["good"].push([comment(i) for i in range(3)])
        made["good"].end()
        assert await run.finish() == 1
    assert d.engine.ledger.comments == 3
    assert d.failed == ["adapter bad: gave up after 3 failed attempts"]  # said once, not 'adapter bad: adapter bad:'


async def test_a_start_with_an_adapter_that_cannot_open_raises_a_readable_error(tmp_path: Path) -> None:
    extra = '[[adapters]]\ntype = "replay"\npath = "missing.jsonl"\n'
    with pytest.raises(FatalAdapterError, match="cannot open"):
        await serve(load(write(tmp_path, extra)))


# --- the shipped example config ------------------------------------------------------------------------------

def test_the_example_config_loads_and_shows_every_key_of_every_daemon_section() -> None:
    from livecart.config import DAEMON_SECTIONS

    path = Path(__file__).resolve().parents[2] / "config" / "stream.example.toml"
    cfg = load(path)
    text = path.read_text(encoding="utf-8")
    missing = [f"[{section}].{key}" for section, keys in DAEMON_SECTIONS.items() for key in keys
               if f"\n{key} = " not in text.split(f"\n[{section}]", 1)[-1] and f"\n[{section}.{key}]" not in text]
    assert missing == []
    assert {a.type for a in cfg.adapters} == {"websocket", "mqtt"}
    for commented in ("douyin", "bilibili", "twitch", "youtube", "webhook", "http_post"):
        assert f'# type = "{commented}"' in text


# -- a plugin whose open() or close() never returns ----------------------------------------------------------


class Hangs(Adapter):
    """Found from outside: a plugin's open() or close() that never returned hung the daemon's start (nothing
    said which adapter it waited for) or its exit (after its last line, "stopped")."""

    type = "hangs"

    def __init__(self, *, on_open: bool, on_close: bool) -> None:
        super().__init__({}, name="stuck")
        self.on_open, self.on_close = on_open, on_close

    async def open(self) -> None:
        if self.on_open:
            await asyncio.Event().wait()

    async def close(self) -> None:
        if self.on_close:
            await asyncio.Event().wait()
        await super().close()

    async def batches(self) -> AsyncIterator[Sequence[Comment]]:
        yield []


async def test_an_adapter_that_never_opens_is_named_then_given_up(caplog: pytest.LogCaptureFixture) -> None:
    from livecart.core.errors import AdapterError
    from livecart.runtime.daemon import _open_adapter

    with pytest.raises(AdapterError, match=r"adapter stuck \(hangs\) did not finish opening within 0.3 s"):
        await _open_adapter(Hangs(on_open=True, on_close=False), within=0.3, slow=0.1)
    assert "waiting for adapter stuck (hangs) to open" in caplog.text
    await _open_adapter(Hangs(on_open=False, on_close=False), within=0.3, slow=0.1)  # a quick one: no word


async def test_an_adapter_that_never_closes_is_left_behind_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    from livecart.runtime.daemon import _close_adapter

    a = Hangs(on_open=False, on_close=True)
    await _close_adapter(a, within=0.2)
    assert a.stats.errors == 1
    assert "adapter stuck did not finish closing within 0.2 s; left behind" in caplog.text


async def test_outcomes_no_adapter_here_can_answer_are_said_once_per_room(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    # An operator's check: a room fed only to another process got none of its 50 replies, and nothing but a
    # counter said so.
    extra = ('[[adapters]]\ntype = "fed"\nname = "douyin"\n\n'
             '[[adapters]]\ntype = "websocket"\nname = "companion"\nmode = "server"\nport = 0\n')
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra, stock=20), make_adapter=fed_factory(made))
    with caplog.at_level(logging.INFO, logger="livecart.daemon"):
        async with run as d:
            made["douyin"].push([comment(i, "鸡蛋来一盒") for i in range(5)])
            await until(lambda: d.engine.ledger.snapshot()["comments"] == 5, "5 comments")
            made["douyin"].push([comment(i, "鸡蛋来一盒") for i in range(5, 10)])
            await until(lambda: d.engine.ledger.snapshot()["comments"] == 10, "10 comments")
            await until(lambda: "livecart_replies_unroutable_total 10" in d.registry.render(), "10 unroutable")
            assert await run.finish() == 0
    said = [r.getMessage() for r in caplog.records if "get no reply from this process" in r.getMessage()]
    assert said == ["outcomes in douyin room r1 get no reply from this process: no adapter here that replies "
                    "has read a comment from it (counted in livecart_replies_unroutable_total)"]


SIGNAL_AFTER_THE_LOOP = """
import argparse, os, signal, sys, time
import uvloop
import livecart.runtime.daemon as daemon
uvloop.run = lambda coro: (coro.close(), 0)[1]  # the daemon's run, over at once
status = daemon.main(argparse.Namespace(file=sys.argv[1], verbose=0, live=False))
os.kill(os.getpid(), signal.SIGTERM)  # as the process winds down (threads joining, interpreter exit)
time.sleep(5)
sys.exit(status)
"""


def test_a_signal_after_the_loop_ended_exits_at_once_with_status_1(tmp_path: Path) -> None:
    # A plugin author's check: SIGTERM, then SIGTERM 50 ms later, exited 143 (the default action) in two
    # rounds of four: the second came after the event loop, and its handlers, had gone.
    cfg = write(tmp_path, '[[adapters]]\ntype = "replay"\npath = "none.jsonl"\n')
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_THE_LOOP, str(cfg)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "SIGTERM while exiting, exiting at once" in proc.stderr


async def test_health_tells_a_reconnecting_adapter_from_an_idle_one(tmp_path: Path) -> None:
    # A plugin author's check: an adapter that set connected = False while it reconnected over and over
    # showed as "idle", the same as one that never connected.
    extra = '[[adapters]]\ntype = "fed"\nname = "douyin"\n\n[[adapters]]\ntype = "fed"\nname = "bili"\n'
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, extra), make_adapter=fed_factory(made))
    async with run as d:
        made["douyin"].stats.connected = True
        made["bili"].stats.reconnects = 3  # dropped, retrying
        assert d.health()[1]["adapters"] == {"douyin": "connected", "bili": "reconnecting"}
        made["bili"].stats.connected = True
        assert d.health()[1]["adapters"]["bili"] == "connected"
        made["douyin"].stats.connected = False
        assert d.health()[1]["adapters"]["douyin"] == "idle"
        made["douyin"].end()
        made["bili"].end()
        assert await run.finish() == 0
