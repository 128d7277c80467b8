"""The durable signal: a :class:`~livecart.plugin.Batch` an adapter hands to the daemon is settled only once
the journal has committed it, in the order yielded, and with an error when it cannot be made durable.

The journal's commit is held back by a gate around :meth:`Journal.append` (the real journal underneath), so
"not before the commit" is observed rather than raced.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiomqtt
import orjson
import pytest

from livecart.core.errors import JournalError, NotDurable
from livecart.plugin import Batch, CallbackErrors
from livecart.runtime.daemon import Daemon

from .test_daemon import Fed, Running, comment, fed_factory, until, write

EXTRA = '[[adapters]]\ntype = "fed"\nname = "feed"\n'


class Gate:
    """Wraps the engine's journal append: each append's future resolves only when the gate opens (or
    fails when the gate fails), after the real commit."""

    def __init__(self, d: Daemon) -> None:
        self.open = asyncio.Event()
        self.error: BaseException | None = None
        self.appends = 0
        journal = d.engine.journal
        real = journal.append

        def append(rows: object) -> asyncio.Future[None]:
            self.appends += 1
            inner = real(rows)  # type: ignore[arg-type]
            outer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def release() -> None:
                await inner
                await self.open.wait()
                if self.error is not None:
                    outer.set_exception(self.error)
                else:
                    outer.set_result(None)

            asyncio.ensure_future(release())
            return outer

        journal.append = append  # type: ignore[method-assign]


async def test_a_batch_is_settled_only_after_its_journal_commit(tmp_path: Path) -> None:
    made: dict[str, Fed] = {}
    async with Running(write(tmp_path, EXTRA), make_adapter=fed_factory(made)) as d:
        gate = Gate(d)
        settled: list[BaseException | None] = []
        made["feed"].push(Batch([comment(1), comment(2)], on_settled=settled.append))
        await until(lambda: gate.appends == 1, "the batch to reach the journal")
        await asyncio.sleep(0.05)  # time for a wrong early settlement to show; the gate is still shut
        assert settled == []
        gate.open.set()
        await until(lambda: bool(settled), "the settlement")
        assert settled == [None]
        assert d.engine.snapshot()["comments"] == 2


async def test_batches_settle_in_order_even_when_a_later_one_holds_only_a_duplicate(tmp_path: Path) -> None:
    made: dict[str, Fed] = {}
    async with Running(write(tmp_path, EXTRA), make_adapter=fed_factory(made)) as d:
        gate = Gate(d)
        order: list[str] = []
        first = Batch([comment(1)], on_settled=lambda e: order.append("first"))
        made["feed"].push(first)
        await until(lambda: gate.appends == 1, "the first batch to reach the journal")
        # The resend of m-1 is skipped by the engine as seen before, so its submit has nothing to commit;
        # it must still wait for the commit of the first copy.
        again = Batch([comment(1)], on_settled=lambda e: order.append("again"))
        made["feed"].push(again)
        await until(lambda: d.queue.empty(), "the resend to be submitted")
        await asyncio.sleep(0.05)
        assert order == []
        gate.open.set()
        await until(lambda: len(order) == 2, "both settlements")
        assert order == ["first", "again"]


async def test_a_failed_commit_settles_the_batch_with_the_error(tmp_path: Path) -> None:
    made: dict[str, Fed] = {}
    run = Running(write(tmp_path, EXTRA), make_adapter=fed_factory(made))
    async with run as d:
        gate = Gate(d)
        gate.error = JournalError("disk full")
        batch = Batch([comment(1)])
        durable = batch.durable()
        made["feed"].push(batch)
        gate.open.set()
        with pytest.raises(JournalError, match="disk full"):
            await asyncio.wait_for(durable, 10)
        status = await run.finish()
    assert status == 1


async def test_an_empty_batch_settles_too(tmp_path: Path) -> None:
    made: dict[str, Fed] = {}
    async with Running(write(tmp_path, EXTRA), make_adapter=fed_factory(made)):
        batch = Batch()
        made["feed"].push(batch)
        await asyncio.wait_for(batch.durable(), 10)
        assert batch.settled
        assert batch.error is None


def test_settling_twice_keeps_the_first_outcome() -> None:
    seen: list[BaseException | None] = []
    b = Batch([comment(1)], on_settled=seen.append)
    b.settle()
    b.settle(NotDurable("late"))
    assert seen == [None]
    assert b.error is None
    late: list[BaseException | None] = []
    b.when_settled(late.append)
    assert late == [None]


async def test_a_callback_that_raises_on_every_batch_is_counted_logged_rarely_and_stops_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    made: dict[str, Fed] = {}
    monkeypatch.setattr(CallbackErrors, "count", 0)
    monkeypatch.setattr(CallbackErrors, "_said_at", float("-inf"))
    monkeypatch.setattr(CallbackErrors, "_unsaid", 0)

    def broken(error: BaseException | None) -> None:
        raise RuntimeError("the plugin's answer to its sender failed")

    async with Running(write(tmp_path, EXTRA), make_adapter=fed_factory(made)) as d:
        after: list[BaseException | None] = []
        batches = [Batch([comment(i)], on_settled=broken) for i in range(50)]
        for b in batches:
            b.when_settled(after.append)  # a later callback of the same batch still runs
            made["feed"].push(b)
        await until(lambda: len(after) == 50, "every batch to settle")
        assert after == [None] * 50
        assert d.engine.snapshot()["comments"] == 50
        metrics = d.registry.render()
    assert "livecart_ack_callback_errors_total 50.0" in metrics
    said = [r for r in caplog.records if "acknowledgement callback" in r.getMessage()]
    assert len(said) == 1  # one traceback, not fifty
    assert said[0].exc_info is not None
    assert "livecart_ack_callback_errors_total" in said[0].getMessage()


def test_callback_failures_after_the_first_are_summed_up_once_a_period(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CallbackErrors, "count", 0)
    monkeypatch.setattr(CallbackErrors, "_said_at", float("-inf"))
    monkeypatch.setattr(CallbackErrors, "_unsaid", 0)
    clock = [100.0]
    monkeypatch.setattr("livecart.plugin.time.monotonic", lambda: clock[0])

    def broken(error: BaseException | None) -> None:
        raise RuntimeError("no")

    for step in (0.0, 1.0, 1.0, 1.0, 60.0, 1.0):
        clock[0] += step
        Batch([comment(1)], on_settled=broken).settle()
    lines = [r.getMessage() for r in caplog.records if "acknowledgement callback" in r.getMessage()]
    assert len(lines) == 2
    assert "failed 4 more time(s) since the last report" in lines[1]
    assert CallbackErrors.count == 6


async def test_the_mqtt_control_topic_requires_the_generated_token_when_none_is_set(
        tmp_path: Path, mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    topic = f"livecart-test/{uuid.uuid4().hex}/control"
    extra = EXTRA + f'\n[control]\ntoken = ""\nmqtt_host = "{host}"\nmqtt_port = {port}\nmqtt_topic = "{topic}"\n'
    made: dict[str, Fed] = {}
    async with Running(write(tmp_path, extra), make_adapter=fed_factory(made)) as d, \
            aiomqtt.Client(host, port) as client:
        assert d.mqtt_control is not None
        assert d.control is not None
        async with asyncio.timeout(10):
            await d.mqtt_control.ready.wait()
        await client.subscribe(f"{topic}/result", qos=1)
        answers = []
        for payload in ({"action": "pause", "id": 1},
                        {"action": "pause", "id": 2, "token": "guess"},
                        {"action": "pause", "id": 3, "token": d.control.token}):
            await client.publish(topic, orjson.dumps(payload), qos=1)
            async with asyncio.timeout(10):
                msg = await anext(aiter(client.messages))
            answers.append(orjson.loads(bytes(msg.payload)))  # type: ignore[arg-type]
        assert [(a["id"], a["ok"]) for a in answers] == [(1, False), (2, False), (3, True)]
        assert not d.running.is_set()  # only the third, with the generated token, paused intake
