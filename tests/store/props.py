"""The small sale and the Hypothesis strategies the store's property tests share: a catalogue with one plain
product and one with variants, its journal header, and parse results over it (buys, cancels, nothing); and
the one-product stream config the duplicate-id tests run an engine with."""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from livecart.config import loads
from livecart.core.catalogue import Catalogue, Product, Variant
from livecart.core.records import Intent, Item, ParseResult, Reason
from livecart.core.settings import Config
from livecart.store import codec
from livecart.store.codec import Header

CAT = Catalogue((
    Product("egg", "Eggs", stock=4, limit=3, presale=3),
    Product("tea", "Tea", variants=(Variant("s", stock=2, presale=2), Variant("l", stock=1))),
))
HEADER = Header(CAT, codec.catalogue_json(CAT), 30.0, "egg", 0.0)

item = st.one_of(
    st.builds(Item, st.just("egg"), st.none(), st.integers(1, 4)),
    st.builds(Item, st.just("tea"), st.sampled_from(["s", "l", None]), st.integers(1, 3)),
    st.just(Item(None, None, 1, Reason.UNKNOWN_PRODUCT)),
)
parsed = st.one_of(
    st.builds(lambda items: ParseResult(Intent.BUY, tuple(items)), st.lists(item, min_size=1, max_size=2)),
    st.just(ParseResult(Intent.CANCEL)),
    st.builds(lambda i: ParseResult(Intent.CANCEL, (i,)), item),
    st.just(ParseResult(Intent.NONE)),
)


DEDUPE_TOML = """
[stream]
name = "dedupe"
featured = "egg"
hold_minutes = 0

[storage]
path = "{path}"
durability = "os"
batch_delay_ms = 0
snapshot_events = {snap}
dedupe_window = {window}

[[products]]
sku = "egg"
name = "Eggs"
stock = 5
limit = 2
presale = 3
"""


def dedupe_config(tmp: Path, window: int, snap: int = 200_000) -> Config:
    """A stream of one product with its journal ``j.db`` in ``tmp``, duplicate-id window ``window`` and a
    snapshot every ``snap`` events."""
    return loads(DEDUPE_TOML.format(path=tmp / "j.db", window=window, snap=snap), base_dir=tmp)
