"""CPU time of one ``Ledger.decide``: a reservation against a rejection (sold out), in nanoseconds.

``python -m livecart.bench.decide_bench [--n N]`` prints one JSON object. CPU time of this process
(``time.process_time``), best of three, so that other processes on a shared machine move it less than they
move wall-clock figures. A flash sale is mostly rejections: one should cost well under a reservation
(an order, its id, the expiry heap) - issue #17.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import orjson

from livecart.core.catalogue import Catalogue, Product
from livecart.core.ledger import Ledger
from livecart.core.records import Comment, Intent, Item, ParseResult
from livecart.runtime.pipeline import tune_gc


def per_decide(stock: int, n: int) -> float:
    """Nanoseconds of CPU per ``decide`` for ``n`` one-unit buys of a product with ``stock`` units."""
    led = Ledger(Catalogue((Product("egg", "Eggs", stock=stock),)), clock=lambda: 1.0, hold_seconds=1800)
    pr = ParseResult(Intent.BUY, (Item("egg", None, 1),))
    comments = [Comment("douyin", "7312", f"m-{i}", f"u-{i}", "n", "t", 1.0) for i in range(n)]
    tune_gc()
    decide = led.decide
    t = time.process_time()
    for c in comments:
        decide(c, pr)
    return (time.process_time() - t) / n * 1e9


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livecart.bench.decide_bench", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="decisions per measurement")
    opts = p.parse_args(argv)
    reserve = min(per_decide(10**9, opts.n) for _ in range(3))
    reject = min(per_decide(0, opts.n) for _ in range(3))
    out = {"bench": "decide", "n": opts.n, "reservation_ns": round(reserve), "rejection_ns": round(reject),
           "rejection_over_reservation": round(reject / reserve, 2)}
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
