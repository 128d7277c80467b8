"""The plugin path: adapters are found by type through the ``livecart.adapters`` entry-point group.

The example package under ``examples/`` is really pip-installed into a temporary folder and run through its
entry point; conflicting and broken plugins are fabricated as hand-written ``.dist-info`` folders.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecart import registry
from livecart.config import load
from livecart.core.errors import ConfigError, PluginError
from livecart.plugin import Adapter

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "livecart-example-adapter"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A folder on ``sys.path`` for plugins, removed (with anything imported from it) afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    sys.path.insert(0, str(root))
    registry.clear_cache()
    before = set(sys.modules)
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in set(sys.modules) - before:
            if getattr(sys.modules[name], "__file__", None) and str(root) in str(sys.modules[name].__file__):
                del sys.modules[name]
        registry.clear_cache()


def fake_dist(site: Path, dist: str, entry_points: dict[str, str], module: str | None = None,
              source: str = "") -> None:
    """Write ``DIST-1.0.dist-info`` (METADATA + entry_points.txt) and optionally a module into ``site``."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[livecart.adapters]\n{lines}", encoding="utf-8")
    if module is not None:
        (site / f"{module}.py").write_text(source, encoding="utf-8")


PLUGIN_SOURCE = """
from livecart.plugin import Adapter

class Thing(Adapter):
    type = "thing"
"""


def test_built_in_adapters_are_found_through_the_entry_point_group() -> None:
    from livecart.adapters.mqtt import MqttAdapter
    from livecart.adapters.replay import ReplayAdapter
    from livecart.adapters.webhook import WebhookAdapter
    from livecart.adapters.websocket import WebSocketAdapter

    found = {t: registry.adapter_class(t) for t in ("replay", "websocket", "mqtt", "webhook")}
    assert found == {"replay": ReplayAdapter, "websocket": WebSocketAdapter, "mqtt": MqttAdapter,
                     "webhook": WebhookAdapter}


def test_the_example_package_pip_installs_and_runs_through_its_entry_point(site: Path, tmp_path: Path) -> None:
    # Built from a copy so that the build leaves nothing in the checkout; --no-index keeps pip off the network.
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    registry.clear_cache()

    cls = registry.adapter_class("example_ticker")
    assert cls.__module__ == "livecart_example_adapter"
    assert str(site) in str(sys.modules[cls.__module__].__file__)
    assert "example_ticker" in registry.known_types()

    # The config loader validates the plugin's table against its OPTIONS, found the same way.
    cfg = tmp_path / "stream.toml"
    cfg.write_text(
        '[stream]\nname = "plugin"\n[storage]\npath = "j.db"\n'
        '[[adapters]]\ntype = "example_ticker"\ntexts = ["鸡蛋来两盒", "+1"]\ncount = 5\nroom = "r9"\n'
        '[[products]]\nsku = "egg"\nname = "eggs"\nstock = 1\n', encoding="utf-8")
    settings = load(cfg).adapters[0]
    assert settings.type == "example_ticker"
    assert settings.options["interval"] == 0.0

    bad = cfg.read_text(encoding="utf-8").replace("count = 5", "count = 5\nspeed = 3")
    cfg.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError, match="speed"):
        load(cfg)

    async def run() -> list[str]:
        async with cls(settings.options, name=settings.name) as ad:
            out = [f"{c.room}:{c.id}:{c.text}" async for c in ad]
            assert ad.durable == 5  # plain iteration settles each batch once taken
            return out

    assert asyncio.run(run()) == ["r9:t-0:鸡蛋来两盒", "r9:t-1:+1", "r9:t-2:鸡蛋来两盒", "r9:t-3:+1",
                                  "r9:t-4:鸡蛋来两盒"]


def test_a_hand_made_plugin_loads_by_its_type(site: Path) -> None:
    fake_dist(site, "livecart-thing", {"thing": "lc_thing_plugin:Thing"}, "lc_thing_plugin", PLUGIN_SOURCE)
    cls = registry.adapter_class("thing")
    assert issubclass(cls, Adapter)
    assert cls.type == "thing"


def test_two_packages_claiming_one_type_is_an_error_naming_both(site: Path) -> None:
    fake_dist(site, "pkg-alpha", {"dupe": "alpha_mod:A"})
    fake_dist(site, "pkg-beta", {"dupe": "beta_mod:B"})
    with pytest.raises(PluginError) as err:
        registry.adapter_class("dupe")
    msg = str(err.value)
    assert "'dupe'" in msg
    assert "pkg-alpha" in msg
    assert "pkg-beta" in msg


def test_a_plugin_claiming_a_built_in_type_is_an_error_naming_livecart(site: Path) -> None:
    fake_dist(site, "sneaky-ws", {"websocket": "sneaky:WS"})
    with pytest.raises(PluginError, match="websocket") as err:
        registry.adapter_class("websocket")
    assert "livecart" in str(err.value)
    assert "sneaky-ws" in str(err.value)
    # Only the claimed type is refused: a sale that uses another one is not stopped by the conflict (before,
    # every lookup failed, and a config was blamed at its first adapter whatever type that had).
    from livecart.adapters.replay import ReplayAdapter
    assert registry.adapter_class("replay") is ReplayAdapter


def test_an_unknown_type_lists_the_known_ones() -> None:
    registry.clear_cache()
    with pytest.raises(PluginError, match="unknown adapter type 'nosuch'") as err:
        registry.adapter_class("nosuch")
    for t in ("mqtt", "replay", "webhook", "websocket"):
        assert t in str(err.value)


def test_a_plugin_that_fails_to_import_says_which_package(site: Path) -> None:
    fake_dist(site, "broken-plugin", {"broken": "lc_broken_mod:X"}, "lc_broken_mod", "raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match=r"broken-plugin failed to import.*boom"):
        registry.adapter_class("broken")


def test_a_plugin_that_is_not_an_adapter_is_refused(site: Path) -> None:
    fake_dist(site, "not-adapter", {"notone": "lc_not_adapter:X"}, "lc_not_adapter", "X = 42\n")
    with pytest.raises(PluginError, match="not a subclass of Adapter"):
        registry.adapter_class("notone")
