"""What the benchmark cases share: build probes, percentiles, peak memory, parsing a scenario once.

Imported by :mod:`livecart.bench.runner` and the case modules alike, so that the cases need not import the
runner that dispatches them.
"""

from __future__ import annotations

import importlib
import resource
from collections.abc import Sequence
from typing import Any

from livecart.bench.scenario import Label, Scenario
from livecart.core.records import Intent, ParseResult
from livecart.core.settings import Config


class Unavailable(Exception):
    """The code a case needs is not in this build (yet)."""


def percentiles(samples: Sequence[float], ps: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles of ``samples`` (seconds) as milliseconds, rounded to 3 decimals."""
    if not samples:
        return {f"p{p:g}": None for p in ps}
    s = sorted(samples)
    out: dict[str, float | None] = {}
    for p in ps:
        rank = max(1, -(-len(s) * p // 100))  # ceil(n * p / 100), 1-based
        out[f"p{p:g}"] = round(s[int(rank) - 1] * 1000, 3)
    return out


def peak_rss_mb(*, children: bool = False) -> float:
    """Peak resident set size of this process (and, if asked, of its waited-for children) in MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        kb = max(kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(kb / 1024, 1)


def _import(module: str, attr: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise Unavailable(f"{module} is not in this build") from exc
        raise
    try:
        return getattr(mod, attr)
    except AttributeError as exc:
        raise Unavailable(f"{module}.{attr} is not in this build") from exc


def label_result(lab: Label) -> ParseResult:
    from livecart.core.records import Item

    if lab.intent in (Intent.BUY, Intent.CANCEL) and lab.sku is not None:
        return ParseResult(lab.intent, (Item(lab.sku, lab.variant, max(1, lab.qty)),))
    return ParseResult(lab.intent)


def parse_all(scenario: Scenario, cfg: Config) -> tuple[list[ParseResult], str]:
    """Every comment parsed once by the real parser (or, where it is missing, the generator's labels)."""
    try:
        parser_cls = _import("livecart.core.parser", "Parser")
    except Unavailable:
        return [label_result(lab) for lab in scenario.labels], "labels"
    parser = parser_cls.from_config(cfg)
    featured = cfg.stream.featured
    return [parser.parse(c.text, featured) for c in scenario.comments], "parser"
