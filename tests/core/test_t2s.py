"""The stored character tables are what their generators give: OpenCC's full t2s conversion (traditional ->
simplified), and pypinyin's first reading of each character (for homophone typos)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from livecart.core import parser_pinyin, parser_tables
from livecart.core.parser import normalise

BUILD = Path(__file__).resolve().parent.parent.parent / "_build"


def _generator(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BUILD / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules[name] = gen
    spec.loader.exec_module(gen)
    return gen


def test_the_stored_table_is_what_opencc_gives_now() -> None:
    p = _generator("gen_t2s").pairs()
    assert parser_tables.T2S.items() >= {ord(p[i]): p[i + 1] for i in range(0, len(p), 2)}.items()
    assert len(parser_tables.T2S) > 3500


@pytest.mark.parametrize(("traditional", "simplified"), [
    ("雞蛋來兩盒", "鸡蛋来两盒"), ("衛衣 粉紅 L碼", "卫衣粉红 l码"), ("唔該，棄單", "唔该,弃单"),
    ("5號連結 奶茶色", "5号连结奶茶色"), ("麵線", "面线"), ("鬱金香", "郁金香"),
])
def test_traditional_text_folds_to_simplified(traditional: str, simplified: str) -> None:
    assert normalise(traditional) == simplified


def test_the_stored_pinyin_is_what_pypinyin_gives_now() -> None:
    assert _generator("gen_pinyin").readings() == parser_pinyin.READINGS
