"""The plugin interface: what an adapter or a hook is, as the engine sees it.

An adapter turns one source of live comments into normalised :class:`~livecart.core.records.Comment` records::

    class MyAdapter(Adapter):
        type = "myplatform"
        OPTIONS = {"url": Option(str, required=True, doc="where to connect")}

        async def batches(self) -> AsyncIterator[Sequence[Comment]]:
            async for frame in ...:
                yield [Comment.from_mapping(...)]

and is registered by its package in the ``livecart.adapters`` entry-point group::

    [project.entry-points."livecart.adapters"]
    myplatform = "my_package:MyAdapter"

The contract for adapter authors:

* ``__init__(options, *, name, stats)`` must not do I/O; connect in :meth:`Adapter.open` (or lazily in
  :meth:`Adapter.batches`). ``options`` has been validated against ``OPTIONS`` already.
* :meth:`Adapter.batches` yields lists of comments (a batch may hold one). It returns normally when the
  source ends cleanly (end of a replay file, a server that closed normally) and raises
  :class:`~livecart.core.errors.AdapterError` when it ends abnormally after its own retries.
* Malformed input is never raised out of ``batches``: count it with :meth:`AdapterStats.malformed`, which logs
  a sample once per reason, and go on.
* :meth:`Adapter.close` is idempotent. ``async with adapter:`` opens and closes it.
* An adapter that can talk back sets ``can_reply = True`` and implements :meth:`Adapter.send_replies`.

Acknowledging only what is durable (``docs``: "Acknowledgement"): an adapter whose source waits for an
answer (an MQTT PUBACK, an HTTP status, an acknowledgement frame) yields a :class:`Batch` instead of a plain
list and answers its sender from the batch's settlement, never earlier::

        batch = Batch(comments, on_settled=lambda error: answer(ok=error is None))
        yield batch                    # or: yield batch; then ``await batch.durable()`` elsewhere

The engine settles every :class:`Batch` it is handed exactly once: with ``None`` once every comment in it is
in the journal (committed, and fsynced under ``durability = "fsync"``; a comment seen before counts once the
earlier copy is durable), or with an exception when that cannot be promised (the journal failed, the daemon
stopped before the batch was taken in). Batches of one adapter settle in the order they were yielded. After
a failure the sender must keep the comments and send them again; a comment sent twice is processed once
(contract §2: ``(platform, room, id)``), so resending whatever was not acknowledged is always safe. The
callback runs in the event loop and must not block. A plain list is still accepted, for sources that
cannot be told anything (a read-only feed).

Going on where the last run stopped: a source that can be read again from a point (a file's byte offset, a
feed's cursor) finds :attr:`Adapter.resume` set by the daemon when the journal keeps positions (the SQLite
journal does), before :meth:`Adapter.batches` is first called. ``resume.saved`` is the position this adapter
(by its ``name``) kept last on this journal, or None; the adapter checks that it still fits its source and
goes on from there. From a :class:`Batch`'s settlement without error, it calls ``resume.keep(position)`` with
where the next run should start (any value orjson encodes): batches settle in order, so every comment before
that position is durable then. The journal writes the latest kept position about once a second and when it
closes; after a ``kill -9`` the adapter goes on from a slightly earlier one, and what it sends again is
recognised by id (the window of recent ids, so at the cost of a set lookup each). ``livecart journal repair``
forgets every kept position: the comments behind one may be among those it cut.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import reprlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

from livecart.core.records import Comment, Outcome

log = logging.getLogger("livecart.adapter")


class CallbackErrors:
    """Settlement callbacks (``on_settled`` / :meth:`Batch.when_settled`) that raised, process-wide: the daemon
    exports :attr:`count` as ``livecart_ack_callback_errors_total``. The first is logged with its traceback,
    then at most one line every :attr:`EVERY` seconds with how many more there were: a plugin whose callback
    fails on every batch must not fill the host's disk with tracebacks."""

    EVERY = 60.0
    count = 0
    _unsaid = 0
    _said_at = float("-inf")

    @classmethod
    def failed(cls, callback: object) -> None:
        cls.count += 1
        now = time.monotonic()
        if cls.count == 1:
            cls._said_at = now
            log.exception("acknowledgement callback %r failed (counted in livecart_ack_callback_errors_total; "
                          "the batch is settled as it was: only telling its sender failed)", callback)
        elif now - cls._said_at >= cls.EVERY:
            cls._said_at, more, cls._unsaid = now, cls._unsaid + 1, 0
            log.error("acknowledgement callbacks failed %d more time(s) since the last report (latest: %r)",
                      more, callback, exc_info=True)
        else:
            cls._unsaid += 1


# --- the option checks every config table uses (``Option.check``): an error message, or None when fine


def check_positive(v: Any) -> str | None:
    """1 or more."""
    return None if v >= 1 else "must be 1 or more"


def check_nonneg(v: Any) -> str | None:
    """0 or more."""
    return None if v >= 0 else "must be 0 or more"


def check_more_than_zero(v: Any) -> str | None:
    """More than 0 (a duration or an interval)."""
    return None if v > 0 else "must be more than 0"


def check_port(v: Any) -> str | None:
    """A TCP port number; 0 lets the OS pick a free one."""
    return None if 0 <= v <= 65535 else "must be a port number from 0 to 65535"


@dataclass(frozen=True, slots=True)
class Option:
    """One config key of an adapter or hook: its type(s), default, whether it is required, what it means.

    ``choices`` restricts the value to a set; ``check`` returns an error message for a bad value, or None.
    ``path`` marks a filesystem path, resolved against the config file's folder.
    """

    type: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    doc: str = ""
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = None
    #: A filesystem path: a relative value is resolved against the config file's folder ("-" is kept).
    path: bool = False

    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                 "list": "a list", "dict": "a table"}
        return " or ".join(names.get(t.__name__, t.__name__) for t in types)

    def accepts(self, value: Any) -> bool:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if isinstance(value, bool) and bool not in types:
            return False
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return True
        return isinstance(value, types)


@dataclass
class AdapterStats:
    """Counters one adapter keeps; the daemon exports them as metrics.

    ``malformed`` logs a sample of the first bad input of each reason at WARNING and the rest at DEBUG, so a
    flood of junk does not flood the log, yet every piece of it is counted.
    """

    name: str
    received: int = 0
    malformed_total: int = 0
    malformed_by_reason: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    reconnects: int = 0
    errors: int = 0
    replies_sent: int = 0
    connected: bool = False

    @property
    def state(self) -> str:
        """``connected``; ``reconnecting`` (not connected, and it has reconnected or tried to: a source that
        keeps dropping); or ``idle`` (not connected, never retried: not connected yet, or an adapter that
        does not say)."""
        if self.connected:
            return "connected"
        return "reconnecting" if self.reconnects else "idle"

    def malformed(self, reason: str, detail: str = "", sample: object = None) -> None:
        self.malformed_total += 1
        n = self.malformed_by_reason.get(reason, 0) + 1
        self.malformed_by_reason[reason] = n
        level = logging.WARNING if n == 1 else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "adapter %s: malformed input (%s) %s; sample: %s%s", self.name, reason, detail,
                    sample_repr(sample), " (further ones of this kind are counted, logged at DEBUG)" if n == 1 else "")


_SAMPLE = reprlib.Repr()
_SAMPLE.maxlevel = 3
_SAMPLE.maxstring = _SAMPLE.maxother = _SAMPLE.maxlong = 200


def sample_repr(sample: object) -> str:
    """A short, safe rendering of a piece of bad input for the log: at most about 200 characters, and no
    deeper than three levels, so that a nested or cyclic sample cannot raise ``RecursionError`` (which
    :mod:`logging` lets through) from a log call."""
    if isinstance(sample, str | bytes | bytearray | memoryview):
        return repr(bytes(sample[:200]) if isinstance(sample, memoryview) else sample[:200])
    return _SAMPLE.repr(sample)


#: Called once with None (durable) or the exception that says why the batch is not.
Settled = Callable[[BaseException | None], None]


class Batch(list[Comment]):
    """Comments whose sender waits to hear that they are durable (see the module docstring).

    A list, so the engine and older code treat it as any batch; in addition it is *settled* exactly once
    (:meth:`settle`), which runs the callbacks registered with ``on_settled`` / :meth:`when_settled` and
    resolves :meth:`durable`. Settling again does nothing.
    """

    __slots__ = ("_callbacks", "_settled", "born", "error")

    def __init__(self, comments: Iterable[Comment] = (), *, on_settled: Settled | None = None) -> None:
        super().__init__(comments)
        #: When the adapter made it (``time.perf_counter()``): where the daemon's latency trace starts.
        self.born = time.perf_counter()
        self._callbacks: list[Settled] | None = [on_settled] if on_settled is not None else None
        self._settled = False
        #: Why the batch is not durable (after a failed settlement), else None.
        self.error: BaseException | None = None

    @property
    def settled(self) -> bool:
        return self._settled

    def when_settled(self, callback: Settled) -> None:
        """Call ``callback(error)`` when the batch is settled (at once if it is already)."""
        if self._settled:
            callback(self.error)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def settle(self, error: BaseException | None = None) -> None:
        """Mark the batch durable (``error`` None) or failed. The engine's side calls this; only the first call
        counts. A callback that raises is counted and logged (:class:`CallbackErrors`) and does not stop the
        others."""
        if self._settled:
            return
        self._settled = True
        self.error = error
        callbacks, self._callbacks = self._callbacks, None
        if callbacks:
            for cb in callbacks:
                try:
                    cb(error)
                except Exception:
                    CallbackErrors.failed(cb)

    def durable(self) -> asyncio.Future[None]:
        """A future that resolves when the batch is durable, or raises the settlement's error."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

        self.when_settled(done)
        return fut

    def __repr__(self) -> str:
        state = ("durable" if self.error is None else f"failed: {self.error}") if self._settled else "pending"
        return f"<Batch of {len(self)} comments, {state}>"


def settle_all(batches: Iterable[Sequence[Comment]], error: BaseException | None = None) -> None:
    """Settle every :class:`Batch` among ``batches`` (plain lists have nobody to tell)."""
    for b in batches:
        if isinstance(b, Batch):
            b.settle(error)


class Resume:
    """An adapter's position kept in the journal (see the module docstring): ``saved``, what the last run kept
    (None: nothing), and :meth:`keep`."""

    __slots__ = ("_keep", "saved")

    def __init__(self, saved: Any, keep: Callable[[Any], object]) -> None:
        self.saved = saved
        self._keep = keep

    def keep(self, position: Any) -> None:
        """Keep ``position`` as where the next run goes on from. Call it only once every comment before it is
        durable (from a :class:`Batch`'s settlement without error)."""
        self._keep(position)

    def __repr__(self) -> str:
        return f"<Resume saved={self.saved!r}>"


@dataclass(frozen=True, slots=True)
class Reply:
    """A message to send back into the live room, answering ``comment`` (or to the room when None)."""

    text: str
    comment: Comment | None = None
    outcome: Outcome | None = None


class Adapter:
    """Base class of every adapter. See the module docstring for the contract."""

    type: ClassVar[str] = ""
    OPTIONS: ClassVar[Mapping[str, Option]] = {}
    can_reply: ClassVar[bool] = False
    #: Most replies this adapter's platform accepts per ``reply_window`` seconds (None = no limit).
    reply_limit: ClassVar[int | None] = None
    reply_window: ClassVar[float] = 30.0

    def __init__(self, options: Mapping[str, Any], *, name: str, stats: AdapterStats | None = None) -> None:
        self.options = dict(options)
        self.name = name
        self.stats = stats if stats is not None else AdapterStats(name)
        self._closed = False
        #: Set by the daemon before :meth:`batches` when the journal keeps positions (module docstring).
        self.resume: Resume | None = None

    async def open(self) -> None:
        """Acquire resources (sockets, servers). Called by ``async with``; the default does nothing."""

    async def close(self) -> None:
        """Release resources. Idempotent: a second call does nothing."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Adapter:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: builtins.type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        """Yield batches of comments until the source ends (see the module docstring). A :class:`Batch` is
        settled once it is durable (or cannot be); a plain list is not acknowledged to anyone."""
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[Comment]:
        """The comments one by one, for a consumer that keeps nothing: a :class:`Batch` is settled as durable
        once its last comment has been taken (there is no journal to wait for)."""
        async for batch in self.batches():
            for comment in batch:
                yield comment
            if isinstance(batch, Batch):
                batch.settle()

    async def send_replies(self, replies: Sequence[Reply]) -> None:
        """Send replies into the room. Only adapters with ``can_reply = True`` implement this."""
        raise NotImplementedError(f"adapter type {self.type!r} cannot send replies")

    def __repr__(self) -> str:
        s = self.stats
        state = "closed" if self._closed else s.state
        return (f"<{type(self).__name__} {self.name}: {state}, {s.received} received, "
                f"{s.malformed_total} malformed, {s.reconnects} reconnects>")


class Hook:
    """Base class of hook plugins (entry-point group ``livecart.hooks``).

    A hook is told about durable outcomes in batches and about stream events (``sold_out``, ``low_stock``,
    ``presale_opened`` ...). The daemon isolates it: each call runs under a timeout, an exception or a
    timeout is counted and logged, and ordering never waits for a hook.
    """

    type: ClassVar[str] = ""
    OPTIONS: ClassVar[Mapping[str, Option]] = {}

    def __init__(self, options: Mapping[str, Any], *, name: str) -> None:
        self.options = dict(options)
        self.name = name

    async def open(self) -> None:
        """Acquire resources; the default does nothing."""

    async def close(self) -> None:
        """Release resources; idempotent."""

    async def on_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Called with each batch of durable outcomes."""

    async def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        """Called with a stream event such as ``sold_out`` (data: sku, variant)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} (type {self.type or '?'})>"
