"""Finding adapters and hooks: the ``livecart.adapters`` and ``livecart.hooks`` entry-point groups.

The built-in adapters are registered in livecart's own ``pyproject.toml`` exactly like third-party plugins,
so this is the one path by which the engine finds any adapter.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from livecart.core.errors import PluginError
from livecart.plugin import Adapter, Hook

ADAPTER_GROUP = "livecart.adapters"
HOOK_GROUP = "livecart.hooks"

T = TypeVar("T", Adapter, Hook)


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "<unknown package>"


@cache
def _scan(group: str) -> tuple[dict[str, EntryPoint], dict[str, str]]:
    """Entry points of ``group`` by name, and the names two packages claim, with the message that says so.

    A claimed-twice name is refused only where a config uses it (:func:`_load`): a conflict between two
    plugins the config does not use must not stop a sale that uses neither."""
    found: dict[str, EntryPoint] = {}
    conflicts: dict[str, str] = {}
    for ep in entry_points(group=group):
        other = found.get(ep.name)
        if other is not None and (other.value != ep.value or _dist_name(other) != _dist_name(ep)):
            conflicts[ep.name] = (
                f"{group} type {ep.name!r} is claimed by two packages: {_dist_name(other)} ({other.value}) "
                f"and {_dist_name(ep)} ({ep.value}); uninstall one of them")
            continue
        found[ep.name] = ep
    return found, conflicts


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return _scan(group)[0]


def known_types(group: str = ADAPTER_GROUP) -> list[str]:
    return sorted(_entry_points(group))


def _load(group: str, name: str, base: type[T]) -> type[T]:
    eps, conflicts = _scan(group)
    if name in conflicts:
        raise PluginError(conflicts[name])
    ep = eps.get(name)
    if ep is None:
        kinds = ", ".join(sorted(eps)) or "none installed"
        raise PluginError(f"unknown {group.rsplit('.', 1)[-1][:-1]} type {name!r}; known types: {kinds}")
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plugin must not look like an unknown one
        raise PluginError(f"{group} type {name!r} from {_dist_name(ep)} failed to import: {exc!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{group} type {name!r} ({ep.value}) is not a subclass of {base.__qualname__}")
    return cls


def adapter_class(name: str) -> type[Adapter]:
    """The adapter class registered for ``type = name``. Raises :class:`PluginError` listing known types."""
    return _load(ADAPTER_GROUP, name, Adapter)


def hook_class(name: str) -> type[Hook]:
    """The hook class registered for ``type = name``. Raises :class:`PluginError` listing known types."""
    return _load(HOOK_GROUP, name, Hook)


def clear_cache() -> None:
    """Forget the entry points seen so far (after installing a plugin in a running process, in tests)."""
    _scan.cache_clear()
