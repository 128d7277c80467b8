"""Decoding JSON comment payloads: the shared, I/O-free core of the generic adapters.

A payload (a WebSocket frame, an MQTT message, a webhook body, a line of a recording) is one comment object
or a JSON array of them (docs/contract.md §2). :class:`Decoder` turns one payload into normalised
:class:`~livecart.core.records.Comment` records (msgspec decodes and validates them,
:class:`~livecart.core.records.CommentDecoder`; with a ``fields`` map or ``ts_unit = "ms"`` the payload is
reshaped as a dict first):

* a payload longer than ``max_bytes`` is not parsed at all (``oversized``);
* bad JSON (``bad_json``), a non-object element (``not_an_object``) or a bad field (``missing_field``,
  ``bad_field``) is counted through :meth:`AdapterStats.malformed` and skipped; the good elements of an array
  are kept;
* a ``fields`` mapping renames fields of feeds whose names differ (``{"text": "content", "user":
  "sender.uid"}``; a dotted source reads a nested object);
* ``ts_unit = "ms"`` converts millisecond timestamps;
* a comment whose ``(platform, room, id)`` was seen among the last ``dedupe_window`` comments is counted in
  ``stats.duplicates``. It is still passed on: the ledger is what guarantees a comment is processed once,
  this count only makes redeliveries visible.

Nothing here does I/O or reads a clock, so it is tested with values and fuzzed in a tight loop. Platform
adapters may reuse :class:`Decoder`, :class:`FieldMap` and :func:`with_defaults`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping
from typing import Any

import orjson

from livecart.core.errors import FatalAdapterError, MalformedInput
from livecart.core.records import Comment, CommentDecoder, mend_surrogates
from livecart.plugin import AdapterStats, Option

#: Default largest payload accepted, in bytes.
DEFAULT_MAX_BYTES = 1 << 20
#: The contract fields a ``fields`` mapping may rename (docs/contract.md §2).
COMMENT_FIELDS = ("platform", "room", "id", "user", "name", "text", "ts")
TS_UNITS = ("s", "ms")

_MISSING = object()

#: What a payload may be: a text frame, a binary frame or body, or a view of one.
Payload = bytes | bytearray | memoryview | str


def with_defaults(schema: Mapping[str, Option], options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``options`` with every key of ``schema`` present, for adapters built directly (tests, embedding).

    The config loader already does this and more; this only fills defaults and refuses a missing required
    key or a value outside ``choices`` with :class:`FatalAdapterError`, so a hand-built adapter fails at once
    with a message rather than later with a ``KeyError``.
    """
    out = dict(options)
    for key, opt in schema.items():
        if key not in out or out[key] is None:
            if opt.required:
                raise FatalAdapterError(f"{where}: option {key!r} is required ({opt.type_name()})")
            out[key] = opt.default
        elif opt.choices and out[key] not in opt.choices:
            raise FatalAdapterError(f"{where}: option {key!r} must be one of {opt.choices!r}, got {out[key]!r}")
    return out


def check_fields(value: Any) -> str | None:
    """``Option.check`` for a ``fields`` table: contract field names mapped to non-empty source names."""
    if not isinstance(value, Mapping):
        return "must be a table of contract field = source field"
    for k, v in value.items():
        if k not in COMMENT_FIELDS:
            return f"unknown comment field {k!r}; expected one of {', '.join(COMMENT_FIELDS)}"
        if not isinstance(v, str) or not v or any(not part for part in v.split(".")):
            return f"source of {k!r} must be a field name or a dotted path such as 'sender.uid'"
    return None


def _head(payload: Payload, n: int) -> bytes | str:
    """The first ``n`` bytes or characters of a payload, as a loggable sample."""
    return payload[:n] if isinstance(payload, str) else bytes(payload[:n])


class FieldMap:
    """Renames the fields of one decoded object to the contract's names. Built once, applied per comment."""

    __slots__ = ("_paths",)

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        problem = check_fields(fields or {})
        if problem:
            raise FatalAdapterError(f"fields: {problem}")
        self._paths: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
            (target, tuple(source.split("."))) for target, source in (fields or {}).items()
        )

    def __bool__(self) -> bool:
        return bool(self._paths)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``obj`` whose contract fields are read from the mapped sources.

        A mapped field whose source is absent is absent (not read under its contract name), so a
        misconfigured mapping shows up as ``missing_field`` rather than silently reading the wrong field.
        """
        out = dict(obj)
        for target, path in self._paths:
            value: Any = obj
            for part in path:
                value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
                if value is _MISSING:
                    break
            if value is _MISSING:
                out.pop(target, None)
            else:
                out[target] = value
        return out

    def __repr__(self) -> str:
        shown = ", ".join(t + "<-" + ".".join(p) for t, p in self._paths) or "identity"
        return f"<FieldMap {shown}>"


def load_json(body: bytes | str) -> Any:
    """``body`` decoded from JSON; raises :class:`MalformedInput` (``bad_json``, with the first 200 bytes) when
    it is not JSON. A lone half of a surrogate pair (an emoji cut in two) is read as U+FFFD, not refused."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "surrogate" in str(exc):  # an emoji cut in two: kept, as U+FFFD (records.mend_surrogates)
            with contextlib.suppress(orjson.JSONDecodeError):
                return orjson.loads(mend_surrogates(body))
        raise MalformedInput("bad_json", str(exc), body[:200]) from exc


def admit(out: list[Comment], comment: Comment | None, seen: RecentKeys, stats: AdapterStats) -> None:
    """Append a decoded ``comment`` to ``out`` and count it received, unless it is ``None`` (a message that
    carries no comment) or a re-delivery ``seen`` still remembers (counted as a duplicate)."""
    if comment is None:
        return
    if seen.seen(comment.id):
        stats.duplicates += 1
        return
    stats.received += 1
    out.append(comment)


class RecentKeys:
    """Remembers at least the last ``capacity`` keys (at most twice that), to count duplicates cheaply.

    Two generations of sets: when the young one is full it becomes the old one and the previous old one is
    dropped. Two set lookups and an add per key, no per-key bookkeeping of order.
    """

    __slots__ = ("_capacity", "_old", "_young")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._young: set[Hashable] = set()
        self._old: set[Hashable] = set()

    def seen(self, key: Hashable) -> bool:
        """True when ``key`` was among the recent ones; otherwise remember it and return False."""
        if key in self._young or key in self._old:
            return True
        if self._capacity <= 0:
            return False
        young = self._young
        young.add(key)
        if len(young) >= self._capacity:
            self._old = young
            self._young = set()
        return False

    def __repr__(self) -> str:
        return f"<RecentKeys {len(self):,} remembered (at least the last {self._capacity:,})>"

    def forget(self, key: Hashable) -> None:
        """Drop ``key`` (a message that could not be passed on, so that its redelivery gets through)."""
        self._young.discard(key)
        self._old.discard(key)

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


class Decoder:
    """Turns JSON payloads into comments, counting every bad one in ``stats`` (see the module docstring)."""

    __slots__ = ("_comments", "_fields", "_ms", "_recent", "_reshape", "max_bytes", "platform", "room", "stats")

    def __init__(
        self,
        stats: AdapterStats,
        *,
        platform: str,
        room: str,
        fields: Mapping[str, str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ts_unit: str = "s",
        dedupe_window: int = 4096,
    ) -> None:
        if ts_unit not in TS_UNITS:
            raise FatalAdapterError(f"ts_unit must be one of {TS_UNITS!r}, got {ts_unit!r}")
        self.stats = stats
        self.platform = platform
        self.room = room
        self.max_bytes = max_bytes
        self._fields = FieldMap(fields)
        self._ms = ts_unit == "ms"
        self._reshape = bool(self._fields) or self._ms
        self._recent = RecentKeys(dedupe_window)
        self._comments = CommentDecoder(platform=platform, room=room)

    def decode(
        self, payload: Payload, rejected: list[tuple[int | None, MalformedInput]] | None = None
    ) -> list[Comment]:
        """The comments of one payload; bad ones are counted, logged once per reason, and skipped.

        When ``rejected`` is given, each problem is also appended to it as ``(index in the array or None,
        error)`` so that a caller can tell its peer what was wrong (the webhook's 400 body).
        """
        if len(payload) > self.max_bytes:
            self._bad(MalformedInput("oversized", f"payload of {len(payload)} bytes is over the limit of "
                                     f"{self.max_bytes}", _head(payload, 80)), None, rejected)
            return []
        if not self._reshape:
            # The common case: msgspec decodes and validates the payload straight into comments.
            out: list[Comment] = []
            bad: list[tuple[int | None, MalformedInput]] = []
            self._comments.decode(payload, out, bad)
            for index, exc in bad:
                self._bad(exc, index, rejected)
            # _accepted for each, inlined (a method call per comment cost more than the count itself).
            seen = self._recent.seen
            dupes = 0
            for one in out:
                if seen((one.platform, one.room, one.id)):
                    dupes += 1
            stats = self.stats
            stats.received += len(out)
            stats.duplicates += dupes
            return out
        try:
            data = load_json(payload if isinstance(payload, bytes | str) else bytes(payload))
        except MalformedInput as exc:
            exc.sample = _head(payload, 200)
            self._bad(exc, None, rejected)
            return []
        if isinstance(data, list):
            out = []
            for i, obj in enumerate(data):
                c = self._comment(obj, i, rejected)
                if c is not None:
                    out.append(c)
            return out
        c = self._comment(data, None, rejected)
        return [] if c is None else [c]

    def decode_object(self, obj: object) -> Comment | None:
        """One already-decoded object as a comment, or None (counted) when it is not a valid one."""
        return self._comment(obj, None, None)

    def _comment(
        self, obj: object, index: int | None, rejected: list[tuple[int | None, MalformedInput]] | None
    ) -> Comment | None:
        try:
            if self._reshape and isinstance(obj, Mapping):
                if self._fields:
                    obj = self._fields.apply(obj)
                if self._ms:
                    ts = obj.get("ts")
                    if isinstance(ts, int | float) and not isinstance(ts, bool):
                        obj = {**obj, "ts": ts / 1000.0}
            comment = Comment.from_mapping(obj, platform=self.platform, room=self.room)
        except MalformedInput as exc:
            self._bad(exc, index, rejected)
            return None
        self._accepted(comment)
        return comment

    def _accepted(self, comment: Comment) -> bool:
        """Count a good comment (and whether it is a recent duplicate); always True."""
        stats = self.stats
        stats.received += 1
        if self._recent.seen((comment.platform, comment.room, comment.id)):
            stats.duplicates += 1
        return True

    def _bad(
        self, exc: MalformedInput, index: int | None, rejected: list[tuple[int | None, MalformedInput]] | None
    ) -> None:
        where = "" if index is None else f"element {index}: "
        self.stats.malformed(exc.reason, where + exc.detail, exc.sample)
        if rejected is not None:
            rejected.append((index, exc))

    def __repr__(self) -> str:
        return (f"<Decoder {self.platform}/{self.room} max {self.max_bytes} bytes, {self._fields!r}, "
                f"{self.stats.received} ok, {self.stats.malformed_total} malformed, "
                f"{self.stats.duplicates} duplicates>")


class SseEvent:
    """One Server-Sent Event: ``event`` type (default ``message``), ``data``, the ``id`` in force."""

    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, data: str, ident: str) -> None:
        self.event = event
        self.data = data
        self.id = ident

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SseEvent) and (self.event, self.data, self.id) == (other.event, other.data, other.id)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<SseEvent {self.event} id={self.id!r} {self.data[:60]!r}>"


class SseDecoder:
    """Incremental ``text/event-stream`` parser (WHATWG HTML, "Server-sent events", §9.2.6). Pure.

    Feed it bytes as they arrive (:meth:`feed`); it returns the events completed so far. Lines end with
    CRLF, LF or CR (a CR at the end of one chunk followed by LF at the start of the next is one line end);
    ``data`` lines are joined with LF; a blank line dispatches; ``:`` starts a comment (a keep-alive);
    ``id`` persists across events (the ``Last-Event-ID`` to resume with) unless it contains NUL; ``retry``
    (digits only) sets :attr:`retry_ms`. A line longer than ``max_line`` raises :class:`MalformedInput`.
    """

    __slots__ = ("_buf", "_cr", "_data", "_event", "_has_data", "last_id", "max_line", "retry_ms")

    def __init__(self, max_line: int = DEFAULT_MAX_BYTES) -> None:
        self._buf = bytearray()
        self._cr = False
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self.last_id = ""
        self.retry_ms: int | None = None
        self.max_line = max_line

    def feed(self, chunk: bytes) -> list[SseEvent]:
        out: list[SseEvent] = []
        buf = self._buf
        for b in chunk:
            if self._cr:
                self._cr = False
                if b == 0x0A:
                    continue
            if b in (0x0A, 0x0D):
                self._cr = b == 0x0D
                line = buf.decode("utf-8", "replace")
                buf.clear()
                ev = self._line(line)
                if ev is not None:
                    out.append(ev)
                continue
            buf.append(b)
            if len(buf) > self.max_line:
                buf.clear()
                raise MalformedInput("oversized", f"event-stream line over {self.max_line} bytes")
        return out

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._has_data:
                self._event = ""
                return None
            ev = SseEvent(self._event or "message", "\n".join(self._data), self.last_id)
            self._data = []
            self._has_data = False
            self._event = ""
            return ev
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self.last_id = value
        elif name == "retry" and value.isdigit() and value.isascii():
            self.retry_ms = int(value)
        return None


class JsonObjectStream:
    """Splits a stream of bytes into the JSON objects it holds, as they complete. Pure.

    Accepts the shapes server-streaming HTTP APIs use: objects one after another (optionally separated by
    whitespace or newlines), or one JSON array of objects written a piece at a time (``[{...},\\n{...}]``).
    Braces inside strings (and escaped quotes) are skipped correctly. An object larger than ``max_bytes``,
    or bytes outside an object that are not array punctuation or whitespace, raise :class:`MalformedInput`
    (the stream cannot be resynchronised after that, so the caller reconnects).
    """

    __slots__ = ("_buf", "_depth", "_escape", "_in_string", "max_bytes")

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self.max_bytes = max_bytes

    def feed(self, chunk: bytes) -> list[Any]:
        out: list[Any] = []
        buf = self._buf
        for b in chunk:
            if self._depth == 0:
                if b == 0x7B:  # {
                    self._depth = 1
                    buf.append(b)
                elif b not in b" \t\r\n[],":
                    raise MalformedInput("bad_json", f"unexpected byte {bytes([b])!r} between objects")
                continue
            buf.append(b)
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif b == 0x5C:  # backslash
                    self._escape = True
                elif b == 0x22:
                    self._in_string = False
            elif b == 0x22:
                self._in_string = True
            elif b == 0x7B:
                self._depth += 1
            elif b == 0x7D:
                self._depth -= 1
                if self._depth == 0:
                    raw = bytes(buf)
                    buf.clear()
                    try:
                        out.append(orjson.loads(raw))
                    except orjson.JSONDecodeError as exc:
                        raise MalformedInput("bad_json", str(exc), raw[:200]) from exc
            if len(buf) > self.max_bytes:
                raise MalformedInput("oversized", f"streamed object over {self.max_bytes} bytes")
        return out
