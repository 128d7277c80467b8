from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from livecart import config
from livecart.core.errors import ConfigError, RetryableError
from livecart.core.ledger import Ledger
from livecart.core.parser import Parser
from livecart.core.records import Comment, Outcome, Reason, Status
from livecart.core.templates import TEMPLATE_KEYS, TEMPLATES, template_problems
from livecart.plugin import Adapter, Reply
from livecart.runtime.replies import NotDurable, RateLimiter, Replier, ReplyQueue, shown_name

# 2020-03-15 12:00:00 UTC; with hold_minutes = 30 the pay-by time is 12:30 in UTC.
TS = 1584273600.0


def cfg(extra: str = "", hold: int = 30, sample: Path | None = None) -> config.Config:
    base = sample.read_text(encoding="utf-8") if sample is not None else ""
    base = base.replace("hold_minutes = 30", f"hold_minutes = {hold}")
    return config.loads(base + "\n" + extra, adapter_options=lambda t: {"path": config.Option(str, path=True),
                                                                         "speed": config.Option(float, 0.0)})


@pytest.fixture
def zh(sample_config_path: Path) -> Replier:
    return Replier(cfg('[replies]\ntimezone = "UTC"\n', sample=sample_config_path))


@pytest.fixture
def en(sample_config_path: Path) -> Replier:
    return Replier(cfg('[replies]\nlanguage = "en"\ntimezone = "UTC"\n', sample=sample_config_path))


def outcome(status: Status = Status.RESERVED, *, sku: str | None = "egg-10", qty: int = 2,
            reason: Reason | None = None, comment: str | None = "m-1", user: str = "u-42",
            variant: str | None = None, position: int | None = None, seq: int | None = 7,
            order: str | None = "o-000123") -> Outcome:
    return Outcome(comment, user, order, sku, variant, qty, status, reason, position, "douyin", "7312", TS, seq)


def test_reserved_zh_names_product_order_and_pay_by(zh: Replier) -> None:
    text = zh.render(outcome(), "张三")
    assert text == "@张三 已为您保留 Free-range eggs, box of 10 ×2，订单 o-000123，请在 12:30 前付款"


def test_pay_by_follows_the_configured_time_zone(sample_config_path: Path) -> None:
    r = Replier(cfg('[replies]\ntimezone = "Asia/Shanghai"\n', sample=sample_config_path))
    assert "20:30" in (r.render(outcome(), "张三") or "")


def test_reserved_without_hold_has_no_pay_by(sample_config_path: Path) -> None:
    r = Replier(cfg("", hold=0, sample=sample_config_path))
    text = r.render(outcome(), "张三") or ""
    assert "付款" not in text
    assert "o-000123" in text


def test_promoted_without_hold_has_no_pay_by(sample_config_path: Path) -> None:
    # Found from outside: with hold_minutes = 0 a promoted presale order was told to pay by the current time.
    r = Replier(cfg("", hold=0, sample=sample_config_path))
    text = r.render(outcome(Status.PROMOTED), "张三") or ""
    assert "付款" not in text
    assert "o-000123" in text
    assert "前付款" in (Replier(cfg("", hold=30, sample=sample_config_path)).render(outcome(Status.PROMOTED), "张三")
                      or "")


def test_presale_gives_position_and_note(en: Replier) -> None:
    text = en.render(outcome(Status.PRESALE, position=4), "Ann") or ""
    assert "#4" in text
    assert "ships tomorrow afternoon" in text
    assert text.startswith("@Ann ")


def test_needs_variant_lists_the_variants(zh: Replier, en: Replier) -> None:
    o = outcome(Status.REJECTED, sku="tea-chry", reason=Reason.NEEDS_VARIANT)
    assert "50g、100g" in (zh.render(o, "李四") or "")
    assert "50g or 100g" in (en.render(o, "Li") or "")


def test_limit_rejection_says_the_limit(en: Replier) -> None:
    assert "limited to 5 per buyer" in (en.render(outcome(Status.REJECTED, reason=Reason.LIMIT), "A") or "")


def test_a_cancel_with_no_order_to_cancel_says_so(en: Replier, zh: Replier, sample_config_path: Path) -> None:
    # A plugin author's check: 取消 / cancel / 退掉 from a buyer with no order was answered
    # "sorry,  cannot be ordered right now" (a blank product), 39 times in one run.
    c = config.load(sample_config_path)
    ledger = Ledger(c.catalogue, featured=c.stream.featured, clock=lambda: TS)
    parse = Parser.from_config(c).parse
    for text in ("取消", "cancel", "鸡蛋不要了"):
        [o] = ledger.decide(Comment("douyin", "7312", f"m-{text}", "u-9", "Ann", text, TS), parse(text, "egg-10"))
        assert (o.status, o.reason) == (Status.REJECTED, Reason.NOT_AVAILABLE)
        assert en.render(o, "Ann") == "@Ann there is no order of yours to cancel"
        assert zh.render(o, "安") == "@安 没有找到可以取消的订单"
    # A buy of something that cannot be ordered still says so.
    assert "cannot be ordered right now" in (en.render(outcome(Status.REJECTED, reason=Reason.NOT_AVAILABLE), "A")
                                             or "")


@pytest.mark.parametrize("reason", list(Reason))
def test_every_rejection_reason_renders(zh: Replier, en: Replier, reason: Reason) -> None:
    o = outcome(Status.REJECTED, reason=reason, sku=None if reason is Reason.UNKNOWN_PRODUCT else "egg-10")
    assert zh.render(o, "张三")
    assert en.render(o, "Ann")


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.REJECTED])
def test_every_status_renders_in_both_languages(zh: Replier, en: Replier, status: Status) -> None:
    o = outcome(status, position=1)
    assert (zh.render(o, "张三") or "").startswith("@张三 ")
    assert (en.render(o, "Ann") or "").startswith("@Ann ")


def test_variant_appears_with_the_product(en: Replier) -> None:
    o = outcome(sku="tea-chry", variant="100g", qty=1)
    assert "Chrysanthemum tea 100g x1" in (en.render(o, "A") or "")


def test_template_override_and_empty_template_turns_reply_off(sample_config_path: Path) -> None:
    r = Replier(cfg('[replies]\ntimezone = "UTC"\n[replies.templates]\nreserved = "OK {qty}"\npaid = ""\n',
                    sample=sample_config_path))
    assert r.render(outcome(), "x") == "@x OK 2"
    assert r.render(outcome(Status.PAID), "x") is None


def test_bad_template_key_is_a_config_error_at_load(sample_config_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown template 'reservd'"):
        cfg('[replies.templates]\nreservd = "x"\n', sample=sample_config_path)


def test_unknown_placeholder_is_a_config_error_at_load(sample_config_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \{buyer\}"):
        cfg('[replies.templates]\nreserved = "hi {buyer}"\n', sample=sample_config_path)


def test_attribute_access_in_template_is_refused() -> None:
    assert template_problems({"paid": "{name.__class__}"})
    assert template_problems({"paid": "{name[0]}"})


def test_bad_format_spec_and_unbalanced_brace_are_refused() -> None:
    assert "cannot be filled in" in template_problems({"paid": "{name:d}"})[0]
    assert "not a valid format string" in template_problems({"paid": "{order"})[0]


def test_bad_timezone_is_a_config_error(sample_config_path: Path) -> None:
    with pytest.raises(ConfigError, match="IANA"):
        cfg('[replies]\ntimezone = "Mars/Olympus"\n', sample=sample_config_path)


def test_defaults_cover_every_key_in_both_languages() -> None:
    for lang in ("zh", "en"):
        assert tuple(TEMPLATES[lang]) == TEMPLATE_KEYS
        assert template_problems(TEMPLATES[lang]) == []


def test_plan_groups_one_comments_items_into_one_reply(zh: Replier) -> None:
    c = Comment("douyin", "7312", "m-1", "u-42", "张三", "鸡蛋2 蜂蜜1", TS)
    outs = [outcome(), outcome(sku="honey-500", qty=1, order="o-000124"),
            outcome(comment="m-2", user="u-7", order="o-000125")]
    plan = zh.plan(outs, {c.key: c})
    assert len(plan) == 2
    (room, first), (_, second) = plan
    assert room == ("douyin", "7312")
    assert first.comment == c
    assert first.text.count("@张三") == 1
    assert "o-000123" in first.text
    assert "o-000124" in first.text
    assert "；" in first.text
    assert second.text.startswith("@u-7 ")  # no comment known: the user id stands in for the name


def test_plan_counts_outcomes_with_no_room(zh: Replier) -> None:
    o = replace(outcome(Status.EXPIRED, comment=None), platform=None, room=None)
    assert zh.plan([o]) == []
    assert zh.unroutable == 1


def test_plan_is_empty_when_replies_are_disabled(sample_config_path: Path) -> None:
    r = Replier(cfg("[replies]\nenabled = false\n", sample=sample_config_path))
    assert r.plan([outcome()]) == []


# --- RateLimiter ---

def test_rate_limiter_allows_limit_per_window() -> None:
    rl = RateLimiter(3, 10.0)
    assert rl.take(5, 0.0) == 3
    assert rl.take(1, 9.9) == 0
    assert rl.next_free(9.9) == pytest.approx(10.0)
    assert rl.take(2, 10.0) == 2


def test_rate_limiter_without_limit_allows_everything() -> None:
    rl = RateLimiter(None, 1.0)
    assert rl.take(10_000, 0.0) == 10_000
    assert rl.next_free(0.0) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10), st.floats(0.5, 60.0),
       st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(0, 20)), max_size=60))
def test_rate_limiter_never_exceeds_limit_in_any_window(limit: int, window: float,
                                                         steps: list[tuple[float, int]]) -> None:
    rl = RateLimiter(limit, window)
    now = 0.0
    sent: list[float] = []
    for dt, n in steps:
        now += dt
        sent.extend([now] * rl.take(n, now))
    for t in sent:
        assert sum(1 for u in sent if t <= u < t + window) <= limit


# --- ReplyQueue ---

class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def reply(i: int, room: str = "7312", seq: int | None = 1) -> Reply:
    c = Comment("douyin", room, f"m-{i}", f"u-{i}", f"n{i}", "+1", TS)
    return Reply(f"r{i}", c, outcome(comment=f"m-{i}", seq=seq))


def check_books(q: ReplyQueue) -> None:
    assert q.count("queued") == (q.count("taken") - q.count("retried") + q.count("shed") + q.count("merged")
                                 + q.depth)


async def test_replies_wait_for_a_companion_that_is_not_there_yet_and_go_out_in_order() -> None:
    """A restarted daemon's first replies (expiries decided at start, the host's first pay) found no
    companion connected: they were counted failed and dropped. Now they are put back and tried again."""
    clock = Clock()
    q = ReplyQueue("ws", clock=clock, retry_for=60.0)
    got: list[str] = []
    tries = [0]
    sleeps: list[float] = []

    async def send(batch: Sequence[Reply]) -> None:
        tries[0] += 1
        if tries[0] <= 4:
            raise RetryableError("websocket ws: no companion connected to send replies to")
        got.extend(r.text for r in batch)
        if len(got) == 5:
            q.close()

    async def fake_sleep(d: float) -> None:
        sleeps.append(d)
        clock.t += d
        await asyncio.sleep(0)

    q.put_many(reply(i) for i in range(5))
    await asyncio.wait_for(q.run(send, sleep=fake_sleep), 5.0)
    assert got == ["r0", "r1", "r2", "r3", "r4"]
    assert sleeps[:4] == [0.25, 0.5, 1.0, 2.0]
    assert q.count("failed") == 0
    assert q.count("retried") > 0
    assert q.count("taken") == q.count("sent") + q.count("failed") + q.count("retried")
    check_books(q)


async def test_after_giving_up_the_next_replies_get_their_own_wait() -> None:
    """A companion away for longer than retry_for, back, away again: a reply made then waited for nothing
    (failed at once: the failing streak was only reset by a success)."""
    clock = Clock()
    q = ReplyQueue("ws", clock=clock, retry_for=10.0)
    sent: list[str] = []

    async def send(batch: Sequence[Reply]) -> None:
        if clock.t < 30.0 or 40.0 <= clock.t < 45.0:
            raise RetryableError("no companion")
        sent.extend(r.text for r in batch)

    async def fake_sleep(d: float) -> None:
        clock.t += d
        await asyncio.sleep(0)

    q.put(reply(0))
    task = asyncio.create_task(q.run(send, sleep=fake_sleep))
    for _ in range(500):
        if q.count("failed") == 1:
            break
        await asyncio.sleep(0)
    assert q.count("failed") == 1  # r0 given up after 10 s
    clock.t = 40.0  # back at 30, away again at 40
    q.put(reply(1))
    for _ in range(500):
        if sent:
            break
        await asyncio.sleep(0)
    q.close()
    await asyncio.wait_for(task, 5.0)
    assert sent == ["r1"]
    assert q.count("failed") == 1


async def test_replies_that_cannot_go_out_for_retry_for_seconds_are_counted_failed() -> None:
    clock = Clock()
    q = ReplyQueue("ws", clock=clock, retry_for=10.0)

    async def send(batch: Sequence[Reply]) -> None:
        raise RetryableError("no companion")

    async def fake_sleep(d: float) -> None:
        clock.t += d
        await asyncio.sleep(0)

    q.put_many(reply(i) for i in range(3))
    task = asyncio.create_task(q.run(send, sleep=fake_sleep))
    for _ in range(200):
        if q.count("failed") == 3:
            break
        await asyncio.sleep(0)
    q.close()
    await asyncio.wait_for(task, 5.0)
    assert q.count("failed") == 3
    assert clock.t >= 10.0
    assert q.count("taken") == q.count("sent") + q.count("failed") + q.count("retried")
    check_books(q)


async def test_replies_that_cannot_go_out_during_a_stops_drain_stay_unsent_for_the_next_start() -> None:
    """No companion during the drain: not tried again (the drain would spin), counted failed, and still
    unsent for the progress kept after it, so that the next start tells their buyers (they were lost)."""
    q = ReplyQueue("ws", clock=Clock(), retry_for=120.0)
    tries: list[int] = []

    async def send(batch: Sequence[Reply]) -> None:
        tries.append(len(batch))
        raise RetryableError("no companion")

    q.put_many(reply(i) for i in range(3))
    q.close()
    await asyncio.wait_for(q.run(send), 5.0)
    assert sum(tries) == 3
    assert q.count("failed") == 3
    assert [o.comment for o in q.unsent()] == ["m-0", "m-1", "m-2"]
    check_books(q)


async def test_tries_without_a_connection_do_not_use_up_the_rate_limit() -> None:
    """An outside check: a restart's first replies were tried before the companion was back, each try took
    one of the platform's 5 sends per 10 s, and the companion that connected 0.4 s later waited 10 s."""
    clock = Clock()
    q = ReplyQueue("ws", limit=1, window=60.0, clock=clock)
    sent: list[str] = []
    tries = [0]

    async def send(batch: Sequence[Reply]) -> None:
        tries[0] += 1
        if tries[0] <= 3:
            raise RetryableError("no companion")
        sent.extend(r.text for r in batch)

    async def fake_sleep(d: float) -> None:
        clock.t += d
        await asyncio.sleep(0)

    q.put(reply(0))
    task = asyncio.create_task(q.run(send, sleep=fake_sleep))
    for _ in range(200):
        if sent:
            break
        await asyncio.sleep(0)
    q.close()
    await asyncio.wait_for(task, 5.0)
    assert sent == ["r0"]
    assert clock.t < 2.0  # three backoffs (0.25 + 0.5 + 1 s), not a 60 s window
    check_books(q)


def test_queue_refuses_a_reply_to_a_non_durable_outcome() -> None:
    q = ReplyQueue("a")
    with pytest.raises(NotDurable):
        q.put(reply(1, seq=None))
    assert q.depth == 0


def test_queue_sends_individually_within_the_limit() -> None:
    q = ReplyQueue("a", limit=5, window=10.0)
    q.put_many(reply(i) for i in range(3))
    assert [r.text for r in q.ready(0.0)] == ["r0", "r1", "r2"]
    assert q.count("merged") == 0


def test_queue_merges_same_room_replies_when_backlogged() -> None:
    q = ReplyQueue("a", limit=2, window=10.0, max_len=50)
    q.put_many(reply(i) for i in range(6))
    out = q.ready(0.0)
    assert [r.text for r in out] == ["r0 r1 r2 r3 r4 r5"]
    assert q.count("merged") == 5
    assert out[0].comment is None  # a merged message answers the room, not one comment
    check_books(q)


def test_queue_does_not_merge_across_rooms_or_past_max_len() -> None:
    q = ReplyQueue("a", limit=1, window=10.0, max_len=5)
    q.put_many([reply(1, "A"), reply(2, "B"), reply(3, "A"), reply(4, "A")])
    assert [r.text for r in q.ready(0.0)] == ["r1 r3"]
    assert q.ready(1.0) == []
    assert [r.text for r in q.ready(10.0)] == ["r2"]
    assert [r.text for r in q.ready(20.0)] == ["r4"]
    check_books(q)


def test_queue_sheds_oldest_when_full_and_counts_it() -> None:
    q = ReplyQueue("a", limit=1, window=10.0, maxsize=3)
    q.put_many(reply(i, room=f"room-{i}") for i in range(5))  # five rooms: nothing to merge
    assert q.count("shed") == 2
    assert q.depth == 3
    check_books(q)


def test_a_full_queue_merges_replies_to_one_room_before_it_sheds_any() -> None:
    """A flash peak decides thousands of orders in one batch before the sender runs once: with no rate
    limit, 806 of 2,000 replies were shed (the queue holds 1,000) although all went to one room."""
    q = ReplyQueue("a", maxsize=100, max_len=200)
    q.put_many(reply(i) for i in range(2000))
    assert q.count("shed") == 0
    assert q.depth <= 100
    texts = [r.text for r in q.ready(0.0)]
    assert " ".join(texts).split() == [f"r{i}" for i in range(2000)]  # every reply, in order
    check_books(q)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("AB"), st.floats(0.0, 3.0)), max_size=80),
       st.integers(1, 4), st.integers(2, 30))
def test_queue_books_balance_and_limit_holds(puts: list[tuple[str, float]], limit: int, maxsize: int) -> None:
    q = ReplyQueue("a", limit=limit, window=5.0, maxsize=maxsize, max_len=20)
    now = 0.0
    sent_at: list[float] = []
    for i, (room, dt) in enumerate(puts):
        now += dt
        q.put(reply(i, room))
        sent_at.extend([now] * len(q.ready(now)))
        check_books(q)
    for t in sent_at:
        assert sum(1 for u in sent_at if t <= u < t + 5.0) <= limit


async def test_run_respects_the_adapters_rate_limit_with_an_injected_clock() -> None:
    class Chatty(Adapter):
        type = "chatty"
        can_reply = True
        reply_limit = 2
        reply_window = 10.0

    clock = Clock()
    q = ReplyQueue.for_adapter(Chatty({}, name="chat"), clock=clock, max_len=2)
    sends: list[tuple[float, list[str]]] = []
    done = asyncio.Event()

    async def send(batch: Sequence[Reply]) -> None:
        sends.append((clock.t, [r.text for r in batch]))
        if sum(len(b) for _, b in sends) == 5:
            q.close()
            done.set()

    async def fake_sleep(d: float) -> None:
        clock.t += d
        await asyncio.sleep(0)

    q.put_many(reply(i) for i in range(5))
    await asyncio.wait_for(q.run(send, sleep=fake_sleep), 5.0)
    assert sends == [(0.0, ["r0", "r1"]), (10.0, ["r2", "r3"]), (20.0, ["r4"])]
    check_books(q)


async def test_run_wakes_on_put_and_survives_a_failing_send() -> None:
    q = ReplyQueue("a")
    got: list[str] = []
    first = asyncio.Event()
    second = asyncio.Event()

    async def send(batch: Sequence[Reply]) -> None:
        if not first.is_set():
            first.set()
            raise ConnectionError("platform said no")
        got.extend(r.text for r in batch)
        second.set()

    task = asyncio.create_task(q.run(send))
    q.put(reply(1))
    await asyncio.wait_for(first.wait(), 5.0)
    q.put(reply(2))
    await asyncio.wait_for(second.wait(), 5.0)
    q.close()
    await asyncio.wait_for(task, 5.0)
    assert got == ["r2"]
    assert q.count("failed") == 1
    assert q.count("sent") == 1
    assert q.count("taken") == 2
    check_books(q)


async def test_a_closed_queue_drains_within_the_rate_limit_and_sheds_what_is_left_when_cancelled() -> None:
    clock = Clock()
    q = ReplyQueue("a", limit=1, window=60.0, clock=clock, max_len=2)
    q.put_many([reply(1, "A"), reply(2, "B"), reply(3, "C")])
    sent: list[str] = []
    slept: list[float] = []

    async def send(batch: Sequence[Reply]) -> None:
        sent.extend(r.text for r in batch)
        q.close()

    waiting = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the drain waits out the rate limit; the daemon ends it
        slept.append(seconds)
        waiting.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(q.run(send, sleep=sleep))
    await asyncio.wait_for(waiting.wait(), 5.0)
    assert sent == ["r1"]
    assert slept == [60.0]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert q.count("shed") == 2
    check_books(q)
    # Their buyers are still untold for the progress kept after the drain: the next start tells them.
    assert [o.comment for o in q.unsent()] == ["m-2", "m-3"]


async def test_a_closed_queue_sends_what_the_rate_limit_allows_during_the_drain() -> None:
    # A SIGTERM closed the queues and shed at once what the limit held back (413 replies of a plugin's
    # companion, 1 ms after the signal), although the docs give them drain_seconds.
    clock = Clock()
    q = ReplyQueue("a", limit=2, window=1.0, clock=clock, max_len=2)
    q.put_many([reply(i, str(i)) for i in range(1, 6)])
    sent: list[str] = []

    async def send(batch: Sequence[Reply]) -> None:
        sent.extend(r.text for r in batch)
        q.close()

    async def sleep(seconds: float) -> None:
        clock.t += seconds

    await asyncio.wait_for(q.run(send, sleep=sleep), 5.0)
    assert sent == ["r1", "r2", "r3", "r4", "r5"]
    assert q.count("shed") == 0
    check_books(q)


def test_repr_shows_state() -> None:
    q = ReplyQueue("chat", limit=3, window=30.0)
    q.put(reply(1))
    assert "1 pending" in repr(q)
    assert "chat" in repr(q)


HOODIE = Path(__file__).resolve().parent.parent / "core" / "parser_hoodie.toml"


def test_needs_variant_of_an_options_product_asks_for_the_missing_option() -> None:
    c = config.load(HOODIE)
    en = Replier(config.loads(HOODIE.read_text(encoding="utf-8") + '[replies]\nlanguage = "en"\n',
                              file="hoodie.toml"))
    o = outcome(Status.REJECTED, sku="hoodie", reason=Reason.NEEDS_VARIANT)
    black = Comment("douyin", "7312", "m-1", "u-42", "Ann", "A12 黑 +1", TS)
    (_, reply), = en.plan([o], {black.key: black})
    assert "comes in size M or L: which one?" in reply.text
    nothing = Comment("douyin", "7312", "m-1", "u-42", "Ann", "A12 +1", TS)
    (_, reply), = Replier(c).plan([o], {nothing.key: nothing})
    assert "colour black、pink; size M、L" in reply.text


def test_an_outcome_without_its_comment_names_the_buyer_from_remembered_names(zh: Replier) -> None:
    paid = outcome(Status.PAID, comment=None, user="tw1")
    [(_, reply)] = zh.plan([paid], {}, {"tw1": "Tina"})
    assert reply.text.startswith("@Tina ")
    [(_, unnamed)] = zh.plan([paid], {})
    assert unnamed.text.startswith("@tw1 ")  # only when no name was ever seen


def test_an_outcome_of_an_order_names_the_buyer_of_that_order_not_the_latest_name_of_the_user_id(
        zh: Replier) -> None:
    """The same user id on two platforms (or a viewer who renamed): the order's own name, then the user's."""
    paid = outcome(Status.PAID, comment=None, user="10086", order="o-000001")
    [(_, reply)] = zh.plan([paid], {}, {"10086": "李四"}, {"o-000001": "张三"}.get)
    assert reply.text.startswith("@张三 ")
    [(_, other)] = zh.plan([paid], {}, {"10086": "李四"}, {}.get)
    assert other.text.startswith("@李四 ")


@pytest.mark.parametrize(("name", "shown"), [
    ("  ", "u-1"), ("", "u-1"), ("张\n三", "张 三"), ("Tina\r\n\tW", "Tina W"), ("abc\u202edef", "abc def"),
    ("\u2067x\u2069", "x"), ("\u200b", "u-1"), ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"), ("  王  老板 ", "王 老板"),
])
def test_a_display_name_is_shown_without_what_would_break_a_reply_or_the_page(name: str, shown: str) -> None:
    assert shown_name(name, "u-1") == shown


def test_a_reply_to_a_buyer_with_a_blank_or_multiline_name_mentions_something_readable(zh: Replier) -> None:
    c = Comment("douyin", "7312", "m-1", "u-1", "老\n王\u202e", "+1", TS)
    [(_, reply)] = zh.plan([outcome(comment="m-1", user="u-1")], {c.key: c})
    assert reply.text.startswith("@老 王 ")
    assert "\n" not in reply.text
    blank = Comment("douyin", "7312", "m-2", "u-2", " \t ", "+1", TS)
    [(_, r2)] = zh.plan([outcome(comment="m-2", user="u-2")], {blank.key: blank})
    assert r2.text.startswith("@u-2 ")


def test_an_adapter_language_overrides_the_replies_language(sample_config_path: Path) -> None:
    c = cfg('[replies]\ntimezone = "UTC"\n[replies.templates]\nreserved = "留 {product}"\n', sample=sample_config_path)
    assert Replier(c).render(outcome(), "Tina") == "@Tina 留 Free-range eggs, box of 10"
    en = Replier(c, language="en")
    assert en.language == "en"
    text = en.render(outcome(), "Tina")
    assert text is not None
    assert text.startswith("@Tina reserved")  # the zh overrides are not applied to English replies
