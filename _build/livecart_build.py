"""livecart's build backend: setuptools', plus mypyc when ``LIVECART_COMPILE=1`` (PEP 517 in-tree backend).

With ``LIVECART_COMPILE=1`` in the environment, ``pip install .`` compiles the hot modules listed in
``setup.py`` to C extensions with mypyc (a C compiler and the Python headers are needed; mypy, which
carries mypyc, is added to the build requirements here). Without it the build is plain setuptools and
installs pure Python, as before.

An editable install (``pip install -e .``) is never compiled: the extension modules would sit beside the
sources and shadow them, so an edit to ``engine/core/parser.py`` would silently not take effect.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the rest of the PEP 517 hooks, unchanged)

COMPILE = "LIVECART_COMPILE"
MYPYC = "mypy>=1.11"
#: What mypyc must import to type-check the compiled modules (records are msgspec structs; the comment decoder
#: falls back to orjson for a payload nested too deep for msgspec).
COMPILE_NEEDS = (MYPYC, "msgspec>=0.18", "orjson>=3.9")


def _compiling() -> bool:
    return os.environ.get(COMPILE, "") == "1"


@contextmanager
def _pure_build() -> Iterator[None]:
    """Hides ``LIVECART_COMPILE`` from setup.py inside the ``with`` block."""
    saved = os.environ.pop(COMPILE, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[COMPILE] = saved


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    extra = list(COMPILE_NEEDS) if _compiling() else []
    with _pure_build():  # setuptools runs setup.py here, before mypy is installed
        return [*_setuptools.get_requires_for_build_wheel(config_settings), *extra]


def prepare_metadata_for_build_wheel(metadata_directory: str,
                                     config_settings: dict[str, Any] | None = None) -> str:
    with _pure_build():  # the metadata does not depend on the extensions: no need to run mypyc for it
        return str(_setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings))


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    with _pure_build():
        return list(_setuptools.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: dict[str, Any] | None = None) -> str:
    with _pure_build():
        return str(_setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings))


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    if _compiling():
        print(f"livecart: {COMPILE}=1 is ignored for an editable install (compiled modules would shadow the "
              "sources); use 'pip install .' for a compiled build")
    with _pure_build():
        return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    with _pure_build():  # a source distribution ships the .py sources; whoever installs it may compile
        return list(_setuptools.get_requires_for_build_sdist(config_settings))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    with _pure_build():
        return str(_setuptools.build_sdist(sdist_directory, config_settings))
