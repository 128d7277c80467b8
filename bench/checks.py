"""The checks every engine case must pass, computed from the SQLite journal afterwards, not from counters.

The journal stores the ledger's inputs (``events`` rows, see :mod:`livecart.store.journal`); the outcomes are
recovered by replaying them through a fresh ledger with the journal's own pure :func:`livecart.store.journal.rebuild`.
Those outcomes are then accounted for independently of the ledger's internals:

``oversold``
    walking the outcomes in order, units held per unit (``reserved`` / ``promoted`` add, ``cancelled`` /
    ``expired`` of a held order subtract, ``paid`` keeps) may never exceed the unit's stock, and units
    queued as presale may never exceed its presale cap; ``oversold`` is the largest excess seen, summed
    over units (0 when the invariant held at every step).
``lost``
    outcomes the engine acknowledged (returned from ``submit``) that the journal does not reproduce, plus
    buy comments (as the parser reads them) with no outcome in the journal at all.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livecart.bench.scenario import Scenario
from livecart.core.records import Intent, Outcome, ParseResult, Status
from livecart.core.settings import Config

_HELD_BY = (Status.RESERVED, Status.PROMOTED)


@dataclass
class JournalReport:
    """What the journal holds, and the two checks."""

    events: int = 0
    comments: int = 0
    outcomes: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    oversold: int = 0
    over_presale: int = 0
    lost_acked: int = 0
    buys_without_outcome: int = 0
    missing_comments: int = 0

    @property
    def lost(self) -> int:
        return self.lost_acked + self.buys_without_outcome

    def summary(self) -> dict[str, Any]:
        return {"events": self.events, "comments": self.comments, "outcomes": self.outcomes,
                "statuses": self.statuses, "over_presale": self.over_presale, "lost_acked": self.lost_acked,
                "buys_without_outcome": self.buys_without_outcome, "missing_comments": self.missing_comments}

    def __repr__(self) -> str:
        return (f"<JournalReport {self.events:,} events, {self.outcomes:,} outcomes, oversold={self.oversold} "
                f"lost={self.lost}>")


def _key(o: Outcome) -> tuple[Any, ...]:
    return (o.comment, o.order, o.sku, o.variant, o.qty, o.status, o.reason, o.position)


def account(outcomes: Iterable[Outcome], units: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """``(oversold, over_presale)``: the largest excess of held units over stock and of queued units over
    the presale cap seen while walking ``outcomes`` in order, summed over units."""
    held: Counter[str] = Counter()
    queued: Counter[str] = Counter()
    state: dict[str, tuple[str, bool]] = {}  # order -> (unit key, held?)
    worst_held: Counter[str] = Counter()
    worst_queued: Counter[str] = Counter()
    for o in outcomes:
        if o.sku is None or o.order is None:
            continue
        key = o.sku if o.variant is None else f"{o.sku}/{o.variant}"
        s = o.status
        if s is Status.RESERVED:
            held[key] += o.qty
            state[o.order] = (key, True)
        elif s is Status.PRESALE:
            queued[key] += o.qty
            state[o.order] = (key, False)
        elif s is Status.PROMOTED:
            # Whole (same order id) or split (a new order id for the units that came back): either way
            # ``qty`` units leave the queue and become held.
            queued[key] -= o.qty
            held[key] += o.qty
            state[o.order] = (key, True)
        elif s in (Status.CANCELLED, Status.EXPIRED):
            was = state.get(o.order)
            if was is not None and was[1]:
                held[key] -= o.qty
            elif was is not None:
                queued[key] -= o.qty
        if held[key] > worst_held[key]:
            worst_held[key] = held[key]
        if queued[key] > worst_queued[key]:
            worst_queued[key] = queued[key]
    oversold = sum(max(0, worst_held[k] - units.get(k, (0, 0))[0]) for k in worst_held)
    over_presale = sum(max(0, worst_queued[k] - units.get(k, (0, 0))[1]) for k in worst_queued)
    return oversold, over_presale


def read_events(path: Path) -> tuple[Any, list[tuple[int, float, str, bytes]]]:
    """The journal's header and rows, read with the standard library's sqlite3 (read only)."""
    from livecart.store.codec import Header, catalogue_from_json

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = {str(k): str(v) for k, v in con.execute("SELECT key, value FROM meta")}
        rows = [(int(s), float(t), str(k), bytes(b))
                for s, t, k, b in con.execute("SELECT seq, ts, kind, body FROM events ORDER BY seq")]
    finally:
        con.close()
    header = Header(catalogue_from_json(meta["catalogue"]), meta["catalogue"], float(meta["hold_seconds"]),
                    meta["featured"] or None, float(meta["created"]))
    return header, rows


def check_journal(cfg: Config, scenario: Scenario, acked: Sequence[Outcome],
                  parsed: Sequence[ParseResult] | None = None, *,
                  comments: Sequence[Any] | None = None) -> JournalReport:
    """Replay ``cfg``'s journal and check it against what was acknowledged and what was sent.

    ``parsed`` (parallel to the scenario's comments, or to ``comments`` when a case sent only some) says which
    comments are buys; by default the real parser reads them again, outside any timing.
    """
    import orjson

    from livecart.store.codec import COMMENT, rebuild

    sent = list(scenario.comments if comments is None else comments)
    if parsed is None:
        from livecart.bench.common import parse_all

        parsed = parse_all(scenario, cfg)[0] if comments is None else None
    header, rows = read_events(cfg.storage.path)
    replayed: list[Outcome] = []
    rebuild(header, rows, on_outcomes=replayed.extend)
    report = JournalReport(events=len(rows), outcomes=len(replayed))
    report.statuses = dict(Counter(o.status.value for o in replayed))
    report.oversold, report.over_presale = account(replayed, scenario.units)
    processed = set()
    for _, _, kind, body in rows:
        if kind == COMMENT:
            platform, room, cid = orjson.loads(body)[:3]
            processed.add((platform, room, cid))
    report.comments = len(processed)
    report.missing_comments = sum(1 for c in sent if c.key not in processed)
    have = Counter(_key(o) for o in replayed)
    want = Counter(_key(o) for o in acked)
    report.lost_acked = sum((want - have).values())
    with_outcome = {o.comment for o in replayed if o.comment is not None}
    if parsed is not None:
        for c, r in zip(sent, parsed, strict=True):
            if r.intent is Intent.BUY and r.items and c.id not in with_outcome:
                report.buys_without_outcome += 1
    return report


__all__ = ["JournalReport", "account", "check_journal", "read_events"]
