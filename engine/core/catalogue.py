"""The catalogue of one live sale: products, their variants, lookups by sku and link number.

Plain frozen values built by :mod:`livecart.config` from the stream config (docs/contract.md §1); the parser
and the ledger read them. No I/O here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_MAX_QTY = 99


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    aliases: tuple[str, ...] = ()
    stock: int = 0
    presale: int = 0
    price: float | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    aliases: tuple[str, ...] = ()
    link: int | None = None
    price: float = 0.0
    stock: int = 0
    limit: int = 0
    presale: int = 0
    presale_note: str = ""
    code: str | None = None
    variants: tuple[Variant, ...] = ()

    def variant(self, name: str) -> Variant | None:
        for v in self.variants:
            if v.name == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The products of one stream, with lookups by sku and by link number."""

    products: tuple[Product, ...]
    by_sku: Mapping[str, Product] = field(init=False)
    by_link: Mapping[int, Product] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_sku", {p.sku: p for p in self.products})
        object.__setattr__(self, "by_link", {p.link: p for p in self.products if p.link is not None})


def alias_key(text: str) -> str:
    """How aliases are compared for duplicates: NFKC, case-folded, spaces removed."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).casefold())
