"""``twitch``: Twitch chat over IRC on WebSocket, with replies through a rate-limited send queue.

Protocol (dev.twitch.tv/docs/chat/irc, "IRC Concepts", "Twitch IRC tags", "Rate limits"; IRCv3 message-tags):

* After connecting: ``CAP REQ :twitch.tv/tags twitch.tv/commands``, ``PASS oauth:<token>`` (omitted for an
  anonymous ``justinfan`` login), ``NICK <login>``, ``JOIN #<channel>``. A refused login is a ``NOTICE``
  ``Login authentication failed`` / ``Improperly formatted auth``: fatal, retrying cannot fix it.
* The server may put several ``\\r\\n``-terminated lines in one WebSocket message.
* ``PING :tmi.twitch.tv`` must be answered ``PONG :tmi.twitch.tv`` or the server drops the connection.
* ``RECONNECT``: the server is going away; reconnect, rejoin, and expect some messages to arrive twice (they
  are dropped by their ``id`` tag).
* Tag values escape ``;`` ``space`` ``\\`` CR LF as ``\\:`` ``\\s`` ``\\\\`` ``\\r`` ``\\n``.
* ``PRIVMSG #channel :text`` with tags ``id``, ``user-id``, ``display-name``, ``tmi-sent-ts`` (ms) -> a comment.
* A normal account may send 20 ``PRIVMSG`` per 30 seconds; more gets the account locked out of chat for
  30 minutes, so replies go through a queue drained under a sliding window (:class:`SlidingWindow`).

The line codec and the limiter are pure; :class:`TwitchAdapter` is the shell around a ``websockets`` client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import websockets
from websockets.asyncio.client import ClientConnection, connect

from livecart.adapters._codec import RecentKeys, admit
from livecart.adapters.reconnect import Backoff, reconnecting
from livecart.core.errors import AdapterError, FatalAdapterError, MalformedInput, RetryableError
from livecart.core.records import Comment
from livecart.plugin import Adapter, AdapterStats, Option, Reply, check_more_than_zero

log = logging.getLogger("livecart.adapter")

#: Twitch's limit on one IRC line (bytes, excluding CRLF) — a longer line is junk, not a message.
MAX_LINE = 8192
#: Twitch drops chat messages longer than 500 characters.
MAX_REPLY = 500

_TAG_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def unescape_tag_value(value: str) -> str:
    """Undo IRCv3 tag-value escaping; an unknown escape yields the character, a trailing backslash is dropped."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            if i + 1 < n:
                nxt = value[i + 1]
                out.append(_TAG_ESCAPES.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class IrcMessage:
    command: str
    params: tuple[str, ...] = ()
    prefix: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]


def parse_line(line: str) -> IrcMessage:
    """One IRC line (without CRLF) -> :class:`IrcMessage`. Raises :class:`MalformedInput` for junk."""
    if len(line) > MAX_LINE:
        raise MalformedInput("oversized", f"IRC line of {len(line)} characters", line[:80])
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise MalformedInput("bad_line", "tags but no command", line[:200])
        for item in raw.split(";"):
            key, _, val = item.partition("=")
            if key:
                tags[key] = unescape_tag_value(val)
        rest = rest.lstrip(" ")
    prefix = ""
    if rest.startswith(":"):
        prefix, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise MalformedInput("bad_line", "prefix but no command", line[:200])
        rest = rest.lstrip(" ")
    trailing: str | None = None
    if " :" in rest:
        rest, trailing = rest.split(" :", 1)
    elif rest.startswith(":"):
        rest, trailing = "", rest[1:]
    # Parameters are separated by SPACE (0x20) only, one or more (RFC 1459 §2.3.1; modern IRC "Parameters"):
    # a tab or U+3000 inside a parameter is part of it, never a separator.
    words = [w for w in rest.split(" ") if w]
    if not words:
        raise MalformedInput("bad_line", "no command", line[:200])
    command, params = words[0].upper(), words[1:]
    if trailing is not None:
        params.append(trailing)
    return IrcMessage(command, tuple(params), prefix, tags)


def privmsg_to_comment(msg: IrcMessage, room: str) -> Comment:
    """A ``PRIVMSG`` with Twitch tags -> a comment. Raises :class:`MalformedInput` when text or time is missing."""
    if len(msg.params) < 2:
        raise MalformedInput("missing_field", "PRIVMSG without a text", msg.params)
    text = msg.params[1]
    # "/me waves" arrives as a CTCP ACTION; the buyer's words are inside.
    if text.startswith("\x01ACTION ") and text.endswith("\x01"):
        text = text[8:-1]
    sent = msg.tags.get("tmi-sent-ts", "")
    try:
        ts = int(sent) / 1000.0
    except ValueError as exc:
        raise MalformedInput("missing_field", f"tmi-sent-ts tag {sent!r} is not a number", msg.tags) from exc
    login = msg.nick
    fields: dict[str, Any] = {"platform": "twitch", "room": room, "user": msg.tags.get("user-id") or login,
                              "name": msg.tags.get("display-name") or login, "text": text, "ts": ts}
    if msg.tags.get("id"):
        fields["id"] = msg.tags["id"]
    return Comment.from_mapping(fields)


def format_privmsg(channel: str, text: str, reply_to: str | None = None) -> str:
    """A ``PRIVMSG`` line (no CRLF): newlines flattened, text cut to Twitch's 500 characters."""
    clean = " ".join(text.split())[:MAX_REPLY]
    tag = f"@reply-parent-msg-id={reply_to} " if reply_to else ""
    return f"{tag}PRIVMSG #{channel} :{clean}"


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds. Pure: the caller passes the time."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._sent: collections.deque[float] = collections.deque()

    def wait_time(self, now: float) -> float:
        """Seconds to wait, from ``now``, before one more event is allowed (0 = now)."""
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window - now

    def record(self, now: float) -> None:
        self._sent.append(now)

    def __repr__(self) -> str:
        return f"<SlidingWindow {len(self._sent)}/{self.limit} per {self.window}s>"


def _url(v: Any) -> str | None:
    return None if v.startswith(("ws://", "wss://")) else "must be a ws:// or wss:// URL"


class TwitchAdapter(Adapter):
    """Chat of one Twitch channel; answers buyers with ``PRIVMSG`` within the rate limit."""

    type = "twitch"
    can_reply = True
    reply_limit: ClassVar[int | None] = 20
    reply_window: ClassVar[float] = 30.0
    OPTIONS: ClassVar = {
        "url": Option(str, "wss://irc-ws.chat.twitch.tv:443", check=_url, doc="Twitch IRC WebSocket endpoint"),
        "channel": Option(str, required=True, doc="channel login, without '#'"),
        "nick": Option(str, "justinfan12345", doc="login name; justinfan<digits> reads anonymously"),
        "token": Option(str, "", doc="'oauth:...' chat token (needed to send replies)"),
        "reply_limit": Option(int, 20, check=check_more_than_zero, doc="most replies per reply_window (moderators: 100)"),
        "reply_window": Option(float, 30.0, check=check_more_than_zero, doc="seconds of the reply rate window"),
        "idle_timeout": Option(float, 360.0, check=check_more_than_zero,
                               doc="reconnect when nothing arrives for this long (Twitch pings every ~5 min)"),
        "retry_initial": Option(float, 0.5, check=check_more_than_zero, doc="first reconnect delay (s)"),
        "retry_max": Option(float, 30.0, check=check_more_than_zero, doc="longest reconnect delay (s)"),
    }

    def __init__(self, options: Any, *, name: str, stats: AdapterStats | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(options, name=name, stats=stats)
        self._clock = clock
        self._sleep = sleep
        self.channel = str(self.options["channel"]).lstrip("#").lower()
        self._limiter = SlidingWindow(int(self.options["reply_limit"]), float(self.options["reply_window"]))
        self._outbox: collections.deque[str] = collections.deque()
        self._wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._seen = RecentKeys(8192)
        self.joined = asyncio.Event()
        self.pings_answered = 0
        self.server_reconnects = 0

    @property
    def queued_replies(self) -> int:
        return len(self._outbox)

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        await super().close()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        policy = Backoff(initial=float(self.options["retry_initial"]), cap=float(self.options["retry_max"]))
        return reconnecting(self._connection, stats=self.stats, policy=policy, sleep=self._sleep)

    async def send_replies(self, replies: Sequence[Reply]) -> None:
        """Queue replies; a background sender drains the queue within ``reply_limit`` per ``reply_window``.

        Queued replies survive a reconnect. Without a token (anonymous login) replies cannot be sent: they are
        counted in ``stats.errors`` and raised as :class:`AdapterError` (the reply queue counts them failed and
        logs it), never silently dropped.
        """
        if not self.options["token"]:
            # Raised, so the reply queue counts them failed (it counted them sent) and says it once.
            self.stats.errors += len(replies)
            raise AdapterError(f"adapter {self.name}: {len(replies)} replies not sent: no token configured "
                               "(anonymous login)")
        for r in replies:
            reply_to = r.comment.id if r.comment is not None and r.comment.platform == "twitch" else None
            self._outbox.append(format_privmsg(self.channel, r.text, reply_to))
        self._wake.set()

    async def _connection(self) -> AsyncIterator[Sequence[Comment]]:
        if self._closed:
            return
        url = self.options["url"]
        try:
            async with connect(url, ping_interval=None, open_timeout=10, max_size=1 << 20) as ws:
                self._ws = ws
                await self._login(ws)
                sender = asyncio.create_task(self._send_loop(ws), name=f"twitch-{self.name}-sender")
                try:
                    async for batch in self._read(ws):
                        yield batch
                finally:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
        except FatalAdapterError:
            raise
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            if self._closed:
                return
            raise RetryableError(f"twitch {url}: {exc!r}") from exc
        finally:
            self._ws = None
            self.joined.clear()

    async def _login(self, ws: ClientConnection) -> None:
        token = self.options["token"]
        lines = ["CAP REQ :twitch.tv/tags twitch.tv/commands"]
        if token:
            lines.append(f"PASS {token if token.startswith('oauth:') else 'oauth:' + token}")
        lines += [f"NICK {self.options['nick'].lower()}", f"JOIN #{self.channel}"]
        await ws.send("\r\n".join(lines) + "\r\n")

    async def _read(self, ws: ClientConnection) -> AsyncIterator[Sequence[Comment]]:
        idle = float(self.options["idle_timeout"])
        while True:
            try:
                async with asyncio.timeout(idle):
                    frame = await ws.recv()
            except TimeoutError as exc:
                raise RetryableError(f"twitch: nothing received for {idle}s") from exc
            if isinstance(frame, bytes):
                try:
                    frame = frame.decode()
                except UnicodeDecodeError:
                    self.stats.malformed("bad_utf8", "binary frame is not UTF-8", frame[:80])
                    continue
            batch: list[Comment] = []
            try:
                for line in frame.split("\r\n"):
                    if line:
                        await self._handle(ws, line, batch)
            except AdapterError:
                # RECONNECT (or a refusal) may follow comments in the same frame: deliver those first.
                if batch:
                    yield batch
                raise
            if batch:
                yield batch

    async def _handle(self, ws: ClientConnection, line: str, batch: list[Comment]) -> None:
        try:
            msg = parse_line(line)
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return
        cmd = msg.command
        if cmd == "PRIVMSG":
            try:
                comment = privmsg_to_comment(msg, self.channel)
            except MalformedInput as exc:
                self.stats.malformed(exc.reason, exc.detail, exc.sample)
                return
            admit(batch, comment, self._seen, self.stats)
        elif cmd == "PING":
            await ws.send(f"PONG :{msg.params[-1] if msg.params else 'tmi.twitch.tv'}\r\n")
            self.pings_answered += 1
        elif cmd == "RECONNECT":
            self.server_reconnects += 1
            raise RetryableError("twitch asked to reconnect (RECONNECT)")
        elif cmd == "NOTICE" and msg.params and msg.params[0] == "*":
            text = msg.params[-1]
            if "authentication failed" in text or "Improperly formatted auth" in text:
                raise FatalAdapterError(f"twitch: login refused: {text}")
            log.info("adapter %s: twitch notice: %s", self.name, text)
        elif cmd == "JOIN" and msg.nick == self.options["nick"].lower():
            self.joined.set()
        elif cmd == "CAP" and len(msg.params) >= 2 and msg.params[1] == "NAK":
            raise FatalAdapterError(f"twitch: capabilities refused: {msg.params[-1]}")

    async def _send_loop(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):  # the reader sees the close too
            await self._drain(ws)

    async def _drain(self, ws: ClientConnection) -> None:
        await self.joined.wait()
        while True:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._limiter.wait_time(self._clock())
            if wait > 0:
                await self._sleep(wait)
                continue
            line = self._outbox[0]
            await ws.send(line + "\r\n")
            # Only a reply that went out leaves the queue: one in flight when the socket dies is sent again.
            self._outbox.popleft()
            self._limiter.record(self._clock())
            self.stats.replies_sent += 1
