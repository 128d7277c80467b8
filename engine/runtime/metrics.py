"""Counters, gauges and summaries with labels, exposed in the Prometheus text format (version 0.0.4).

Counting stays ours and tiny: an increment is a dict update, cheap enough for hot paths that count per
batch (prometheus_client's own metric objects take a lock per increment). Exposition is prometheus_client's:
:meth:`Registry.render` hands the values to it as one custom collector, so escaping, naming (a counter
``x_total`` is the family ``x``) and the text format follow the library that defines them. No I/O here;
the status server renders on request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

Labels = tuple[tuple[str, str], ...]


@dataclass
class Metric:
    name: str
    help: str
    kind: str  # "counter" | "gauge"
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] = value

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def total(self) -> float:
        return sum(self.values.values())


@dataclass
class Summary:
    """A count and a sum of observations (a Prometheus summary without quantiles), e.g. commit seconds."""

    name: str
    help: str
    kind: str = "summary"
    count: int = 0
    sum: float = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value


class Registry:
    """A set of metrics plus collectors (callables run at render time to refresh gauges)."""

    def __init__(self, prefix: str = "livecart_") -> None:
        self.prefix = prefix
        self._metrics: dict[str, Metric] = {}
        self._summaries: dict[str, Summary] = {}
        self._collectors: list[Callable[[], None]] = []

    def counter(self, name: str, help: str) -> Metric:
        """A counter; its name ends in ``_total`` (the Prometheus convention the exposition relies on)."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r}: a counter's name ends in _total")
        return self._get(name, help, "counter")

    def gauge(self, name: str, help: str) -> Metric:
        return self._get(name, help, "gauge")

    def summary(self, name: str, help: str) -> Summary:
        s = self._summaries.get(name)
        if s is None:
            s = self._summaries[name] = Summary(self.prefix + name, help)
        return s

    def _get(self, name: str, help: str, kind: str) -> Metric:
        m = self._metrics.get(name)
        if m is None:
            m = self._metrics[name] = Metric(self.prefix + name, help, kind)
        return m

    def collector(self, fn: Callable[[], None]) -> None:
        self._collectors.append(fn)

    def __repr__(self) -> str:
        return f"<Registry {self.prefix}*: {len(self._metrics)} metrics, {len(self._collectors)} collectors>"

    def metrics(self) -> Iterable[Metric]:
        """The metrics as they are now (:meth:`refresh` first for the gauges that collectors keep)."""
        return self._metrics.values()

    def refresh(self) -> None:
        """Run the collectors: the gauges they keep take their current values."""
        for fn in self._collectors:
            fn()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | SummaryMetricFamily]:
        """prometheus_client's collector protocol: every metric as a family, after running the collectors."""
        self.refresh()
        for m in self._metrics.values():
            names = sorted({k for labels in m.values for k, _ in labels})
            family: CounterMetricFamily | GaugeMetricFamily
            if m.kind == "counter":
                family = CounterMetricFamily(m.name.removesuffix("_total"), m.help, labels=names)
            else:
                family = GaugeMetricFamily(m.name, m.help, labels=names)
            if not m.values and not names:
                family.add_metric([], 0.0)
            for labels, value in sorted(m.values.items()):
                d = dict(labels)
                family.add_metric([d.get(n, "") for n in names], value)
            yield family
        for s in self._summaries.values():
            yield SummaryMetricFamily(s.name, s.help, count_value=s.count, sum_value=s.sum)

    def render(self) -> str:
        """The text exposition of every metric (``GET /metrics``)."""
        reg = CollectorRegistry(auto_describe=False)
        reg.register(self)
        return generate_latest(reg).decode()
