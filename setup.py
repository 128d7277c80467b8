"""Only the optional compiled build lives here; everything else is in pyproject.toml.

``LIVECART_COMPILE=1 pip install .`` compiles the modules below with mypyc (see _build/livecart_build.py).
They are the per-comment hot path: the parser, the ledger and its duplicate-id memory. They stay plain
Python in the repository, are type-checked by ``mypy --strict`` and behave the same compiled or not (CI runs
the tests on both).
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = ["livecart/core/parser.py", "livecart/core/ledger.py", "livecart/core/dedupe.py"]

ext_modules = []
if os.environ.get("LIVECART_COMPILE", "") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
