"""Buyer confirmations: outcome -> reply text, and a rate-limited, batching reply queue per adapter.

Three parts, each usable alone:

* :class:`Replier` renders durable outcomes into short messages from templates (Chinese and English
  defaults, overridable in ``[replies].templates``) and groups the several items of one comment into one
  reply (:meth:`Replier.plan`). No I/O, no clock but the one injected.
* :class:`RateLimiter` is a sliding window: at most ``limit`` messages in any ``window`` seconds. Pure; the
  caller passes ``now``.
* :class:`ReplyQueue` holds one adapter's pending replies, bounded; :meth:`ReplyQueue.ready` decides what
  may go out now, merging pending replies to the same room into fewer messages when the backlog exceeds
  what the platform's rate limit allows; :meth:`ReplyQueue.run` is the thin async loop that sends.

Durability (docs/contract.md §6): a reply is an announcement, so it must never precede the journal. The caller
feeds :meth:`Replier.plan` / :meth:`ReplyQueue.put` only outcomes the journal has committed: wire them to
``Engine.add_listener``, which is called after the journal append. As a guard against wiring mistakes,
:meth:`ReplyQueue.put` refuses a reply whose outcome has no ``seq`` (an outcome that never went through the
ledger and journal) with :class:`NotDurable`; a ``seq`` alone does not prove the commit happened, the
listener ordering does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from livecart.config import check_timezone
from livecart.core.catalogue import Catalogue, Product
from livecart.core.errors import ConfigError, Problem, RetryableError
from livecart.core.parser import normalise
from livecart.core.records import Comment, Outcome, Reason, Status
from livecart.core.settings import Config
from livecart.core.templates import PLACEHOLDERS, TEMPLATES, template_problems
from livecart.plugin import Adapter, Reply
from livecart.runtime.metrics import Registry

log = logging.getLogger("livecart.replies")

#: ``(platform, room)``: where a reply goes. The daemon maps it to the adapter that reads that room.
RoomKey = tuple[str, str]

_VARIANT_JOIN = {"zh": "、", "en": " or "}


def _named_values(product: Product, text: str) -> dict[str, str]:
    """The option values of ``product`` that ``text`` names (first per option): a plain word search, enough to
    know which option a buyer left open. One-letter Latin words (M, L) count only standing alone."""
    t = normalise(text)
    out: dict[str, str] = {}
    for o in product.options:
        for v in o.values:
            for a in (v.name, *v.aliases):
                w = normalise(a).strip()
                if w and re.search(("(?<![a-z])" + re.escape(w) + "(?![a-z])") if w.isascii() else re.escape(w), t):
                    out.setdefault(o.name, v.name)
    return out


def template_key(outcome: Outcome) -> str:
    """The template an outcome uses: its status, or ``rejected:<reason>``; a cancel that found no order to
    cancel (``not_available`` with no quantity: a buy's items have one) is ``rejected:nothing_to_cancel``."""
    if outcome.status is Status.REJECTED:
        reason = outcome.reason if outcome.reason is not None else Reason.NOT_AVAILABLE
        if reason is Reason.NOT_AVAILABLE and outcome.qty == 0:
            return "rejected:nothing_to_cancel"
        return f"rejected:{reason.value}"
    return outcome.status.value


#: What a display name must not carry into a reply or onto the host's page: control characters (a newline
#: would split a reply), zero-width spaces, and bidirectional embeddings, overrides and isolates (U+202E
#: would turn the rest of the reply around). Zero-width (non-)joiners stay: emoji sequences need them.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028-\u202e\u2060-\u2069\ufeff]+")


def shown_name(name: str | None, user: str) -> str:
    """``name`` as a reply or the console shows it: unshowable characters as spaces, runs of space as one,
    trimmed; ``user`` (the user id) when nothing is left."""
    if not name:
        return user
    shown = " ".join(_UNSHOWABLE.sub(" ", name).split())
    return shown or user


def room_of(reply: Reply) -> RoomKey:
    """Where a reply goes: the room of the comment it answers, else of its outcome."""
    if reply.comment is not None:
        return (reply.comment.platform, reply.comment.room)
    o = reply.outcome
    if o is not None and o.platform is not None and o.room is not None:
        return (o.platform, o.room)
    return ("", "")


class Replier:
    """Renders durable outcomes as buyer confirmations.

    Built from the stream config: ``[replies]`` gives the language and template overrides, ``[stream]`` the
    hold time (the pay-by time is the outcome's ``ts`` plus ``hold_minutes``). ``catalogue`` defaults to the
    config's; assign :attr:`catalogue` when a host control changes limits or notes. Raises
    :class:`ConfigError` for bad templates or time zone (the config loader checks them too).
    """

    def __init__(self, config: Config, catalogue: Catalogue | None = None, *,
                 clock: Callable[[], float] = time.time, language: str | None = None) -> None:
        section = config.replies
        default: str = section.language or "zh"
        # ``language`` (an adapter's ``reply_language``) overrides [replies].language; the [replies].templates
        # overrides are written in [replies].language, so they apply only to replies in that language.
        self.language: str = language or default
        if self.language not in TEMPLATES:
            where = "replies.language" if not language else "adapters.reply_language"
            raise ConfigError([Problem(str(config.path), where,
                                       f"must be one of {', '.join(TEMPLATES)}, got {self.language!r}")])
        overrides = dict(section.templates) if self.language == default else {}
        problems = template_problems(overrides)
        tz_name = section.timezone
        tz_problem = check_timezone(tz_name)
        if problems or tz_problem:
            ps = [Problem(str(config.path), "replies.templates", p) for p in problems]
            if tz_problem:
                ps.append(Problem(str(config.path), "replies.timezone", tz_problem))
            raise ConfigError(ps)
        self.templates: dict[str, str] = {**TEMPLATES[self.language], **overrides}
        self.tz: tzinfo | None = ZoneInfo(tz_name) if tz_name else None
        self.catalogue = catalogue if catalogue is not None else config.catalogue
        self.hold_minutes = config.stream.hold_minutes
        self.max_qty = config.stream.max_qty
        self.stream = config.stream.name
        self.enabled: bool = section.enabled
        self._clock = clock
        #: Outcomes that could not be answered because they name no room (host controls, expiries of orders
        #: whose room is unknown). Counted, never silently lost.
        self.unroutable = 0

    def _variants(self, product: Product, outcome: Outcome, text: str | None) -> str:
        """What a needs_variant reply offers: the variants, or for a product with options the option(s) still
        open after the values the comment named, with their values ("size M or L", docs/contract.md §1)."""
        join = _VARIANT_JOIN[self.language]
        if not product.options:
            return join.join(v.name for v in product.variants)
        named = _named_values(product, text or "")
        fit = product.fitting(named) or product.variants
        missing = product.missing_options(named) or product.options
        return "; ".join(f"{o.name} " + join.join(dict.fromkeys(v.option(o.name) or "" for v in fit))
                         for o in missing)

    def _fields(self, outcome: Outcome, name: str, text: str | None = None) -> dict[str, Any]:
        product = self.catalogue.by_sku.get(outcome.sku) if outcome.sku is not None else None
        pname = product.name if product is not None else (outcome.sku or "")
        if outcome.variant:
            pname = f"{pname} {outcome.variant}"
        ts = outcome.ts if outcome.ts > 0 else self._clock()
        pay_by = datetime.fromtimestamp(ts + self.hold_minutes * 60.0, self.tz).strftime("%H:%M")
        variants = self._variants(product, outcome, text) if product else ""
        price = product.price if product is not None else 0.0
        if product is not None and outcome.variant:
            v = product.variant(outcome.variant)
            if v is not None and v.price is not None:
                price = v.price
        return {
            "name": name, "user": outcome.user, "product": pname, "sku": outcome.sku or "",
            "variant": outcome.variant or "", "qty": outcome.qty, "order": outcome.order or "",
            "pay_by": pay_by, "hold_minutes": int(self.hold_minutes) if float(self.hold_minutes).is_integer()
            else self.hold_minutes, "position": outcome.position or 0,
            "note": product.presale_note if product is not None else "", "variants": variants,
            "limit": product.limit if product is not None else 0, "max_qty": self.max_qty, "price": price,
            "stream": self.stream,
        }

    def body(self, outcome: Outcome, name: str, text: str | None = None) -> str | None:
        """The outcome's message without the mention, or None when its template is ``""`` (turned off).

        ``text`` is the comment's text when known: for a product with options, a needs_variant reply then
        asks only for the option(s) the comment left open ("which size?")."""
        key = template_key(outcome)
        if (key == "reserved" or key == "promoted") and self.hold_minutes <= 0:
            key += ":no_hold"  # holds never expire: no pay-by time (it would read as "now")
        template = self.templates.get(key, "")
        if not template:
            return None
        return template.format_map(self._fields(outcome, name, text)).strip()

    def render(self, outcome: Outcome, name: str) -> str | None:
        """The whole reply to one outcome, e.g. ``@张三 已为您保留 土鸡蛋 ×2，订单 o-000123，请在 21:30 前付款``.

        ``name`` is the buyer's display name. None when the outcome's template is turned off.
        """
        body = self.body(outcome, name)
        if body is None:
            return None
        return self.templates["mention"].format_map({**PLACEHOLDERS, "name": name, "user": outcome.user}) + body

    def plan(self, outcomes: Iterable[Outcome],
             comments: Mapping[tuple[str, str, str], Comment] | None = None,
             names: Mapping[str, str] | None = None,
             order_names: Callable[[str], str | None] | None = None) -> list[tuple[RoomKey, Reply]]:
        """Group durable outcomes into replies, one per comment (or per order for outcomes with no comment).

        ``comments`` maps :attr:`Comment.key` to the comment, which gives the buyer's display name and lets
        the adapter answer the very message; for an outcome with no comment at hand (a host's pay or cancel,
        an expiry, a promotion), ``order_names`` (order id -> the name on the comment that made it) names its
        buyer, else ``names`` (user id -> display name); only without any is the name the user id. Names
        are shown through :func:`shown_name`. Replies come in the order of
        their first outcome. Outcomes with no platform/room are counted in :attr:`unroutable` and skipped.
        Returns ``[]`` when ``[replies].enabled`` is false.
        """
        if not self.enabled:
            return []
        groups: dict[tuple[str, str, str, str], list[Outcome]] = {}
        for o in outcomes:
            if o.platform is None or o.room is None:
                self.unroutable += 1
                continue
            who = f"c:{o.comment}" if o.comment is not None else f"o:{o.order}:{o.user}:{o.status.value}"
            groups.setdefault((o.platform, o.room, who, o.user), []).append(o)
        out: list[tuple[RoomKey, Reply]] = []
        sep = self.templates["separator"]
        for (platform, room, _, user), group in groups.items():
            first = group[0]
            comment = None
            if comments is not None and first.comment is not None:
                comment = comments.get((platform, room, first.comment))
            name: str | None = None
            if comment is not None:
                name = comment.name
            else:
                if order_names is not None and first.order is not None:
                    name = order_names(first.order)
                if not name and names is not None:
                    name = names.get(user)
            name = shown_name(name, user)
            text = comment.text if comment is not None else None
            bodies = [b for b in (self.body(o, name, text) for o in group) if b]
            if not bodies:
                continue
            mention = self.templates["mention"].format_map({**PLACEHOLDERS, "name": name, "user": user})
            out.append(((platform, room), Reply(mention + sep.join(bodies), comment, first)))
        return out

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<Replier {self.language} {state}: {len(self.templates)} templates, {self.unroutable} unroutable>"


class RateLimiter:
    """At most ``limit`` messages in any ``window`` seconds (a sliding window log). ``limit=None``: no limit.

    Pure: the caller passes ``now`` (any monotonic clock) and must not move it backwards.
    """

    def __init__(self, limit: int | None, window: float) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be 1 or more, or None")
        if window <= 0:
            raise ValueError("window must be positive")
        self.limit = limit
        self.window = window
        self._sent: deque[float] = deque()

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._sent and self._sent[0] <= cutoff:
            self._sent.popleft()

    def available(self, now: float) -> int:
        """How many messages may be sent at ``now`` without taking them."""
        if self.limit is None:
            return 1 << 30
        self._expire(now)
        return max(0, self.limit - len(self._sent))

    def take(self, n: int, now: float) -> int:
        """Take up to ``n`` sends at ``now``; returns how many are allowed (and recorded)."""
        k = min(n, self.available(now))
        if self.limit is not None:
            self._sent.extend([now] * k)
        return k

    def give_back(self, n: int) -> None:
        """Forget the newest ``n`` sends taken: they did not happen (no connection to send them on)."""
        for _ in range(min(n, len(self._sent))):
            self._sent.pop()

    def next_free(self, now: float) -> float:
        """The earliest time at or after ``now`` when one more message may be sent."""
        if self.available(now) > 0:
            return now
        return self._sent[0] + self.window

    def __repr__(self) -> str:
        return f"<RateLimiter {self.limit} per {self.window:g}s: {len(self._sent)} in window>"


class NotDurable(ValueError):
    """A reply to an outcome the journal has not committed (``seq`` is None): announcing it would break §6."""


@dataclass(slots=True)
class _Pending:
    room: RoomKey
    reply: Reply
    count: int = 1  # how many replies this message carries (more than 1 once merged)


Send = Callable[[Sequence[Reply]], Awaitable[None]]
#: Backoff between tries of replies put back after a retryable failure: from RETRY_FIRST, doubling to RETRY_MAX.
RETRY_FIRST = 0.25
RETRY_MAX = 5.0


class ReplyQueue:
    """One adapter's pending replies: bounded, rate-limited, merged when backlogged.

    * :meth:`put` never waits. When ``maxsize`` messages are pending, replies to the same room are merged
      first; only when that leaves no room is the oldest shed and counted.
    * :meth:`ready` takes what the rate limit allows at ``now``. When more is pending than the limit allows,
      replies to the same room are merged (joined with ``separator`` up to ``max_len`` characters) so that
      fewer messages carry them all; every reply folded into another is counted as ``merged``.
    * :meth:`run` sends batches through ``send`` until :meth:`close`. A ``send`` that raises
      :class:`RetryableError` (no companion connected yet, the platform's connection down) puts its messages
      back at the head of the queue and is tried again, backing off from 0.25 s to 5 s, for up to
      ``retry_for`` seconds of failing in a row: a restarted daemon's first replies (expiries of holds that
      ran out while it was down, the host's first pay) wait for the companion to come back instead of being
      dropped. Any other failure, or one past ``retry_for``, is counted ``failed`` and logged once. During a
      stop's drain (after :meth:`close`) a retryable failure is not tried again: it is counted ``failed`` and
      its outcomes stay in :meth:`unsent`, so that the next start tells those buyers.

    Counters live in ``metrics`` as ``livecart_replies_total{adapter=..., result=queued|sent|merged|shed|
    failed|taken|retried}``: ``queued`` counts replies put, ``merged`` replies folded into another message;
    ``taken`` (handed out by :meth:`ready`), ``sent``, ``failed``, ``retried`` (put back after a retryable
    failure) and ``shed`` count messages. So ``queued == taken - retried + shed + merged + depth`` always,
    and ``taken == sent + failed + retried`` once :meth:`run` has sent what it took.
    The caller must only put replies to durable outcomes (module docstring).
    """

    def __init__(self, name: str, *, limit: int | None = None, window: float = 30.0, maxsize: int = 1000,
                 max_len: int = 200, separator: str = " ", clock: Callable[[], float] = time.monotonic,
                 metrics: Registry | None = None, stream: str = "", retry_for: float = 120.0) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be 1 or more")
        self.name = name
        self.stream = stream
        self.limiter = RateLimiter(limit, window)
        self.maxsize = maxsize
        self.max_len = max_len
        self.separator = separator
        self.clock = clock
        self.metrics = metrics if metrics is not None else Registry()
        self._counter = self.metrics.counter("replies_total", "Buyer replies by adapter and result")
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._send_error_logged = False
        #: How long sends may fail with RetryableError in a row before their messages count as failed.
        self.retry_for = retry_for
        self._failing_since: float | None = None
        self._backoff = RETRY_FIRST
        self._inflight: Sequence[Reply] = ()
        self._since_merge = maxsize  # puts since the queue was last merged for room (see put)
        #: The outcome of the first reply shed for a full queue (None: none was): its buyer was not told.
        self.oldest_shed: Outcome | None = None
        #: The outcomes of the replies shed when a stop's drain ended, or that could not be sent during it for
        #: want of a connection (see :meth:`unsent`).
        self._shed_at_stop: list[Outcome] = []

    @classmethod
    def for_adapter(cls, adapter: Adapter, **kwargs: Any) -> ReplyQueue:
        """A queue obeying the adapter class's ``reply_limit`` per ``reply_window``."""
        kwargs.setdefault("limit", type(adapter).reply_limit)
        kwargs.setdefault("window", type(adapter).reply_window)
        return cls(adapter.name, **kwargs)

    def _count(self, result: str, n: int = 1) -> None:
        if n:
            self._counter.inc(n, adapter=self.name, result=result)

    def count(self, result: str) -> int:
        """The ``result`` counter of this queue (queued, taken, sent, failed, merged, shed)."""
        return int(self._counter.get(adapter=self.name, result=result))

    @property
    def depth(self) -> int:
        """Messages waiting (once merged, one message carries several replies)."""
        return len(self._pending)

    def put(self, reply: Reply) -> None:
        """Queue one reply. Raises :class:`NotDurable` for an outcome with no journal ``seq``."""
        if reply.outcome is not None and reply.outcome.seq is None:
            raise NotDurable(f"reply queue {self.name}: refusing to announce an outcome the journal has not "
                             f"committed (order {reply.outcome.order}, seq None)")
        if self._closed:
            self._count("queued")
            self._count("shed")
            return
        if len(self._pending) >= self.maxsize and self._since_merge >= self.maxsize // 8:
            # Full (a flash peak decides thousands of orders in one batch, before the sender has run once):
            # fold replies to the same room together before any is shed. Not again before an eighth of the
            # queue has come in, so that a flood of rooms that cannot be merged costs no pass per reply.
            self._merge()
            self._since_merge = 0
        self._since_merge += 1
        if len(self._pending) >= self.maxsize:
            dropped = self._pending.popleft()
            if self.oldest_shed is None and dropped.reply.outcome is not None:
                self.oldest_shed = dropped.reply.outcome  # the first shed is the oldest
            self._count("shed")
            if self.count("shed") == 1:
                log.warning("reply queue %s: backlog of %d messages, shedding the oldest (counted)",
                            self.name, self.maxsize)
        self._pending.append(_Pending(room_of(reply), reply))
        self._count("queued")
        self._wakeup.set()

    def unsent(self) -> Iterator[Outcome]:
        """The outcomes of the replies not sent yet (the first shed for a full queue, being sent, waiting):
        the daemon keeps, across a crash, that it has told buyers up to the oldest of them, so that the next
        start tells the buyers whose replies were shed too."""
        if self.oldest_shed is not None:
            yield self.oldest_shed
        yield from self._shed_at_stop
        for r in self._inflight:
            if r.outcome is not None:
                yield r.outcome
        for p in self._pending:
            if p.reply.outcome is not None:
                yield p.reply.outcome

    def put_many(self, replies: Iterable[Reply]) -> None:
        for r in replies:
            self.put(r)

    def _merge(self) -> None:
        packed: deque[_Pending] = deque()
        open_by_room: dict[RoomKey, _Pending] = {}
        for p in self._pending:
            cur = open_by_room.get(p.room)
            text = cur.reply.text + self.separator + p.reply.text if cur is not None else ""
            if cur is not None and len(text) <= self.max_len:
                cur.reply = Reply(text, None, cur.reply.outcome)
                cur.count += p.count
                self._count("merged", p.count)
                continue
            fresh = _Pending(p.room, p.reply, p.count)
            open_by_room[p.room] = fresh
            packed.append(fresh)
        self._pending = packed

    def ready(self, now: float) -> list[Reply]:
        """The messages that may be sent at ``now``, taken off the queue (merging first when backlogged)."""
        if not self._pending:
            return []
        allowed = self.limiter.available(now)
        if allowed == 0:
            return []
        if len(self._pending) > allowed:
            self._merge()
        k = self.limiter.take(min(allowed, len(self._pending)), now)
        self._count("taken", k)
        return [self._pending.popleft().reply for _ in range(k)]

    def next_time(self, now: float) -> float | None:
        """When :meth:`ready` will next return something (None: nothing is pending)."""
        if not self._pending:
            return None
        return self.limiter.next_free(now)

    def close(self) -> None:
        """Stop taking replies; :meth:`run` goes on sending what is pending, within the rate limit, and
        returns once nothing is: the stop's drain. Cancel it to end the drain (a daemon does after
        ``[daemon].drain_seconds``): what is still pending then is counted as shed."""
        self._closed = True
        self._wakeup.set()

    async def run(self, send: Send, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Send pending replies through ``send`` within the rate limit until :meth:`close` and then until
        nothing is pending (or until cancelled)."""
        try:
            while True:
                now = self.clock()
                batch = self.ready(now)
                if batch:
                    if not await self._send(send, batch) and not self._closed:
                        await sleep(self._backoff)  # put back: wait for the companion or the connection
                        self._backoff = min(RETRY_MAX, self._backoff * 2)
                    continue
                when = self.next_time(now)
                if when is None:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                else:
                    await sleep(max(0.0, when - now))
        except asyncio.CancelledError:
            if self._closed:
                self._shed_left()
            raise

    def _shed_left(self) -> None:
        """At the end of a stop's drain: what is still pending is counted as shed (a restart announces the
        orders among it again: the progress kept stays behind them)."""
        left = self.depth
        if left:
            self._count("shed", left)
            log.warning("reply queue %s: the stop's drain ended with %d messages still rate-limited; counted as "
                        "shed", self.name, left)
            # Still unsent for the progress kept after the drain: the next start tells their buyers.
            self._shed_at_stop.extend(p.reply.outcome for p in self._pending if p.reply.outcome is not None)
            self._pending.clear()

    async def _send(self, send: Send, batch: list[Reply]) -> bool:
        """Send ``batch``; False when its messages were put back to be tried again."""
        try:
            return await self._send_once(send, batch)
        finally:
            self._inflight = ()

    async def _send_once(self, send: Send, batch: list[Reply]) -> bool:
        carried = len(batch)
        self._inflight = batch
        try:
            await send(batch)
        except asyncio.CancelledError:
            raise
        except RetryableError as exc:
            now = self.clock()
            if self._failing_since is None:
                self._failing_since = now
                log.warning("reply queue %s: cannot send now (%s); %d message(s) wait and are tried again for "
                            "up to %.0f s", self.name, exc, carried, self.retry_for)
            if now - self._failing_since < self.retry_for and not self._closed:
                # Nothing went out: the platform's rate limit is not used up by tries without a connection
                # (a restart's first replies, tried before the companion is back, waited out a whole window).
                self.limiter.give_back(carried)
                self._pending.extendleft(_Pending(room_of(r), r) for r in reversed(batch))
                self._count("retried", carried)
                return False
            self._failed(carried, exc)
            if self._closed:  # a stop: "later" is the next start, which tells these buyers (see unsent)
                self._shed_at_stop.extend(r.outcome for r in batch if r.outcome is not None)
            # Given up on these; the next ones get their own wait (a companion that came back meanwhile and
            # dropped again must not make them fail at once).
            self._failing_since = None
            self._backoff = RETRY_FIRST
            return True
        except Exception as exc:
            self._failed(carried, exc)
            return True
        self._count("sent", carried)
        if self._failing_since is not None:
            log.info("reply queue %s: sending again after %.1f s", self.name, self.clock() - self._failing_since)
        self._failing_since = None
        self._backoff = RETRY_FIRST
        return True

    def _failed(self, carried: int, exc: BaseException) -> None:
        self._count("failed", carried)
        level = logging.DEBUG if self._send_error_logged else logging.WARNING
        self._send_error_logged = True
        log.log(level, "reply queue %s: sending %d replies failed: %r (counted; further failures at DEBUG)",
                self.name, carried, exc)

    def __repr__(self) -> str:
        return (f"<ReplyQueue {self.name}: {self.depth} pending, {self.count('sent')} sent, "
                f"{self.count('merged')} merged, {self.count('shed')} shed, {self.limiter!r}>")
