"""The exceptions livecart raises.

Every error livecart raises on purpose derives from :class:`LivecartError`; third-party errors are translated
at the boundary and chained (``raise ... from exc``)::

    LivecartError
    ├── ConfigError            a stream config that cannot be used (carries every problem found)
    ├── PluginError            an adapter or hook plugin that cannot be loaded or is ambiguous
    ├── MalformedInput         one bad comment / frame / payload (counted and logged, never fatal)
    ├── AdapterError           an adapter's source failed
    │   ├── RetryableError     ... in a way that a reconnect may fix (dead broker, dropped socket)
    │   └── FatalAdapterError  ... in a way that retrying cannot fix (bad credentials, bad URL)
    ├── JournalError           the journal cannot be opened or written
    │   ├── ForeignDatabase    the file is not a livecart journal (or is corrupt); it is never overwritten
    │   │   └── JournalDamaged a batch or snapshot fails its checksum, or the file is cut short
    │   └── JournalLocked      another livecart process is writing the journal (carries who holds it)
    ├── ControlError           a host control that cannot be applied (unknown sku, bad value)
    │   └── BadControl         ... or cannot even be parsed (unknown action, missing argument)
    └── NotDurable             a batch an adapter handed in was not made durable (the daemon stopped first)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class LivecartError(Exception):
    """Root of every error livecart raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config: where (file, line if known, key path) and what was expected."""

    file: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" [{self.key}]" if self.key else ""
        return f"{where}{key}: {self.message}"


class ConfigError(LivecartError):
    """A config that cannot be used. ``problems`` lists every problem found, one message each."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PluginError(LivecartError):
    """An adapter or hook plugin that cannot be loaded, is unknown, or is claimed by two packages."""


class MalformedInput(LivecartError):
    """One piece of bad input: a frame, payload or comment that cannot be used.

    ``reason`` is a short machine-friendly tag (``bad_json``, ``missing_field``, ``oversized`` ...) used as a
    counter label; ``sample`` is a truncated copy of the offending input for the log.
    """

    def __init__(self, reason: str, detail: str = "", sample: object = None) -> None:
        self.reason = reason
        self.detail = detail
        self.sample = sample
        super().__init__(f"{reason}: {detail}" if detail else reason)


class AdapterError(LivecartError):
    """An adapter's source failed."""


class RetryableError(AdapterError):
    """A failure that a reconnect may fix (connection refused or dropped, broker restarting, 5xx)."""


class FatalAdapterError(AdapterError):
    """A failure that retrying cannot fix (authentication refused, malformed URL, 4xx on subscribe)."""


class JournalError(LivecartError):
    """The journal cannot be opened or written."""


class ForeignDatabase(JournalError):
    """The file exists but is not a livecart journal, or is corrupt. It is left untouched."""


class JournalDamaged(ForeignDatabase):
    """A livecart journal whose contents fail their checks. ``batch`` is the 1-based number of the first bad
    batch in the file (0 when the damage is not in a batch, e.g. a cut WAL file), ``seq`` its first event."""

    def __init__(self, message: str, batch: int = 0, seq: int = 0) -> None:
        self.batch = batch
        self.seq = seq
        super().__init__(message)


class JournalLocked(JournalError):
    """Another process holds the journal's writer lock. ``holder`` is what it wrote about itself (pid, start
    time, control address), possibly empty if it has not written it yet."""

    def __init__(self, message: str, holder: dict[str, object] | None = None) -> None:
        self.holder = dict(holder or {})
        super().__init__(message)


class ControlError(LivecartError):
    """A host control that cannot be applied: unknown sku or order, or a value out of range.

    ``code`` names the case for a program (the host console says it in the page's language from ``code``
    and ``detail``; ``str()`` is the English message ``ctl`` prints): ``no_order``, ``not_held``,
    ``already``, ``no_product``, ``has_variants``, ``no_variants``, ``no_variant``, ``bad_quantity``,
    ``bad_cap``, ``bad_limit``, ``no_presale_cap``, ``key_reused``; "" for the rest."""

    def __init__(self, message: str, code: str = "", **detail: str) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class BadControl(ControlError):
    """A control that cannot be parsed: unknown action, missing or malformed argument."""


class NotDurable(LivecartError):
    """A batch an adapter handed in was not taken into the journal (the daemon stopped before it, or the
    engine refused it); its sender must keep the comments and send them again."""
