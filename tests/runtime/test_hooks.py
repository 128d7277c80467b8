from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest

from livecart import config
from livecart.core.events import Event, EventKind
from livecart.core.records import Outcome, Status
from livecart.plugin import Hook, Option
from livecart.runtime.hooks import HookRunner
from livecart.runtime.metrics import Registry


def outcome(n: int) -> Outcome:
    return Outcome(f"m-{n}", "u", f"o-{n}", "egg", None, 1, Status.RESERVED, None, None, "p", "r", 0.0, n)


class Recorder(Hook):
    type = "recorder"
    OPTIONS: ClassVar[Mapping[str, Option]] = {"stream": Option(str, "")}

    def __init__(self, options: Mapping[str, Any] | None = None, *, name: str = "rec") -> None:
        super().__init__(options or {}, name=name)
        self.batches: list[list[str]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.delivered = asyncio.Condition()
        self.opened = self.closed = False

    async def wait_orders(self, n: int) -> None:
        async with self.delivered:
            await self.delivered.wait_for(lambda: sum(map(len, self.batches)) >= n)

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def on_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append([o.order or "" for o in outcomes])
        async with self.delivered:
            self.delivered.notify_all()

    async def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        self.events.append((event, dict(data)))


class Hang(Hook):
    type = "hang"

    async def on_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        await asyncio.Event().wait()

    async def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        await asyncio.Event().wait()


class Boom(Hook):
    type = "boom"

    async def on_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        raise RuntimeError("plugin bug")


async def test_a_hanging_hook_does_not_stall_the_others() -> None:
    rec = Recorder()
    runner = HookRunner([Hang({}, name="hang"), rec], timeout=0.5, grace=0.05)
    await runner.start()
    for n in range(3):
        runner.submit_outcomes([outcome(n)])  # returns at once: nothing here awaits a hook
    await asyncio.wait_for(rec.wait_orders(3), 5.0)
    assert [o for b in rec.batches for o in b] == ["o-0", "o-1", "o-2"]
    assert runner.count("hang", "outcomes", "timeout") == 0  # delivered while the other hook hung
    await asyncio.wait_for(runner.drained(), 5.0)
    await runner.close()
    assert runner.count("hang", "outcomes", "timeout") >= 1


async def test_errors_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    runner = HookRunner([Boom({}, name="boom")], stream="Spring")
    await runner.start()
    with caplog.at_level(logging.DEBUG, logger="livecart.hooks"):
        for n in range(4):
            runner.submit_outcomes([outcome(n)])
            await asyncio.wait_for(runner.drained(), 5.0)
    await runner.close()
    assert runner.count("boom", "outcomes", "error") == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "hook boom" in warnings[0].getMessage()
    assert "plugin bug" in warnings[0].getMessage()


async def test_full_queue_sheds_the_oldest_and_counts_it() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    runner = HookRunner([rec], queue_size=2, max_batch=1)
    await runner.start()
    runner.submit_outcomes([outcome(0)])
    await asyncio.wait_for(rec.entered.wait(), 5.0)  # o-0 is being delivered
    for n in range(1, 5):
        runner.submit_outcomes([outcome(n)])
    assert runner.depth("rec") == 2
    assert runner.shed("rec") == 2
    rec.gate.set()
    await asyncio.wait_for(runner.drained(), 5.0)
    await runner.close()
    assert rec.batches == [["o-0"], ["o-3"], ["o-4"]]


async def test_waiting_batches_are_coalesced_but_events_keep_their_place() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    runner = HookRunner([rec])
    await runner.start()
    runner.submit_outcomes([outcome(0)])
    await asyncio.wait_for(rec.entered.wait(), 5.0)
    runner.submit_outcomes([outcome(1)])
    runner.submit_outcomes([outcome(2)])
    runner.submit_event(Event(EventKind.SOLD_OUT, "egg", None, {"left": 0}))
    runner.submit_outcomes([outcome(3)])
    rec.gate.set()
    await asyncio.wait_for(runner.drained(), 5.0)
    await runner.close()
    assert rec.batches == [["o-0"], ["o-1", "o-2"], ["o-3"]]
    assert rec.events == [("sold_out", {"left": 0, "kind": "sold_out", "sku": "egg", "variant": None})]


async def test_close_cancels_after_grace_and_counts_undelivered() -> None:
    runner = HookRunner([Hang({}, name="hang")], timeout=60.0, grace=0.05)
    await runner.start()
    runner.submit_outcomes([outcome(0)])
    runner.submit_outcomes([outcome(1)])
    runner.submit_event(Event(EventKind.LOW_STOCK, "egg"))
    await asyncio.wait_for(runner.close(), 5.0)
    await runner.close()  # idempotent
    assert runner.shed("hang") >= 1
    runner.submit_outcomes([outcome(2)])  # after close: counted, not queued
    assert runner.depth("hang") == 0


async def test_from_config_builds_hooks_and_fills_in_the_stream_name() -> None:
    cfg = config.loads('[stream]\nname = "Spring"\n[[hooks]]\ntype = "recorder"\nname = "r1"\n',
                       hook_options=lambda t: Recorder.OPTIONS)
    runner = HookRunner.from_config(cfg, hook_class=lambda t: Recorder)
    assert [h.name for h in runner.hooks] == ["r1"]
    assert runner.hooks[0].options["stream"] == "Spring"
    await runner.start()
    assert isinstance(runner.hooks[0], Recorder)
    assert runner.hooks[0].opened
    await runner.close()
    assert runner.hooks[0].closed


async def test_metrics_render_queue_depth_and_calls() -> None:
    reg = Registry()
    rec = Recorder()
    runner = HookRunner([rec], metrics=reg)
    await runner.start()
    runner.submit_outcomes([outcome(0)])
    await asyncio.wait_for(runner.drained(), 5.0)
    text = reg.render()
    await runner.close()
    assert 'livecart_hook_calls_total{hook="rec",kind="outcomes",result="ok"} 1' in text
    assert 'livecart_hook_queue_depth{hook="rec"} 0' in text
    assert "rec (0 waiting)" in repr(runner)
