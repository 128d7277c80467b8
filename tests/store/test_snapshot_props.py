"""Snapshots: the state from a snapshot plus the tail equals the state from a full replay, wherever the
snapshots are taken and wherever the process is killed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.core import ledger as ledger_module
from livecart.core.control import Kind
from livecart.core.errors import ControlError, JournalError
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, ParseResult
from livecart.store import codec
from livecart.store.codec import Entry
from tests.store.props import CAT, HEADER, item, parsed

control = st.one_of(
    st.tuples(st.just(Kind.PAY), st.integers(1, 12).map(lambda n: [f"o-{n:06d}"])),
    st.tuples(st.just(Kind.CANCEL), st.integers(1, 12).map(lambda n: [f"o-{n:06d}"])),
    st.tuples(st.just(Kind.RESTOCK), st.sampled_from([["egg", None, 2], ["tea", "s", 1]])),
    st.tuples(st.just(Kind.PRESALE), st.sampled_from([["egg", None, 0], ["tea", "l", 2]])),
    st.tuples(st.just(Kind.LIMIT), st.sampled_from([["egg", 1], ["tea", 0]])),
    st.tuples(st.just(Kind.FEATURE), st.sampled_from([["tea"], [None], ["egg"]])),
    st.tuples(st.just(Kind.PAUSE), st.sampled_from([[True], [False]])),
    st.tuples(st.just(Kind.EXPIRE), st.just([])),
)
# (time step, a comment (user, id, parse) or a control)
event = st.tuples(st.integers(0, 20), st.one_of(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 25), parsed), control))

# A busier sale: mostly buys from more buyers, so that orders are made, paid, cancelled, expired and promoted
# (split too) between the snapshots; the events above make few orders, and fewer paid ones.
buy = st.builds(lambda items: ParseResult(Intent.BUY, tuple(items)), st.lists(item, min_size=1, max_size=2))
buyer = st.sampled_from(["a", "b", "c", "d", "e"])
pay = st.tuples(st.just(Kind.PAY), st.integers(1, 6).map(lambda n: [f"o-{n:06d}"]))
busy_event = st.tuples(st.integers(0, 12), st.one_of(
    st.tuples(buyer, st.integers(0, 10_000), buy), st.tuples(buyer, st.integers(0, 10_000), buy),
    st.tuples(buyer, st.integers(0, 10_000), parsed), control, pay))


def play(events: list[tuple[int, Any]]) -> list[Entry]:
    """Journal entries as the engine writes them for ``events`` (refused controls leave no entry)."""
    now = [0.0]
    led = Ledger(CAT, hold_seconds=30.0, featured="egg", clock=lambda: now[0])
    rows: list[Entry] = []
    for step, ev in events:
        now[0] += step
        seq = led.seq
        if len(ev) == 3:
            user, n, pr = ev
            c = Comment("p", "r", f"m{n}", user, f"买家{user.upper()}", "", 0.0)  # a display name, not the id
            led.decide(c, pr)
            if led.seq != seq:
                rows.append(codec.comment_row(led.seq, now[0], c, pr))
            continue
        kind, args = ev
        try:
            codec.apply_data(led, kind, args)
        except JournalError as exc:  # a refused control: the engine journals nothing for it
            if not isinstance(exc.__cause__, ControlError):
                raise
            continue
        if led.seq != seq:
            rows.append(codec.control_row(led.seq, now[0], kind, args))
    # Through JSON, as a store gives them back.
    return [(s, t, k, orjson.loads(orjson.dumps(d))) for s, t, k, d in rows]


def norm(state: dict[str, Any]) -> dict[str, Any]:
    """A ledger state with its id sets as sets (a set's order is its history, not its content)."""
    if "dedupe" in state:
        return state
    return {**state, "seen": {(p, r): set(ids) for p, r, ids in state["seen"]}}


FIELDS = ("id", "user", "unit", "qty", "status", "comment", "platform", "room", "created", "deadline")


def columns(state: dict[str, Any]) -> dict[str, list[Any]]:
    """The orders of a ledger state (format 6: fixed fields in sealed parts and a tail) as a list per field."""
    o = state["orders"]
    parts = [orjson.loads(bytes(p)) for p in o["sealed"]] + [o["tail"]]
    fixed = {f: [v for p in parts for v in p[f]] for f in ledger_module._FIXED}
    return {f: fixed[f] if f in fixed else o[f] for f in FIELDS}


def held(led: Ledger) -> dict[str, dict[str, int]]:
    """The units each buyer holds of each product (what formats 1-5 stored), buyers with none left out."""
    return {sku: {user: n for user, n in h.items() if n} for sku, h in led._held.items()}


def as_format_5(led: Ledger) -> dict[str, Any]:
    """``led``'s state as snapshot format 5 had it: a list per field of all orders, the expiry heap by fields,
    the units each buyer holds."""
    state = led.state()
    e = state["expiry"]
    return {**state, "orders": columns(state), "held": {sku: dict(h) for sku, h in led._held.items()},
            "expiry": {"deadline": [r[0] for r in e], "n": [r[1] for r in e], "order": [r[2] for r in e]}}


def as_format_4(led: Ledger) -> dict[str, Any]:
    """``led``'s state as snapshot format 4 had it: a list per order and per expiry entry, not per field."""
    state = as_format_5(led)
    o = state["orders"]
    return {**state, "orders": [list(r) for r in zip(*(o[f] for f in FIELDS), strict=True)],
            "expiry": [list(r) for r in led.state()["expiry"]]}


def nameless(state: dict[str, Any]) -> dict[str, Any]:
    """A ledger state without its orders' buyer names (formats before 7 kept none), sealed parts decoded."""
    o = state["orders"]
    parts = [{k: v for k, v in orjson.loads(bytes(p)).items() if k != "name"} for p in o["sealed"]]
    tail = {k: v for k, v in o["tail"].items() if k != "name"}
    return {**state, "orders": {**o, "sealed": parts, "tail": tail}, "report": None}


def same(a: Ledger, b: Ledger, *, names: bool = True) -> None:
    """``a`` and ``b`` are the same ledger; without ``names``, but for the buyer names of their orders."""
    if not names:
        assert nameless(norm(a.state())) == nameless(norm(b.state()))
        assert held(a) == held(b)
        assert a.snapshot() == b.snapshot()
        return
    assert norm(a.state()) == norm(b.state())
    assert [a.name_of(u) for u in a.users()] == [b.name_of(u) for u in b.users()]
    assert held(a) == held(b)
    assert a.snapshot() == b.snapshot()
    assert list(a.orders()) == list(b.orders())


@contextmanager
def small_parts() -> Iterator[None]:
    """Sealed parts of 1 order and JSON pieces of 2 items, so that the few orders of a test (rarely over 3: the
    catalogue is small) have several."""
    was = ledger_module.ORDER_SEGMENT, codec._PIECE
    ledger_module.ORDER_SEGMENT, codec._PIECE = 1, 2
    try:
        yield
    finally:
        ledger_module.ORDER_SEGMENT, codec._PIECE = was


@settings(max_examples=300, deadline=None)
@given(st.lists(event, min_size=1, max_size=60), st.data())
def test_snapshot_plus_tail_equals_full_replay(events: list[tuple[int, Any]], data: st.DataObject) -> None:
    with small_parts():
        check_snapshot_plus_tail(events, data)


@settings(max_examples=200, deadline=None)
@given(st.lists(busy_event, min_size=20, max_size=80), st.data())
def test_snapshot_plus_tail_equals_full_replay_busy(events: list[tuple[int, Any]], data: st.DataObject) -> None:
    with small_parts():
        check_snapshot_plus_tail(events, data)


def check_snapshot_plus_tail(events: list[tuple[int, Any]], data: st.DataObject) -> None:
    rows = play(events)
    # Snapshots at random points, the process killed at a random point after some of them.
    kill = data.draw(st.integers(0, len(rows)), label="kill")
    cuts = sorted(set(data.draw(st.lists(st.integers(0, kill), max_size=3), label="snapshots")))
    snapshots: dict[int, bytes] = {}
    older: dict[int, dict[int, bytes]] = {4: {}, 5: {}}
    # One ledger going on through every cut, as a running engine does: what it seals for one snapshot it
    # gives again to the next, and each of its snapshots equals that of a ledger rebuilt at the same point.
    # It also seals its newest segment of orders after some events, as the daemon does after each batch.
    seals = set(data.draw(st.lists(st.integers(0, kill), max_size=12), label="seals"))
    going = codec.rebuild_entries(HEADER, [])
    done = 0
    for at in cuts:
        fresh = codec.rebuild_entries(HEADER, rows[:at])
        for i, (seq, ts, kind, d) in enumerate(rows[done:at], done):
            going.clock = lambda ts=ts: ts  # type: ignore[misc]
            codec.apply_data(going, kind, d)
            assert going.seq == seq
            if i in seals:
                going.seal_some()
        done = at
        state = going.state()
        assert state == fresh.state()
        snapshots[at] = codec.encode_snapshot(state)
        older[4][at] = codec.encode_snapshot(as_format_4(fresh))
        older[5][at] = codec.encode_snapshot(as_format_5(fresh))
    full = codec.rebuild_entries(HEADER, rows[:kill])
    if snapshots:
        at = max(snapshots)
        resumed = codec.resume(HEADER, codec.SNAPSHOT_VERSION, snapshots[at], rows[at:kill])
        # The report a snapshot carries (what `livecart report` reads when nothing follows it) is the
        # report of the ledger restored from it.
        restored = codec.resume(HEADER, codec.SNAPSHOT_VERSION, snapshots[at], [])
        assert codec.snapshot_report(snapshots[at]) == restored.snapshot()
        # Snapshots written by livecart before format 6 resume to the same ledger.
        # (they kept no buyer names: orders restored from them name their buyers by user id).
        for version, bodies in older.items():
            same(codec.resume(HEADER, version, bodies[at], rows[at:kill]), resumed, names=False)
    else:
        resumed = codec.rebuild_entries(HEADER, rows[:kill])
    same(resumed, full)
    # And both go on deciding alike: the rest of the journal replays onto either.
    rest = rows[kill:]
    for led in (resumed, full):
        clock = [0.0]
        led.clock = lambda clock=clock: clock[0]  # type: ignore[misc]
        for seq, ts, kind, d in rest:
            clock[0] = ts
            codec.apply_data(led, kind, d)
            assert led.seq == seq
    same(resumed, full)
