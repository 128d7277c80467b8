"""Counters and gauges with labels, rendered in the Prometheus text exposition format (version 0.0.4).

Deliberately tiny: increments are a dict update, so they are cheap enough for hot paths that count per
batch. No I/O here; the status server renders :meth:`Registry.render` on request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    # Exposition format: backslash, double quote and newline are escaped in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


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


class Registry:
    """A set of metrics plus collectors (callables run at render time to refresh gauges)."""

    def __init__(self, prefix: str = "livecart_") -> None:
        self.prefix = prefix
        self._metrics: dict[str, Metric] = {}
        self._collectors: list[Callable[[], None]] = []

    def counter(self, name: str, help: str) -> Metric:
        return self._get(name, help, "counter")

    def gauge(self, name: str, help: str) -> Metric:
        return self._get(name, help, "gauge")

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
        return self._metrics.values()

    def render(self) -> str:
        for fn in self._collectors:
            fn()
        out: list[str] = []
        for m in self._metrics.values():
            out.append(f"# HELP {m.name} {m.help}")
            out.append(f"# TYPE {m.name} {m.kind}")
            if not m.values:
                out.append(f"{m.name} 0")
            for labels, value in sorted(m.values.items()):
                v = int(value) if float(value).is_integer() else value
                out.append(f"{m.name}{_fmt_labels(labels)} {v}")
        return "\n".join(out) + "\n"
