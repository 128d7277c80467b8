"""The reconnect loop shared by every network adapter.

Two parts, as in blivedm's ``ws_base``: a pure backoff policy (:func:`backoff`, a generator of delays with no
clock and no I/O, so it is tested as values) and :func:`reconnecting`, the loop that runs one connection
attempt after another, sleeping the policy's delays between them, resetting the policy after a good message,
and asking a ``classify`` hook whether an error is worth retrying.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from livecart.core.errors import AdapterError, FatalAdapterError, RetryableError
from livecart.plugin import AdapterStats

log = logging.getLogger("livecart.adapter")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered, capped exponential backoff: ``initial * factor**n``, capped at ``cap``, with 'full jitter'
    scaled into ``[(1 - jitter) * d, d]`` so that many engines reconnecting at once spread out."""

    initial: float = 0.2
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.5


def backoff(policy: Backoff = Backoff(), rng: random.Random | None = None) -> Iterator[float]:
    """An endless series of delays (seconds) for successive failed attempts. Pure: no clock, no sleep."""
    r = rng if rng is not None else random.Random()
    delay = policy.initial
    while True:
        d = min(delay, policy.cap)
        yield d * (1.0 - policy.jitter * r.random())
        delay = min(delay * policy.factor, policy.cap)


def default_classify(exc: BaseException) -> bool:
    """True when ``exc`` is worth a reconnect: network errors, timeouts and :class:`RetryableError`."""
    if isinstance(exc, FatalAdapterError):
        return False
    return isinstance(exc, RetryableError | OSError | asyncio.TimeoutError | EOFError | ConnectionError)


Connect = Callable[[], AsyncIterator[T]]


async def reconnecting(
    connect: Connect[T],
    *,
    stats: AdapterStats,
    policy: Backoff = Backoff(),
    classify: Callable[[BaseException], bool] = default_classify,
    max_attempts: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> AsyncIterator[T]:
    """Yield everything ``connect()`` yields, reconnecting after retryable errors.

    ``connect`` is called for each attempt and returns an async iterator over one connection's messages.
    When that iterator ends normally the source has closed cleanly and this loop ends. When it raises an
    error that ``classify`` calls retryable, the loop sleeps the next backoff delay and connects again; the
    delays start over after any attempt that yielded at least one message. Each reconnect is counted in
    ``stats.reconnects`` and logged once at WARNING. A fatal error, or ``max_attempts`` consecutive failures,
    raises :class:`AdapterError` (chained to the cause).
    """
    delays = backoff(policy, rng)
    failures = 0
    while True:
        got_message = False
        try:
            async for item in connect():
                if not got_message:
                    got_message = True
                    stats.connected = True
                    if failures:
                        log.info("adapter %s: reconnected after %d failed attempt(s)", stats.name, failures)
                    failures = 0
                    delays = backoff(policy, rng)
                yield item
            stats.connected = False
            return
        except Exception as exc:
            stats.connected = False
            if not classify(exc):
                stats.errors += 1
                if isinstance(exc, AdapterError):
                    raise
                raise FatalAdapterError(f"adapter {stats.name}: {exc!r}") from exc
            failures += 1
            if max_attempts is not None and failures >= max_attempts:
                stats.errors += 1
                raise RetryableError(
                    f"adapter {stats.name}: gave up after {failures} failed attempts: {exc!r}") from exc
            delay = next(delays)
            stats.reconnects += 1
            log.warning("adapter %s: connection lost (%r); reconnecting in %.2fs", stats.name, exc, delay)
            await sleep(delay)
