"""Settings of an adapter pod: command-line flags, with RAFTORCH_ADAPTER_* fallbacks."""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from protocol.errors import ConfigError
from protocol.pod import MAX_LABELS
from protocol.secret import Secret
from protocol.values import POD_ID_RE, PRINTABLE_RE

ENV_PREFIX = "RAFTORCH_ADAPTER_"
_POD_ID = POD_ID_RE
MAX_WAIT_SECONDS = 30.0  # the orchestrator's longest long-poll (raftorch.api.pods)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the pod runtime needs; validated on construction."""

    pod_id: str
    orchestrators: tuple[str, ...]
    bootstrap_token: Secret
    database_dsn: Secret
    capacity: int = 100
    labels: tuple[tuple[str, str], ...] = ()
    address: str = ""
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100
    safety_margin_seconds: float = 0.5
    request_timeout_seconds: float = 2.0
    stop_timeout_seconds: float = 5.0  # a graceful stop (revoke, hand-over, drain)
    start_timeout_seconds: float = 30.0  # a connector start that takes longer is an ERROR
    long_poll_seconds: float = 20.0
    connectors: tuple[str, ...] = field(default=())  # empty: every installed connector
    audit_file: str = ""  # empty: no lease audit trail
    follow_leader: bool = True  # go straight to the leader a follower names

    def __post_init__(self) -> None:
        if not _POD_ID.match(self.pod_id):
            raise ConfigError(f"pod id {self.pod_id!r} is invalid: use 1-63 of [A-Za-z0-9._-]")
        if not self.orchestrators:
            raise ConfigError("no orchestrator address: pass --orchestrator URL (repeatable)")
        for url in self.orchestrators:
            if not re.match(r"^https?://[^/\s]+$", url):
                raise ConfigError(f"orchestrator address {url!r} must look like http://host:port")
        if not 0 <= self.capacity <= 100_000:
            raise ConfigError(f"capacity {self.capacity} must be between 0 and 100000")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port {self.metrics_port} is not a port number")
        for name in (
            "safety_margin_seconds",
            "request_timeout_seconds",
            "stop_timeout_seconds",
            "start_timeout_seconds",
            "long_poll_seconds",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if self.long_poll_seconds > MAX_WAIT_SECONDS:
            raise ConfigError(
                f"long_poll_seconds {self.long_poll_seconds:g} is more than the orchestrator "
                f"waits ({MAX_WAIT_SECONDS:g}s)"
            )
        self._check_labels()

    def _check_labels(self) -> None:
        if len(self.labels) > MAX_LABELS:
            raise ConfigError(f"{len(self.labels)} labels: at most {MAX_LABELS} are allowed")
        for key, value in self.labels:
            if not (0 < len(key) <= 128 and len(value) <= 128):
                raise ConfigError(f"label {key!r}: keys are 1-128, values 0-128 characters")
            if not (PRINTABLE_RE.match(key) and PRINTABLE_RE.match(value)):
                raise ConfigError(f"label {key!r} holds control characters")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `raftorch-adapter run`; each falls back to RAFTORCH_ADAPTER_<FLAG>."""
    parser.add_argument("--pod-id", help="unique pod id (default: host name)")
    parser.add_argument(
        "--orchestrator",
        action="append",
        dest="orchestrators",
        help="orchestrator replica URL, repeatable (env: comma-separated)",
    )
    parser.add_argument("--bootstrap-token", help="pod bootstrap token (prefer the env var)")
    parser.add_argument("--database-dsn", help="PostgreSQL DSN for session state (prefer env)")
    parser.add_argument("--capacity", type=int, help="most sessions (active + standby)")
    parser.add_argument("--label", action="append", dest="labels", help="KEY=VALUE, e.g. zone=a")
    parser.add_argument("--address", help="address shown to operators")
    parser.add_argument(
        "--metrics-host", help="address /metrics and the probes listen on (default 127.0.0.1)"
    )
    parser.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz")
    parser.add_argument(
        "--connector",
        action="append",
        dest="connectors",
        help="offer only these connector types (default: all installed)",
    )
    parser.add_argument(
        "--audit-file", help="append the lease audit trail (JSON lines) to this file"
    )
    parser.add_argument(
        "--follow-leader",
        choices=("true", "false"),
        help="call the leader's advertised URL directly once a follower names it "
        "(default true; false keeps every call on the configured --orchestrator URLs)",
    )


def _pick(args: argparse.Namespace, env: Mapping[str, str], name: str) -> object:
    value = getattr(args, name, None)
    if value is not None:
        return value
    raw = env.get(ENV_PREFIX + name.upper())
    if raw is None or raw == "":
        return None
    if name in ("orchestrators", "labels", "connectors"):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def _labels(raw: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"label {item!r} must be KEY=VALUE")
        pairs.append((key, value))
    return tuple(sorted(pairs))


def _int(name: str, value: object, default: int) -> int:
    if value is None:
        return default
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None


def _bool(name: str, value: object, default: bool) -> bool:
    if value is None:
        return default
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return text == "true"


def from_arguments(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> AgentConfig:
    env = os.environ if env is None else env
    token, dsn = _pick(args, env, "bootstrap_token"), _pick(args, env, "database_dsn")
    if token is None:
        raise ConfigError("no pod bootstrap token: set RAFTORCH_ADAPTER_BOOTSTRAP_TOKEN")
    if dsn is None:
        raise ConfigError("no database: set RAFTORCH_ADAPTER_DATABASE_DSN")
    return AgentConfig(
        pod_id=str(_pick(args, env, "pod_id") or socket.gethostname()),
        orchestrators=tuple(str(u).rstrip("/") for u in _pick(args, env, "orchestrators") or ()),  # type: ignore[attr-defined]
        bootstrap_token=Secret(str(token)),
        database_dsn=Secret(str(dsn)),
        capacity=_int("capacity", _pick(args, env, "capacity"), 100),
        labels=_labels(_pick(args, env, "labels") or ()),  # type: ignore[arg-type]
        address=str(_pick(args, env, "address") or ""),
        metrics_host=str(_pick(args, env, "metrics_host") or "127.0.0.1"),
        metrics_port=_int("metrics port", _pick(args, env, "metrics_port"), 9100),
        connectors=tuple(str(c) for c in _pick(args, env, "connectors") or ()),  # type: ignore[attr-defined]
        audit_file=str(_pick(args, env, "audit_file") or ""),
        follow_leader=_bool("follow leader", _pick(args, env, "follow_leader"), True),
    )
