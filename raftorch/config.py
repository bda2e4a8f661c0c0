"""Settings of a raftorch process: one frozen dataclass tree, defaults < file < environment.

`load_config()` reads an optional YAML (``.yaml``/``.yml``) or TOML (``.toml``) file, then
``RAFTORCH_<SECTION>__<KEY>`` environment variables, and returns a validated `Config`. Every
problem is one `ConfigError` with a one-line message naming the dotted key (such as
``lease.ttl_seconds``) and the offending value(s). Unknown keys are errors. Secrets print ``***``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hmac
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

import yaml

from persistence.errors import ConfigError

ENV_PREFIX: Final = "RAFTORCH_"
"""Every environment variable with this prefix is a setting, except the reserved ones."""
CONFIG_ENV_VAR: Final = "RAFTORCH_CONFIG"
"""Path of the configuration file when `load_config` is given none; not a setting."""
RESERVED_ENV_VARS: Final = frozenset({CONFIG_ENV_VAR})
"""``RAFTORCH_*`` variables that are not settings."""
ADAPTER_ENV_PREFIX: Final = "RAFTORCH_ADAPTER_"
"""Settings of the adapter-pod runtime (``raftorch-adapter``), not of a replica."""
CLI_ENV_PREFIX: Final = "RAFTORCH_CLI_"
"""Settings of the operator commands (address and token of a cluster), not of a replica."""


@final
class Secret:
    """A string that never shows itself in reprs, logs or tracebacks; `reveal()` returns it."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, got {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The secret value; pass it straight to the library that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Identity and local storage of this process."""

    id: str = "node-1"
    """Stable id of this replica, unique in the cluster (letters, digits, '.', '_', '-')."""
    data_dir: str = "./raftorch-data"
    """Directory for local state such as Raft snapshots; relative to the working directory."""
    audit_file: str | None = None
    """Append the lease audit trail (JSON lines: every grant this replica applies) here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    """Raft replication between orchestrator replicas (pysyncobj)."""

    bind: str = "127.0.0.1:4321"
    """host:port this replica's Raft endpoint listens on and is known by to its peers."""
    peers: tuple[str, ...] = ()
    """host:port of the other replicas' Raft endpoints; empty for a single-replica cluster."""
    peer_routes: tuple[str, ...] = ()
    """``peer=host:port`` entries: dial that peer at another address (a proxy or sidecar);
    the peer keeps its name from ``peers``."""
    secret: Secret | None = None
    """Cluster secret encrypting Raft traffic (pysyncobj ``password``); the server needs it."""
    insecure_dev_mode: bool = False
    """Allow the server to run Raft unencrypted without a secret (local development only)."""
    election_timeout_min_seconds: float = 0.4
    """Lower bound of the randomised election timeout (pysyncobj ``raftMinTimeout``)."""
    election_timeout_max_seconds: float = 1.4
    """Upper bound of the randomised election timeout (pysyncobj ``raftMaxTimeout``)."""
    append_entries_period_seconds: float = 0.1
    """Period of the leader's append-entries heartbeat (pysyncobj ``appendEntriesPeriod``)."""
    leader_fallback_timeout_seconds: float | None = None
    """A leader that hears from no majority for this long steps down; None: 3 x election max."""
    max_commands_in_flight: int = 200
    """Raft commands awaiting commit at most; beyond it submissions get a retriable error."""

    @property
    def effective_leader_fallback_timeout_seconds(self) -> float:
        """`leader_fallback_timeout_seconds`, or 3 x `election_timeout_max_seconds` if unset."""
        if self.leader_fallback_timeout_seconds is None:
            return 3 * self.election_timeout_max_seconds
        return self.leader_fallback_timeout_seconds

    def routes(self) -> dict[str, tuple[str, int]]:
        """`peer_routes` as peer -> (host, port) to dial (checked at load)."""
        routes = {}
        for entry in self.peer_routes:
            peer, _, via = entry.partition("=")
            host, _, port = via.rpartition(":")
            routes[peer] = (host.strip("[]"), int(port))
        return routes

    def require_secret(self) -> Secret | None:
        """The Raft secret, or None when running without one on purpose.

        The server calls this at start; commands that do not run Raft never need a secret.
        Raises `ConfigError` when no secret is set and `insecure_dev_mode` is off.
        """
        if self.secret is None and not self.insecure_dev_mode:
            raise ConfigError(
                "raft.secret is not set: the Raft port carries pickled messages and must be "
                "encrypted; set RAFTORCH_RAFT__SECRET or pass --insecure-dev-mode for local "
                "development"
            )
        return self.secret


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseConfig:
    """Session leases held by adapter pods."""

    ttl_seconds: float = 6.0
    """A pod's leases expire this long after its last acknowledged heartbeat."""
    heartbeat_interval_seconds: float | None = None
    """How often pods heartbeat (told to them at registration); None: ttl_seconds / 3."""
    safety_margin_seconds: float = 0.5
    """A pod stops its sessions this long before its lease deadline (clock drift, pauses)."""
    renewal_batch_seconds: float = 0.05
    """The leader acknowledges renewals after one Raft barrier per window of this length."""
    reassign_per_tick: int = 500
    """At most this many sessions are reassigned per planner tick (bounded Raft traffic)."""
    tick_interval_seconds: float = 0.25
    """Period of the leader's lease planner (expiry checks and reassignment)."""

    @property
    def effective_heartbeat_interval_seconds(self) -> float:
        """`heartbeat_interval_seconds`, or `ttl_seconds` / 3 if unset."""
        if self.heartbeat_interval_seconds is None:
            return self.ttl_seconds / 3
        return self.heartbeat_interval_seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    """HTTP API (pods, admin, Portal, metrics) of this replica."""

    host: str = "127.0.0.1"
    """Address the HTTP server listens on."""
    port: int = 8080
    """Port the HTTP server listens on (1-65535)."""
    advertise_url: str | None = None
    """Base URL other replicas and pods use to reach this API; None: http://host:port."""
    max_body_bytes: int = 1048576
    """Largest request body accepted; larger ones get HTTP 413."""
    admin_token: Secret | None = None
    """Bootstrap bearer token with the admin role (further tokens live in PostgreSQL)."""
    pod_bootstrap_token: Secret | None = None
    """Token adapter pods present to register."""


_DEFAULT_DSN: Final = Secret("postgresql://postgres@127.0.0.1:5432/raftorch")


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    """PostgreSQL holding all durable state."""

    dsn: Secret = _DEFAULT_DSN
    """PostgreSQL URL (postgresql://user:password@host:port/db); may hold a password."""
    min_pool_size: int = 1
    """Connections the pool keeps open."""
    max_pool_size: int = 10
    """Connections the pool opens at most."""
    connect_timeout_seconds: float = 5.0
    """Timeout of one connection attempt."""
    connect_attempts: int = 10
    """Connection attempts at start-up before giving up."""
    retry_backoff_initial_seconds: float = 0.1
    """First delay between retries of a failed connection; doubles up to the maximum."""
    retry_backoff_max_seconds: float = 2.0
    """Longest delay between retries."""
    command_timeout_seconds: float = 10.0
    """Timeout of one SQL statement."""
    resync_interval_seconds: float = 30.0
    """Period of the full re-read that backs up LISTEN/NOTIFY (notifications can be lost)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """Logging, configured by the CLI only."""

    level: str = "INFO"
    """Lowest level logged: DEBUG, INFO, WARNING or ERROR (any case; stored upper-case)."""
    format: str = "text"
    """``text`` for humans or ``json`` (one object per line) for log collectors."""

    def __post_init__(self) -> None:
        if self.level.upper() not in _LOG_LEVELS:
            levels = ", ".join(_LOG_LEVELS)
            raise ConfigError(f"log.level: expected one of {levels}, got {self.level!r}")
        if self.format.lower() not in ("text", "json"):
            raise ConfigError(f"log.format: expected text or json, got {self.format!r}")
        # Frozen: normalise through object.__setattr__, as the dataclasses docs suggest.
        object.__setattr__(self, "level", self.level.upper())
        object.__setattr__(self, "format", self.format.lower())


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """All settings of a raftorch process; build it with `load_config()`.

    Construction validates every setting and every timing rule (`timing_rules`), so a
    `Config` that exists is consistent; the sections alone are not checked.
    """

    node: NodeConfig = field(default_factory=NodeConfig)
    """Identity and local storage."""
    raft: RaftConfig = field(default_factory=RaftConfig)
    """Raft replication between replicas."""
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    """Session leases of adapter pods."""
    api: ApiConfig = field(default_factory=ApiConfig)
    """HTTP API."""
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    """PostgreSQL."""
    log: LogConfig = field(default_factory=LogConfig)
    """Logging."""

    def __post_init__(self) -> None:
        _check_values(self)
        for key, value, relation, bound_key, bound, why in self.timing_rules():
            if not (value < bound if relation == "<" else _at_most(value, bound)):
                verb = "is not below" if relation == "<" else "is above"
                raise ConfigError(f"{key}={_num(value)} {verb} {bound_key}={_num(bound)}; {why}")

    def timing_rules(self) -> tuple[tuple[str, float, str, str, float, str], ...]:
        """The rules between settings, as data: (key, value, "<" or "<=", bound key, bound, why)."""
        raft, lease, db = self.raft, self.lease, self.database
        low, high = raft.election_timeout_min_seconds, raft.election_timeout_max_seconds
        ttl, beat = lease.ttl_seconds, lease.effective_heartbeat_interval_seconds
        ttl_minus_beat = f"(lease.ttl_seconds={_num(ttl)} - heartbeat interval {_num(beat)})"
        # fmt: off
        return (
            ("lease.heartbeat_interval_seconds", beat, "<=", "lease.ttl_seconds/3", ttl / 3,
             "heartbeats must be at most a third of the TTL"),
            ("lease.safety_margin_seconds", lease.safety_margin_seconds, "<", ttl_minus_beat,
             ttl - beat, "a pod would fence itself between heartbeats"),
            ("lease.renewal_batch_seconds", lease.renewal_batch_seconds, "<",
             "lease.heartbeat_interval_seconds", beat,
             "renewals would be acknowledged after the next heartbeat is due"),
            ("raft.election_timeout_min_seconds", low, "<", "raft.election_timeout_max_seconds",
             high, "the election timeout needs a random range"),
            ("raft.append_entries_period_seconds", raft.append_entries_period_seconds, "<=",
             "raft.election_timeout_min_seconds/3", low / 3,
             "followers would start elections against a healthy leader"),
            ("raft.election_timeout_max_seconds", high, "<=", "lease.ttl_seconds/2", ttl / 2,
             "a new leader must be elected well within the lease TTL"),
            ("raft.election_timeout_max_seconds", high, "<=",
             "raft.leader_fallback_timeout_seconds", raft.effective_leader_fallback_timeout_seconds,
             "a leader would step down before a successor could be elected"),
            ("database.min_pool_size", db.min_pool_size, "<=", "database.max_pool_size",
             db.max_pool_size, "the pool cannot keep more connections than it may open"),
            ("database.retry_backoff_initial_seconds", db.retry_backoff_initial_seconds, "<=",
             "database.retry_backoff_max_seconds", db.retry_backoff_max_seconds,
             "the first retry delay cannot exceed the longest"),
        )
        # fmt: on

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, source: str = "mapping") -> Config:
        """Defaults overlaid with `data`, shaped like a config file: ``{section: {key: value}}``.

        Values must have their native types (numbers, booleans, strings, lists of strings);
        `source` names `data` in error messages.
        """
        return _apply(cls(), _flatten(data, f"in {source}"))

    def with_overrides(
        self, overrides: Mapping[str, object], *, source: str = "overrides"
    ) -> Config:
        """A copy with dotted keys (``"lease.ttl_seconds"``) replaced and validated as a whole.

        String values are parsed like environment variables (for CLI flags); other values
        must have their native types.
        """
        values = {k: _Raw(v, isinstance(v, str), f"in {source}") for k, v in overrides.items()}
        _check_known(values)
        return _apply(self, values)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults < the file at `path` < ``RAFTORCH_*`` variables in `environ`, validated.

    `environ` defaults to `os.environ`; `path` defaults to ``environ["RAFTORCH_CONFIG"]``
    (no file when neither is set). Raises `ConfigError` with a one-line message.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None:
        path = env.get(CONFIG_ENV_VAR) or None
    values: dict[str, _Raw] = {}
    if path is not None:
        values.update(_flatten(_read_file(Path(path)), f"in {path}"))
    values.update(_from_environ(env))
    return _apply(Config(), values)


def env_var_name(key: str) -> str:
    """``lease.ttl_seconds`` -> ``RAFTORCH_LEASE__TTL_SECONDS``."""
    section, _, name = key.partition(".")
    return f"{ENV_PREFIX}{section.upper()}__{name.upper()}"


# --- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Raw:
    """One setting's value before parsing, and where it came from (for messages)."""

    value: object
    from_text: bool
    """Environment variables and string overrides are text to parse, not typed values."""
    origin: str


_EXPECTED: Final[Mapping[type, str]] = {
    float: "a number",
    int: "an integer",
    bool: "a boolean (true/false, yes/no, 1/0)",
    str: "a string",
    tuple: "a list of strings",
    Secret: "a string",
}
_BOOLS: Final = dict.fromkeys(("true", "yes", "on", "1"), True) | dict.fromkeys(
    ("false", "no", "off", "0"), False
)
_INVALID: Final = object()
"""What `_check_native` returns for a value of the wrong type."""
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
_NODE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_HOST_PORT: Final = re.compile(
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d+)"
)
_URL: Final = re.compile(r"https?://[^\s/?#]+(/\S*)?")


def _specs() -> dict[str, tuple[type, bool]]:
    """Dotted key -> (base type, optional) for every field of every section."""
    specs: dict[str, tuple[type, bool]] = {}
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint, args = hints[f.name], typing.get_args(hints[f.name])
            optional = isinstance(hint, types.UnionType) and type(None) in args
            if optional:
                hint = next(arg for arg in args if arg is not type(None))
            base = typing.get_origin(hint) or hint
            if base not in _EXPECTED:
                raise TypeError(f"{section}.{f.name}: unsupported setting type {hint!r}")
            specs[f"{section}.{f.name}"] = (base, optional)
    return specs


_SECTIONS: Final[dict[str, type]] = typing.get_type_hints(Config)
_SPECS: Final = _specs()
SETTINGS: Final[tuple[str, ...]] = tuple(_SPECS)
"""Every dotted key of the tree, in declaration order."""
_ENV_KEYS: Final = {env_var_name(key): key for key in SETTINGS}


def _read_file(path: Path) -> object:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ConfigError(f"config file {path}: expected a .yaml, .yml or .toml file name")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    try:
        if suffix == ".toml":
            return tomllib.loads(data.decode("utf-8"))
        return yaml.safe_load(data)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid UTF-8: {exc.reason}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {_one_line(exc)}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's snippet of the file (it may hold a secret)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return _one_line(exc)
    mark, what = exc.problem_mark, ": ".join(filter(None, (exc.context, exc.problem)))
    return f"{what or 'syntax error'} at line {mark.line + 1}, column {mark.column + 1}"


def _flatten(data: object, origin: str) -> dict[str, _Raw]:
    """``{section: {key: value}}`` -> ``{"section.key": raw}``; unknown keys raise."""
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, Mapping):
        kind = type(data).__name__
        raise ConfigError(f"configuration {origin}: expected a mapping of sections, got {kind}")
    values: dict[str, _Raw] = {}
    for section, settings in data.items():
        if isinstance(settings, Mapping):
            values.update({f"{section}.{k}": _Raw(v, False, origin) for k, v in settings.items()})
        elif section in _SECTIONS:
            shown = _show(settings)
            raise ConfigError(f"{section}: expected a mapping of settings, got {shown} {origin}")
        else:
            raise _unknown(str(section), origin)
    _check_known(values)
    return values


def _from_environ(environ: Mapping[str, str]) -> dict[str, _Raw]:
    values: dict[str, _Raw] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV_VARS:
            continue
        if name.startswith((ADAPTER_ENV_PREFIX, CLI_ENV_PREFIX)):
            continue
        if name not in _ENV_KEYS:
            raise _unknown_env(name)
        values[_ENV_KEYS[name]] = _Raw(environ[name], True, f"from {name}")
    return values


def _check_known(values: Mapping[str, _Raw]) -> None:
    for key, raw in values.items():
        if key not in _SPECS:
            raise _unknown(key, raw.origin)


def _unknown(key: str, origin: str) -> ConfigError:
    message = f"unknown setting {key!r} {origin}"
    if match := difflib.get_close_matches(key, SETTINGS, n=1):
        message += f"; did you mean {match[0]!r}?"
    return ConfigError(message)


def _unknown_env(name: str) -> ConfigError:
    section, sep, leaf = name.removeprefix(ENV_PREFIX).lower().partition("__")
    key = f"{section}.{leaf}" if sep else section
    message = f"unknown setting {key!r} from environment variable {name}"
    if not sep:
        message += " (settings are RAFTORCH_<SECTION>__<KEY>)"
    if match := difflib.get_close_matches(key, SETTINGS, n=1):
        message += f"; did you mean {env_var_name(match[0])}?"
    return ConfigError(message)


def _apply(base: Config, values: Mapping[str, _Raw]) -> Config:
    """`base` with (known) `values` parsed and put in place, then validated as a whole."""
    changes: dict[str, dict[str, object]] = {}
    for key, raw in values.items():
        section, _, name = key.partition(".")
        changes.setdefault(section, {})[name] = _coerce(key, raw)
    sections = {s: dataclasses.replace(getattr(base, s), **kw) for s, kw in changes.items()}
    return dataclasses.replace(base, **sections)


def _coerce(key: str, raw: _Raw) -> object:
    """`raw` as a value of the setting's type: text is parsed first, then the type checked."""
    base, optional = _SPECS[key]
    value = raw.value
    if raw.from_text and isinstance(value, str):
        if optional and not value.strip():
            return None
        value = _parse_text(base, value)
    if value is None and optional:
        return None
    checked = _check_native(base, value)
    if checked is _INVALID:
        shown = "***" if base is Secret else _show(raw.value)
        raise ConfigError(f"{key}: expected {_EXPECTED[base]}, got {shown} {raw.origin}")
    return checked


def _parse_text(base: type, text: str) -> object:
    """Environment text as a value of type `base`; text that does not parse is returned as is."""
    if base is bool:
        return _BOOLS.get(text.strip().lower(), text)
    if base is int or base is float:
        with contextlib.suppress(ValueError):
            return base(text.strip())
    if base is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text


def _check_native(base: type, value: object) -> object:
    """`value` if it has type `base` (an int will do for a float), or `_INVALID`."""
    if isinstance(value, bool) != (base is bool):
        return _INVALID
    if base is float and isinstance(value, int | float):
        return float(value) if math.isfinite(value) else _INVALID
    if base is tuple and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if base is Secret and isinstance(value, str):
        return Secret(value)
    return value if isinstance(value, base) else _INVALID


# --- validation ------------------------------------------------------------------------------


def _check_values(config: Config) -> None:
    """Rules on single settings; the rules between settings are `Config.timing_rules`."""
    for section in _SECTIONS:
        values = getattr(config, section)
        for f in dataclasses.fields(values):
            _check_common(f"{section}.{f.name}", getattr(values, f.name))
    node, raft, api = config.node, config.raft, config.api
    if not _NODE_ID.fullmatch(node.id):
        raise ConfigError(f"node.id: expected 1-63 of A-Z a-z 0-9 . _ -, got {node.id!r}")
    for key, address in [("raft.bind", raft.bind), *(("raft.peers", p) for p in raft.peers)]:
        match = _HOST_PORT.fullmatch(address)
        if not match or not 0 < int(match[3]) < 65536:
            raise ConfigError(f"{key}: expected host:port (port 1-65535), got {address!r}")
    if len(set(raft.peers)) != len(raft.peers) or raft.bind in raft.peers:
        raise ConfigError(
            f"raft.peers={list(raft.peers)!r} must name each other replica once and not "
            f"raft.bind={raft.bind!r}"
        )
    _check_routes(raft)
    if api.port > 65535:
        raise ConfigError(f"api.port: expected 1-65535, got {api.port!r}")
    if api.advertise_url is not None and not _URL.fullmatch(api.advertise_url):
        raise ConfigError(f"api.advertise_url: expected an http(s) URL, got {api.advertise_url!r}")
    if not config.database.dsn.reveal().startswith(("postgresql://", "postgres://")):
        raise ConfigError("database.dsn: expected a postgresql:// URL, got *** (hidden)")


def _check_routes(raft: RaftConfig) -> None:
    seen: set[str] = set()
    for entry in raft.peer_routes:
        peer, sep, via = entry.partition("=")
        match = _HOST_PORT.fullmatch(via)
        if not sep or not match or not 0 < int(match[3]) < 65536:
            raise ConfigError(f"raft.peer_routes: expected peer=host:port, got {entry!r}")
        if peer not in raft.peers or peer in seen:
            raise ConfigError(
                f"raft.peer_routes: {peer!r} must be one of raft.peers={list(raft.peers)!r}, "
                "routed once"
            )
        seen.add(peer)


def _check_common(key: str, value: object) -> None:
    """Numbers must be finite and above 0; strings and secrets must not be empty."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{key}: must be above 0, got {value!r}")
    elif (value.reveal() if isinstance(value, Secret) else value) == "":
        raise ConfigError(f"{key}: must not be empty (leave it unset instead)")


def _at_most(value: float, bound: float) -> bool:
    """`value` <= `bound`, forgiving float rounding (0.1 <= 0.3 / 3 holds)."""
    return value <= bound or math.isclose(value, bound, rel_tol=1e-9)


def _num(value: float) -> str:
    return repr(round(value, 6))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
