"""``livecart parse --config FILE`` (docs/contract.md §3): JSON Lines of comments in, one parse per line out.

Each input line is an object with ``text`` and optionally ``id``, ``user`` and ``featured`` (a sku that
overrides ``[stream].featured`` for that line). Each output line is
``{"id": ..., "intent": ..., "items": [{"sku", "variant", "qty"}]}`` (items of a rejected kind also carry
``reason``), in input order. A line that cannot be used - not JSON, not an object, no string ``text``, a
``featured`` that is not a sku of the catalogue - gets ``{"error": "..."}`` (with the ``id`` when one could be
read) and the run goes on; the count of such lines is reported on stderr at the end.

Output is flushed after every line when stdin is a terminal (someone typing), and buffered otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

import orjson

from livecart.config import load_for_reading
from livecart.core.parser import Parser


def render(parser: Parser, line: bytes, default_featured: str | None) -> dict[str, Any]:
    """The output object for one input line (pure: no I/O)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return {"error": f"not valid JSON: {exc}"}
    if not isinstance(obj, Mapping):
        return {"error": f"expected a JSON object, got {_json_type(obj)}"}
    ident = obj.get("id")
    if not (ident is None or isinstance(ident, str) or (isinstance(ident, int) and not isinstance(ident, bool))):
        return {"error": f"'id' must be a string, got {_json_type(ident)}"}
    text = obj.get("text")
    if not isinstance(text, str):
        what = "missing" if "text" not in obj else _json_type(text)
        return {"id": ident, "error": f"'text' must be a string, got {what}"}
    featured = obj.get("featured", default_featured)
    if featured is not None:
        if not isinstance(featured, str):
            return {"id": ident, "error": f"'featured' must be a sku (a string), got {_json_type(featured)}"}
        if featured not in parser.catalogue.by_sku:
            return {"id": ident, "error": f"'featured' {featured!r} is not a sku of the catalogue"}
    out = parser.parse(text, featured).to_dict()
    out["id"] = ident
    return out


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def run(parser: Parser, lines: Iterable[bytes], out: IO[bytes], default_featured: str | None,
        *, flush_each: bool = False) -> tuple[int, int]:
    """Parse every line of ``lines`` onto ``out``. Returns (lines read, lines with an error)."""
    n = errors = 0
    dumps = orjson.dumps
    write = out.write
    for raw in lines:
        n += 1
        result = render(parser, raw, default_featured)
        if "error" in result:
            errors += 1
        write(dumps(result) + b"\n")
        if flush_each:
            out.flush()
    out.flush()
    return n, errors


def main(args: argparse.Namespace) -> int:
    cfg = load_for_reading(args.config)  # parse runs no adapter: a plugin need not be installed here
    parser = Parser.from_config(cfg)
    stdin = sys.stdin.buffer
    try:
        n, errors = run(parser, stdin, sys.stdout.buffer, cfg.stream.featured, flush_each=sys.stdin.isatty())
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as Unix filters do. Point stdout at devnull so
        # the interpreter's final flush does not raise again (the recipe of the Python signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    if errors:
        print(f"livecart parse: {errors} of {n} line(s) could not be parsed (see their 'error')", file=sys.stderr)
    return 0
