"""The `fix` connector's configuration: one schema, checked by the orchestrator and the pod.

The orchestrator validates a `fix` adapter's config when it is created or patched (a
400 naming the field, nothing changed); the pod validates it again before a session
starts. Both call `validate_fix_config`, so they can never disagree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal

import msgspec

from protocol.errors import ValidationError

CONNECTOR = "fix"
"""The connector type whose configuration this module describes."""

BeginString = Literal["FIX.4.2", "FIX.4.4", "FIXT.1.1"]
Role = Literal["initiator", "acceptor"]

DEFAULT_APPL_VER_ID = "9"
"""FIX 5.0 SP2, the application version a FIXT.1.1 session speaks unless told otherwise."""

_COMP_ID = re.compile(r"^[!-~]{1,64}$")  # printable ASCII, no spaces, no SOH
_APPL_VER_ID = re.compile(r"^[0-9A-Za-z.]{1,16}$")
_ARTIFACT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9.:_\[\]-]{1,255}$")


class FixConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A FIX session: who we are, who they are, and where the connection is made.

    `host`/`port` is where an initiator connects and where an acceptor listens.
    Sequence numbers never reset unless asked: `reset_on_logon`, or the adapter's
    `reset` action.
    """

    role: Role
    begin_string: BeginString
    sender_comp_id: str
    target_comp_id: str
    host: str
    port: int
    heartbeat_interval_seconds: int
    default_appl_ver_id: str | None = None
    reconnect_interval_seconds: float = 5.0
    reset_on_logon: bool = False
    data_dictionary: str | None = None

    @property
    def appl_ver_id(self) -> str | None:
        """DefaultApplVerID(1137) of our Logon: FIXT.1.1 only, FIX 5.0 SP2 unless set."""
        if self.begin_string != "FIXT.1.1":
            return None
        return self.default_appl_ver_id or DEFAULT_APPL_VER_ID


# What each field must be, as the error message says it.
_EXPECTED: dict[str, str] = {
    "role": "'initiator' or 'acceptor'",
    "begin_string": "'FIX.4.2', 'FIX.4.4' or 'FIXT.1.1'",
    "sender_comp_id": "1-64 printable ASCII characters without spaces",
    "target_comp_id": "1-64 printable ASCII characters without spaces",
    "host": "a host name or IP address",
    "port": "an integer 1-65535",
    "heartbeat_interval_seconds": "an integer number of seconds 1-3600",
    "default_appl_ver_id": "an ApplVerID such as '9' (FIX 5.0 SP2)",
    "reconnect_interval_seconds": "a number of seconds 0.1-3600",
    "reset_on_logon": "true or false",
    "data_dictionary": "an artifact name",
}


def _error(field: str, value: Any) -> ValidationError:
    return ValidationError(f"config.{field}: expected {_EXPECTED[field]}, got {value!r}")


def validate_fix_config(
    config: Mapping[str, Any], *, artifacts: Collection[str] | None = None
) -> FixConfig:
    """The checked configuration, or ValidationError naming the first bad field.

    `artifacts`, when given, are the adapter's artifact references: a named data
    dictionary must be one of them (the session may read only what it references).
    """
    if not isinstance(config, Mapping):
        raise ValidationError(f"config: expected a JSON object, got {type(config).__name__}")
    for key in config:
        if key not in _EXPECTED:
            known = ", ".join(_EXPECTED)
            raise ValidationError(f"config.{key}: unknown field (known: {known})")
    for field in (
        "role",
        "begin_string",
        "sender_comp_id",
        "target_comp_id",
        "host",
        "port",
        "heartbeat_interval_seconds",
    ):
        if config.get(field) is None:
            raise ValidationError(f"config.{field}: required, expected {_EXPECTED[field]}")
    try:
        parsed = msgspec.convert(dict(config), FixConfig, strict=True)
    except msgspec.ValidationError as exc:
        field = _field_of(str(exc))
        if field in _EXPECTED:
            raise _error(field, config.get(field)) from None
        raise ValidationError(f"config: {exc}") from None
    _check_values(parsed)
    named = parsed.data_dictionary
    if named is not None and artifacts is not None and named not in artifacts:
        raise ValidationError(
            f"config.data_dictionary: artifact {parsed.data_dictionary!r} must also be "
            "listed in the adapter's artifacts"
        )
    return parsed


def _field_of(message: str) -> str:
    """The top-level field a msgspec error is about ("... - at `$.port`")."""
    match = re.search(r"at `\$\.([A-Za-z_]+)", message)
    return match[1] if match else ""


def _check_values(parsed: FixConfig) -> None:
    """Range and format rules msgspec's types do not express."""
    for field in ("sender_comp_id", "target_comp_id"):
        if not _COMP_ID.fullmatch(getattr(parsed, field)):
            raise _error(field, getattr(parsed, field))
    if not _HOST.fullmatch(parsed.host):
        raise _error("host", parsed.host)
    if not 1 <= parsed.port <= 65535:
        raise _error("port", parsed.port)
    if not 1 <= parsed.heartbeat_interval_seconds <= 3600:
        raise _error("heartbeat_interval_seconds", parsed.heartbeat_interval_seconds)
    reconnect = parsed.reconnect_interval_seconds
    if not (math.isfinite(reconnect) and 0.1 <= reconnect <= 3600):
        raise _error("reconnect_interval_seconds", reconnect)
    if parsed.default_appl_ver_id is not None:
        if parsed.begin_string != "FIXT.1.1":
            raise ValidationError(
                "config.default_appl_ver_id: only FIXT.1.1 sessions have one "
                f"(begin_string is {parsed.begin_string!r})"
            )
        if not _APPL_VER_ID.fullmatch(parsed.default_appl_ver_id):
            raise _error("default_appl_ver_id", parsed.default_appl_ver_id)
    if parsed.data_dictionary is not None and not _ARTIFACT.fullmatch(parsed.data_dictionary):
        raise _error("data_dictionary", parsed.data_dictionary)
