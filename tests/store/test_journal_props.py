"""Any prefix of the journal, rebuilt, then the whole input replayed, gives the state of a clean run."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.core.ledger import Ledger
from livecart.core.records import Comment, ParseResult
from livecart.store import journal as jr
from tests.store.props import CAT, HEADER, parsed

stream = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), parsed), min_size=1, max_size=40)


def ledger() -> Ledger:
    return Ledger(CAT, hold_seconds=30.0, featured="egg", clock=lambda: 0.0)


@settings(max_examples=200, deadline=None)
@given(stream, st.data())
def test_prefix_of_journal_then_full_replay_equals_clean_run(
        events: list[tuple[str, ParseResult]], data: st.DataObject) -> None:
    # Comment ids repeat now and then: the input itself contains replays.
    comments = [(Comment("p", "r", f"m{n % 30}", user, user, "", 0.0), pr) for n, (user, pr) in enumerate(events)]
    clean = ledger()
    entries = []
    for c, pr in comments:
        seq = clean.seq
        clean.decide(c, pr)
        if clean.seq != seq:
            entries.append(jr.comment_row(clean.seq, 0.0, c, pr))
    # Through JSON, as the file holds it.
    stored = [(s, t, k, orjson.dumps(d)) for s, t, k, d in entries]
    cut = data.draw(st.integers(0, len(stored)), label="prefix")
    again = jr.rebuild(HEADER, stored[:cut])
    assert again.seq == cut
    for c, pr in comments:
        again.decide(c, pr)
    assert again.snapshot() == clean.snapshot()
    assert list(again.orders()) == list(clean.orders())
