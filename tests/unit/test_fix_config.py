"""The `fix` configuration schema (protocol/fix.py): defaults, and a clear error per bad field."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.errors import ValidationError
from protocol.fix import FixConfig, validate_fix_config

BASE: dict[str, Any] = {
    "role": "initiator",
    "begin_string": "FIX.4.4",
    "sender_comp_id": "US",
    "target_comp_id": "VENUE",
    "host": "venue.example",
    "port": 9876,
    "heartbeat_interval_seconds": 30,
}


def test_the_documented_defaults() -> None:
    config = validate_fix_config(BASE)
    assert config == FixConfig(**BASE)
    assert config.reconnect_interval_seconds == 5.0
    assert config.reset_on_logon is False
    assert config.data_dictionary is None and config.default_appl_ver_id is None
    assert config.appl_ver_id is None


def test_fixt_speaks_fix_50_sp2_unless_told_otherwise() -> None:
    assert validate_fix_config({**BASE, "begin_string": "FIXT.1.1"}).appl_ver_id == "9"
    custom = {**BASE, "begin_string": "FIXT.1.1", "default_appl_ver_id": "8"}
    assert validate_fix_config(custom).appl_ver_id == "8"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"port": "x"}, "config.port: expected an integer 1-65535, got 'x'"),
        ({"port": 0}, "config.port: expected an integer 1-65535, got 0"),
        ({"port": True}, "config.port: expected an integer 1-65535, got True"),
        ({"role": "client"}, "config.role: expected 'initiator' or 'acceptor', got 'client'"),
        ({"begin_string": "FIX.5.0"}, "config.begin_string: expected 'FIX.4.2', 'FIX.4.4' or"),
        ({"sender_comp_id": "has space"}, "config.sender_comp_id: expected 1-64 printable"),
        ({"target_comp_id": ""}, "config.target_comp_id: expected 1-64 printable"),
        ({"heartbeat_interval_seconds": 0.5}, "config.heartbeat_interval_seconds: expected an"),
        ({"reconnect_interval_seconds": 0}, "config.reconnect_interval_seconds: expected"),
        ({"reset_on_logon": "yes"}, "config.reset_on_logon: expected true or false"),
        ({"data_dictionary": "../etc"}, "config.data_dictionary: expected an artifact name"),
        ({"default_appl_ver_id": "9"}, "config.default_appl_ver_id: only FIXT.1.1 sessions"),
        ({"colour": "blue"}, "config.colour: unknown field"),
        ({"host": None}, "config.host: required"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], message: str) -> None:
    config = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(ValidationError) as raised:
        validate_fix_config(config)
    assert raised.value.message.startswith(message), raised.value.message


def test_a_data_dictionary_must_be_one_of_the_adapters_artifacts() -> None:
    config = {**BASE, "data_dictionary": "fix44"}
    assert validate_fix_config(config, artifacts=["fix44"]).data_dictionary == "fix44"
    with pytest.raises(ValidationError, match=r"config\.data_dictionary: artifact 'fix44' must"):
        validate_fix_config(config, artifacts=[])


def test_not_an_object() -> None:
    with pytest.raises(ValidationError, match="config: expected a JSON object, got list"):
        validate_fix_config([])  # type: ignore[arg-type]
