from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from livecart.adapters.reconnect import Backoff, backoff, reconnecting
from livecart.core.errors import AdapterError, FatalAdapterError, RetryableError
from livecart.plugin import AdapterStats


def test_backoff_grows_caps_and_jitters_within_bounds() -> None:
    policy = Backoff(initial=1.0, factor=2.0, cap=8.0, jitter=0.5)
    delays = backoff(policy, random.Random(7))
    got = [next(delays) for _ in range(6)]
    for d, ceiling in zip(got, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling * 0.5 <= d <= ceiling


def test_backoff_without_jitter_is_exact() -> None:
    delays = backoff(Backoff(initial=0.5, factor=3.0, cap=5.0, jitter=0.0))
    assert [next(delays) for _ in range(4)] == [0.5, 1.5, 4.5, 5.0]


async def test_reconnects_after_retryable_errors_and_resets_after_a_message() -> None:
    attempts: list[int] = []
    slept: list[float] = []

    def connect() -> AsyncIterator[int]:
        n = len(attempts)
        attempts.append(n)

        async def gen() -> AsyncIterator[int]:
            if n in (0, 1):
                raise ConnectionRefusedError("broker down")
            if n == 2:
                yield 1
                raise RetryableError("dropped")
            if n == 3:
                raise OSError("again")
            yield 2

        return gen()

    async def sleep(d: float) -> None:
        slept.append(d)

    stats = AdapterStats("t")
    got = [x async for x in reconnecting(connect, stats=stats, sleep=sleep,
                                         policy=Backoff(initial=1, factor=10, cap=100, jitter=0))]
    assert got == [1, 2]
    assert stats.reconnects == 4
    # 1, 10 before the first message; after it the policy starts over at 1.
    assert slept == [1, 10, 1, 10]


async def test_fatal_error_is_raised_not_retried() -> None:
    calls = 0

    def connect() -> AsyncIterator[int]:
        nonlocal calls
        calls += 1

        async def gen() -> AsyncIterator[int]:
            raise FatalAdapterError("bad token")
            yield 0

        return gen()

    with pytest.raises(FatalAdapterError):
        async for _ in reconnecting(connect, stats=AdapterStats("t")):
            pass
    assert calls == 1


async def test_gives_up_after_max_attempts() -> None:
    def connect() -> AsyncIterator[int]:
        async def gen() -> AsyncIterator[int]:
            raise ConnectionResetError
            yield 0

        return gen()

    async def sleep(d: float) -> None:
        pass

    with pytest.raises(AdapterError, match="gave up after 3"):
        async for _ in reconnecting(connect, stats=AdapterStats("t"), max_attempts=3, sleep=sleep):
            pass
