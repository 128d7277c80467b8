"""``websocket``: comments as JSON over WebSocket, as a client of a feed or as a server for companion tools.

Client mode (``mode = "client"``) connects to ``url`` and reads frames, each one comment object or a JSON
array of them; ``fields`` renames the fields of a feed whose names differ. ``token``, if set, is sent as
``Authorization: Bearer TOKEN``. The connection is re-established by the shared reconnect loop after a drop
(close codes other than 1000, network errors, 5xx at the handshake); a normal close (1000) ends the stream;
a refused handshake (401, 403, 404 ...) or a close with code 4001/4003/1008 is fatal.

Server mode (``mode = "server"``) listens on ``host``:``port`` (port 0 picks a free one, see
:attr:`WebSocketAdapter.bound_port`) for companion tools (a browser extension, a desktop app) that push
comments. When ``token`` is set, a peer must present it as ``?token=TOKEN`` in the URL (browsers cannot set
headers on a WebSocket) or as ``Authorization: Bearer TOKEN``; a peer with a missing or wrong token is
accepted at the HTTP level and then closed at once with close code **4001** ("bad token"), a code a browser
script can read, unlike a handshake's HTTP status. Frames go into a bounded buffer (``max_pending``
comments); while it is full the server stops reading the sockets, so TCP pushes back on the peers.
The server is a thin asyncio shell around websockets' Sans-I/O ``ServerProtocol``: each chunk read from a
socket is parsed into frames in one call and all the comments in it become one batch, which is what makes
one-comment-per-frame ingest cheap. A peer that sends nothing (not even a pong) for two ping intervals is
dropped.

**Acknowledgement frames (server mode).** Each time comments a peer sent are durable (in the journal), the
server sends that peer one text frame::

    {"type": "ack", "frames": 1234, "ids": ["m-1231", "m-1232", "m-1234"]}

``frames`` counts the data messages (text or binary, a fragmented one counting once) this peer has sent on
this connection, and says that the first ``frames`` of them are done with: their comments are durable, or
were refused as malformed (counted, never coming back). It only grows, and acknowledgements come in the
order the messages were sent. ``ids`` names the comments of those messages that are durable now (a
re-delivery of one made durable earlier included). A companion keeps every message it sent until an ack's
``frames`` covers it; when it reconnects (after a drop, a daemon restart or a ``kill -9``), it sends again
everything not covered. Comments are recognised by
``(platform, room, id)`` (contract §2), so what was durable already is processed once, never twice. When
the journal fails or the daemon stops before a batch is durable, the server closes the connection with 1011
(or 1001 when stopping) instead of acknowledging it; the companion reconnects and resends. Reply frames are
JSON arrays (``[{"type": "reply", ...}]``), so the two never look alike.

Client mode gives no acknowledgement to the feed (a feed has no such protocol): the feed may assume only
that what it sent has been read. After a reconnect nothing is asked for again, so a feed that can replay
from a point (a cursor, "the last N comments") should do so; comments seen before are recognised by id.
A daemon restart loses nothing that is in the journal; what was read and not yet committed at a crash is
lost unless the feed sends it again.

In both modes a frame over ``max_frame`` bytes is counted as ``oversized`` and skipped; a frame over four
times that is refused by the protocol (close code 1009) and counted too. Bad JSON and bad fields are counted
and skipped. Replies (:meth:`WebSocketAdapter.send_replies`) go to the peer(s) as one JSON array per call.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, cast

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from livecart.adapters._codec import DEFAULT_MAX_BYTES, Decoder, check_fields, with_defaults
from livecart.adapters._intake import Intake, Milestone
from livecart.adapters.reconnect import Backoff, default_classify, reconnecting
from livecart.core.errors import FatalAdapterError, NotDurable, RetryableError
from livecart.core.records import Comment
from livecart.listen import DEFAULT_REQUEST, Guard
from livecart.plugin import (
    Adapter,
    AdapterStats,
    Batch,
    Option,
    Reply,
    check_more_than_zero,
    check_nonneg,
    check_port,
)

log = logging.getLogger("livecart.adapter")

#: Close code sent to a server-mode peer whose token is missing or wrong (application range, RFC 6455 §7.4.2).
BAD_TOKEN = 4001
#: Close codes from a feed that mean "do not come back": bad token, forbidden, policy violation.
FATAL_CLOSE_CODES = frozenset({4001, 4003, 1008})
#: Frames over ``max_frame`` are skipped; frames over this many times ``max_frame`` end the connection.
HARD_LIMIT_FACTOR = 4
#: Seconds a server-mode peer has to answer our close frame before the connection is cut.
CLOSE_TIMEOUT = 2.0
#: Close code when a peer's comments could not be made durable (RFC 6455 §7.4.1: internal error).
NOT_DURABLE = 1011


#: Largest reply frame sent (bytes): a batch of replies goes out as JSON array frames of at most this much
#: (one reply larger than it has a frame of its own). A companion's WebSocket library refuses big frames
#: (1 MiB is the usual default, and this adapter's own ``max_frame``): one frame of a restart's thousands of
#: announcements (1.4 MB for 4,000) was refused with 1009 and every reply in it lost.
REPLY_FRAME_BYTES = 256 * 1024


def _reply_frames(replies: Sequence[Reply], limit: int = REPLY_FRAME_BYTES) -> list[bytes]:
    """``replies`` as JSON array frames of at most ``limit`` bytes each, in order."""
    frames: list[bytes] = []
    parts: list[bytes] = []
    size = 2
    for r in replies:
        item = orjson.dumps({"type": "reply", "text": r.text,
                             "comment": r.comment.to_dict() if r.comment is not None else None,
                             "outcome": r.outcome.to_dict() if r.outcome is not None else None})
        if parts and size + 1 + len(item) > limit:
            frames.append(b"[" + b",".join(parts) + b"]")
            parts, size = [], 2
        parts.append(item)
        size += len(item) + (1 if len(parts) > 1 else 0)
    if parts:
        frames.append(b"[" + b",".join(parts) + b"]")
    return frames


class WebSocketAdapter(Adapter):
    type = "websocket"
    can_reply = True
    OPTIONS: ClassVar[Mapping[str, Option]] = {
        "mode": Option(str, "client", choices=("client", "server"), doc="client: connect to url; server: listen"),
        "url": Option(str, "", doc="client mode: ws:// or wss:// URL of the feed"),
        "host": Option(str, "127.0.0.1", doc="server mode: address to listen on"),
        "port": Option(int, 0, check=check_port, doc="server mode: port; 0 = a free one (see bound_port)"),
        "token": Option(str, "", doc="shared secret; empty = none required (server) / sent (client)"),
        "fields": Option(dict, {}, check=check_fields, doc="contract field = feed field, e.g. text = 'content'"),
        "ts_unit": Option(str, "s", choices=("s", "ms"), doc="unit of the feed's ts field"),
        "max_frame": Option(int, DEFAULT_MAX_BYTES, check=check_more_than_zero, doc="largest frame decoded, bytes"),
        "max_pending": Option(int, 10000, check=check_more_than_zero, doc="server mode: comments buffered at most"),
        "platform": Option(str, "websocket", doc="platform of comments that name none"),
        "room": Option(str, "default", doc="room of comments that name none"),
        "reconnect_initial": Option(float, 0.2, check=check_more_than_zero, doc="client: first reconnect delay, s"),
        "reconnect_cap": Option(float, 30.0, check=check_more_than_zero, doc="client: longest reconnect delay, s"),
        "max_attempts": Option(int, 0, check=check_nonneg, doc="client: give up after N failures; 0 = never"),
        "ping_interval": Option(float, 20.0, check=check_nonneg, doc="keepalive ping interval, s; 0 = off"),
        "max_connections": Option(int, 0, check=check_nonneg,
                                  doc="server: open connections at most; 0 = from the fd limit"),
        "idle_timeout": Option(float, 60.0, check=check_nonneg,
                               doc="server: close a connection silent this long (pongs count), s; 0 = off"),
        "request_timeout": Option(float, DEFAULT_REQUEST, check=check_more_than_zero,
                                  doc="server: the upgrade request must be complete within, s"),
    }

    def __init__(self, options: Mapping[str, Any], *, name: str, stats: AdapterStats | None = None) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"websocket {name}"), name=name, stats=stats)
        o = self.options
        if o["mode"] == "client" and not o["url"]:
            raise FatalAdapterError(f"websocket {name}: client mode needs a url")
        self.decoder = Decoder(self.stats, platform=o["platform"], room=o["room"], fields=o["fields"],
                               max_bytes=o["max_frame"], ts_unit=o["ts_unit"])
        self.policy = Backoff(initial=o["reconnect_initial"], cap=o["reconnect_cap"])
        #: Connections made (client) or peers accepted with a good token (server).
        self.connections = Milestone()
        self.peers: set[_Peer] = set()
        self._client: ClientConnection | None = None
        self._server: asyncio.Server | None = None
        self._intake: Intake | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.guard: Guard | None = None

    # -- shared -------------------------------------------------------------------------------------------

    @property
    def _hard_limit(self) -> int:
        return int(self.options["max_frame"]) * HARD_LIMIT_FACTOR

    @property
    def _ping(self) -> float | None:
        return float(self.options["ping_interval"]) or None

    @property
    def bound_port(self) -> int:
        """Server mode: the port actually listened on (after :meth:`open`)."""
        if self._server is None:
            raise RuntimeError(f"websocket {self.name}: not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def open(self) -> None:
        if self.options["mode"] != "server" or self._server is not None or self.closed:
            return
        self._intake = Intake(int(self.options["max_pending"]))
        host, port = self.options["host"], int(self.options["port"])
        loop = asyncio.get_running_loop()
        o = self.options
        self.guard = Guard(f"websocket {self.name}", max_connections=int(o["max_connections"]),
                           idle_timeout=float(o["idle_timeout"]), request_timeout=float(o["request_timeout"]))
        try:
            self._server = await loop.create_server(self.guard.wrap(lambda: _Peer(self)), host, port)
        except OSError as exc:
            raise FatalAdapterError(f"websocket {self.name}: cannot listen on {host}:{port}: {exc}") from exc
        if self._ping:
            self._pinger = asyncio.create_task(self._keepalive(self._ping), name=f"{self.name}-keepalive")
        log.info("adapter %s: websocket server listening on %s:%d", self.name, host, self.bound_port)

    async def close(self) -> None:
        if self._intake is not None:
            self._intake.abandon(NotDurable(f"websocket {self.name}: the daemon is stopping"))
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        if self.guard is not None:
            self.guard.close()
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            for peer in list(self.peers):
                peer.close(1001, "server shutting down")
            await server.wait_closed()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
        await super().close()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        if self.options["mode"] == "server":
            return self._server_batches()
        max_attempts = int(self.options["max_attempts"]) or None
        return reconnecting(self._client_session, stats=self.stats, policy=self.policy,
                            classify=self._classify, max_attempts=max_attempts)

    async def send_replies(self, replies: Sequence[Reply]) -> None:
        """Send ``replies`` as one JSON array frame: to the feed (client) or to every peer (server).

        Raises :class:`RetryableError` when there is no one to send to right now.
        """
        if not replies:
            return
        frames = _reply_frames(replies)
        if self.options["mode"] == "server":
            if not self.peers:
                raise RetryableError(f"websocket {self.name}: no companion connected to send replies to")
            for peer in list(self.peers):
                for payload in frames:
                    peer.send_text(payload)
        else:
            ws = self._client
            if ws is None:
                raise RetryableError(f"websocket {self.name}: not connected, cannot send replies")
            try:
                for payload in frames:
                    await ws.send(payload, text=True)
            except ConnectionClosed as exc:
                raise RetryableError(f"websocket {self.name}: connection closed while replying") from exc
        self.stats.replies_sent += len(replies)

    def _note_too_big(self, exc: ConnectionClosed) -> None:
        if exc.sent is not None and exc.sent.code == 1009:
            self.stats.malformed("oversized", f"frame over the hard limit of {self._hard_limit} bytes; "
                                 "connection closed with 1009")

    # -- client mode --------------------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> bool:
        if isinstance(exc, InvalidURI):
            return False
        if isinstance(exc, InvalidStatus):
            return exc.response.status_code >= 500 or exc.response.status_code == 429
        if isinstance(exc, InvalidHandshake):
            return True
        return default_classify(exc)

    async def _client_session(self) -> AsyncIterator[Sequence[Comment]]:
        o = self.options
        headers = {"Authorization": f"Bearer {o['token']}"} if o["token"] else None
        async with connect(o["url"], additional_headers=headers, max_size=self._hard_limit, compression=None,
                           ping_interval=self._ping, proxy=None) as ws:
            self._client = ws
            self.stats.connected = True
            self.connections.advance()
            try:
                decode = self.decoder.decode
                async for message in ws:
                    batch = decode(message)
                    if batch:
                        yield batch
            except ConnectionClosed as exc:
                self._note_too_big(exc)
                dropped: ConnectionClosed | None = exc
            else:
                dropped = None
            finally:
                self._client = None
                self.stats.connected = False
            code = ws.close_code
            if code == 1000:
                return  # the feed said it is done (RFC 6455 §7.4.1)
            msg = f"websocket {self.name}: connection closed with code {code} ({ws.close_reason!r})"
            if code in FATAL_CLOSE_CODES:
                raise FatalAdapterError(msg) from dropped
            raise RetryableError(msg) from dropped

    # -- server mode --------------------------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        token = str(self.options["token"])
        if not token:
            return True
        given = ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:].strip()
        else:
            query = urllib.parse.urlsplit(request.path).query
            given = urllib.parse.parse_qs(query).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), token.encode())

    async def _keepalive(self, interval: float) -> None:
        """Ping every peer each ``interval``; drop one that has sent nothing for two intervals."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for peer in list(self.peers):
                if now - peer.last_seen > 2 * interval:
                    log.info("adapter %s: peer %s silent for %.0fs; dropped", self.name, peer.address,
                             now - peer.last_seen)
                    peer.abort()
                else:
                    peer.ping()

    async def _server_batches(self) -> AsyncIterator[Sequence[Comment]]:
        await self.open()
        intake = self._intake
        if intake is None:  # closed before it was ever opened
            return
        while True:
            batch = await intake.get()
            if batch is None:
                return
            yield batch

    def __repr__(self) -> str:
        s = self.stats
        o = self.options
        where = (f"server {o['host']}:{self.bound_port if self._server else o['port']}, {len(self.peers)} peers"
                 if o["mode"] == "server" else f"client {o['url']}")
        state = "closed" if self.closed else ("connected" if s.connected else "idle")
        return (f"<WebSocketAdapter {self.name}: {where}, {state}, {s.received} received, "
                f"{s.malformed_total} malformed, {s.duplicates} duplicates, {s.reconnects} reconnects>")


class _Peer(asyncio.Protocol):
    """One server-mode connection: websockets' Sans-I/O ``ServerProtocol`` driven by asyncio callbacks.

    Every chunk read is parsed at once; the comments of all its frames go to the intake as one batch. When
    the intake is full, reading stops until it has room (backpressure on this peer's TCP connection).
    """

    def __init__(self, adapter: WebSocketAdapter) -> None:
        self.adapter = adapter
        self.proto = ServerProtocol(max_size=adapter._hard_limit)
        self.transport: asyncio.Transport | None = None
        self.address: Any = None
        self.last_seen = time.monotonic()
        self._fragments: list[bytes | bytearray | memoryview] = []
        self._waiting: asyncio.Task[None] | None = None
        self._too_big_counted = False
        #: Data messages received on this connection; batches handed on and not yet settled; the
        #: message count an acknowledgement may claim once nothing is left unsettled.
        self.frames = 0
        self.unsettled = 0
        self._tail = 0
        #: Acknowledgement frames sent.
        self.acks = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport; uvloop's is not a subclass of asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        self.address = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        proto = self.proto
        proto.receive_data(data)
        events = proto.events_received()
        batch: list[Comment] = []
        frames = self.frames
        if events:
            decode = self.adapter.decoder.decode
            for ev in events:
                if isinstance(ev, Request):
                    self._handshake(ev)
                    continue
                if not isinstance(ev, Frame):
                    continue
                op = ev.opcode
                if op is Opcode.TEXT or op is Opcode.BINARY:
                    if ev.fin:
                        frames += 1
                        batch += decode(ev.data)
                    else:
                        self._fragments = [ev.data]
                elif op is Opcode.CONT:
                    self._fragments.append(ev.data)
                    if ev.fin:
                        frames += 1
                        batch += decode(b"".join(self._fragments))
                        self._fragments = []
        self._flush()
        if frames == self.frames:
            return
        self.frames = frames
        if batch:
            self.unsettled += 1
            self._hand_on(Batch(batch, on_settled=functools.partial(self._settled, frames, batch)))
        elif self.unsettled:
            self._tail = frames  # only malformed messages: done with once what came before is durable
        else:
            self._ack(frames, ())

    def _settled(self, frames: int, batch: list[Comment], error: BaseException | None) -> None:
        self.unsettled -= 1
        if error is not None:
            # Not durable: no acknowledgement; closing makes the companion reconnect and resend.
            if self.transport is not None and self.proto.state is State.OPEN:
                log.warning("adapter %s: comments from %s not durable (%s); closing with %d so the peer "
                            "resends them", self.adapter.name, self.address, error, NOT_DURABLE)
                stopping = isinstance(error, NotDurable)
                self.close(1001 if stopping else NOT_DURABLE, "stopping" if stopping else "not durable")
            return
        if not self.unsettled and self._tail > frames:
            frames = self._tail
        self._ack(frames, [c.id for c in batch])

    def _ack(self, frames: int, ids: Sequence[str]) -> None:
        if self.transport is None or self.proto.state is not State.OPEN:
            return  # gone: the companion resends on its next connection
        self.proto.send_text(orjson.dumps({"type": "ack", "frames": frames, "ids": ids}))
        self._flush()
        self.acks += 1

    def _handshake(self, request: Request) -> None:
        adapter = self.adapter
        response = self.proto.accept(request)
        self.proto.send_response(response)
        if response.status_code != 101:
            adapter.stats.malformed("bad_handshake", f"answered {response.status_code}", self.address)
            return
        if not adapter._authorised(request):
            # Never log the token a peer sent; the address is enough to find it.
            adapter.stats.malformed("bad_token", "peer closed with 4001", self.address)
            self.proto.send_close(BAD_TOKEN, "bad token")
            return
        adapter.peers.add(self)
        adapter.stats.connected = True
        adapter.connections.advance()

    def _hand_on(self, batch: Batch) -> None:
        intake = self.adapter._intake
        if intake is None or intake.offer(batch):
            return
        assert self.transport is not None
        self.transport.pause_reading()
        self._waiting = asyncio.get_running_loop().create_task(self._put(intake, batch))

    async def _put(self, intake: Intake, batch: Batch) -> None:
        if not await intake.put(batch):
            batch.settle(NotDurable(f"websocket {self.adapter.name}: the daemon is stopping"))
        self._waiting = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        proto = self.proto
        for data in proto.data_to_send():
            if data:
                transport.write(data)
            else:  # SEND_EOF: the server closes the TCP connection once the closing handshake is done
                transport.close()
        sent = proto.close_sent
        if sent is not None and sent.code == 1009 and not self._too_big_counted:
            self._too_big_counted = True
            self.adapter.stats.malformed("oversized", f"frame over the hard limit of {self.adapter._hard_limit} "
                                         "bytes; connection closed with 1009", self.address)
        if proto.close_expected() and not transport.is_closing():
            # We sent a close frame; the peer has a moment to answer before the connection is cut.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def send_text(self, payload: bytes) -> None:
        if self.proto.state is State.OPEN:
            self.proto.send_text(payload)
            self._flush()

    def ping(self) -> None:
        if self.proto.state is State.OPEN:
            self.proto.send_ping(b"")
            self._flush()

    def close(self, code: int, reason: str) -> None:
        if self.proto.state is State.OPEN:
            self.proto.send_close(code, reason)
            self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        adapter = self.adapter
        adapter.peers.discard(self)
        adapter.stats.connected = bool(adapter.peers)
        log.debug("adapter %s: peer %s gone (%s)", adapter.name, self.address, exc)

    def __repr__(self) -> str:
        paused = " paused" if self._waiting is not None else ""
        return f"<_Peer {self.address} {self.proto.state.name}{paused}>"
