"""One sale's log on a NATS JetStream cluster (docs/contract.md §7): the stream, the KV bucket, the state.

The log is the sale's journal. Like the SQLite journal (:mod:`livecart.store.sqlite`) it holds the ledger's
*input*, never its output, so every process that reads it in order computes the same ledger. One JetStream
stream per sale, ``LIVECART_<sale>``, with two subjects:

``livecart.<sale>.in``
    what any process feeds: comment batches (``["c", [[platform, room, id, user, name, text], ...]]``, about
    1,000 comments each, published with a ``Nats-Msg-Id`` and resent identically until the stream
    acknowledges them) and host controls (``["k", kind, [args]]``, the journal's control records).
``livecart.<sale>.dec``
    what only the decider writes, each message published with ``Nats-Expected-Last-Subject-Sequence`` set to
    the decider's own previous one (fencing): ``["t", member]`` when a process takes over deciding,
    ``["x"]`` an expiry sweep, ``["m", n, k]`` "the k outcomes of messages up to stream sequence n are
    handed out" (written *before* handing them out, so none is ever handed out twice: see
    :mod:`livecart.runtime.cluster`).

Applying a message (:meth:`SaleState.apply`) is pure: comments are parsed with the featured product the
ledger has at that point and decided in order; a comment key seen before (fed by another process, or
resent) changes nothing; the ledger's clock is the stream's timestamp of the message (never less than the
previous one's), so a hold expires at the same point of the log for every reader.

A KV bucket ``livecart_<sale>`` holds the sale's ``header`` (catalogue, hold time and first featured
product: a process started with another catalogue is refused, as with the journal), the decider ``lease``
(see :mod:`livecart.runtime.cluster`) and ``member.<id>`` entries through which processes show themselves
to ``livecart cluster status``.

Errors: :class:`~livecart.core.errors.JournalError` when the cluster cannot be reached or refuses what is
asked, :class:`Fenced` when a fenced publish finds that another decider wrote since.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib
import importlib.resources
import logging
import time
import unicodedata
import uuid
import zlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import orjson
from nats.js import api

from livecart import __version__
from livecart.core import control
from livecart.core.catalogue import Catalogue
from livecart.core.control import Kind
from livecart.core.errors import ControlError, JournalError, LivecartError
from livecart.core.ledger import Ledger
from livecart.core.records import NOTHING, Comment, Outcome, ParseResult, Status
from livecart.core.settings import Config
from livecart.store.codec import (
    REFUSALS_KEPT,
    SNAPSHOT_VERSION,
    Entry,
    Header,
    catalogue_from_json,
    catalogue_json,
    comment_row,
    control_row,
    dumps_state,
    paused_gc,
)

_REJECTED = Status.REJECTED

log = logging.getLogger("livecart.jetstream")

#: Comments per published batch (a 60 KB message: the cluster takes ~1,900 of them a second, see docs).
BATCH_COMMENTS = 1000
#: Largest body of one comment batch; a longer batch is split (the server refuses payloads over 1 MB).
BATCH_BYTES = 256 * 1024
#: How long the stream remembers a Nats-Msg-Id: a batch resent within it is stored once.
DUPLICATE_WINDOW = 120.0
#: JetStream's error code for a failed Nats-Expected-Last-Subject-Sequence check.
WRONG_LAST_SEQUENCE = 10071
#: Between two tries of a publish the cluster did not answer (an election takes 5-8 s).
RETRY_SECONDS = 0.25
PUBLISH_TIMEOUT = 2.0

# Message kinds.
COMMENTS = "c"
CONTROL = "k"
TAKEOVER = "t"
SWEEP = "x"
MARK = "m"


class Fenced(LivecartError):
    """Another decider published on the decisions subject since this one's last message: step down."""


@dataclass(frozen=True, slots=True)
class Names:
    """The JetStream names of one sale."""

    sale: str

    @property
    def stream(self) -> str:
        return f"LIVECART_{self.sale}"

    @property
    def inputs(self) -> str:
        return f"livecart.{self.sale}.in"

    @property
    def decisions(self) -> str:
        return f"livecart.{self.sale}.dec"

    @property
    def bucket(self) -> str:
        return f"livecart_{self.sale}"


def comments_body(comments: Sequence[Comment]) -> bytes:
    return orjson.dumps([COMMENTS, [[c.platform, c.room, c.id, c.user, c.name, c.text] for c in comments]])


def control_body(kind: Kind, args: Sequence[Any]) -> bytes:
    """A host control as :func:`livecart.core.control.record` gives it (its kind and arguments)."""
    return orjson.dumps([CONTROL, kind.value, list(args)])


# --------------------------------------------------------------------------- the pure state


ParseFn = Callable[[str, str | None], ParseResult]


class SaleState:
    """The ledger of a sale as the log builds it, plus where deciding and announcing stand. No I/O.

    Feed every message of the stream, in stream order, to :meth:`apply`. Outcomes wait in
    :attr:`unannounced` (stream seq, outcomes) until a mark covers them; the decider takes them
    (:meth:`take_unannounced`), writes its mark, then announces them.
    """

    def __init__(self, header: Header, parse: ParseFn) -> None:
        self.header = header
        self._parse = parse
        self._now = header.created
        self.ledger = Ledger(header.catalogue, hold_seconds=header.hold_seconds, featured=header.featured,
                             clock=lambda: self._now)
        self.applied = 0  # stream seq of the last message applied
        self.dec_last = 0  # stream seq of the last message on the decisions subject
        self.announced = 0  # outcomes of messages up to this seq were handed out (the last mark; see below)
        #: The last mark's batch: its messages (first, last) and how many outcomes it covered. Its decider
        #: wrote the mark before handing them out, so if it stopped in between, they were not announced:
        #: a new decider reports them "in doubt" and never announces them again.
        self.last_batch: tuple[int, int, int] = (0, 0, 0)
        self.decider: str | None = None  # member id of the last takeover
        self.last_ts = header.created
        self.unannounced: list[tuple[int, list[Outcome]]] = []
        #: The newest refusals of comments (a refusal makes no order): a new decider tells their buyers again
        #: when the replies' progress the deciders before kept is older than them (see ClusterEngine's
        #: on_takeover). A restart from a snapshot starts with none.
        self.refused: deque[Outcome] = deque(maxlen=REFUSALS_KEPT)
        #: What the last take_unannounced took, until its mark is in the log (see put_back).
        self.taken: list[tuple[int, list[Outcome]]] = []
        self.names: dict[str, str] = {}  # user -> display name (export)
        #: seq -> outcomes, or the ControlError, of controls that someone waits for (see :meth:`expect`).
        self.results: dict[int, list[Outcome] | ControlError] = {}
        self._expected: set[int] = set()
        self.parse_errors = 0
        self.bad_messages = 0
        #: When a list, every ledger event is appended to it as the journal entry the SQLite engine writes
        #: for it (:mod:`livecart.store.codec`): ``report --html`` builds its summary from them.
        self.record: list[Entry] | None = None

    def expect(self, seq: int) -> None:
        """Keep the result of message ``seq`` in :attr:`results` once it is applied."""
        self._expected.add(seq)

    def apply(self, seq: int, ts: float, decision: bool, body: bytes) -> list[Outcome]:
        """Apply stream message ``seq`` (stored at ``ts``; ``decision`` if on the decisions subject)."""
        if seq <= self.applied:
            return []  # seen already (a consumer that was recreated delivers again)
        self.applied = seq
        if ts > self.last_ts:
            self.last_ts = ts
        self._now = self.last_ts
        try:
            data = orjson.loads(body)
            kind = data[0]
        except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
            self._bad(seq, "not a livecart message")
            return []
        out: list[Outcome] = []
        if decision:
            self.dec_last = seq
            if kind == MARK:
                # The decider that wrote it hands these outcomes out right after it (never before): done
                # with them here.
                through = int(data[1])
                if through > self.announced:
                    # The mark says how many outcomes it covers (the decider took them out of its own
                    # unannounced before writing it); a mark of an older livecart does not.
                    k = int(data[2]) if len(data) > 2 else sum(len(o) for s, o in self.unannounced if s <= through)
                    self.last_batch = (self.announced + 1, through, k)
                    self.announced = through
                    self.unannounced = [(s, o) for s, o in self.unannounced if s > through]
                return []
            if kind == TAKEOVER:
                self.decider = str(data[1])
                return []
            if kind == SWEEP:
                before = self.ledger.seq
                out = self.ledger.expire_due()
                if self.record is not None and self.ledger.seq != before:
                    self.record.append(control_row(self.ledger.seq, self._now, Kind.EXPIRE, ()))
            else:
                self._bad(seq, f"unknown decision kind {kind!r}")
                return []
        elif kind == COMMENTS:
            out = self._comments(data[1])
            self.refused.extend(o for o in out if o.status is _REJECTED)
        elif kind == CONTROL:
            out = self._control(seq, data)
        else:
            self._bad(seq, f"unknown input kind {kind!r}")
            return []
        if out:
            self.unannounced.append((seq, out))
        return out

    def _bad(self, seq: int, why: str) -> None:
        self.bad_messages += 1
        log.log(logging.ERROR if self.bad_messages == 1 else logging.DEBUG,
                "log message %d skipped: %s (counted)", seq, why)

    def _comments(self, rows: list[list[Any]]) -> list[Outcome]:
        ledger = self.ledger
        parse = self._parse
        decide = ledger.decide
        names = self.names
        record = self.record
        out: list[Outcome] = []
        for platform, room, cid, user, name, text in rows:
            if ledger.seen((platform, room, cid)):
                continue
            c = Comment(platform, room, cid, user, name, text, 0.0)
            try:
                pr = parse(text, ledger.featured)
            except Exception as exc:  # a parser bug must not stop the sale; the same for every reader
                self.parse_errors += 1
                log.log(logging.ERROR if self.parse_errors == 1 else logging.DEBUG,
                        "parser failed on comment %s: %r (counted; taken as no intent)", c.key, exc)
                pr = NOTHING
            if name:
                names[user] = name
            before = ledger.seq
            res = decide(c, pr)
            if res:
                out.extend(res)
            if record is not None and ledger.seq != before:
                record.append(comment_row(ledger.seq, self._now, c, pr))
        return out

    def _control(self, seq: int, data: list[Any]) -> list[Outcome]:
        try:
            kind = Kind(data[1])
            if kind is Kind.COMMENT or kind is Kind.EXPIRE:
                raise ValueError(f"{kind!r} is not a host control")
            before = self.ledger.seq
            out = control.apply(self.ledger, kind, data[2])
            if self.record is not None and self.ledger.seq != before:
                self.record.append(control_row(self.ledger.seq, self._now, kind, data[2]))
        except ControlError as exc:
            # Refused the same way by every reader; changes nothing. Only the one who sent it hears why.
            if seq in self._expected:
                self._expected.discard(seq)
                self.results[seq] = exc
            return []
        except (IndexError, TypeError, ValueError) as exc:
            self._bad(seq, f"damaged control: {exc!r}")
            return []
        if seq in self._expected:
            self._expected.discard(seq)
            self.results[seq] = out
        return out

    def take_unannounced(self, through: int, floor: int) -> tuple[list[Outcome], int, int]:
        """Remove and return the outcomes of messages in (``floor``, ``through``], in log order, with the
        first and last of those messages' seqs; drop those up to ``floor`` (announced before this decider
        took over: ``floor`` is :attr:`announced` as its takeover found it)."""
        out: list[Outcome] = []
        keep: list[tuple[int, list[Outcome]]] = []
        taken: list[tuple[int, list[Outcome]]] = []
        first = last = 0
        for s, o in self.unannounced:
            if s <= floor:
                continue
            if s <= through:
                out.extend(o)
                taken.append((s, o))
                first = first or s
                last = s
            else:
                keep.append((s, o))
        self.unannounced = keep
        self.taken = taken
        return out, first, last

    def put_back(self) -> None:
        """Give back what the last :meth:`take_unannounced` took, when the decider's mark of it did not reach
        the log (the decider stepped down first): whoever decides next, this process too, announces it. What
        a mark applied since then covers stays out (the mark was written after all: in doubt at a takeover)."""
        back = [(s, o) for s, o in self.taken if s > self.announced]
        self.taken = []
        if back:
            self.unannounced = back + self.unannounced  # all older than what arrived since

    # ------------------------------------------------------------------ snapshots

    def snapshot_body(self) -> bytes:
        """:meth:`snapshot_state` encoded (safe on another thread: the state is a copy)."""
        return dumps_state(self.snapshot_state())

    def snapshot_state(self) -> dict[str, Any]:
        """The state after message :attr:`applied`, as a snapshot's data (format
        :data:`~livecart.store.codec.SNAPSHOT_VERSION`: the ledger part is :meth:`Ledger.state`, as in the
        SQLite journal's snapshots, beside where the log stands). Outcomes of messages after the last mark
        are kept (a decider restored from it announces them); those up to it are never announced again."""
        return {
            "ledger": self.ledger.state(), "applied": self.applied, "dec_last": self.dec_last,
            "announced": self.announced, "last_batch": list(self.last_batch), "decider": self.decider,
            "last_ts": self.last_ts,
            "names": dict(self.names),
            "unannounced": [[s, [msgspec.to_builtins(o) for o in out]]
                            for s, out in self.unannounced if s > self.announced],
            "parse_errors": self.parse_errors, "bad_messages": self.bad_messages}

    @classmethod
    def restore(cls, header: Header, parse: ParseFn, version: int, body: bytes) -> SaleState:
        """The state :meth:`snapshot_body` described. Raises :class:`JournalError` for a snapshot of a newer
        format or one that does not fit the sale's catalogue."""
        if version > SNAPSHOT_VERSION:
            raise JournalError(f"the sale's snapshot has format {version}; this livecart reads up to "
                               f"{SNAPSHOT_VERSION}: upgrade livecart")
        st = cls(header, parse)
        try:
            with paused_gc():
                d = orjson.loads(body)
                st.ledger = Ledger.restore(header.catalogue, d["ledger"], clock=lambda: st._now)
            st.applied = int(d["applied"])
            st.dec_last = int(d["dec_last"])
            st.announced = int(d["announced"])
            a, b, k = d.get("last_batch") or (0, 0, 0)  # absent in snapshots written before it existed
            st.last_batch = (int(a), int(b), int(k))
            st.decider = d["decider"]
            st.last_ts = st._now = float(d["last_ts"])
            st.names = dict(d["names"])
            st.unannounced = [(int(s), [msgspec.convert(o, Outcome) for o in out]) for s, out in d["unannounced"]]
            st.parse_errors = int(d["parse_errors"])
            st.bad_messages = int(d["bad_messages"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, msgspec.ValidationError) as exc:
            raise JournalError(f"the sale's snapshot cannot be restored ({exc!r})") from exc
        return st

    def __repr__(self) -> str:
        return (f"<SaleState at seq {self.applied:,}: announced to {self.announced:,}, decider "
                f"{self.decider or '-'}, {self.ledger!r}>")


# --------------------------------------------------------------------------- the cluster


def header_json(header: Header) -> bytes:
    return orjson.dumps({"app": "livecart", "catalogue": header.catalogue_json, "hold_seconds": header.hold_seconds,
                         "featured": header.featured, "created": header.created})


def header_from_json(data: bytes) -> Header:
    d = orjson.loads(data)
    return Header(catalogue_from_json(d["catalogue"]), d["catalogue"], float(d["hold_seconds"]),
                  d["featured"] or None, float(d["created"]))


_TRANSIENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError,
              nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
              nats.js.errors.ServiceUnavailableError, nats.errors.StaleConnectionError, asyncio.TimeoutError)


def _api_said(exc: Any) -> str:
    """A JetStream API error as the server gave it (nats-py's repr of one shows none of its fields)."""
    fields = [f"{k}={v!r}" for k in ("code", "err_code", "description") if (v := getattr(exc, k, None)) is not None]
    return f"{type(exc).__name__}({', '.join(fields)})"


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    # 503 / "JetStream not ready" / a stream without a leader during an election: try again
    if isinstance(exc, (nats.js.errors.NotFoundError, nats.js.errors.KeyValueError)):
        return False
    # 10158 (409, "duplicate message id is in process", NATS 2.11+): a publish sent again under its message id
    # while the first copy waits for the stream's quorum; asking again later gets the first copy's answer.
    return isinstance(exc, nats.js.errors.APIError) and (
        getattr(exc, "code", None) in (503, 504) or getattr(exc, "err_code", None) in (10008, 10023, 10158))


class SaleLog:
    """The connection to the cluster and the stream and bucket of one sale. Open with :meth:`open`."""

    def __init__(self, nc: Any, names: Names, servers: Sequence[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.names = names
        self.servers = tuple(servers)
        self.kv: Any = None
        self.header: Header | None = None
        self.publishes = 0
        self.retries = 0
        self.publish_seconds = 0.0
        self.last_publish_seconds = 0.0

    @classmethod
    async def open(cls, servers: Sequence[str], sale: str, *, replicas: int = 1, create: bool = False,
                   catalogue: Catalogue | None = None, hold_seconds: float = 0.0, featured: str | None = None,
                   clock: Callable[[], float] = time.time, connect_timeout: float = 5.0) -> SaleLog:
        """Connect and open the sale's stream and bucket.

        ``create`` makes them (with ``replicas`` copies) and the header from ``catalogue`` when the sale is
        new, and refuses (:class:`JournalError`) a catalogue or hold time other than the sale's. Without
        ``create`` a sale that does not exist is a :class:`JournalError`.
        """
        names = Names(sale)
        nc = await connect(servers, f"livecart {sale}", connect_timeout)
        s = cls(nc, names, servers)
        try:
            await s._prepare(replicas, create, catalogue, hold_seconds, featured, clock)
        except BaseException:
            await s.close()
            raise
        return s

    async def _prepare(self, replicas: int, create: bool, catalogue: Catalogue | None, hold_seconds: float,
                       featured: str | None, clock: Callable[[], float]) -> None:
        n = self.names
        try:
            info = await self._retry(lambda: self.js.stream_info(n.stream))
            exists = True
            have = int(info.config.num_replicas or 1)
            if create and have != replicas:
                log.warning("the log of sale %s has %d replicas, not the %d this config asks for: the log "
                            "keeps the number it was created with", n.sale, have, replicas)
        except nats.js.errors.NotFoundError:
            exists = False
        if not exists and not create:
            raise JournalError(f"the sale {n.sale!r} has no log in the cluster (has it run yet?)")
        if not exists:
            cfg = api.StreamConfig(name=n.stream, subjects=[n.inputs, n.decisions], num_replicas=replicas,
                                   storage=api.StorageType.FILE, duplicate_window=DUPLICATE_WINDOW,
                                   retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.NEW)
            try:
                await self._retry(lambda: self.js.add_stream(cfg))
            except nats.js.errors.APIError as exc:  # e.g. replicas > 1 on a server that is not clustered
                raise _refused(n.sale, "log", replicas, exc) from None
            # Said loudly: a process pointed at the wrong cluster (a wrong address in [storage] servers) starts a
            # second, empty log of the sale here, with stock of its own and order numbers that collide.
            log.warning("created a new log for sale %s on %s (%d replicas): the sale starts from nothing here; "
                        "if it already runs on other machines, this process is on another cluster than theirs",
                        n.sale, ", ".join(self.servers), replicas)
        try:
            self.kv = await self._retry(lambda: self.js.key_value(n.bucket))
        except nats.js.errors.BucketNotFoundError:
            if not create:
                raise JournalError(f"the sale {n.sale!r} has no bucket in the cluster") from None
            kvc = api.KeyValueConfig(bucket=n.bucket, history=1, replicas=replicas,
                                     storage=api.StorageType.FILE)
            try:
                self.kv = await self._retry(lambda: self.js.create_key_value(kvc))
            except nats.js.errors.APIError as exc:
                raise _refused(n.sale, "bucket", replicas, exc) from None
        try:
            entry = await self._retry(lambda: self.kv.get("header"))
            self.header = header_from_json(entry.value)
        except nats.js.errors.KeyNotFoundError:
            if not create or catalogue is None:
                raise JournalError(f"the sale {n.sale!r} has no header in the cluster (has it run yet?)") from None
            mine = Header(catalogue, catalogue_json(catalogue), float(hold_seconds), featured, clock())
            try:
                await self._retry(lambda: self.kv.create("header", header_json(mine)))
                self.header = mine
            except nats.js.errors.KeyWrongLastSequenceError:  # another process wrote it first
                self.header = header_from_json((await self.kv.get("header")).value)
        if catalogue is not None and create and self.header is not None and (
                catalogue_json(catalogue) != self.header.catalogue_json
                or float(hold_seconds) != self.header.hold_seconds):
            said = _differences(catalogue_json(catalogue), self.header.catalogue_json, float(hold_seconds),
                                self.header.hold_seconds)
            raise JournalError(
                f"the sale {n.sale!r} was started with a different catalogue or hold_minutes than the config "
                f"now has ({said}); deciding with it would not give the outcomes already announced. Give the "
                "config another [storage] sale, or change stock live (livecart ctl restock).")

    async def check_parser(self, ours: str, *, keep: bool = True) -> None:
        """Refuse (:class:`JournalError`) a config, or a livecart, that would read the sale's comments otherwise
        than the process that started it (:func:`parser_json`, kept in the bucket, key ``parser``). A sale
        started by a livecart that kept none gets this config's now (with ``keep``; a reader, ``report`` or
        ``ctl``, leaves it to the next ``run``)."""
        try:
            entry = await self._retry(lambda: self.kv.get("parser"))
            theirs = bytes(entry.value or b"").decode()
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            if not keep:
                return
            try:
                await self._retry(lambda: self.kv.create("parser", ours.encode()))
                return
            except nats.js.errors.KeyWrongLastSequenceError:  # another process wrote it first
                theirs = bytes((await self.kv.get("parser")).value or b"").decode()
        if _same_parser(ours, theirs):
            return
        code = _parser_code_differs(ours, theirs)
        if code is not None:
            raise JournalError(
                f"the sale {self.names.sale!r} was started by a livecart with another parser ({code}); the two "
                "would read the log's comments differently, and orders already announced would change. Run the "
                "same livecart on every machine of a sale (upgrade between sales), or give this config "
                "another [storage] sale.")
        raise JournalError(
            f"the sale {self.names.sale!r} was started with other aliases, links, codes or parser settings "
            f"than the config now has ({_parser_differences(ours, theirs)}); its log's comments would be "
            "read otherwise and orders already announced would change. Give the config another [storage] "
            "sale, or put the sale's back.")

    async def _retry(self, call: Callable[[], Any], *, patience: float = 30.0) -> Any:
        """``await call()``, again while the cluster answers nothing or is electing, for up to ``patience`` s."""
        def count() -> None:
            self.retries += 1
        return await retry(call, patience=patience, on_retry=count)

    async def publish(self, subject: str, body: bytes, msg_id: str, *, expect_last: int | None = None,
                      patience: float | None = None) -> int:
        """Publish ``body`` with ``Nats-Msg-Id: msg_id`` and return its stream sequence, resending the
        identical message until the stream acknowledges it (a resend the stream stored already is recognised
        by the id and stored once). ``expect_last`` fences: :class:`Fenced` if the last message on
        ``subject`` is not that one. ``patience`` (s) bounds the resending (default: forever)."""
        headers = {"Nats-Msg-Id": msg_id}
        if expect_last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expect_last)
        t0 = time.perf_counter()
        deadline = None if patience is None else time.monotonic() + patience
        while True:
            try:
                ack = await self.js.publish(subject, body, timeout=PUBLISH_TIMEOUT, headers=dict(headers))
                break
            except nats.js.errors.APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise Fenced(f"another decider wrote on {subject} ({exc.description})") from exc
                if not _transient(exc):
                    raise JournalError(f"the cluster refused a message on {subject}: {_api_said(exc)}") from exc
            except (TimeoutError, nats.errors.Error) as exc:
                if isinstance(exc, (nats.errors.MaxPayloadError, nats.errors.BadSubjectError)):
                    raise JournalError(f"cannot publish on {subject}: {exc!r}") from exc
                # Anything else (no answer, no responders, reconnecting, closed for now): resend.
            if deadline is not None and time.monotonic() > deadline:
                raise JournalError(f"the cluster did not acknowledge a message on {subject} for {patience:.1f} s")
            self.retries += 1
            await asyncio.sleep(RETRY_SECONDS)
        dt = time.perf_counter() - t0
        self.publishes += 1
        self.publish_seconds += dt
        self.last_publish_seconds = dt
        return int(ack.seq)

    @property
    def snapshots(self) -> Snapshots:
        """The sale's snapshots, kept in its bucket."""
        return Snapshots(self.kv)

    async def info(self) -> Any:
        """The stream's info (``state.last_seq``, ``state.messages``, ``cluster``)."""
        return await self._retry(lambda: self.js.stream_info(self.names.stream))

    async def last_seq(self) -> int:
        return int((await self.info()).state.last_seq)

    async def read(self, start: int, *, batch: int = 256, idle: float = 0.5
                   ) -> AsyncGenerator[tuple[int, float, bool, bytes], None]:
        """Every message from stream seq ``start`` on, in order, as ``(seq, ts, on_decisions, body)``; never
        ends by itself. A consumer lost with its server (or idle too long) is made again where reading
        stopped, so nothing is skipped or repeated."""
        nxt = start
        decisions = self.names.decisions
        while True:
            sub = None
            try:
                cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=nxt,
                                         ack_policy=api.AckPolicy.NONE, inactive_threshold=60.0,
                                         num_replicas=1, mem_storage=True, max_waiting=4)
                sub = await self.js.pull_subscribe(f"livecart.{self.names.sale}.>", stream=self.names.stream,
                                                   config=cfg)
                quiet = 0
                while True:
                    try:
                        msgs = await sub.fetch(batch, timeout=idle)
                    except nats.errors.TimeoutError:
                        _reraise_cancel()
                        quiet += 1
                        if quiet % 4 == 0:
                            await sub.consumer_info()  # raises if the consumer went with its server
                        yield (0, 0.0, False, b"")  # an idle beat: lets the caller look around
                        continue
                    quiet = 0
                    for m in msgs:
                        md = m.metadata
                        seq = int(md.sequence.stream)
                        if seq < nxt:
                            continue
                        if seq > nxt:
                            # A gap would mean a message not seen: read again from nxt.
                            raise JournalError(f"log read skipped from {nxt} to {seq}")
                        nxt = seq + 1
                        yield seq, md.timestamp.timestamp(), m.subject == decisions, m.data
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, JournalError) as exc:
                log.debug("log reader of %s restarts at %d: %r", self.names.sale, nxt, exc)
                _reraise_cancel()
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                if sub is not None:
                    with contextlib.suppress(TimeoutError, nats.errors.Error):
                        await sub.unsubscribe()

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
            await self.nc.close()

    def __repr__(self) -> str:
        return f"<SaleLog {self.names.sale} on {', '.join(self.servers)}: {self.publishes} publishes>"


def _differences(ours: str, theirs: str, hold_ours: float, hold_theirs: float, most: int = 3) -> str:
    """What differs between this config's catalogue and hold and the sale's, said briefly: "egg-10: stock
    250 here, 100 in the sale; hold_minutes 30 here, 0 in the sale" (the first ``most`` differences)."""
    out: list[str] = []
    if hold_ours != hold_theirs:
        out.append(f"hold_minutes {hold_ours / 60:g} here, {hold_theirs / 60:g} in the sale")
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
        out += _product_differences(orjson.loads(ours), orjson.loads(theirs))
    return _first(out, most, "the catalogues differ")


def _product_differences(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Products of one side only, and each field of a product that differs, by sku: "egg-10: stock 250
    here, 100 in the sale", "tea only here"."""
    here = {p["sku"]: p for p in mine}
    sale = {p["sku"]: p for p in theirs}
    out: list[str] = []
    for sku in [*here, *(k for k in sale if k not in here)]:
        if sku not in sale or sku not in here:
            out.append(f"{sku} only {'here' if sku in here else 'in the sale'}")
            continue
        a, b = here[sku], sale[sku]
        out.extend(f"{sku}: {k} {_short(a.get(k))} here, {_short(b.get(k))} in the sale"
                   for k in (*a, *(k for k in b if k not in a)) if a.get(k) != b.get(k))
    return out


def _first(out: list[str], most: int, otherwise: str) -> str:
    """The first ``most`` differences said, and how many more; ``otherwise`` when none is known."""
    if len(out) > most:
        out = [*out[:most], f"{len(out) - most} more"]
    return "; ".join(out) or otherwise


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


#: The modules of ``livecart.core`` whose code decides what a comment means (:func:`parser_code`).
PARSER_MODULES = ("parser", "parser_tables", "parser_t2s", "parser_pinyin")


@functools.cache
def parser_code() -> str:
    """A short hash of this livecart's parser: its modules' sources (:data:`PARSER_MODULES`) and the version of
    the Unicode tables its normalisation reads (``unicodedata``, which comes with Python). Two livecart
    versions, or two Pythons, may read one comment differently (a version that reads SOLD A1 - 2 as a buy
    beside one that reads it as nothing), so every process of a sale must run the same parser."""
    h = hashlib.sha256(unicodedata.unidata_version.encode())
    package = importlib.resources.files("livecart.core")
    for name in PARSER_MODULES:
        try:
            code = package.joinpath(f"{name}.py").read_bytes()
        except OSError:  # an install without the sources: the module's own file
            code = Path(importlib.import_module(f"livecart.core.{name}").__file__ or name).read_bytes()
        h.update(name.encode() + b"\0" + code)
    return h.hexdigest()[:16]


def parser_json(cfg: Config) -> str:
    """What of a config and of this livecart the parser reads comments with, as canonical JSON: every process
    of a JetStream sale parses the log's comments itself, so two processes with other aliases, links, codes
    or options (or ``bare_plus_one`` / ``max_qty``), or another parser (:func:`parser_code`), would decide
    the same log differently."""
    return orjson.dumps({
        "parser": parser_code(), "livecart": __version__,
        "bare_plus_one": cfg.stream.bare_plus_one, "max_qty": cfg.stream.max_qty,
        "products": [{"sku": p.sku, "aliases": list(p.aliases), "link": p.link, "code": p.code,
                      "options": [{"name": o.name, "values": [{"name": v.name, "aliases": list(v.aliases)}
                                                              for v in o.values]} for o in p.options],
                      "variants": [{"name": v.name, "aliases": list(v.aliases), "code": v.code,
                                    "options": [list(x) for x in v.options]} for v in p.variants]}
                     for p in cfg.catalogue.products]}, option=orjson.OPT_SORT_KEYS).decode()


def _same_parser(ours: str, theirs: str) -> bool:
    """Whether two :func:`parser_json` read comments alike: equal but for the livecart version that wrote them
    (a release that leaves the parser alone joins a sale)."""
    if ours == theirs:
        return True
    try:
        a, b = orjson.loads(ours), orjson.loads(theirs)
        a.pop("livecart", None)
        b.pop("livecart", None)
        return bool(a == b)
    except (orjson.JSONDecodeError, AttributeError):
        return False


def _parser_code_differs(ours: str, theirs: str) -> str | None:
    """What differs between the parsers (not the configs) of two :func:`parser_json`, or None."""
    try:
        a, b = orjson.loads(ours), orjson.loads(theirs)
        if a.get("parser") == b.get("parser"):
            return None
        there = (f"parser {b['parser']} of livecart {b.get('livecart', '?')}" if b.get("parser")
                 else "a livecart from before parsers were compared")
        return f"parser {a.get('parser')} of livecart {a.get('livecart', '?')} here, {there} in the sale"
    except (orjson.JSONDecodeError, AttributeError):
        return None


def _parser_differences(ours: str, theirs: str, most: int = 3) -> str:
    """What differs between two :func:`parser_json`: "egg-10: aliases [...] here, [...] in the sale"."""
    try:
        a, b = orjson.loads(ours), orjson.loads(theirs)
        out = [f"{k} {_short(a.get(k))} here, {_short(b.get(k))} in the sale" for k in ("bare_plus_one", "max_qty")
               if a.get(k) != b.get(k)]
        out += _product_differences(a["products"], b["products"])
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
        return "the parser's settings differ"
    return _first(out, most, "the parser's settings differ")


def _refused(sale: str, what: str, replicas: int, exc: Any) -> JournalError:
    """The cluster refused to create the sale's stream or bucket: said in one line, with what to check."""
    said = getattr(exc, "description", None) or str(exc)
    hint = (f"; [storage] replicas = {replicas} needs a cluster of at least {replicas} JetStream servers "
            "(replicas = 1 for a single server)") if replicas > 1 else ""
    return JournalError(f"the NATS server refused to create the {what} of sale {sale!r}: {said}{hint}")


async def connect(servers: Sequence[str], name: str, connect_timeout: float = 5.0) -> Any:
    """A NATS connection to ``servers``; :class:`JournalError` if none answers within the timeout."""
    seen: list[Exception] = []  # why the first connection keeps failing (refused, not NATS, TLS ...)

    async def on_error(exc: Exception) -> None:
        seen.append(exc)
        del seen[:-1]
        await _quiet(exc)

    patience = connect_timeout * (1 + len(servers))
    try:
        # Once connected the client reconnects forever (a sale outlives any one server); the first
        # connection gets a bounded time, since nats-py would otherwise retry it forever too.
        return await asyncio.wait_for(nats.connect(
            servers=list(servers), connect_timeout=connect_timeout, max_reconnect_attempts=-1,
            allow_reconnect=True, reconnect_time_wait=0.5, name=name, error_cb=on_error,
            disconnected_cb=_nothing, reconnected_cb=_nothing), timeout=patience)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        why = seen[-1] if isinstance(exc, TimeoutError) and seen else exc
        said = f"{type(why).__name__}: {why}" if str(why) else type(why).__name__
        raise JournalError(f"cannot reach the NATS cluster at {', '.join(servers)} (tried for {patience:g} s; "
                           f"last error: {said})") from exc


async def retry(call: Callable[[], Any], *, patience: float = 30.0,
                on_retry: Callable[[], None] | None = None) -> Any:
    """``await call()``, again while the cluster answers nothing or is electing, for up to ``patience`` s;
    then :class:`JournalError`. Errors that are not transient are raised at once."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return await call()
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            if not _transient(exc):
                raise
            if time.monotonic() > deadline:
                raise JournalError(f"the NATS cluster did not answer for {patience:.0f} s: {exc!r}") from exc
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(RETRY_SECONDS)


# --------------------------------------------------------------------------- snapshots in a KV bucket

#: Bytes per KV value of a snapshot: well under the server's default 1 MB payload limit.
SNAPSHOT_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """Where the latest snapshot of a bucket stands: the position it describes, format, size and chunks."""

    seq: int
    version: int
    size: int
    chunks: int
    at: float
    id: str


class Snapshots:
    """Snapshots kept in a KV bucket, each of any size: zlib-compressed, cut into :data:`SNAPSHOT_CHUNK`
    values ``snap.<id>.<i>``, then made the latest by one put of ``snapshot`` (``seq``, format version,
    size, chunks, SHA-256), after which the chunks of the one before are purged. A reader takes the
    pointer, then the chunks; if the chunks went (a newer snapshot replaced them meanwhile) it reads the
    pointer again. A snapshot describes a prefix of a log, and every writer's describes a true prefix,
    so two writers can only make a reader replay a longer tail, never give it a wrong state.
    """

    POINTER = "snapshot"

    def __init__(self, kv: Any) -> None:
        self.kv = kv

    async def write(self, seq: int, version: int, body: bytes, *, patience: float = 30.0) -> SnapshotInfo:
        """Store ``body`` (format ``version``) as the snapshot at ``seq``. Raises :class:`JournalError`."""
        packed = await asyncio.to_thread(zlib.compress, body, 1)
        sid = uuid.uuid4().hex[:12]
        try:
            old = await retry(lambda: self.kv.get(self.POINTER), patience=patience)
            before: dict[str, Any] | None = orjson.loads(old.value) if old.value else None
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            before = None
        chunks = [packed[i:i + SNAPSHOT_CHUNK] for i in range(0, len(packed), SNAPSHOT_CHUNK)] or [b""]
        try:
            for i, part in enumerate(chunks):
                await retry(functools.partial(self.kv.put, f"snap.{sid}.{i}", part), patience=patience)
            info = SnapshotInfo(seq, version, len(body), len(chunks), time.time(), sid)
            pointer = {"seq": seq, "version": version, "size": len(body), "chunks": len(chunks), "at": info.at,
                       "id": sid, "sha256": hashlib.sha256(packed).hexdigest()}
            await retry(lambda: self.kv.put(self.POINTER, orjson.dumps(pointer)), patience=patience)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise JournalError(f"cannot write a snapshot: {exc!r}") from exc
        if before is not None and before.get("id") != sid:
            await self._purge(str(before["id"]), int(before["chunks"]))
        return info

    async def _purge(self, sid: str, chunks: int) -> None:
        for i in range(chunks):
            with contextlib.suppress(TimeoutError, nats.errors.Error, nats.js.errors.Error, JournalError):
                await retry(functools.partial(self.kv.purge, f"snap.{sid}.{i}"), patience=5.0)

    async def _pointer(self) -> dict[str, Any] | None:
        """The pointer entry to the latest snapshot, decoded, or None when there is none."""
        try:
            entry = await retry(lambda: self.kv.get(self.POINTER))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if not entry.value:
            return None
        d: dict[str, Any] = orjson.loads(entry.value)
        return d

    async def info(self) -> SnapshotInfo | None:
        """The latest snapshot's pointer (no body), or None."""
        d = await self._pointer()
        if d is None:
            return None
        return SnapshotInfo(int(d["seq"]), int(d["version"]), int(d["size"]), int(d["chunks"]), float(d["at"]),
                            str(d["id"]))

    async def latest(self, *, at_most: int | None = None) -> tuple[int, int, bytes] | None:
        """``(seq, version, body)`` of the latest snapshot (None if there is none, or if it describes more
        than ``at_most``). Raises :class:`JournalError` for one whose chunks fail their checksum."""
        for _ in range(5):
            d = await self._pointer()
            if d is None:
                return None
            if at_most is not None and int(d["seq"]) > at_most:
                return None
            parts: list[bytes] = []
            try:
                for i in range(int(d["chunks"])):
                    got = await retry(functools.partial(self.kv.get, f"snap.{d['id']}.{i}"))
                    parts.append(got.value or b"")
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue  # replaced while we read it: read the new one
            packed = b"".join(parts)
            if hashlib.sha256(packed).hexdigest() != d["sha256"]:
                raise JournalError(f"the snapshot at {d['seq']} in the cluster fails its checksum")
            return int(d["seq"]), int(d["version"]), await asyncio.to_thread(zlib.decompress, packed)
        raise JournalError("the cluster's snapshot kept changing while it was read")


def _reraise_cancel() -> None:
    """nats-py turns a cancelled fetch into its own TimeoutError; a task being cancelled must end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _quiet(exc: Exception) -> None:
    log.debug("nats: %r", exc)


async def _nothing() -> None:
    return None


async def start_state(log_: SaleLog, parse: ParseFn) -> SaleState:
    """The state of the sale's latest snapshot in the cluster (:meth:`SaleLog.snapshots`), or a new one when
    there is none or it cannot be used (logged: the log alone gives the same state, only slower)."""
    assert log_.header is not None
    try:
        # Never one beyond the log's end (a log deleted and started again under the same sale, its bucket kept).
        snap = await log_.snapshots.latest(at_most=await log_.last_seq())
        if snap is not None:
            seq, version, body = snap
            state = await asyncio.to_thread(SaleState.restore, log_.header, parse, version, body)
            log.info("sale %s: starting from the snapshot at log message %d", log_.names.sale, seq)
            return state
    except (JournalError, TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
        log.warning("sale %s: the snapshot in the cluster cannot be used (%r); replaying the whole log",
                    log_.names.sale, exc)
    return SaleState(log_.header, parse)


async def load_state(log_: SaleLog, parse: ParseFn, *, snapshot: bool = True,
                     record: list[Entry] | None = None) -> SaleState:
    """A :class:`SaleState` with every message of the log up to its current end applied: from the latest
    snapshot plus the messages after it (``snapshot=False``: from the start of the log). With ``record``
    (and ``snapshot=False``), every ledger event is appended to it as a journal entry."""
    assert log_.header is not None
    state = await start_state(log_, parse) if snapshot else SaleState(log_.header, parse)
    state.record = record
    end = await log_.last_seq()
    if state.applied >= end:
        return state
    reader = log_.read(state.applied + 1)
    try:
        async for seq, ts, dec, body in reader:
            if seq:
                state.apply(seq, ts, dec, body)
            if state.applied >= end:
                break
    finally:
        await reader.aclose()
    return state
