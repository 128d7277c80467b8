"""``mqtt``: comments from an MQTT topic (aiomqtt over paho), one comment or a JSON array per message.

Keys: ``host``, ``port`` (1883), ``topic`` (wildcards allowed; ``$share/GROUP/TOPIC`` makes this engine one
member of a shared subscription, so several engines split one feed — MQTT 5.0 §4.8.2), ``username``,
``password``, ``qos`` (0, 1 or 2), ``client_id`` (empty = a random one), ``protocol`` (``5`` or ``3.1.1``),
``platform`` / ``room`` (for comments that name none), ``fields`` / ``ts_unit`` (as for ``websocket``),
``max_payload`` (bytes), ``max_pending`` (messages buffered between the socket and the consumer),
``reconnect_initial`` / ``reconnect_cap`` / ``max_attempts`` (the shared reconnect loop).

Every connection attempt subscribes again, so after a broker restart the subscription is back even on a
broker that lost its session state. A refused login (bad credentials, not authorised) or a refused
subscription is fatal; anything else (broker down, connection dropped) is retried with jittered backoff.

Backpressure and acknowledgement: up to ``max_pending`` messages wait here for the consumer. A QoS 1 or 2
message that arrives while there is room is acknowledged (PUBACK / PUBCOMP) at once, as paho would; one
that arrives when ``max_pending`` already wait is kept, and its acknowledgement is withheld until the
consumer takes it. This process never drops a QoS 1/2 message: nothing the broker was told is delivered
gets lost here. The broker sends only so many unacknowledged messages (MQTT 5.0 §4.9: this adapter's
Receive Maximum, ``max_pending``; MQTT 3.1.1: the broker's own limit, Mosquitto's
``max_inflight_messages``), so while the consumer stalls it holds the rest back. Mosquitto 2.0 releases
its backlog in bursts once acknowledgements resume, so the queue may briefly hold more than twice
``max_pending``; what a broker keeps for a client that is behind is its own limit to set (Mosquitto's
``max_queued_messages``). QoS 0 messages have no acknowledgement to withhold: beyond ``max_pending``
waiting ones they are dropped by this process and counted (malformed reason ``queue_full``, logged
once), not buffered without bound.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import aiomqtt
from aiomqtt import MqttCodeError, MqttError, ProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from livecart.adapters._codec import (
    DEFAULT_MAX_BYTES,
    Decoder,
    check_fields,
    check_nonneg,
    check_port,
    check_positive,
    with_defaults,
)
from livecart.adapters._intake import Milestone
from livecart.adapters.reconnect import Backoff, default_classify, reconnecting
from livecart.core.errors import FatalAdapterError, RetryableError
from livecart.core.records import Comment
from livecart.plugin import Adapter, AdapterStats, Option

log = logging.getLogger("livecart.adapter")


class _Acks:
    """One connection's acknowledgements: paho's client (in manual-acknowledgement mode) and the ids of the
    QoS 1/2 messages taken in beyond ``max_pending``, whose acknowledgement waits for the consumer."""

    __slots__ = ("paho", "withheld")

    def __init__(self) -> None:
        self.paho: Any = None
        self.withheld: set[int] = set()


#: CONNACK / SUBACK codes that retrying cannot fix: MQTT 3.1.1 §3.2.2.3 (4, 5) and MQTT 5.0 §3.2.2.2 / §3.9.3
#: (bad protocol, client id, user name or password, not authorised, banned, bad auth method, topic filter).
_FATAL_CODES = frozenset({1, 2, 4, 5, 0x80, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x8F, 0x9E, 0xA1, 0xA2})


def _check_topic(value: Any) -> str | None:
    if not value:
        return "must be a topic filter, e.g. 'live/comments' or '$share/engines/live/comments'"
    if value.startswith("$share/") and value.count("/") < 2:
        return "a shared subscription is '$share/GROUP/TOPIC'"
    return None


def _code(exc: MqttCodeError) -> int | None:
    rc = exc.rc
    if rc is None:
        return None
    return int(rc) if isinstance(rc, int) else int(rc.value)


class MqttAdapter(Adapter):
    type = "mqtt"
    OPTIONS: ClassVar[Mapping[str, Option]] = {
        "host": Option(str, "127.0.0.1", doc="broker address"),
        "port": Option(int, 1883, check=check_port, doc="broker port"),
        "topic": Option(str, required=True, check=_check_topic, doc="topic filter; '$share/GROUP/TOPIC' to split"),
        "username": Option(str, "", doc="user name; empty = anonymous"),
        "password": Option(str, "", doc="password"),
        "qos": Option(int, 1, choices=(0, 1, 2), doc="subscription QoS"),
        "client_id": Option(str, "", doc="MQTT client id; empty = a random one per adapter"),
        "protocol": Option(str, "5", choices=("5", "3.1.1"), doc="MQTT protocol version"),
        "keepalive": Option(int, 30, check=check_positive, doc="keepalive interval, s"),
        "fields": Option(dict, {}, check=check_fields, doc="contract field = payload field"),
        "ts_unit": Option(str, "s", choices=("s", "ms"), doc="unit of the payload's ts field"),
        "max_payload": Option(int, DEFAULT_MAX_BYTES, check=check_positive, doc="largest payload decoded, bytes"),
        "max_pending": Option(int, 10000, check=check_positive, doc="messages buffered for the consumer"),
        "platform": Option(str, "mqtt", doc="platform of comments that name none"),
        "room": Option(str, "default", doc="room of comments that name none"),
        "reconnect_initial": Option(float, 0.2, check=check_positive, doc="first reconnect delay, s"),
        "reconnect_cap": Option(float, 30.0, check=check_positive, doc="longest reconnect delay, s"),
        "max_attempts": Option(int, 0, check=check_nonneg, doc="give up after N failures in a row; 0 = never"),
    }

    def __init__(self, options: Mapping[str, Any], *, name: str, stats: AdapterStats | None = None) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"mqtt {name}"), name=name, stats=stats)
        o = self.options
        problem = _check_topic(o["topic"])
        if problem:
            raise FatalAdapterError(f"mqtt {name}: topic {problem}")
        self.decoder = Decoder(self.stats, platform=o["platform"], room=o["room"], fields=o["fields"],
                               max_bytes=o["max_payload"], ts_unit=o["ts_unit"])
        self.policy = Backoff(initial=o["reconnect_initial"], cap=o["reconnect_cap"])
        self.client_id = o["client_id"] or f"livecart-{uuid.uuid4().hex[:12]}"
        #: Advanced each time the subscription is in place (first connect and after every reconnect).
        self.subscribed = Milestone()
        #: Advanced for each QoS 0 message dropped because the consumer was ``max_pending`` messages behind.
        self.dropped = Milestone()
        self.messages = 0
        #: Most messages ever waiting for the consumer at once (``max_pending`` plus the broker's window).
        self.pending_peak = 0

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        max_attempts = int(self.options["max_attempts"]) or None
        return reconnecting(self._session, stats=self.stats, policy=self.policy, classify=self._classify,
                            max_attempts=max_attempts)

    def _classify(self, exc: BaseException) -> bool:
        if isinstance(exc, MqttCodeError):
            code = _code(exc)
            return code is None or code not in _FATAL_CODES
        if isinstance(exc, MqttError):
            return True
        return default_classify(exc)

    def _queue_type(self, acks: _Acks) -> builtins.type[asyncio.Queue[aiomqtt.Message]]:
        stats = self.stats
        dropped = self.dropped
        limit = int(self.options["max_pending"])
        adapter = self

        class CountingQueue(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt's incoming queue (unbounded to aiomqtt; paho calls put_nowait as each message is read).
            Within ``max_pending`` a QoS 1/2 message is acknowledged on arrival; beyond it, it is kept with
            its acknowledgement withheld. A QoS 0 message beyond it is counted as dropped."""

            def put_nowait(self, item: aiomqtt.Message) -> None:
                n = self.qsize()
                if n >= limit:
                    if item.qos == 0:
                        stats.malformed("queue_full", f"consumer is behind by {n} messages; dropped one QoS 0 "
                                        f"message on {item.topic}", bytes(item.payload)[:80]
                                        if isinstance(item.payload, bytes | bytearray) else item.payload)
                        dropped.advance()
                        return
                    acks.withheld.add(item.mid)
                elif item.qos:
                    acks.paho.ack(item.mid, item.qos)
                super().put_nowait(item)
                if n >= adapter.pending_peak:
                    adapter.pending_peak = n + 1

        return CountingQueue

    async def _session(self) -> AsyncIterator[Sequence[Comment]]:
        o = self.options
        v5 = o["protocol"] == "5"
        props: Properties | None = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = min(int(o["max_pending"]), 65535)  # MQTT 5.0 §3.1.2.11.3: 1-65535
        client = aiomqtt.Client(
            o["host"], int(o["port"]),
            username=o["username"] or None, password=o["password"] or None,
            identifier=self.client_id,
            protocol=ProtocolVersion.V5 if v5 else ProtocolVersion.V311,
            keepalive=int(o["keepalive"]),
            properties=props,
            queue_type=self._queue_type(acks := _Acks()),
            timeout=10,
        )
        # aiomqtt has no manual acknowledgement; its paho client does: PUBACK / PUBCOMP are then sent by
        # our ack() calls (see CountingQueue) instead of paho's on arrival.
        paho = acks.paho = client._client
        paho.manual_ack_set(True)
        withheld = acks.withheld
        try:
            async with client:
                await self._subscribe(client)
                self.stats.connected = True
                self.subscribed.advance()
                log.info("adapter %s: subscribed to %s on %s:%s", self.name, o["topic"], o["host"], o["port"])
                decode = self.decoder.decode
                async for message in client.messages:
                    self.messages += 1
                    payload = message.payload
                    if not isinstance(payload, bytes | bytearray | str):
                        payload = b"" if payload is None else str(payload)
                    batch = decode(payload if isinstance(payload, str) else bytes(payload))
                    if batch:
                        yield batch  # resumed when the consumer comes back for more: it has this batch
                    if withheld and message.mid in withheld:  # only QoS 1/2 ids are ever withheld
                        withheld.discard(message.mid)
                        paho.ack(message.mid, message.qos)
        except MqttError as exc:
            if self._classify(exc):
                raise RetryableError(f"mqtt {self.name}: {exc}") from exc
            raise FatalAdapterError(f"mqtt {self.name}: broker refused: {exc}") from exc
        finally:
            self.stats.connected = False

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        o = self.options
        granted = await client.subscribe(o["topic"], qos=int(o["qos"]))
        # A SUBACK code >= 0x80 refuses the subscription (MQTT 3.1.1 §3.9.3, MQTT 5.0 §3.9.3).
        for rc in granted:
            code = rc if isinstance(rc, int) else int(rc.value)
            if code >= 0x80:
                raise FatalAdapterError(f"mqtt {self.name}: broker refused the subscription to "
                                        f"{o['topic']!r} (code {code:#x})")

    def __repr__(self) -> str:
        s = self.stats
        o = self.options
        state = "closed" if self.closed else ("subscribed" if s.connected else "idle")
        return (f"<MqttAdapter {self.name}: {o['topic']} @ {o['host']}:{o['port']}, {state}, "
                f"{self.messages} messages, {s.received} comments, {s.malformed_total} malformed, "
                f"{s.reconnects} reconnects>")
