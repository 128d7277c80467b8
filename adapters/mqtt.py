"""``mqtt``: comments from an MQTT topic, one comment or a JSON array per message, acknowledged once durable.

Keys (contract §1): ``host``, ``port`` (1883), ``topic`` (wildcards allowed; ``$share/GROUP/TOPIC`` makes this
engine one member of a shared subscription, so several engines split one feed — MQTT 5.0 §4.8.2),
``username``, ``password``, ``client_id`` (empty = ``livecart-<adapter>-<host name>-<hash of topic>``, the
same on every start on this machine), ``qos`` (0 or 1, default 1), ``session_expiry`` (seconds the broker keeps the session
and queues messages while the daemon is away; default 3600), and ``protocol`` (``5`` or ``3.1.1``),
``max_pending`` (MQTT 5 Receive Maximum: unacknowledged messages the broker may send ahead),
``platform`` / ``room`` (for comments that name none), ``fields`` / ``ts_unit`` (as for ``websocket``),
``max_payload`` (bytes), ``reconnect_initial`` / ``reconnect_cap`` / ``max_attempts`` (the reconnect loop).

**Acknowledgement after durable.** The session is persistent (clean start off, MQTT 5.0 §3.1.2.4; with
3.1.1, clean session off) and the subscription is QoS 1, so the broker holds a message until this client
acknowledges it. The adapter yields each group of messages read as one :class:`~livecart.plugin.Batch` and
sends their PUBACKs (MQTT 5.0 §3.4) only when the engine settles the batch, i.e. once the journal has
committed them. A message whose batch is not durable is never acknowledged: the adapter drops the connection
and the broker sends it again on the next one (§4.4), as it does after a crash, where the ids of the journal
recognise what was already in it. Flow control is the broker's: the CONNECT asks for a Receive Maximum of
``max_pending`` (§3.1.2.11.3), so at most that many unacknowledged messages are ever on their way to or inside
this process; the rest of a backlog waits in the broker, never here. QoS 0 has no acknowledgement: beyond
``max_pending`` waiting QoS 0 messages, one is dropped and counted (malformed reason ``queue_full``).

What the broker must allow (Mosquitto, ``mosquitto.conf``): ``persistence true`` (and a
``persistence_location``) so queued messages survive a broker restart; ``max_queued_messages`` at least the
backlog a burst or a daemon restart can leave (Mosquitto's default, 1000, drops the rest: "Outgoing messages
are being dropped"); ``max_inflight_messages`` only matters for MQTT 3.1.1 clients (MQTT 5 uses the Receive
Maximum); and ``persistent_client_expiration`` no shorter than ``session_expiry``.

Why paho-mqtt directly (and not aiomqtt): acknowledging a message later than its arrival needs paho's manual
acknowledgement (``Client(manual_ack=True)`` and ``Client.ack``), which aiomqtt 2.x does not expose; it was
reached through aiomqtt's private ``Client._client``. Here paho is driven by the event loop through its public
external-loop API (``on_socket_*`` callbacks, ``loop_read`` / ``loop_write`` / ``loop_misc``): no thread, no
private attribute.

A refused login (bad credentials, not authorised) or a refused subscription is fatal; anything else (broker
down, connection dropped) is retried with jittered backoff, and every connection subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from livecart.adapters._codec import DEFAULT_MAX_BYTES, Decoder, check_fields, with_defaults
from livecart.adapters._intake import Milestone
from livecart.adapters.reconnect import Backoff, default_classify, reconnecting
from livecart.core.errors import FatalAdapterError, RetryableError
from livecart.core.records import Comment
from livecart.plugin import (
    Adapter,
    AdapterStats,
    Batch,
    Option,
    check_more_than_zero,
    check_nonneg,
    check_port,
)

log = logging.getLogger("livecart.adapter")

#: CONNACK / SUBACK codes that retrying cannot fix: MQTT 3.1.1 §3.2.2.3 (4, 5) and MQTT 5.0 §3.2.2.2 / §3.9.3
#: (bad protocol, client id, user name or password, not authorised, banned, bad auth method, topic filter).
_FATAL_CODES = frozenset({1, 2, 4, 5, 0x80, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x8F, 0x9E, 0xA1, 0xA2})
CONNECT_TIMEOUT = 10.0
#: Largest Receive Maximum (MQTT 5.0 §3.1.2.11.3: 1-65535).
MAX_RECEIVE = 65535


def refusal(message: str, code: int) -> RetryableError | FatalAdapterError:
    """The error for a CONNACK failure ``code``: fatal when retrying cannot fix it (bad credentials ...)."""
    return (FatalAdapterError if code in _FATAL_CODES else RetryableError)(f"{message} (code {code:#x})")


def _check_topic(value: Any) -> str | None:
    if not value:
        return "must be a topic filter, e.g. 'live/comments' or '$share/engines/live/comments'"
    if value.startswith("$share/") and value.count("/") < 2:
        return "a shared subscription is '$share/GROUP/TOPIC'"
    return None


def _check_client_id(value: Any) -> str | None:
    return "must be 1 to 64 characters of 0-9, a-z, A-Z, _ and -" \
        if value and not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", value) else None


def default_client_id(name: str, topic: str) -> str:
    """The same id on every start of this adapter (name and topic) on this machine, so the broker finds its
    session again; another machine (another engine of a shared subscription) gets its own."""
    host = re.sub(r"[^0-9A-Za-z]", "", socket.gethostname())[:16] or "host"
    safe = re.sub(r"[^0-9A-Za-z_-]", "", name)[:24] or "mqtt"
    digest = hashlib.blake2s(topic.encode(), digest_size=4).hexdigest()
    return f"livecart-{safe}-{host}-{digest}"


def _rc(value: ReasonCode | int) -> int:
    return value if isinstance(value, int) else int(value.value)


class _Link:
    """One paho client on the running event loop (paho's external-loop API; see the module docstring).

    paho calls ``on_socket_*`` from whichever thread calls it: the blocking TCP connect runs in an executor,
    so those callbacks hop to the loop with ``call_soon_threadsafe``.

    **A socket the loop gave up on.** When a connection is reset (a broker that stops or restarts cuts it
    while messages to and from it are on the way), Linux reports an error on the socket; uvloop then calls
    the reader once and closes its watcher for good, though paho may have read only the data queued before
    the reset and not yet the error (``loop_read`` reads a packet or a few). paho, never called again, would
    not notice the connection was gone until its keepalive ran out, and every PUBACK meanwhile raised out of
    ``add_writer``. So a reader or writer the loop refuses breaks the link at once (``on_broken``: the session
    reconnects, and the broker resends what was not acknowledged), and the keepalive task checks once a
    second that the loop still watches the socket.
    """

    def __init__(self, client: paho.Client, loop: asyncio.AbstractEventLoop,
                 on_broken: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.loop = loop
        self.thread = threading.get_ident()
        self.sock: Any = None
        self.misc: asyncio.Task[None] | None = None
        self.on_broken = on_broken
        #: Why the loop stopped watching the socket (None while it does).
        self.broken: str | None = None
        #: A second descriptor of the socket paho closed, open until the broker closes its side (:meth:`drained`).
        self.lingering: socket.socket | None = None
        self.stopped = False
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def _soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self.thread:
            fn(*args)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def _watch(self, add: Callable[[Any, Callable[[], Any]], None], sock: Any, callback: Callable[[], Any]) -> bool:
        """``add(sock, callback)`` (the loop's add_reader or add_writer); False, and the link broken, when the
        loop refuses it."""
        if self.broken is not None:
            return False
        try:
            add(sock, callback)
        except (RuntimeError, OSError, ValueError) as exc:  # uvloop: "the handler is closed"
            log.debug("mqtt: the event loop refused to watch %r: %r", sock, exc)
            self.broken = "connection reset (the event loop stopped watching its socket)"
            if self.on_broken is not None:
                self.on_broken(self.broken)
            return False
        return True

    def _on_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._soon(self._open, sock)

    def _open(self, sock: Any) -> None:
        self.sock = sock
        self._watch(self.loop.add_reader, sock, self.client.loop_read)
        if self.misc is None:
            self.misc = self.loop.create_task(self._misc(), name="mqtt-keepalive")

    def _on_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if not self.stopped and self.lingering is None:
            with contextlib.suppress(OSError):
                self.lingering = sock.dup()  # here, before paho closes its own descriptor
        self._soon(self._close, sock)

    def _close(self, sock: Any) -> None:
        if sock is self.sock:
            self.sock = None
        with contextlib.suppress(Exception):
            self.loop.remove_reader(sock)
        with contextlib.suppress(Exception):
            self.loop.remove_writer(sock)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._soon(self._watch, self.loop.add_writer, sock, self.client.loop_write)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._soon(self._unwatch_write, sock)

    def _unwatch_write(self, sock: Any) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_writer(sock)

    async def _misc(self) -> None:
        """Keepalive pings and timeouts (paho's ``loop_misc``, which wants a call about once a second), and
        the check that the loop still watches the socket (see the class docstring): adding the same reader
        again only replaces its callback, unless the loop has closed its watcher."""
        while True:
            if self.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            sock = self.sock
            if sock is not None and not self._watch(self.loop.add_reader, sock, self.client.loop_read):
                return
            await asyncio.sleep(1.0)

    async def drained(self) -> None:
        """Wait until the broker has closed the connection paho closed. Mosquitto reads a
        connection one packet at a time, and a new connection with the same client id takes the session over and
        drops what the old one sent that it had not read yet: the last PUBACKs, sent again then. It closes its side
        once it has read the DISCONNECT, so after every PUBACK before it."""
        s, self.lingering = self.lingering, None
        if s is None:
            return
        try:
            with contextlib.suppress(OSError):
                while await self.loop.sock_recv(s, 4096):
                    pass
        finally:
            s.close()

    def stop(self) -> None:
        self.stopped = True
        if self.misc is not None:
            self.misc.cancel()
            self.misc = None
        sock, self.sock = self.sock, None
        if sock is not None:
            self._close(sock)  # also drops a watcher the loop closed, so the next socket on its fd gets a new one
            if self.broken is not None:
                # paho never saw the connection go, so never closed the socket: close it here, and let the
                # client (done with) close it again at its garbage collection without calling back.
                c = self.client
                c.on_socket_open = c.on_socket_close = None
                c.on_socket_register_write = c.on_socket_unregister_write = None
                with contextlib.suppress(OSError):
                    sock.close()


class MqttAdapter(Adapter):
    type = "mqtt"
    OPTIONS: ClassVar[Mapping[str, Option]] = {
        "host": Option(str, "127.0.0.1", doc="broker address"),
        "port": Option(int, 1883, check=check_port, doc="broker port"),
        "topic": Option(str, required=True, check=_check_topic, doc="topic filter; '$share/GROUP/TOPIC' to split"),
        "username": Option(str, "", doc="user name; empty = anonymous"),
        "password": Option(str, "", doc="password"),
        "qos": Option(int, 1, choices=(0, 1), doc="subscription QoS; 1 = acknowledged once durable"),
        "client_id": Option(str, "", check=_check_client_id,
                            doc="MQTT client id, fixed so the broker keeps the session; empty = per machine"),
        "session_expiry": Option(int, 3600, check=check_nonneg,
                                 doc="seconds the broker keeps the session (and queues) while disconnected"),
        "protocol": Option(str, "5", choices=("5", "3.1.1"), doc="MQTT protocol version"),
        "keepalive": Option(int, 30, check=check_more_than_zero, doc="keepalive interval, s"),
        "fields": Option(dict, {}, check=check_fields, doc="contract field = payload field"),
        "ts_unit": Option(str, "s", choices=("s", "ms"), doc="unit of the payload's ts field"),
        "max_payload": Option(int, DEFAULT_MAX_BYTES, check=check_more_than_zero, doc="largest payload decoded, bytes"),
        "max_pending": Option(int, 1000, check=check_more_than_zero,
                              doc="Receive Maximum: unacknowledged messages the broker may send ahead"),
        "platform": Option(str, "mqtt", doc="platform of comments that name none"),
        "room": Option(str, "default", doc="room of comments that name none"),
        "reconnect_initial": Option(float, 0.2, check=check_more_than_zero, doc="first reconnect delay, s"),
        "reconnect_cap": Option(float, 30.0, check=check_more_than_zero, doc="longest reconnect delay, s"),
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
        self.client_id = o["client_id"] or default_client_id(name, o["topic"])
        #: Advanced each time the subscription is in place (first connect and after every reconnect).
        self.subscribed = Milestone()
        #: Advanced for each QoS 0 message dropped because the consumer was ``max_pending`` messages behind.
        self.dropped = Milestone()
        #: Advanced for each PUBACK sent (a message durable, or counted malformed).
        self.acked = Milestone()
        self.messages = 0
        #: Most messages ever waiting in this process at once (bounded by the Receive Maximum for QoS 1).
        self.pending_peak = 0
        #: Whether the broker had kept the session at the last connect (MQTT 5.0 §3.2.2.1.1).
        self.session_present = False
        self._generation = 0
        self._client: paho.Client | None = None
        self._not_durable: BaseException | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        max_attempts = int(self.options["max_attempts"]) or None
        return reconnecting(self._session, stats=self.stats, policy=self.policy, classify=self._classify,
                            max_attempts=max_attempts)

    def _classify(self, exc: BaseException) -> bool:
        return default_classify(exc)

    def _settled(self, generation: int, mids: list[int], error: BaseException | None) -> None:
        """A batch's settlement: PUBACK its messages once durable; if not, drop the connection so that the
        broker sends them again (it resends unacknowledged messages only on a new connection, §4.4)."""
        client = self._client
        if error is not None:
            if self._not_durable is None:
                self._not_durable = error
                if self._wake is not None:
                    self._wake.set()
            return
        if generation != self._generation or client is None:
            return  # that connection is gone; the broker resends these, and the journal knows them already
        ack = client.ack
        for mid in mids:
            ack(mid, 1)
        self.acked.count += len(mids) - 1
        self.acked.advance()

    def _client_for(self, v5: bool) -> paho.Client:
        o = self.options
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                             clean_session=None if v5 else False, manual_ack=True)
        if o["username"]:
            client.username_pw_set(o["username"], o["password"] or None)
        return client

    async def _session(self) -> AsyncIterator[Sequence[Comment]]:
        if self._closing:
            return
        o = self.options
        v5 = o["protocol"] == "5"
        limit = int(o["max_pending"])
        loop = asyncio.get_running_loop()
        client = self._client_for(v5)
        inbox: deque[paho.MQTTMessage] = deque()
        wake = self._wake = asyncio.Event()
        connected: asyncio.Future[tuple[int, bool]] = loop.create_future()
        subscribed: asyncio.Future[list[int]] = loop.create_future()
        lost: list[str] = []
        stats = self.stats
        adapter = self

        def on_broken(reason: str) -> None:
            lost.append(reason)
            stats.connected = False
            if not connected.done():
                connected.set_exception(RetryableError(f"mqtt {self.name}: {reason}"))
            wake.set()

        link = _Link(client, loop, on_broken)

        def on_connect(c: paho.Client, u: Any, flags: paho.ConnectFlags, rc: ReasonCode, p: Any) -> None:
            if not connected.done():
                connected.set_result((_rc(rc), bool(flags.session_present)))

        def on_subscribe(c: paho.Client, u: Any, mid: int, codes: list[ReasonCode], p: Any) -> None:
            if not subscribed.done():
                subscribed.set_result([_rc(x) for x in codes])

        def on_disconnect(c: paho.Client, u: Any, flags: Any, rc: ReasonCode, p: Any) -> None:
            lost.append(str(rc))
            stats.connected = False
            if not connected.done():
                connected.set_exception(RetryableError(f"mqtt {self.name}: connection closed: {rc}"))
            wake.set()

        def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
            n = len(inbox)
            if msg.qos == 0 and n >= limit:
                stats.malformed("queue_full", f"consumer is behind by {n} messages; dropped one QoS 0 "
                                f"message on {msg.topic}", msg.payload[:80])
                adapter.dropped.advance()
                return
            inbox.append(msg)
            if n >= adapter.pending_peak:
                adapter.pending_peak = n + 1
            wake.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        props: Properties | None = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = min(limit, MAX_RECEIVE)
            props.SessionExpiryInterval = int(o["session_expiry"])
        self._generation += 1
        generation = self._generation
        self._client = client
        self._not_durable = None
        try:
            connect = functools.partial(client.connect, o["host"], int(o["port"]), int(o["keepalive"]),
                                        clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                                        properties=props)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.run_in_executor(None, connect)
                    code, present = await connected
            except TimeoutError as exc:
                raise RetryableError(f"mqtt {self.name}: no CONNACK from {o['host']}:{o['port']} within "
                                     f"{CONNECT_TIMEOUT:.0f}s") from exc
            except (OSError, ValueError) as exc:
                raise RetryableError(f"mqtt {self.name}: cannot connect to {o['host']}:{o['port']}: {exc}") \
                    from exc
            if code:
                raise refusal(f"mqtt {self.name}: broker refused the connection", code)
            self.session_present = present
            await self._subscribe(client, subscribed, lost)
            stats.connected = True
            self.subscribed.advance()
            log.info("adapter %s: subscribed to %s on %s:%s as %s (session %s)", self.name, o["topic"],
                     o["host"], o["port"], self.client_id, "resumed" if present else "new")
            decode = self.decoder.decode
            settled = self._settled
            while True:
                if not inbox:
                    if lost and self._closing:
                        return  # close() disconnected: the stream ends here
                    if lost:
                        raise RetryableError(f"mqtt {self.name}: connection lost: {lost[-1]}")
                    if self._not_durable is not None:
                        raise RetryableError(f"mqtt {self.name}: a batch was not made durable "
                                             f"({self._not_durable}); reconnecting so the broker resends it")
                    wake.clear()
                    await wake.wait()
                    continue
                batch = Batch()
                mids: list[int] = []
                while inbox:
                    msg = inbox.popleft()
                    self.messages += 1
                    batch += decode(msg.payload)
                    if msg.qos:
                        mids.append(msg.mid)
                if mids:
                    batch.when_settled(functools.partial(settled, generation, mids))
                    yield batch
                elif batch:
                    yield list(batch)  # QoS 0: nobody to tell
        finally:
            stats.connected = False
            self._client = None
            self._wake = None
            # A clean DISCONNECT goes out after every PUBACK still queued; wait (briefly) for paho to have
            # written it and closed the socket, so that no acknowledgement of a durable batch is lost here.
            if not lost and client.disconnect() == MQTTErrorCode.MQTT_ERR_SUCCESS:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        while not lost:
                            wake.clear()
                            await wake.wait()
            link.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await link.drained()

    async def _subscribe(self, client: paho.Client, done: asyncio.Future[list[int]], lost: list[str]) -> None:
        o = self.options
        rc, _ = client.subscribe(o["topic"], qos=int(o["qos"]))
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RetryableError(f"mqtt {self.name}: cannot subscribe: {paho.error_string(rc)}")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                granted = await done
        except TimeoutError as exc:
            raise RetryableError(f"mqtt {self.name}: no SUBACK within {CONNECT_TIMEOUT:.0f}s") from exc
        # A SUBACK code >= 0x80 refuses the subscription (MQTT 3.1.1 §3.9.3, MQTT 5.0 §3.9.3).
        for code in granted:
            if code >= 0x80:
                raise FatalAdapterError(f"mqtt {self.name}: broker refused the subscription to "
                                        f"{o['topic']!r} (code {code:#x})")

    async def close(self) -> None:
        """Disconnect cleanly: the DISCONNECT goes out after every PUBACK still queued (of batches the daemon
        settled while draining), and this waits (2 s at most) until paho has written them."""
        self._closing = True
        client, wake = self._client, self._wake
        if client is not None and wake is not None and client.disconnect() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    while self._client is client and self.stats.connected:
                        wake.clear()
                        await wake.wait()
        await super().close()

    def __repr__(self) -> str:
        s = self.stats
        o = self.options
        state = "closed" if self.closed else ("subscribed" if s.connected else "idle")
        return (f"<MqttAdapter {self.name}: {o['topic']} @ {o['host']}:{o['port']} as {self.client_id}, {state}, "
                f"{self.messages} messages, {self.acked.count} acknowledged, {s.received} comments, "
                f"{s.malformed_total} malformed, {s.reconnects} reconnects>")
