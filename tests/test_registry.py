from __future__ import annotations

import pytest

from livecart import registry
from livecart.core.errors import PluginError


def test_builtin_types_are_found_through_the_entry_point_group() -> None:
    assert {"replay", "websocket", "mqtt", "webhook"} <= set(registry.known_types())


def test_unknown_type_lists_known_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown adapter type 'nope'; known types: .*replay"):
        registry.adapter_class("nope")
