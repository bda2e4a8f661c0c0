"""Pod settings: flags and RAFTORCH_ADAPTER_* variables, one-line errors."""

from __future__ import annotations

import pytest

from adapter.cli import build_parser
from adapter.config import from_arguments
from protocol.errors import ConfigError

BASE = {
    "RAFTORCH_ADAPTER_BOOTSTRAP_TOKEN": "tok-s3cr3t",
    "RAFTORCH_ADAPTER_DATABASE_DSN": "postgresql://x@127.0.0.1/db",
    "RAFTORCH_ADAPTER_ORCHESTRATORS": "http://127.0.0.1:8080, http://127.0.0.1:8081",
}


def _load(argv: list[str], env: dict[str, str]) -> object:
    return from_arguments(build_parser().parse_args(["run", *argv]), env)


def test_environment_and_flags() -> None:
    config = _load(["--pod-id", "p1", "--label", "zone=a", "--capacity", "7"], BASE)
    assert config.orchestrators == ("http://127.0.0.1:8080", "http://127.0.0.1:8081")  # type: ignore[attr-defined]
    assert config.labels == (("zone", "a"),) and config.capacity == 7  # type: ignore[attr-defined]
    assert "tok-s3cr3t" not in repr(config) and "postgresql" not in repr(config)


def test_audit_trail_and_leader_following() -> None:
    default = _load([], BASE)
    assert default.audit_file == "" and default.follow_leader is True  # type: ignore[attr-defined]
    env = {**BASE, "RAFTORCH_ADAPTER_FOLLOW_LEADER": "FALSE"}
    config = _load(["--audit-file", "/tmp/pod.audit"], env)
    assert config.audit_file == "/tmp/pod.audit" and config.follow_leader is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {**BASE, "RAFTORCH_ADAPTER_BOOTSTRAP_TOKEN": ""}, "no pod bootstrap token"),
        (
            [],
            {k: v for k, v in BASE.items() if k != "RAFTORCH_ADAPTER_ORCHESTRATORS"},
            "no orchestrator address",
        ),
        (["--orchestrator", "127.0.0.1:8080"], BASE, "must look like http://host:port"),
        (["--label", "zone"], BASE, "must be KEY=VALUE"),
        (["--pod-id", "bad id"], BASE, "pod id 'bad id' is invalid"),
        ([], {**BASE, "RAFTORCH_ADAPTER_CAPACITY": "lots"}, "capacity must be a whole number"),
        ([], {**BASE, "RAFTORCH_ADAPTER_FOLLOW_LEADER": "maybe"}, "must be true or false"),
    ],
)
def test_bad_settings_fail_with_one_line(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(argv, env)
    assert message in err.value.message and "\n" not in err.value.message
