"""The mqtt adapter against the real Mosquitto broker (and a private one for the restart test)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import aiomqtt
import orjson
import pytest
from aiomqtt import MqttCodeError

from livecart.adapters.mqtt import MqttAdapter
from livecart.core.errors import FatalAdapterError
from livecart.core.records import Comment

DEADLINE = 15.0  # a safety bound only: every wait below ends as soon as its event happens


def c(i: int, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"platform": "mq", "room": "r1", "id": f"m-{i}", "user": f"u-{i}", "text": f"+{i}",
                         "ts": 1700000000.0 + i}
    d.update(kw)
    return d


def topic() -> str:
    return f"livecart-test/{uuid.uuid4().hex}"


def adapter(broker: tuple[str, int], topic: str, **opts: Any) -> MqttAdapter:
    host, port = broker
    return MqttAdapter({"host": host, "port": port, "topic": topic, "reconnect_initial": 0.02,
                        "reconnect_cap": 0.2, **opts}, name="mqtt-test")


async def publish(broker: tuple[str, int], topic: str, *payloads: bytes | str, qos: int = 1) -> None:
    async with aiomqtt.Client(broker[0], broker[1]) as pub:
        for p in payloads:
            await pub.publish(topic, p, qos=qos)


class Reader:
    """Pumps an adapter's comments into a queue from a task, so the test can publish once it is subscribed."""

    def __init__(self, ad: MqttAdapter) -> None:
        self.ad = ad
        self.queue: asyncio.Queue[Comment] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        async for batch in self.ad.batches():
            for comment in batch:
                self.queue.put_nowait(comment)

    async def start(self) -> Reader:
        self.task = asyncio.create_task(self._pump())
        await self.subscribed(1)
        return self

    async def subscribed(self, n: int) -> None:
        assert self.task is not None
        waiter = asyncio.create_task(self.ad.subscribed.reached(n))
        async with asyncio.timeout(DEADLINE):
            await asyncio.wait([self.task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self.task.done():
            self.task.result()  # surfaces a connection error at once
            raise AssertionError("the adapter stopped before subscribing")

    async def next(self, n: int) -> list[Comment]:
        async with asyncio.timeout(DEADLINE):
            return [await self.queue.get() for _ in range(n)]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.ad.close()


async def test_reads_one_comment_or_an_array_per_message(mosquitto: tuple[str, int]) -> None:
    t = topic()
    r = await Reader(adapter(mosquitto, t)).start()
    await publish(mosquitto, t, orjson.dumps(c(1)), orjson.dumps([c(2), c(3)]), orjson.dumps(c(4)).decode())
    got = await r.next(4)
    await r.stop()
    assert [x.id for x in got] == ["m-1", "m-2", "m-3", "m-4"]
    assert got[0] == Comment("mq", "r1", "m-1", "u-1", "u-1", "+1", 1700000001.0)
    assert r.ad.stats.received == 4


async def test_fills_platform_and_room_and_maps_fields(mosquitto: tuple[str, int]) -> None:
    t = topic()
    r = await Reader(adapter(mosquitto, t, platform="bus", room="hall",
                             fields={"text": "body", "user": "from"})).start()
    await publish(mosquitto, t, orjson.dumps({"id": "x1", "body": "SOLD honey 2", "from": "ann", "ts": 5}))
    [got] = await r.next(1)
    await r.stop()
    assert got == Comment("bus", "hall", "x1", "ann", "ann", "SOLD honey 2", 5.0)


async def test_malformed_payloads_are_counted_and_the_stream_goes_on(mosquitto: tuple[str, int]) -> None:
    t = topic()
    r = await Reader(adapter(mosquitto, t, max_payload=300)).start()
    await publish(mosquitto, t, b"{oops", b"\xff\xfe", orjson.dumps(c(1, user=["not", "a", "string"])),
                  orjson.dumps([c(1), 17]), b"[" + b" " * 400 + b"]", orjson.dumps(c(2)))
    got = await r.next(2)
    await r.stop()
    assert [x.id for x in got] == ["m-1", "m-2"]
    assert r.ad.stats.malformed_by_reason == {"bad_json": 2, "missing_field": 1, "not_an_object": 1,
                                              "oversized": 1}
    assert r.ad.stats.reconnects == 0


async def test_duplicate_deliveries_pass_through_and_are_counted(mosquitto: tuple[str, int]) -> None:
    t = topic()
    r = await Reader(adapter(mosquitto, t)).start()
    await publish(mosquitto, t, orjson.dumps(c(1)), orjson.dumps(c(1)), orjson.dumps(c(2)))
    got = await r.next(3)
    await r.stop()
    assert [x.key for x in got] == [("mq", "r1", "m-1"), ("mq", "r1", "m-1"), ("mq", "r1", "m-2")]
    assert r.ad.stats.duplicates == 1


async def test_shared_subscription_splits_one_feed_between_two_engines(mosquitto: tuple[str, int]) -> None:
    t = topic()
    shared = f"$share/engines-{uuid.uuid4().hex[:6]}/{t}"
    a = await Reader(adapter(mosquitto, shared)).start()
    b = await Reader(adapter(mosquitto, shared)).start()
    n = 200
    await publish(mosquitto, t, *(orjson.dumps(c(i)) for i in range(n)))
    # Wait for all n between the two, by counting what each queue holds (the deadline is only a bound).
    got_a: list[Comment] = []
    got_b: list[Comment] = []
    async with asyncio.timeout(DEADLINE):
        while len(got_a) + len(got_b) < n:
            ga = asyncio.create_task(a.queue.get())
            gb = asyncio.create_task(b.queue.get())
            done, pending = await asyncio.wait([ga, gb], return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for d, into in ((ga, got_a), (gb, got_b)):
                if d in done:
                    into.append(d.result())
    await a.stop()
    await b.stop()
    ids_a, ids_b = {x.id for x in got_a}, {x.id for x in got_b}
    assert ids_a | ids_b == {f"m-{i}" for i in range(n)}
    assert not ids_a & ids_b
    assert ids_a, "the broker gave engine b everything"
    assert ids_b, "the broker gave engine a everything"


class Stalled:
    """An adapter whose consumer has taken the first message (``m-0``) and then takes nothing until the test
    calls :meth:`one`, which takes the next batch of one comment."""

    def __init__(self, broker: tuple[str, int], **opts: Any) -> None:
        self.broker = broker
        self.topic = topic()
        self.ad = adapter(broker, self.topic, max_pending=5, **opts)
        self.it = self.ad.batches()
        self.got: list[Comment] = []

    async def one(self) -> Comment:
        async with asyncio.timeout(DEADLINE):
            [comment] = await anext(self.it)
        self.got.append(comment)
        return comment

    async def start(self) -> Stalled:
        first = asyncio.create_task(self.one())
        async with asyncio.timeout(DEADLINE):
            await self.ad.subscribed.reached(1)
        # Published at QoS 1, so the publisher's client has sent each before it disconnects; the broker
        # delivers at the subscription's QoS (MQTT 3.1.1 §3.8.4).
        await publish(self.broker, self.topic, orjson.dumps(c(0)))
        await first
        return self

    async def publish(self, *ids: int) -> None:
        await publish(self.broker, self.topic, *(orjson.dumps(c(i)) for i in ids))

    async def until_marker(self) -> None:
        """Publish m-999 and take everything up to it (messages arrive in order, MQTT 3.1.1 §4.6.0)."""
        await self.publish(999)
        while self.got[-1].id != "m-999":
            await self.one()
        await self.it.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_slow_consumer_holds_the_broker_back_and_loses_nothing(mosquitto: tuple[str, int],
                                                                     protocol: str) -> None:
    """QoS 1: beyond max_pending waiting messages, a message is acknowledged only when the consumer takes it,
    so while the consumer stalls the broker keeps what does not fit its in-flight window, instead of this
    process dropping messages it had acknowledged."""
    s = await Stalled(mosquitto, qos=1, protocol=protocol).start()
    # The consumer now takes nothing while 50 more messages reach the broker (each PUBACKed to the publisher).
    await s.publish(*range(1, 51))
    if protocol == "5":
        # max_pending (5) acknowledged on arrival wait here, and then the broker sends at most our Receive
        # Maximum (max_pending again) more unacknowledged. Acknowledged on arrival, the 50 would have
        # streamed in while they were published.
        assert 1 <= s.ad.pending_peak <= 2 * 5
    await s.until_marker()
    assert [x.id for x in s.got] == [f"m-{i}" for i in range(51)] + ["m-999"]
    assert s.ad.stats.malformed_by_reason.get("queue_full", 0) == 0
    assert s.ad.dropped.count == 0


async def test_slow_consumer_drops_and_counts_qos0_beyond_max_pending(mosquitto: tuple[str, int]) -> None:
    """QoS 0 has no acknowledgement to withhold: beyond max_pending waiting messages, one is dropped and
    counted rather than buffered without bound."""
    s = await Stalled(mosquitto, qos=0).start()
    # The consumer now takes nothing while 50 more messages arrive.
    await s.publish(*range(1, 51))
    async with asyncio.timeout(DEADLINE):
        await s.ad.dropped.reached(1)
    for _ in range(5):
        await s.one()
    await s.until_marker()  # once the marker is in, every earlier message was counted
    dropped = s.ad.stats.malformed_by_reason["queue_full"]
    assert dropped == s.ad.dropped.count > 0
    assert len(s.got) + dropped == 52  # 51 numbered messages and the marker
    assert 6 <= len(s.got) <= 8  # the first, the queue's 5 (+1 in hand), the marker


def test_refused_login_and_subscription_codes_are_fatal_others_retryable() -> None:
    ad = MqttAdapter({"topic": "x"}, name="t")
    assert not ad._classify(MqttCodeError(5, "not authorised"))
    assert not ad._classify(MqttCodeError(0x86, "bad user name or password"))
    assert ad._classify(MqttCodeError(None, "Operation timed out"))
    assert ad._classify(aiomqtt.MqttError("Disconnected during message iteration"))
    assert ad._classify(ConnectionRefusedError())


def test_bad_topic_is_refused() -> None:
    with pytest.raises(FatalAdapterError, match="share"):
        MqttAdapter({"topic": "$share/only"}, name="t")


async def test_unreachable_broker_gives_up_after_max_attempts() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ad = adapter(("127.0.0.1", port), "t", max_attempts=2)
    with pytest.raises(Exception, match="gave up after 2"):
        async with asyncio.timeout(DEADLINE):
            [x async for x in ad]
    assert ad.stats.reconnects == 1


# -- a private broker that the test may restart ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateBroker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto")
        assert exe is not None
        self.proc = subprocess.Popen([exe, "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    async def ready(self) -> None:
        async with asyncio.timeout(DEADLINE):
            while True:
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.02)  # the broker process is starting; nothing to wait on but time
                    continue
                w.close()
                await w.wait_closed()
                return


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    if shutil.which("mosquitto") is None:
        pytest.skip("needs the mosquitto executable")
    broker = PrivateBroker(_free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_reconnects_and_resubscribes_after_the_broker_restarts(private_broker: PrivateBroker) -> None:
    await private_broker.ready()
    addr = ("127.0.0.1", private_broker.port)
    t = topic()
    r = await Reader(adapter(addr, t)).start()
    await publish(addr, t, orjson.dumps(c(1)))
    got = await r.next(1)
    private_broker.stop()
    private_broker.start()  # a fresh broker that knows nothing of the old session or subscription
    await private_broker.ready()
    await r.subscribed(2)
    await publish(addr, t, orjson.dumps(c(2)))
    got += await r.next(1)
    await r.stop()
    assert [x.id for x in got] == ["m-1", "m-2"]
    assert r.ad.stats.reconnects >= 1
