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
class OptionValue:
    """One value of a product option (``black`` of ``colour``) and the words buyers use for it."""

    name: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProductOption:
    """One axis along which a product's variants differ (``colour``, ``size``), docs/contract.md §1."""

    name: str
    values: tuple[OptionValue, ...] = ()

    def value(self, name: str) -> OptionValue | None:
        for v in self.values:
            if v.name == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    aliases: tuple[str, ...] = ()
    stock: int = 0
    presale: int = 0
    price: float | None = None
    code: str | None = None
    #: With product options: ``(option name, value name)`` for every option, in the product's option order.
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str) -> str | None:
        """The value this variant has for option ``name``, or None."""
        for o, v in self.options:
            if o == name:
                return v
        return None


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
    #: Options (colour x size ...); when present every variant names one value of each (docs/contract.md §1).
    options: tuple[ProductOption, ...] = ()

    def variant(self, name: str) -> Variant | None:
        for v in self.variants:
            if v.name == name:
                return v
        return None

    def fitting(self, values: Mapping[str, str]) -> tuple[Variant, ...]:
        """The variants that have every ``option -> value`` of ``values`` (all of them for ``{}``)."""
        return tuple(v for v in self.variants if all(v.option(o) == val for o, val in values.items()))

    def missing_options(self, values: Mapping[str, str]) -> tuple[ProductOption, ...]:
        """The options still open once ``values`` are named: those along which the fitting variants differ."""
        fit = self.fitting(values)
        return tuple(o for o in self.options if len({v.option(o.name) for v in fit}) > 1)


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
