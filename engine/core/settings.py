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


@dataclass(frozen=True, slots=True)
class StorageSettings:
    path: Path
    durability: str = "fsync"
    batch_max: int = 2048
    batch_delay_ms: float = 2.0


@dataclass(frozen=True, slots=True)
class PluginSettings:
    """One ``[[adapters]]`` or ``[[hooks]]`` table: its type, its validated options, its position."""

    type: str
    name: str
    options: Mapping[str, Any]
    index: int


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    stream: StreamSettings
    storage: StorageSettings
    catalogue: Catalogue
    adapters: tuple[PluginSettings, ...] = ()
    hooks: tuple[PluginSettings, ...] = ()
    #: Sections owned by the daemon (``control``, ``status``, ``daemon``, ``replies``), validated here, read there.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def products(self) -> tuple[Product, ...]:
        return self.catalogue.products
