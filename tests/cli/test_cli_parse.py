"""``livecart parse --config FILE`` end to end, through the installed command (docs/contract.md §3)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from livecart.cli.parse import render, run
from livecart.config import load
from livecart.core.parser import Parser

REPO = Path(__file__).resolve().parent.parent.parent
SAMPLE = REPO / "config" / "sample.toml"


def _livecart() -> list[str]:
    exe = shutil.which("livecart")
    return [exe] if exe else [sys.executable, "-m", "livecart.cli.main"]


def _parse(stdin: bytes, config: Path = SAMPLE) -> tuple[list[dict[str, object]], str, int]:
    proc = subprocess.run([*_livecart(), "parse", "--config", str(config)], input=stdin, capture_output=True,
                          timeout=60, check=False)
    lines = [orjson.loads(x) for x in proc.stdout.splitlines()]
    return lines, proc.stderr.decode(), proc.returncode


def test_one_object_per_line_in_order() -> None:
    stdin = "\n".join(orjson.dumps(o).decode() for o in (
        {"id": "m-81", "user": "u-42", "text": "鸡蛋来两盒"},
        {"id": "m-82", "text": "主播好美"},
        {"id": "m-83", "text": "还有吗"},
        {"id": "m-84", "text": "鸡蛋不要了"},
    )).encode() + b"\n"
    out, _err, rc = _parse(stdin)
    assert rc == 0
    assert out == [
        {"id": "m-81", "intent": "buy", "items": [{"sku": "egg-10", "variant": None, "qty": 2}]},
        {"id": "m-82", "intent": "none", "items": []},
        {"id": "m-83", "intent": "ask", "items": []},
        {"id": "m-84", "intent": "cancel", "items": [{"sku": "egg-10", "variant": None, "qty": 0}]},
    ]


def test_stream_featured_is_the_default_and_a_line_can_override_it() -> None:
    stdin = b'{"id": "a", "text": "+1"}\n{"id": "b", "text": "+1", "featured": "honey-500"}\n'
    out, _err, _rc = _parse(stdin)
    assert [o["items"] for o in out] == [
        [{"sku": "egg-10", "variant": None, "qty": 1}],
        [{"sku": "honey-500", "variant": None, "qty": 1}],
    ]


def test_bad_lines_get_an_error_and_the_run_goes_on() -> None:
    stdin = b'not json\n[1, 2]\n{"id": "x"}\n\n{"id": "ok", "text": "+2"}\n\xff\xfe\n'
    out, err, rc = _parse(stdin)
    assert rc == 0
    assert len(out) == 6
    assert [("error" in o) for o in out] == [True, True, True, True, False, True]
    assert out[2]["id"] == "x"
    assert out[4] == {"id": "ok", "intent": "buy", "items": [{"sku": "egg-10", "variant": None, "qty": 2}]}
    assert "5 of 6" in err


def test_unknown_featured_sku_is_an_error_for_that_line() -> None:
    out, _err, _rc = _parse(b'{"id": "a", "text": "+1", "featured": "nope"}\n{"id": "b", "text": "+1"}\n')
    assert "nope" in str(out[0]["error"])
    assert out[1]["intent"] == "buy"


def test_rejected_items_carry_a_reason() -> None:
    out, _err, _rc = _parse(b'{"id": "a", "text": "9\xe5\x8f\xb7\xe9\x93\xbe\xe6\x8e\xa5\xe6\x8b\x8d2"}\n')
    assert out[0]["items"] == [{"sku": None, "variant": None, "qty": 2, "reason": "unknown_product"}]


def test_bad_config_exits_2_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[stream]\nname = "x"\nfeatured = "ghost"\n', encoding="utf-8")
    out, err, rc = _parse(b'{"text": "+1"}\n', bad)
    assert rc == 2
    assert out == []
    assert "featured" in err


def test_no_trailing_newline_is_still_a_line() -> None:
    out, _err, _rc = _parse(b'{"id": "a", "text": "mine"}')
    assert out == [{"id": "a", "intent": "buy", "items": [{"sku": "egg-10", "variant": None, "qty": 1}]}]


def test_empty_input_writes_nothing() -> None:
    out, err, rc = _parse(b"")
    assert (out, err, rc) == ([], "", 0)


class _Sink:
    def __init__(self) -> None:
        self.data = b""
        self.flushes = 0

    def write(self, b: bytes) -> int:
        self.data += b
        return len(b)

    def flush(self) -> None:
        self.flushes += 1


@pytest.mark.parametrize(("flush_each", "at_least"), [(True, 3), (False, 1)])
def test_run_flushes_per_line_only_when_asked(flush_each: bool, at_least: int) -> None:
    parser = Parser.from_config(load(SAMPLE))
    sink = _Sink()
    n, errors = run(parser, [b'{"text": "+1"}', b'{"text": "x"}', b"{"], sink, "egg-10",  # type: ignore[arg-type]
                    flush_each=flush_each)
    assert (n, errors) == (3, 1)
    assert len(sink.data.splitlines()) == 3
    assert sink.flushes >= at_least
    if not flush_each:
        assert sink.flushes == 1


def test_render_echoes_numeric_ids() -> None:
    parser = Parser.from_config(load(SAMPLE))
    assert render(parser, b'{"id": 12, "text": "+1"}', "egg-10")["id"] == 12
    assert "error" in render(parser, b'{"id": [1], "text": "+1"}', "egg-10")

