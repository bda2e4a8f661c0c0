"""Connector plugins: the connector types installed on this pod, found through entry points.

A connector type is published as an entry point in the group ``raftorch.connectors``
whose name is the type and whose object is a `Connector` subclass with the same
``type``. The pod loads them all at start-up and offers (type, version) pairs when it
registers, so the planner only places sessions on pods that can run them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from importlib import metadata

from adapter.sdk import Connector
from protocol.errors import ConfigError

GROUP = "raftorch.connectors"
_TYPE_MAX = 128  # the pod API's limits (protocol.pod.ConnectorOffer)
_VERSION_MAX = 64


def find_entry_points(group: str) -> Iterable[metadata.EntryPoint]:
    """The installed entry points of `group` (the one place that asks importlib.metadata)."""
    return metadata.entry_points(group=group)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _problem(name: str, loaded: object) -> str | None:
    """Why `loaded` cannot serve as connector type `name`, or None when it can."""
    if not inspect.isclass(loaded) or not issubclass(loaded, Connector):
        return f"{loaded!r} is not a subclass of adapter.sdk.Connector"
    if inspect.isabstract(loaded):
        missing = ", ".join(sorted(getattr(loaded, "__abstractmethods__", ())))
        return f"{loaded.__qualname__} is abstract (does not implement {missing})"
    declared = getattr(loaded, "type", None)
    if declared != name:
        return f"{loaded.__qualname__}.type is {declared!r}, must equal the entry-point name"
    version = getattr(loaded, "version", None)
    if not isinstance(version, str) or not 0 < len(version) <= _VERSION_MAX:
        return f"{loaded.__qualname__}.version must be a string of 1-{_VERSION_MAX} characters"
    return None


def load_connector(entry_point: metadata.EntryPoint) -> type[Connector]:
    """Import one entry point and check it; ConfigError (one line) if it is unusable."""
    where = f"connector plugin {entry_point.name!r} ({entry_point.value})"
    if not 0 < len(entry_point.name) <= _TYPE_MAX:
        raise ConfigError(f"{where}: name must be 1-{_TYPE_MAX} characters")
    try:
        loaded = entry_point.load()
    except Exception as exc:  # whatever the plugin's import raises, it is a config problem
        raise ConfigError(f"{where}: cannot be loaded: {_one_line(exc)}") from exc
    problem = _problem(entry_point.name, loaded)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
    connector: type[Connector] = loaded
    return connector


def load_connectors(group: str = GROUP) -> dict[str, type[Connector]]:
    """Every connector type installed in `group`, by type name.

    Raises ConfigError, with one line naming the entry point and the problem, at the
    first unusable plugin (in name order): an import that fails, an object that is
    not a concrete Connector subclass, a ``type`` different from the entry-point name,
    or two different objects published under one name. The pod must not start with a
    plugin set other than the one installed.
    """
    found: dict[str, type[Connector]] = {}
    values: dict[str, str] = {}
    for entry_point in sorted(find_entry_points(group), key=lambda e: (e.name, e.value)):
        seen = values.get(entry_point.name)
        if seen == entry_point.value:
            continue  # the same distribution seen twice (e.g. an editable install)
        if seen is not None:
            raise ConfigError(
                f"connector plugin {entry_point.name!r}: published twice, "
                f"as {seen} and as {entry_point.value}"
            )
        found[entry_point.name] = load_connector(entry_point)
        values[entry_point.name] = entry_point.value
    return found


def offers(connectors: Mapping[str, type[Connector]]) -> list[tuple[str, str]]:
    """(type, version) of each connector, sorted by type: what the pod registers with."""
    return sorted((name, cls.version) for name, cls in connectors.items())
