"""livecart.build(): which build of the hot modules is running (pure Python or compiled by mypyc)."""

from __future__ import annotations

import importlib

import pytest

import livecart
from livecart.cli.main import main


def test_build_names_the_kind_of_every_hot_module() -> None:
    files = [importlib.import_module(m).__file__ or "" for m in livecart.HOT_MODULES]
    expected = "python" if all(f.endswith(".py") for f in files) else "compiled"
    assert livecart.build() == expected


def test_version_says_which_build(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"livecart {livecart.__version__} ({livecart.build()})"
