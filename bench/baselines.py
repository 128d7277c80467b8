"""The two designs livecart is measured against, each run in two modes on the same comments.

``naive``
    What a hand-rolled bot does: one aiosqlite transaction per buy item (``BEGIN IMMEDIATE``; read the
    stock and what the buyer already holds; ``UPDATE stock ... WHERE left >= ?``; ``INSERT`` the orders;
    ``COMMIT``) with ``PRAGMA synchronous=FULL`` so each commit is fsynced, as livecart's ``durability =
    "fsync"`` is.
``redis``
    The classic flash-sale design: stock in Redis, one ``EVALSHA`` of a Lua script per buy item that
    checks and decrements stock and appends the orders atomically. Calls come from ``concurrency`` tasks
    sharing a connection pool, as request handlers would. The local Redis runs without ``appendfsync``,
    so this baseline is *not* durable: the comparison flatters it.

The two modes:

end to end (:func:`run_naive_e2e`, :func:`run_redis_e2e`)
    The comments in arrival order, as the tool or service would receive them: inside the timing every
    comment is parsed with the ``parse`` it is given (livecart's own parser, so parsing costs the same as in
    the engine), what is not a buy is dropped, and each buy item then gets its one transaction / one
    ``EVALSHA``. For Redis the ``concurrency`` tasks each take the next comment, parse it and make its
    calls, so parsing and calls share one process and one event loop, as in a real service.
allocation only (:func:`run_naive`, :func:`run_redis`)
    :class:`Buy` items parsed beforehand, outside the timing: the counterpart of livecart's ``ledger``
    bench case, which also receives parsed comments.

Both modes allocate the same way as the ledger (the part above the per-buyer limit rejected first, then
stock, then the presale queue, then ``sold_out``; partial fills allowed) and afterwards read every stored
order back to compute the checks ``oversold`` (units placed beyond stock or beyond the presale allowance)
and ``lost`` (acknowledged buys with no stored order, and expected buys never acknowledged).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from livecart.core.records import Comment, Intent, ParseResult

T = TypeVar("T")

__all__ = ["BaselineResult", "Buy", "Parse", "Unit", "buy_items", "item_key", "run_naive", "run_naive_e2e",
           "run_redis", "run_redis_e2e"]

#: ``parse(text, featured)``: what the end-to-end runs call on every comment (``livecart.core.parser.Parser.parse``).
Parse = Callable[[str, str | None], ParseResult]


@dataclass(frozen=True, slots=True)
class Buy:
    """One parsed buy item: ``key`` is the ledger key (``sku`` or ``sku/variant``)."""

    comment: str
    user: str
    sku: str
    key: str
    qty: int


@dataclass(frozen=True, slots=True)
class Unit:
    """What one ledger key starts with."""

    stock: int
    presale: int = 0
    limit: int = 0


@dataclass
class BaselineResult:
    """One timed run. ``buys`` counts buy items allocated; ``comments`` the comments parsed inside the timing
    (``None`` for an allocation-only run, which is given parsed items)."""

    name: str
    buys: int
    seconds: float
    #: Seconds from issuing each buy item's call to its acknowledgement (flat out, not paced).
    latencies: list[float]
    outcomes: int
    statuses: dict[str, int] = field(default_factory=dict)
    oversold: int = 0
    lost: int = 0
    comments: int | None = None

    def __repr__(self) -> str:
        parsed = "" if self.comments is None else f" from {self.comments:,} comments"
        return (f"<BaselineResult {self.name}: {self.buys:,} buys{parsed} in {self.seconds:.2f}s, "
                f"oversold={self.oversold} lost={self.lost}>")


def item_key(sku: str, variant: str | None) -> str:
    """The ledger key of a product or of one of its variants."""
    return sku if variant is None else f"{sku}/{variant}"


def buy_items(comment: Comment, result: ParseResult, units: Mapping[str, Unit]) -> list[Buy]:
    """The buy items of ``comment`` read as ``result``: none unless it is a buy. Items the ledger would reject
    without touching stock (unknown product, bad quantity, a product with variants and none named, i.e. a
    key not in ``units``) cost the baselines nothing either and are left out."""
    out: list[Buy] = []
    if result.intent is not Intent.BUY:
        return out
    for item in result.items:
        sku = item.sku
        if sku is None or item.reason is not None:
            continue
        key = item_key(sku, item.variant)
        if key in units:
            out.append(Buy(comment.id, comment.user, sku, key, item.qty))
    return out


def _check(units: Mapping[str, Unit], buys: Sequence[Buy], acked: set[str],
           orders: Sequence[tuple[str, str, int, str]]) -> tuple[int, int, dict[str, int]]:
    """``(oversold, lost, statuses)``. ``buys``: the items that must all be acknowledged; ``acked``: the
    comments of the items acknowledged; ``orders``: ``(comment, key, qty, status)`` rows read back from the
    store."""
    placed: dict[tuple[str, str], int] = {}
    statuses: dict[str, int] = {}
    stored_comments = set()
    for comment, key, qty, status in orders:
        stored_comments.add(comment)
        statuses[status] = statuses.get(status, 0) + 1
        if status in ("reserved", "presale"):
            placed[(key, status)] = placed.get((key, status), 0) + qty
    oversold = 0
    for key, u in units.items():
        oversold += max(0, placed.get((key, "reserved"), 0) - u.stock)
        oversold += max(0, placed.get((key, "presale"), 0) - u.presale)
    lost = len(acked - stored_comments) + len({b.comment for b in buys} - acked)
    return oversold, lost, statuses


# --- naive: one aiosqlite transaction per buy ---------------------------------------------------------------

_SCHEMA = """
CREATE TABLE stock (key TEXT PRIMARY KEY, sku TEXT NOT NULL, left INTEGER NOT NULL,
                    presale_left INTEGER NOT NULL, lim INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, comment TEXT NOT NULL, user TEXT NOT NULL, sku TEXT NOT NULL,
                     key TEXT NOT NULL, qty INTEGER NOT NULL, status TEXT NOT NULL);
CREATE INDEX orders_user ON orders (user, sku);
"""


async def _naive_one(db: aiosqlite.Connection, b: Buy) -> int:
    await db.execute("BEGIN IMMEDIATE")
    try:
        async with db.execute("SELECT left, presale_left, lim FROM stock WHERE key = ?", (b.key,)) as cur:
            row = await cur.fetchone()
        assert row is not None, b.key
        left, presale_left, lim = int(row[0]), int(row[1]), int(row[2])
        rows: list[tuple[str, int]] = []
        held = 0
        if lim:
            async with db.execute(
                "SELECT COALESCE(SUM(qty), 0) FROM orders WHERE user = ? AND sku = ? "
                "AND status IN ('reserved', 'presale')", (b.user, b.sku)) as cur:
                r = await cur.fetchone()
            held = int(r[0]) if r is not None else 0
        want = min(b.qty, max(0, lim - held)) if lim else b.qty
        if b.qty - want:
            rows.append(("rejected:limit", b.qty - want))
        take = min(want, left)
        queue = min(want - take, presale_left)
        if take:
            rows.append(("reserved", take))
        if queue:
            rows.append(("presale", queue))
        if want - take - queue:
            rows.append(("rejected:sold_out", want - take - queue))
        if take or queue:
            cur2 = await db.execute(
                "UPDATE stock SET left = left - ?, presale_left = presale_left - ? "
                "WHERE key = ? AND left >= ? AND presale_left >= ?", (take, queue, b.key, take, queue))
            assert cur2.rowcount == 1
        await db.executemany(
            "INSERT INTO orders (comment, user, sku, key, qty, status) VALUES (?, ?, ?, ?, ?, ?)",
            [(b.comment, b.user, b.sku, b.key, q, s) for s, q in rows])
        await db.commit()
    except BaseException:
        await db.rollback()
        raise
    return len(rows)


async def _naive_open(units: Mapping[str, Unit], path: str | Path) -> aiosqlite.Connection:
    """A new database at ``path`` (any old one removed) holding ``units``, fsyncing every commit."""
    p = Path(path)
    for stale in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
        await asyncio.to_thread(stale.unlink, missing_ok=True)
    db = await aiosqlite.connect(p, isolation_level=None)
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.executescript(_SCHEMA)
        await db.executemany(
            "INSERT INTO stock VALUES (?, ?, ?, ?, ?)",
            [(k, k.split("/")[0], u.stock, u.presale, u.limit) for k, u in units.items()])
    except BaseException:
        await db.close()
        raise
    return db


async def _naive_orders(db: aiosqlite.Connection) -> list[tuple[str, str, int, str]]:
    async with db.execute("SELECT comment, key, qty, status FROM orders") as cur:
        return [(str(r[0]), str(r[1]), int(r[2]), str(r[3]).split(":")[0]) for r in await cur.fetchall()]


async def _naive_drive(db: aiosqlite.Connection, jobs: Sequence[T], buys_of: Callable[[T], Iterable[Buy]]
                       ) -> tuple[float, list[float], set[str], int, int]:
    """Each job in order turned into buy items by ``buys_of``, each item one fsynced transaction. Returns
    (seconds, per-transaction latencies, acknowledged comment ids, outcomes, transactions)."""
    latencies: list[float] = []
    acked: set[str] = set()
    outcomes = calls = 0
    clock = time.perf_counter
    t0 = clock()
    for job in jobs:
        for b in buys_of(job):
            t = clock()
            outcomes += await _naive_one(db, b)
            latencies.append(clock() - t)
            acked.add(b.comment)
            calls += 1
    return clock() - t0, latencies, acked, outcomes, calls


async def run_naive(units: Mapping[str, Unit], buys: Sequence[Buy], path: str | Path) -> BaselineResult:
    """Allocation only: ``buys`` one fsynced aiosqlite transaction each into a new database at ``path``."""
    db = await _naive_open(units, path)
    try:
        seconds, latencies, acked, outcomes, _ = await _naive_drive(db, buys, _alone)
        orders = await _naive_orders(db)
    finally:
        await db.close()
    oversold, lost, statuses = _check(units, buys, acked, orders)
    return BaselineResult("naive", len(buys), seconds, latencies, outcomes, statuses, oversold, lost)


async def run_naive_e2e(units: Mapping[str, Unit], comments: Sequence[Comment], parse: Parse,
                        featured: str | None, expected: Sequence[Buy], path: str | Path) -> BaselineResult:
    """End to end: every comment of ``comments`` in order parsed by ``parse(text, featured)``, then each of
    its buy items (:func:`buy_items`) one fsynced transaction, all inside the timing, into a new database
    at ``path``. ``expected``: the buy items an untimed parse finds in ``comments``; any of them not
    acknowledged and stored counts in ``lost``."""
    db = await _naive_open(units, path)
    try:
        seconds, latencies, acked, outcomes, calls = await _naive_drive(
            db, comments, _parsing_buys(parse, featured, units))
        orders = await _naive_orders(db)
    finally:
        await db.close()
    oversold, lost, statuses = _check(units, expected, acked, orders)
    return BaselineResult("naive", calls, seconds, latencies, outcomes, statuses, oversold, lost,
                          comments=len(comments))


def _alone(b: Buy) -> tuple[Buy]:
    return (b,)


def _parsing_buys(parse: Parse, featured: str | None, units: Mapping[str, Unit]
                  ) -> Callable[[Comment], Iterable[Buy]]:
    """A comment -> its buy items, parsing it first: what an end-to-end baseline does for each comment."""
    buy = Intent.BUY

    def buys_of(c: Comment) -> Iterable[Buy]:
        r = parse(c.text, featured)
        return buy_items(c, r, units) if r.intent is buy else ()

    return buys_of


# --- redis + lua: one EVALSHA per buy -----------------------------------------------------------------------

#: KEYS: stock hash, the buyer's holding counter, the order list. ARGV: qty, comment, key.
#: Returns the number of order rows appended. Redis runs a script atomically, so check-and-decrement holds.
_LUA = """
local qty = tonumber(ARGV[1])
local left = tonumber(redis.call('HGET', KEYS[1], 'left'))
local presale = tonumber(redis.call('HGET', KEYS[1], 'presale'))
local lim = tonumber(redis.call('HGET', KEYS[1], 'limit'))
local base = ARGV[2] .. '|' .. ARGV[3] .. '|'
local want = qty
local n = 0
if lim > 0 then
  local held = tonumber(redis.call('GET', KEYS[2]) or '0')
  want = math.min(qty, math.max(0, lim - held))
  if qty > want then
    redis.call('RPUSH', KEYS[3], base .. (qty - want) .. '|rejected')
    n = n + 1
  end
end
local take = math.min(want, left)
local queue = math.min(want - take, presale)
local rest = want - take - queue
if take > 0 then
  redis.call('HINCRBY', KEYS[1], 'left', -take)
  redis.call('RPUSH', KEYS[3], base .. take .. '|reserved')
  n = n + 1
end
if queue > 0 then
  redis.call('HINCRBY', KEYS[1], 'presale', -queue)
  redis.call('RPUSH', KEYS[3], base .. queue .. '|presale')
  n = n + 1
end
if take + queue > 0 and lim > 0 then
  redis.call('INCRBY', KEYS[2], take + queue)
end
if rest > 0 then
  redis.call('RPUSH', KEYS[3], base .. rest .. '|rejected')
  n = n + 1
end
return n
"""


@dataclass(frozen=True, slots=True)
class _Store:
    """A loaded Redis stock under ``prefix``: the script's ``sha`` and the key the orders are appended to."""

    client: Any
    sha: str
    prefix: str
    orders_key: str

    def call(self, b: Buy) -> Awaitable[Any]:
        """The one ``EVALSHA`` allocating ``b``; returns the number of order rows appended."""
        p = self.prefix
        pending: Awaitable[Any] = self.client.evalsha(
            self.sha, 3, p + "stock:" + b.key, f"{p}held:{b.user}:{b.sku}", self.orders_key, b.qty, b.comment,
            b.key)
        return pending

    async def orders(self) -> list[tuple[str, str, int, str]]:
        out = []
        page = 20_000  # one LRANGE of a million rows outlasts the client's read timeout
        start = 0
        while True:
            entries = await self.client.lrange(self.orders_key, start, start + page - 1)
            for entry in entries:
                comment, key, qty, status = entry.decode().rsplit("|", 3)
                out.append((comment, key, int(qty), status))
            if len(entries) < page:
                return out
            start += page


@asynccontextmanager
async def _redis_store(units: Mapping[str, Unit], host: str, port: int, concurrency: int
                       ) -> AsyncIterator[_Store]:
    """Stock for ``units`` under a fresh ``lcbench:<hex>:`` prefix, every key of which is deleted on exit.

    Raises ``ConnectionError`` (from redis) when the server is unreachable.
    """
    import redis.asyncio as aioredis  # the test extra; imported here so the other cases do not need it

    prefix = f"lcbench:{uuid.uuid4().hex[:12]}:"
    client: Any = aioredis.Redis(host=host, port=port, max_connections=concurrency)
    try:
        sha = await client.script_load(_LUA)
        # Keys of one product share the limit counter; a hash tag keeps a cluster deployment possible.
        for key, u in units.items():
            await client.hset(prefix + "stock:" + key,
                              mapping={"left": u.stock, "presale": u.presale, "limit": u.limit})
        yield _Store(client, sha, prefix, prefix + "orders")
    finally:
        try:
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def _redis_drive(store: _Store, jobs: Sequence[T], buys_of: Callable[[T], Iterable[Buy]],
                       concurrency: int) -> tuple[float, list[float], set[str], int, int]:
    """``concurrency`` tasks in this event loop each take the next job (in order), turn it into buy items with
    ``buys_of`` and make one ``EVALSHA`` per item. Returns (seconds, per-call latencies, acknowledged
    comment ids, outcomes, calls)."""
    latencies: list[float] = []
    acked: set[str] = set()
    outcomes = calls = 0
    next_i = 0
    total = len(jobs)
    call = store.call
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal next_i, outcomes, calls
        while next_i < total:
            job = jobs[next_i]
            next_i += 1
            for b in buys_of(job):
                t = clock()
                n = await call(b)
                latencies.append(clock() - t)
                outcomes += int(n)
                acked.add(b.comment)
                calls += 1

    t0 = clock()
    async with asyncio.TaskGroup() as tg:
        for _ in range(max(1, concurrency)):
            tg.create_task(worker())
    return clock() - t0, latencies, acked, outcomes, calls


async def run_redis(units: Mapping[str, Unit], buys: Sequence[Buy], *, host: str = "127.0.0.1",
                    port: int = 6379, concurrency: int = 32) -> BaselineResult:
    """Allocation only: ``buys`` one ``EVALSHA`` each from ``concurrency`` tasks; keys are removed afterwards.

    Raises ``ConnectionError`` (from redis) when the server is unreachable.
    """
    async with _redis_store(units, host, port, concurrency) as store:
        seconds, latencies, acked, outcomes, _ = await _redis_drive(store, buys, _alone, concurrency)
        orders = await store.orders()
    oversold, lost, statuses = _check(units, buys, acked, orders)
    return BaselineResult("redis", len(buys), seconds, latencies, outcomes, statuses, oversold, lost)


async def run_redis_e2e(units: Mapping[str, Unit], comments: Sequence[Comment], parse: Parse,
                        featured: str | None, expected: Sequence[Buy], *, host: str = "127.0.0.1",
                        port: int = 6379, concurrency: int = 32) -> BaselineResult:
    """End to end: ``concurrency`` tasks in this event loop each take the next comment of ``comments`` (in
    order), parse it with ``parse(text, featured)`` and make one ``EVALSHA`` per buy item
    (:func:`buy_items`), all inside the timing; keys are removed afterwards. ``expected``: the buy items an
    untimed parse finds in ``comments``; any not acknowledged and stored counts in ``lost``.

    Raises ``ConnectionError`` (from redis) when the server is unreachable.
    """
    async with _redis_store(units, host, port, concurrency) as store:
        seconds, latencies, acked, outcomes, calls = await _redis_drive(
            store, comments, _parsing_buys(parse, featured, units), concurrency)
        orders = await store.orders()
    oversold, lost, statuses = _check(units, expected, acked, orders)
    return BaselineResult("redis", calls, seconds, latencies, outcomes, statuses, oversold, lost,
                          comments=len(comments))



async def run_redis_file(units: Mapping[str, Unit], path: str | Path, parse: Parse, featured: str | None, *,
                         host: str = "127.0.0.1", port: int = 6379, pipeline: int = 100, limit: int = 0
                         ) -> BaselineResult:
    """End to end from a JSON Lines file, pipelined: what a Redis flash-sale service fed the replay file does.

    Inside the timing: every line is read and decoded (orjson), its ``text`` parsed with ``parse(text,
    featured)``, and one ``EVALSHA`` queued per buy item (:func:`buy_items`); every ``pipeline`` calls go
    to Redis in one round trip (no MULTI: each script is atomic on its own), and the next batch is parsed
    while that round trip is under way (one pipeline in flight). Keys are removed afterwards. ``lost``: buy
    items found but not acknowledged and stored. The result's ``comments`` counts the lines; ``limit`` > 0
    stops after that many.

    Raises ``ConnectionError`` (from redis) when the server is unreachable.
    """
    import orjson

    buy = Intent.BUY
    issued: list[Buy] = []
    acked: set[str] = set()
    outcomes = lines = 0
    async with _redis_store(units, host, port, 2) as store:
        client, sha, p, orders_key = store.client, store.sha, store.prefix, store.orders_key
        clock = time.perf_counter

        async def send(batch: list[Buy]) -> None:
            nonlocal outcomes
            pipe = client.pipeline(transaction=False)
            for b in batch:
                pipe.evalsha(sha, 3, p + "stock:" + b.key, f"{p}held:{b.user}:{b.sku}", orders_key, b.qty,
                             b.comment, b.key)
            for b, n in zip(batch, await pipe.execute(), strict=True):
                outcomes += int(n)
                acked.add(b.comment)

        t0 = clock()
        flying: asyncio.Task[None] | None = None
        batch: list[Buy] = []
        with open(path, "rb") as f:  # noqa: ASYNC230 - a local file read, as the replay adapter does
            for line in f:
                if lines == limit > 0:
                    break
                lines += 1
                d = orjson.loads(line)
                r = parse(d["text"], featured)
                if r.intent is not buy:
                    continue
                for item in r.items:
                    sku = item.sku
                    if sku is None or item.reason is not None:
                        continue
                    key = item_key(sku, item.variant)
                    if key in units:
                        b = Buy(d["id"], d["user"], sku, key, item.qty)
                        batch.append(b)
                        issued.append(b)
                if len(batch) >= pipeline:
                    if flying is not None:
                        await flying
                    flying = asyncio.ensure_future(send(batch))
                    batch = []
                    await asyncio.sleep(0)  # let it write the round trip before parsing the next batch
        if flying is not None:
            await flying
        if batch:
            await send(batch)
        seconds = clock() - t0
        orders = await store.orders()
    oversold, lost, statuses = _check(units, issued, acked, orders)
    return BaselineResult("redis-pipelined", len(issued), seconds, [], outcomes, statuses, oversold, lost,
                          comments=lines)
