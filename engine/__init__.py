"""livecart's engine: comment parser, reservation ledger, journal, pipeline, daemon and CLI.

The parser and the ledger are plain classes with no I/O; the journal, the pipeline and the daemon are thin
asyncio shells around them. The engine never imports ``adapters``: it finds adapters and hooks only through
the ``livecart.adapters`` and ``livecart.hooks`` entry-point groups (see :mod:`engine.registry`).
"""

from __future__ import annotations

__version__ = "0.1.0"
