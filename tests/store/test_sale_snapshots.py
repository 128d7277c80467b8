"""Snapshots of a JetStream sale (livecart.store.jetstream): the state from a snapshot plus the log's tail
equals the state from replaying the whole log, wherever the snapshot is taken; and the engine writes them
into the cluster, where a new process, a standby and ``report`` start from them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.cli.cluster import status as cluster_status
from livecart.config import loads
from livecart.core.control import Kind, parse_params
from livecart.core.parser import Parser
from livecart.runtime.cluster import ClusterEngine
from livecart.store import codec
from livecart.store import jetstream as js
from livecart.store.codec import SNAPSHOT_VERSION, Header, catalogue_json
from livecart.store.jetstream import SaleLog, SaleState, load_state
from tests.store.test_jetstream import CONFIG, _cfg, _comment, _until

CFG = _cfg("nats://127.0.0.1:1", "x", stock=4)
PARSE = Parser.from_config(CFG).parse
HEADER = Header(CFG.catalogue, catalogue_json(CFG.catalogue), 30.0, "egg", 1000.0)

# One log message: a comment batch (buy / cancel / chatter from a few users, ids that repeat as when
# several processes feed), a control, a sweep, a mark or a takeover; with a time step.
comment = st.tuples(st.integers(0, 30), st.sampled_from(["a", "b", "c"]),
                    st.sampled_from(["egg +1", "egg +2", "cancel", "hello", "鸡蛋 +1"]))
message = st.one_of(
    st.lists(comment, min_size=1, max_size=4).map(lambda cs: ("c", cs)),
    st.sampled_from([("k", [Kind.RESTOCK.value, ["egg", None, 2]]), ("k", [Kind.PAUSE.value, [True]]),
                     ("k", [Kind.PAUSE.value, [False]]), ("k", [Kind.PAY.value, ["o-000001"]]),
                     ("k", [Kind.CANCEL.value, ["o-000002"]]), ("k", [Kind.LIMIT.value, ["egg", 2]])]),
    st.just(("x", None)), st.just(("m", None)), st.just(("t", None)),
)
log_ = st.lists(st.tuples(st.integers(0, 25), message), min_size=1, max_size=40)


def _messages(events: list[tuple[int, tuple[str, Any]]]) -> list[tuple[int, float, bool, bytes]]:
    out: list[tuple[int, float, bool, bytes]] = []
    t = 1000.0
    for seq, (step, (kind, data)) in enumerate(events, start=1):
        t += step
        if kind == "c":
            body = js.comments_body([_comment(n, text, user) for n, user, text in data])
        elif kind == "k":
            body = orjson.dumps([js.CONTROL, data[0], data[1]])
        elif kind == "m":
            body = orjson.dumps([js.MARK, max(0, seq - 2)])
        else:
            body = orjson.dumps([js.SWEEP] if kind == "x" else [js.TAKEOVER, f"d{seq}"])
        out.append((seq, t, kind in ("x", "m", "t"), body))
    return out


def _norm(s: SaleState) -> dict[str, Any]:
    d = s.snapshot_state()
    d["ledger"]["seen"] = {(p, r): set(ids) for p, r, ids in d["ledger"]["seen"]}
    return d


@settings(max_examples=200, deadline=None)
@given(log_, st.data())
def test_snapshot_plus_tail_equals_full_replay(events: list[tuple[int, tuple[str, Any]]],
                                               data: st.DataObject) -> None:
    msgs = _messages(events)
    cut = data.draw(st.integers(0, len(msgs)), label="snapshot after message")
    full = SaleState(HEADER, PARSE)
    full.record = []
    full_out = [full.apply(*m) for m in msgs]
    # What it recorded is the journal a SQLite run writes: replayed, the same ledger (report --html).
    journal = codec.rebuild_entries(HEADER, [(q, t, k, orjson.loads(orjson.dumps(d))) for q, t, k, d in full.record])
    assert journal.snapshot() == full.ledger.snapshot()
    assert list(journal.orders()) == list(full.ledger.orders())
    head = SaleState(HEADER, PARSE)
    for m in msgs[:cut]:
        head.apply(*m)
    resumed = SaleState.restore(HEADER, PARSE, SNAPSHOT_VERSION, head.snapshot_body())
    tail_out = [resumed.apply(*m) for m in msgs[cut:]]
    assert _norm(resumed) == _norm(full)
    assert tail_out == full_out[cut:]  # the same outcomes, to the field
    assert resumed.ledger.snapshot() == full.ledger.snapshot()
    assert list(resumed.ledger.orders()) == list(full.ledger.orders())
    # What a new decider would announce from either is the same.
    assert resumed.take_unannounced(full.applied, resumed.announced) == \
        full.take_unannounced(full.applied, full.announced)


def test_a_snapshot_of_a_newer_format_is_refused() -> None:
    from livecart.core.errors import JournalError

    with pytest.raises(JournalError, match="upgrade livecart"):
        SaleState.restore(HEADER, PARSE, SNAPSHOT_VERSION + 1, SaleState(HEADER, PARSE).snapshot_body())
    with pytest.raises(JournalError, match="cannot be restored"):
        SaleState.restore(HEADER, PARSE, SNAPSHOT_VERSION, b'{"ledger": {}}')


@pytest.mark.usefixtures("cleanup")
async def test_the_decider_writes_snapshots_and_new_readers_start_from_them(nats_server: str, sale: str) -> None:
    cfg = loads(CONFIG.format(server=nats_server, sale=sale, stock=3, hold=0)
                .replace("[storage]\n", "[storage]\nsnapshot_events = 5\n"))
    a = await ClusterEngine.open(cfg, lease_seconds=5.0)
    try:
        await a.submit([_comment(i) for i in range(1, 8)])
        await _until(lambda: a.snapshots_written > 0, "a snapshot")
        await a.control(parse_params("restock", ["egg", "2"]))
        await a.submit([_comment(i) for i in range(8, 12)])
        await a.wait_applied(await a.log.last_seq())
        want = a.snapshot()
        # A process that starts now (a standby) begins at the snapshot, not at the start of the log.
        b = await ClusterEngine.open(cfg, lease_seconds=5.0)
        try:
            assert b.snapshot_seq > 0
            assert b.snapshot() == want
        finally:
            await b.close()
    finally:
        await a.close()
    sale_log = await SaleLog.open([nats_server], sale)
    try:
        info = await sale_log.snapshots.info()
        assert info is not None
        assert info.version == SNAPSHOT_VERSION
        shown = (await cluster_status([nats_server], sale))["snapshot"]
        assert shown["seq"] == info.seq
        assert shown["format"] == SNAPSHOT_VERSION
        from_snap = await load_state(sale_log, PARSE)
        from_start = await load_state(sale_log, PARSE, snapshot=False)
        # A snapshot beyond the log's end (the stream deleted and started again, the bucket kept) is not used.
        end = await sale_log.last_seq()
        ahead = SaleState.restore(from_start.header, PARSE, SNAPSHOT_VERSION, from_start.snapshot_body())
        ahead.applied = end + 100
        await sale_log.snapshots.write(end + 100, SNAPSHOT_VERSION, ahead.snapshot_body())
        beyond = await load_state(sale_log, PARSE)
        assert beyond.applied == end
    finally:
        await sale_log.close()
    assert from_snap.ledger.snapshot() == from_start.ledger.snapshot() == want
    assert list(from_snap.ledger.orders()) == list(from_start.ledger.orders())
    assert from_snap.names == from_start.names
