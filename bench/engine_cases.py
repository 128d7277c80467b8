"""Benchmark cases that need the engine (ledger + journal, the pipeline, the adapters)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.runner import _import
from bench.scenario import Scenario
from engine.config import Config


def case_ledger(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> dict[str, Any]:
    _import("engine.journal", "Journal")
    raise NotImplementedError


async def case_pipeline(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> dict[str, Any]:
    _import("engine.core", "Engine")
    raise NotImplementedError


async def case_websocket(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> dict[str, Any]:
    _import("engine.core", "Engine")
    raise NotImplementedError


async def case_mqtt(scenario: Scenario, cfg: Config, opts: argparse.Namespace) -> dict[str, Any]:
    _import("engine.core", "Engine")
    raise NotImplementedError
