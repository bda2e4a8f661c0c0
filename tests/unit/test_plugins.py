"""Connector plugins load from entry points; a broken one stops the pod with one clear line."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

import pytest

from adapter import plugins
from adapter.connectors.fix.connector import FixConnector
from adapter.connectors.pg_queue import PgQueueConsumer
from adapter.connectors.tcp_client import TcpClient
from adapter.sdk import Connector, SessionContext
from protocol.errors import ConfigError

HERE = __name__


class GoodConnector(Connector):
    type = "good"
    version = "1.2.3"

    async def start(self, context: SessionContext) -> None:
        del context

    async def stop(self) -> None:
        pass


class OtherConnector(GoodConnector):
    type = "other"


class AbstractConnector(Connector):
    type = "abstract"


class NoVersionConnector(GoodConnector):
    type = "no-version"
    version = ""


class NotAConnector:
    type = "not-a-connector"


def _ep(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=plugins.GROUP)


def _install(monkeypatch: pytest.MonkeyPatch, *entry_points: metadata.EntryPoint) -> list[str]:
    """Make `find_entry_points` answer with these; returns the groups it was asked for."""
    asked: list[str] = []

    def fake(group: str) -> Iterable[metadata.EntryPoint]:
        asked.append(group)
        return list(entry_points)

    monkeypatch.setattr(plugins, "find_entry_points", fake)
    return asked


def test_loads_every_connector_by_type(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _install(
        monkeypatch, _ep("other", f"{HERE}:OtherConnector"), _ep("good", f"{HERE}:GoodConnector")
    )
    loaded = plugins.load_connectors()
    assert asked == ["raftorch.connectors"]
    assert loaded == {"good": GoodConnector, "other": OtherConnector}
    assert plugins.offers(loaded) == [("good", "1.2.3"), ("other", "1.2.3")]


def test_the_group_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _install(monkeypatch)
    assert plugins.load_connectors("my.group") == {}
    assert asked == ["my.group"]


def test_the_same_entry_point_seen_twice_is_loaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    good = _ep("good", f"{HERE}:GoodConnector")
    _install(monkeypatch, good, good)
    assert plugins.load_connectors() == {"good": GoodConnector}


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("ghost", "no_such_module_for_raftorch:Thing", "cannot be loaded: ModuleNotFoundError"),
        ("missing", f"{HERE}:NoSuchClass", "cannot be loaded: AttributeError"),
        ("not-a-connector", f"{HERE}:NotAConnector", "is not a subclass of adapter.sdk.Connector"),
        ("helper", f"{HERE}:_ep", "is not a subclass of adapter.sdk.Connector"),
        ("abstract", f"{HERE}:AbstractConnector", "is abstract (does not implement start, stop)"),
        ("renamed", f"{HERE}:GoodConnector", "GoodConnector.type is 'good', must equal"),
        ("no-version", f"{HERE}:NoVersionConnector", "version must be a string of 1-64"),
    ],
)
def test_a_broken_plugin_is_one_line_naming_the_entry_point(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    _install(monkeypatch, _ep("good", f"{HERE}:GoodConnector"), _ep(name, value))
    with pytest.raises(ConfigError) as err:
        plugins.load_connectors()
    message = err.value.message
    assert message.startswith(f"connector plugin {name!r} ({value}): ")
    assert problem in message
    assert "\n" not in message


def test_a_plugin_whose_import_raises_is_reported_not_propagated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Exploding(metadata.EntryPoint):
        def load(self) -> object:
            raise RuntimeError("plugin init failed:\n  line two")

    _install(monkeypatch, Exploding(name="boom", value="boom.module:Boom", group=plugins.GROUP))
    with pytest.raises(ConfigError) as err:
        plugins.load_connectors()
    assert err.value.message == (
        "connector plugin 'boom' (boom.module:Boom): cannot be loaded: "
        "RuntimeError: plugin init failed: line two"
    )


def test_two_objects_under_one_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(
        monkeypatch, _ep("good", f"{HERE}:GoodConnector"), _ep("good", f"{HERE}:OtherConnector")
    )
    with pytest.raises(ConfigError, match="'good': published twice"):
        plugins.load_connectors()


def test_the_built_in_connectors_are_installed() -> None:
    """The package's own entry points (pyproject.toml) resolve to the built-ins."""
    loaded = plugins.load_connectors()
    assert loaded["pg-queue-consumer"] is PgQueueConsumer
    assert loaded["tcp-client"] is TcpClient
    assert loaded["fix"] is FixConnector
    assert ("tcp-client", TcpClient.version) in plugins.offers(loaded)
