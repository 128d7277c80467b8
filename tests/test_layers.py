"""The import rules of livecart's layers (docs/layout.md), read from the sources of the imported package.

Every ``import`` counts, also one inside a function: a local import hides a dependency from the reader, not
from the rules. Imports under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import livecart

ROOT = Path(livecart.__file__).resolve().parent

#: layer -> the livecart layers it may import (besides itself). The core is first and imports no layer.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "listen": set(),
    "plugin": {"core"},
    "registry": {"core", "plugin"},
    "config": {"core", "plugin", "registry"},
    "store": {"core", "config"},
    "runtime": {"core", "listen", "plugin", "registry", "config", "store"},
    "cli": {"core", "listen", "plugin", "registry", "config", "store", "runtime"},
    "adapters": {"core", "listen", "plugin"},
    "bench": {"core", "listen", "plugin", "registry", "config", "store", "runtime", "cli", "adapters"},
}
#: What the pure core must not import: the event loop, sockets, files, processes, clocks, network libraries.
CORE_FORBIDDEN = {"asyncio", "socket", "selectors", "sqlite3", "subprocess", "threading", "time", "os",
                  "aiosqlite", "aiohttp", "aiomqtt", "websockets", "uvloop"}
#: Third-party libraries the core may use: msgspec defines and decodes its records, and orjson decodes a
#: payload too deep for msgspec (whose nesting limit is the caller's stack) with a fixed depth limit: values
#: in, values out, no I/O, no clock, as the standard library's dataclasses and json would.
CORE_THIRD_PARTY = {"msgspec", "orjson"}


def _modules() -> Iterator[tuple[str, Path]]:
    # os.walk follows the source tree's links (engine/adapters -> ../adapters); Path.rglob would not.
    found = [Path(d, f) for d, _, files in os.walk(ROOT, followlinks=True) for f in files if f.endswith(".py")]
    for path in sorted(found):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join(["livecart", *parts]), path


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Absolute names of the modules ``module`` imports, with line numbers; not those under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield base, node.lineno
            for alias in node.names:  # `from livecart.core import parser` imports a module
                yield f"{base}.{alias.name}", node.lineno


MODULES = dict(_modules())


def _livecart_imports(module: str) -> Iterator[tuple[str, int]]:
    for name, line in _imports(module, MODULES[module]):
        if name in MODULES:
            yield name, line


def test_the_package_has_every_layer() -> None:
    assert {_layer(m) for m in MODULES} >= set(ALLOWED)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_the_layers_below_it(module: str) -> None:
    layer = _layer(module)
    allowed = ALLOWED.get(layer, set(ALLOWED)) | {layer, "root"}
    bad = [f"line {line}: {name}" for name, line in _livecart_imports(module)
           if _layer(name) not in allowed]
    assert not bad, f"{module} ({layer}) may import only {sorted(allowed)}; it imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "core"))
def test_the_core_does_no_io_and_reads_no_clock(module: str) -> None:
    bad = []
    for name, line in _imports(module, MODULES[module]):
        top = name.split(".")[0]
        if top in CORE_FORBIDDEN or (top not in sys.stdlib_module_names and top not in {"livecart", "__future__", *CORE_THIRD_PARTY}):
            bad.append(f"line {line}: {name}")
    assert not bad, f"{module} is in the pure core and imports {bad}"


def test_nothing_but_bench_imports_the_built_in_adapters() -> None:
    bad = [f"{m} line {line}: {name}" for m in MODULES if _layer(m) not in {"adapters", "bench"}
           for name, line in _livecart_imports(m) if _layer(name) == "adapters"]
    assert not bad, "the engine finds adapters through entry points only: " + "; ".join(bad)


def test_there_is_no_import_cycle() -> None:
    graph = {m: {name for name, _ in _livecart_imports(m)} - {m} for m in MODULES}
    # A package's __init__ is imported with each of its modules; that edge is not a cycle of the code.
    for m in graph:
        graph[m] = {n for n in graph[m] if not m.startswith(n + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join([*stack[stack.index(n):], n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_modules_named_in_strings_are_livecart_modules() -> None:
    """``importlib.import_module("...")``, ``importlib.resources.files("...")`` and the bench's ``_import``
    name modules in strings, out of the import rules' sight; they must name livecart's, not the folders'."""
    bad = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            target = node.args[0].value
            if name in {"import_module", "files", "_import"} and isinstance(target, str) \
                    and target.split(".")[0] != "livecart":
                bad.append(f"{module} line {node.lineno}: {name}({target!r})")
    assert not bad, "; ".join(bad)
