"""Records that cross boundaries: comments, parse results and outcomes (docs/contract.md §2-§4).

A comment is a frozen ``msgspec.Struct``, decoded and validated from JSON by msgspec
(:class:`CommentDecoder`, :meth:`Comment.from_mapping`); the others are frozen, slotted dataclasses; states are enums whose values are the contract's strings, so
``orjson.dumps(outcome.to_dict())`` writes exactly the contract's JSON.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import orjson

from livecart.core.errors import MalformedInput

#: Longest comment text accepted; platforms cap chat messages far below this.
MAX_TEXT = 2000
#: Longest id / user / name / platform / room string accepted.
MAX_FIELD = 256


class Intent(StrEnum):
    BUY = "buy"
    CANCEL = "cancel"
    ASK = "ask"
    NONE = "none"


class Status(StrEnum):
    RESERVED = "reserved"
    PRESALE = "presale"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    PROMOTED = "promoted"
    PAID = "paid"


class Reason(StrEnum):
    SOLD_OUT = "sold_out"
    LIMIT = "limit"
    UNKNOWN_PRODUCT = "unknown_product"
    NEEDS_VARIANT = "needs_variant"
    NOT_AVAILABLE = "not_available"
    BAD_QUANTITY = "bad_quantity"


def stable_comment_id(platform: str, room: str, user: str, ts: float, text: str) -> str:
    """The id of a comment whose platform gives none: a stable hash of what identifies it (docs/contract.md §2)."""
    raw = f"{platform}\x1f{room}\x1f{user}\x1f{ts!r}\x1f{text}".encode()
    return "h-" + hashlib.blake2b(raw, digest_size=12).hexdigest()


_Field = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FIELD)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class Comment(msgspec.Struct, frozen=True, gc=False):
    """A normalised comment, what every adapter yields (docs/contract.md §2).

    A frozen :class:`msgspec.Struct`: built positionally about 8x cheaper than a frozen dataclass, never
    tracked by the cyclic garbage collector (it holds only strings and a float, so it cannot be part of a
    cycle), and the type a JSON comment with every field present is decoded into directly
    (:class:`CommentDecoder`). The field constraints apply when decoding; the constructor trusts its caller.
    """

    platform: _Field
    room: _Field
    id: _Field
    user: _Field
    name: _Field
    text: _Text
    ts: float

    @property
    def key(self) -> tuple[str, str, str]:
        """``(platform, room, id)``: a comment seen twice under one key is processed once."""
        return (self.platform, self.room, self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "room": self.room,
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "text": self.text,
            "ts": self.ts,
        }

    @classmethod
    def from_mapping(
        cls, data: object, *, platform: str | None = None, room: str | None = None
    ) -> Comment:
        """Validate one decoded JSON object into a comment.

        ``platform`` and ``room`` fill in fields the payload lacks (an adapter knows where it listens).
        A missing ``id`` gets :func:`stable_comment_id`; a missing ``name`` is the user; a missing ``ts`` is
        an error, since it is part of the stable id and of the replay pace. Numeric ``platform``, ``room``,
        ``user``, ``name`` and ``id`` are taken as their decimal strings (numeric uids and room ids are
        common on the platforms). Raises :class:`MalformedInput` naming the first bad field.
        """
        if not isinstance(data, dict):
            if not isinstance(data, Mapping):
                raise MalformedInput("not_an_object", f"expected a JSON object, got {type(data).__name__}", data)
            data = dict(data)
        try:
            wire = msgspec.convert(data, _Wire)
        except msgspec.ValidationError as exc:
            raise _malformed(exc, data) from None
        if not math.isfinite(wire.ts):  # JSON has no NaN or infinity; a mapping built in Python may
            raise MalformedInput("bad_field", "'ts' must be a finite number (seconds since the epoch)", data)
        return wire.complete(platform, room, data)


_NAMED = ("platform", "room", "id", "user", "name")


def comment_problem(obj: object) -> str | None:
    """Why ``obj`` is not a valid :class:`Comment` (its constructor trusts its caller, so a plugin can build
    one with ``text=None``), or None when it is one: every field of the type and within the limits that
    decoding enforces."""
    if type(obj) is not Comment:
        return f"expected a Comment, got {type(obj).__name__}"
    for field in _NAMED:
        v = getattr(obj, field)
        if not isinstance(v, str) or not v or len(v) > MAX_FIELD:
            got = (type(v).__name__ if not isinstance(v, str) else "an empty string" if not v
                   else f"{len(v):,} characters")
            return f"'{field}' must be a non-empty string of at most {MAX_FIELD} characters, got {got}"
    if not isinstance(obj.text, str) or len(obj.text) > MAX_TEXT:
        got = type(obj.text).__name__ if not isinstance(obj.text, str) else f"{len(obj.text):,} characters"
        return f"'text' must be a string of at most {MAX_TEXT} characters, got {got}"
    ts = obj.ts
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return f"'ts' must be a finite number (seconds since the epoch), got {ts!r:.40}"
    return None


class _Wire(msgspec.Struct, frozen=True, gc=False):
    """What a comment object on the wire may hold (docs/contract.md §2), before the gaps are filled in."""

    text: _Text
    ts: float
    user: _Field | int
    platform: _Field | int | None = None
    room: _Field | int | None = None
    id: Annotated[str, msgspec.Meta(max_length=MAX_FIELD)] | int | None = None
    # An empty display name is as good as none (platforms send "" for viewers who set no nickname).
    name: Annotated[str, msgspec.Meta(max_length=MAX_FIELD)] | int | None = None

    def complete(self, platform: str | None, room: str | None, sample: object) -> Comment:
        """The comment, with ``platform``/``room`` where the object has none, ``name`` = ``user`` where it
        has none (or an empty one), and :func:`stable_comment_id` where it has no ``id`` (or an empty one)."""
        plat = self.platform if self.platform is not None else platform
        if not plat:
            raise MalformedInput("missing_field", "'platform' is missing and the adapter names none", sample)
        rm = self.room if self.room is not None else room
        if not rm:
            raise MalformedInput("missing_field", "'room' is missing and the adapter names none", sample)
        plat = str(plat)
        rm = str(rm)
        user = str(self.user)
        name = user if self.name is None or self.name == "" else str(self.name)
        ident = self.id
        if ident is None or ident == "":
            ident = stable_comment_id(plat, rm, user, self.ts, self.text)
        return Comment(plat, rm, str(ident), user, name, self.text, self.ts)


#: What each field must be, said with msgspec's own message when it is not.
_MUST = {
    "ts": "a finite number (seconds since the epoch)",
    "text": f"a string of at most {MAX_TEXT} characters",
    "id": f"a string (at most {MAX_FIELD} characters) or a whole number",
}
_MUST_DEFAULT = f"a non-empty string (at most {MAX_FIELD} characters) or a whole number"


def _malformed(exc: msgspec.ValidationError, sample: object) -> MalformedInput:
    """A :class:`MalformedInput` for msgspec's validation error: the field, what it must be, and msgspec's
    message (``'ts' must be a finite number (seconds since the epoch): Expected `float`, got `str` - at
    `$.ts```). Reasons: ``not_an_object``, ``missing_field`` (absent), ``bad_field`` (present, but of the wrong
    type or out of range), ``oversized`` (the text)."""
    message = str(exc)
    at = message.rfind(" - at `$.")
    if at >= 0:
        field = message[at + 9:].rstrip("`").split(".")[0].split("[")[0]
    elif "missing required field `" in message:
        field = message.rsplit("`", 2)[-2]
        return MalformedInput("missing_field", f"'{field}' is missing: {message}", sample)
    else:
        return MalformedInput("not_an_object", f"expected a JSON object: {message}", sample)
    # Present but of the wrong type or out of range: bad_field; null is as good as absent: missing_field.
    if field == "text" and "length" in message:
        reason = "oversized"
    else:
        reason = "missing_field" if "got `null`" in message else "bad_field"
    return MalformedInput(reason, f"'{field}' must be {_MUST.get(field, _MUST_DEFAULT)}: {message}", sample)


#: Payloads in a row that need the lenient path before :class:`CommentDecoder` stops trying the strict one.
STRICT_MISSES = 8

_STRICT = msgspec.json.Decoder(Comment)
_STRICT_ARRAY = msgspec.json.Decoder(list[Comment])
_WIRE = msgspec.json.Decoder(_Wire | list[msgspec.Raw])
_WIRE_ONE = msgspec.json.Decoder(_Wire)


class CommentDecoder:
    """JSON comments (one object, or an array of them, per payload) into :class:`Comment` records, by msgspec.

    A payload holding a complete comment (every field of docs/contract.md §2, strings, ``ts`` a number) is
    decoded straight into a :class:`Comment` by msgspec, with no Python code per field. Anything else is
    decoded into a lenient wire struct (numeric ids, missing ``platform``/``room``/``id``/``name``) and
    completed (:meth:`_Wire.complete`). A bad payload or element becomes a :class:`MalformedInput` with
    msgspec's message, which names the field (``Expected `str`, got `bool` - at `$.user```); reasons:
    ``bad_json``, ``not_an_object``, ``missing_field``, ``bad_field`` (present but mistyped), ``oversized`` (the text).
    Pure: no I/O; the caller counts and logs.
    """

    __slots__ = ("platform", "room", "_array_misses", "_arrays", "_misses", "_strict")

    def __init__(self, *, platform: str | None = None, room: str | None = None) -> None:
        self.platform = platform
        self.room = room
        self._strict = True
        self._misses = 0
        # A feed of arrays (a companion's frames, an MQTT publisher's batches): once one has come, each array
        # is first decoded whole into comments by msgspec (one C call, nothing per element in Python); an
        # array that does not fit (a missing id, a numeric uid, a bad element) goes the lenient way below.
        self._arrays = False
        self._array_misses = 0

    def decode(self, payload: bytes | bytearray | memoryview | str, out: list[Comment],
               bad: list[tuple[int | None, MalformedInput]], *, _retried: bool = False) -> None:
        """Append the payload's comments to ``out`` and its problems, as ``(index in the array or None,
        error)``, to ``bad``. The good elements of an array are kept."""
        if self._strict:
            try:
                out.append(_STRICT.decode(payload))
                self._misses = 0
                return
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                pass  # not a complete comment object: the lenient path says why, or fills the gaps
        if self._arrays:
            try:
                out += _STRICT_ARRAY.decode(payload)
                self._array_misses = 0
                return
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                self._array_misses += 1
                if self._array_misses >= STRICT_MISSES:
                    self._arrays = False  # this feed's arrays never fit: stop decoding them twice
        try:
            data = _WIRE.decode(payload)
        except msgspec.ValidationError as exc:
            bad.append((None, _malformed(exc, _head(payload))))
            return
        except msgspec.DecodeError as exc:
            if "surrogate" in str(exc) and not _retried:
                # A lone half of a surrogate pair (an emoji cut in two by a client or a platform): the comment is
                # kept, the broken character becomes U+FFFD.
                self.decode(mend_surrogates(payload), out, bad, _retried=True)
                return
            bad.append((None, MalformedInput("bad_json", str(exc), _head(payload, 200))))
            return
        except RecursionError:
            self._nested(payload, out, bad)
            return
        if isinstance(data, _Wire):
            if self._strict:
                # A feed whose objects lack a field (no id, no platform) never fits the strict decoder: after
                # a few in a row, stop decoding each payload twice.
                self._misses += 1
                if self._misses >= STRICT_MISSES:
                    self._strict = False
            self._complete(data, None, payload, out, bad)
            return
        if self._strict and data:
            # A feed of arrays: the strict decoder (one object) never fits; stop trying it first.
            self._strict = False
            self._arrays = True
        for i, raw in enumerate(data):
            try:
                wire = _WIRE_ONE.decode(raw)
            except msgspec.ValidationError as exc:
                bad.append((i, _malformed(exc, bytes(raw)[:200])))
                continue
            except RecursionError:
                bad.append((i, MalformedInput("bad_json", "nested too deeply", bytes(raw)[:80])))
                continue
            self._complete(wire, i, raw, out, bad)

    def _nested(self, payload: bytes | bytearray | memoryview | str, out: list[Comment],
                bad: list[tuple[int | None, MalformedInput]]) -> None:
        """A payload msgspec could not decode for Python's recursion limit (it nests as deep as the stack
        allows, so ``[[[[...]]]]`` 2 KB long is enough): decoded again by orjson, whose limit (1024 levels)
        does not depend on the caller's stack, so that the good elements of an array beside a deep one are
        kept and the deep ones are counted. Too deep for orjson too: ``bad_json``."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            bad.append((None, MalformedInput("bad_json", f"nested too deeply ({exc})", _head(payload))))
            return
        items = enumerate(data) if isinstance(data, list) else [(None, data)]
        for i, obj in items:
            if not isinstance(obj, dict):
                bad.append((i, MalformedInput("not_an_object", f"expected a JSON object, got {type(obj).__name__}",
                                              _head(payload))))
                continue
            try:
                out.append(Comment.from_mapping(obj, platform=self.platform, room=self.room))
            except MalformedInput as exc:
                bad.append((i, exc))

    def _complete(self, wire: _Wire, index: int | None, payload: Any, out: list[Comment],
                  bad: list[tuple[int | None, MalformedInput]]) -> None:
        try:
            out.append(wire.complete(self.platform, self.room, payload))
        except MalformedInput as exc:
            exc.sample = _head(payload) if not isinstance(payload, msgspec.Raw) else bytes(payload)[:200]
            bad.append((index, exc))

    def __repr__(self) -> str:
        return f"<CommentDecoder {self.platform}/{self.room} {'strict first' if self._strict else 'lenient'}>"


_SURROGATE = re.compile(rb"(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def mend_surrogates(payload: bytes | bytearray | memoryview | str) -> bytes:
    """``payload`` with every ``\\uD800``-``\\uDFFF`` escape that is not half of a pair replaced by ``\\uFFFD``."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    return _SURROGATE.sub(lambda m: m.group(1) or rb"\ufffd", raw)


def _head(payload: Any, n: int = 80) -> bytes | str:
    return payload[:n] if isinstance(payload, str) else bytes(payload[:n])


@dataclass(frozen=True, slots=True)
class Item:
    """One thing a comment names: a product (``sku``), optionally a variant, and a quantity.

    ``sku`` is ``None`` when the comment names a product the catalogue does not have (``link 9``); then
    ``reason`` is ``unknown_product``. ``reason`` is ``bad_quantity`` for a quantity of 0 or above the
    maximum. The ledger turns a non-null ``reason`` into a rejection.
    """

    sku: str | None
    variant: str | None = None
    qty: int = 1
    reason: Reason | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sku": self.sku, "variant": self.variant, "qty": self.qty}
        if self.reason is not None:
            d["reason"] = self.reason.value
        return d


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What a comment means (docs/contract.md §3)."""

    intent: Intent
    items: tuple[Item, ...] = ()

    def to_dict(self, comment_id: str | None = None) -> dict[str, Any]:
        return {"id": comment_id, "intent": self.intent.value, "items": [i.to_dict() for i in self.items]}


NOTHING = ParseResult(Intent.NONE)

#: Comments parsed ahead: ``(featured, results)``, the featured product they were parsed under and one
#: result a comment, None for one not parsed (:meth:`livecart.runtime.pipeline.Engine.submit`).
Parsed = tuple[str | None, Sequence[ParseResult | None]]


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """What happened to one item of a buy or cancel comment, or later to an order (docs/contract.md §4).

    ``comment`` is the id of the comment that caused it (``None`` for an expiry or a host control);
    ``platform`` and ``room`` say where to answer it. ``seq`` is the journal's sequence number, set once the
    outcome is durable.

    A frozen :class:`msgspec.Struct`, like :class:`Comment`: the ledger makes one per item of every buy, most
    of them rejections in a flash sale, so it is built in one C call (about 4x cheaper than a frozen
    dataclass) and is never tracked by the cyclic garbage collector (it holds only strings, numbers and
    enum members). Copy with changes with ``msgspec.structs.replace``.
    """

    comment: str | None
    user: str
    order: str | None
    sku: str | None
    variant: str | None
    qty: int
    status: Status
    reason: Reason | None = None
    position: int | None = None
    platform: str | None = None
    room: str | None = None
    ts: float = 0.0
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "comment": self.comment,
            "user": self.user,
            "order": self.order,
            "sku": self.sku,
            "variant": self.variant,
            "qty": self.qty,
            "status": self.status.value,
            "reason": self.reason.value if self.reason is not None else None,
            "position": self.position,
            "platform": self.platform,
            "room": self.room,
            "ts": self.ts,
            "seq": self.seq,
        }


#: ``Outcome(...)`` with every field given positionally: the ledger's spelling on its hot path. (It was a
#: cheaper constructor while ``Outcome`` was a frozen dataclass; a msgspec Struct needs none.)
make_outcome = Outcome
