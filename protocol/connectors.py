"""What connectors publish about their configuration, for the orchestrator and the Portal.

A connector type listed here has its configuration checked when an adapter is created
or patched (a 400 naming the field, nothing changed), offers a JSON Schema the Portal
builds its form from, and says what the adapter's `reset` action means for it. A type
not listed takes any JSON object, checked only by the connector when a session starts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from protocol.fix import FixConfig, validate_fix_config

ConfigCheck = Callable[[Mapping[str, Any], Collection[str]], object]
"""Raises ValidationError naming the field; given the config and the artifact names."""


@dataclass(frozen=True, slots=True)
class ConnectorSchema:
    check: ConfigCheck
    json_schema: Mapping[str, Any]
    reset: Literal["delete", "request"] = "delete"
    """`delete`: reset forgets the session state; `request`: the owning session carries the
    reset out itself, through fenced writes (FIX: ResetSeqNumFlag on the next Logon)."""


def _fix(config: Mapping[str, Any], artifacts: Collection[str]) -> object:
    return validate_fix_config(config, artifacts=artifacts)


SCHEMAS: Mapping[str, ConnectorSchema] = {
    "fix": ConnectorSchema(_fix, msgspec.json.schema(FixConfig), reset="request"),
}


def check_config(connector: str, config: Mapping[str, Any], artifacts: Collection[str]) -> None:
    """The connector's own check of an adapter configuration, where it publishes one."""
    schema = SCHEMAS.get(connector)
    if schema is not None:
        schema.check(config, artifacts)


def resets_by_request(connector: str) -> bool:
    schema = SCHEMAS.get(connector)
    return schema is not None and schema.reset == "request"
