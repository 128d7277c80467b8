"""The README's platform-adapter section documents every key of every platform adapter, and each of its TOML
examples is a config that loads (unknown keys or wrong values would be refused)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from livecart.config import loads
from livecart.registry import adapter_class

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ("douyin", "kuaishou", "bilibili", "twitch", "twitch_eventsub", "youtube", "facebook", "instagram")
STREAM = '[stream]\nname = "t"\nfeatured = "egg"\n[storage]\npath = "t.db"\n[[products]]\nsku = "egg"\nname = "Egg"\nstock = 1\n'


def _docs() -> str:
    docs = ROOT / "docs"
    texts = [p.read_text(encoding="utf-8") for p in sorted(docs.rglob("*.md"))] if docs.is_dir() else []
    return "\n".join([(ROOT / "README.md").read_text(encoding="utf-8"), *texts])


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = re.search(r"^##+ ", text[start + len(heading):], re.M)
    return text[start:start + len(heading) + (nxt.start() if nxt else len(text))]


def _toml_blocks(section: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", section, re.S)


@pytest.mark.parametrize("kind", PLATFORMS)
def test_every_key_is_documented_and_the_example_loads(kind: str) -> None:
    section = _section(_docs(), f"### `{kind}`")
    [block] = _toml_blocks(section)
    cls = adapter_class(kind)
    missing = [k for k in cls.OPTIONS if not re.search(rf"^{re.escape(k)} = ", block, re.M)]
    assert missing == [], f"{kind}: keys not in the README example: {missing}"
    loads(STREAM + block)


def test_the_tiktok_bridge_example_is_a_valid_websocket_config() -> None:
    section = _section(_docs(), "### TikTok LIVE")
    [block] = _toml_blocks(section)
    cfg = loads(STREAM + block)
    assert cfg.adapters[0].type == "websocket"
