"""The validated settings of one stream config: what :func:`livecart.config.load` returns.

Plain frozen values; :mod:`livecart.config` reads and checks the TOML, everything else only reads these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livecart.core.catalogue import DEFAULT_MAX_QTY, Catalogue, Product


@dataclass(frozen=True, slots=True)
class StreamSettings:
    name: str
    featured: str | None = None
    hold_minutes: float = 30.0
    bare_plus_one: bool = True
    max_qty: int = DEFAULT_MAX_QTY


#: ``[storage] snapshot_events`` when the config leaves it out, by backend. The SQLite journal's bounds what
#: a restart after ``kill -9`` replays (every event since the last whole snapshot) to ~100,000-125,000 events,
#: about a second on a 2-core machine, for a few per cent of the live run's decisions/s (figures:
#: docs/journal-and-durability.md). A JetStream sale's snapshots still carry every comment id (~60 bytes
#: each), so it keeps the interval it had.
SNAPSHOT_EVENTS = {"sqlite": 100_000, "jetstream": 200_000}


@dataclass(frozen=True, slots=True)
class StorageSettings:
    path: Path
    durability: str = "fsync"
    batch_max: int = 2048
    batch_delay_ms: float = 2.0
    snapshot_events: int = SNAPSHOT_EVENTS["sqlite"]
    snapshot_seconds: float = 60.0
    #: Comment ids kept exactly in memory (livecart.core.dedupe); 0 keeps every id. Fixed per journal.
    dedupe_window: int = 100_000
    #: "sqlite" (the embedded journal at ``path``) or "jetstream" (docs/contract.md §7).
    backend: str = "sqlite"
    #: JetStream mode: the cluster's client URLs, the sale's log replicas and the sale's id in the cluster.
    servers: tuple[str, ...] = ()
    replicas: int = 1
    sale: str = ""
    #: JetStream mode: seconds the decider's lease runs unrenewed before a standby takes over.
    lease_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class PluginSettings:
    """One ``[[adapters]]`` or ``[[hooks]]`` table: its type, its validated options, its position."""

    type: str
    name: str
    options: Mapping[str, Any]
    index: int


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """``[control]``: the host-control endpoints (HTTP on ``host:port``, optionally an MQTT topic)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port, written to the control state file
    token: str = ""  # "" = a token generated at start and written to the state file
    mqtt_host: str = ""
    mqtt_port: int = 1883
    mqtt_topic: str = ""


@dataclass(frozen=True, slots=True)
class StatusSettings:
    """``[status]``: the status endpoints (``/healthz``, ``/api/state``, ``/metrics``)."""

    host: str = "127.0.0.1"
    port: int = 0
    enabled: bool = True
    low_stock: int = 0  # units below which a product is "low stock"; 0 = 10% of its stock


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """``[daemon]``: queues and timeouts of ``livecart run``."""

    queue: int = 64  # comment batches waiting for the engine before adapters are made to wait
    hook_timeout: float = 10.0  # longest one hook call may take (s)
    hook_queue: int = 256  # items waiting per hook; beyond it the oldest is shed
    drain_seconds: float = 2.0  # at shutdown, how long replies and hooks may take to drain (s)
    parse_process: str = "auto"  # parse in a second process: "auto" (with 2+ CPUs), "on", "off"


@dataclass(frozen=True, slots=True)
class RepliesSettings:
    """``[replies]``: the confirmations sent back to buyers."""

    enabled: bool = True
    language: str = "zh"
    templates: Mapping[str, str] = field(default_factory=dict)  # overrides, by template key
    timezone: str = ""  # IANA zone for the pay-by time; "" = the machine's own
    queue: int = 20_000  # most reply messages pending per adapter (~400 bytes each; a flash peak, a restart's
    # announcements of thousands of orders to one room)
    max_len: int = 200  # longest merged reply message (characters)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    stream: StreamSettings
    storage: StorageSettings
    catalogue: Catalogue
    adapters: tuple[PluginSettings, ...] = ()
    hooks: tuple[PluginSettings, ...] = ()
    control: ControlSettings = ControlSettings()
    status: StatusSettings = StatusSettings()
    daemon: DaemonSettings = DaemonSettings()
    replies: RepliesSettings = RepliesSettings()
    #: The same four sections as validated mappings (defaults filled in), for code that reads them by name.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def products(self) -> tuple[Product, ...]:
        return self.catalogue.products
