"""livecart's engine: comment parser, reservation ledger, journal, pipeline, daemon and CLI.

The parser and the ledger are plain classes with no I/O; the journal, the pipeline and the daemon are thin
asyncio shells around them. The engine never imports ``adapters``: it finds adapters and hooks only through
the ``livecart.adapters`` and ``livecart.hooks`` entry-point groups (see :mod:`engine.registry`).
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The modules an optional build compiles with mypyc (``LIVECART_COMPILE=1 pip install .``; see setup.py).
HOT_MODULES = ("engine.parser", "engine.ledger")


def build() -> str:
    """``"compiled"`` when every hot module was loaded from a C extension, ``"python"`` when none was, else
    ``"mixed"`` (a partial or stale build). Imports the hot modules."""
    import importlib

    native = [not (importlib.import_module(m).__file__ or "").endswith(".py") for m in HOT_MODULES]
    return "compiled" if all(native) else ("python" if not any(native) else "mixed")
