"""livecart: real-time live-chat order capture.

One import package in layers, each a folder (docs/layout.md draws the import rules, and
``tests/test_layers.py`` holds them):

* :mod:`livecart.core` — the pure core: records, catalogue, settings, parser, ledger, events. Values in,
  values out: no asyncio, no I/O, no clock.
* :mod:`livecart.plugin` and :mod:`livecart.registry` — the plugin interface adapters and hooks implement,
  and the entry-point lookup that finds them.
* :mod:`livecart.config` — reads and validates a stream config (TOML) into core values.
* :mod:`livecart.store` — the journal: how decisions are written and read back.
* :mod:`livecart.runtime` — the asyncio shells: pipeline, daemon, replies, hooks, control and status servers.
* :mod:`livecart.cli` — the faces: the ``livecart`` command and the demo.
* :mod:`livecart.adapters` (built-in adapters) and :mod:`livecart.bench` (benchmarks) sit beside them. The
  engine never imports ``livecart.adapters``: it finds adapters and hooks only through the
  ``livecart.adapters`` and ``livecart.hooks`` entry-point groups, exactly as it finds a third party's.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The modules an optional build compiles with mypyc (``LIVECART_COMPILE=1 pip install .``; see setup.py).
HOT_MODULES = ("livecart.core.parser", "livecart.core.ledger")


def build() -> str:
    """``"compiled"`` when every hot module was loaded from a C extension, ``"python"`` when none was, else
    ``"mixed"`` (a partial or stale build). Imports the hot modules."""
    import importlib

    native = [not (importlib.import_module(m).__file__ or "").endswith(".py") for m in HOT_MODULES]
    return "compiled" if all(native) else ("python" if not any(native) else "mixed")
