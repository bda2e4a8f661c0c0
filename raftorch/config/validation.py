"""Rules on single settings (ranges, formats, addresses) and the text helpers of messages.

The rules between settings (timing) are data on `Config.timing_rules`; `check_settings`
runs both when a `Config` is built.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import urllib.parse
from typing import TYPE_CHECKING, Final

from protocol.errors import ConfigError
from protocol.secret import Secret

if TYPE_CHECKING:
    from raftorch.config.settings import Config, RaftConfig

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
_NODE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_HOST_PORT: Final = re.compile(
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d+)"
)
_URL: Final = re.compile(r"https?://[^\s/?#]+(/\S*)?")
_SSL_MODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
MIN_SECRET_CHARS: Final = 16


def check_settings(config: Config) -> None:
    """Rules on single settings; the rules between settings are `Config.timing_rules`."""
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        for f in dataclasses.fields(values):
            _check_common(f"{section.name}.{f.name}", getattr(values, f.name))
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
    if raft.secret is not None and len(raft.secret.reveal()) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"raft.secret: must be at least {MIN_SECRET_CHARS} characters (it is the key of "
            f"the Raft traffic), got {len(raft.secret.reveal())}"
        )
    if raft.insecure_dev_mode and raft.secret is None and not _loopback(raft.bind):
        raise ConfigError(
            f"raft.bind={raft.bind!r}: without raft.secret, insecure dev mode runs Raft "
            "unencrypted (pickled messages anyone reaching the port can send): bind a "
            "loopback address such as 127.0.0.1, or set raft.secret"
        )
    check_dsn(config.database.dsn.reveal())


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_dsn(dsn: str) -> None:
    """A PostgreSQL URL asyncpg can use: scheme, hosts with numeric ports, a known sslmode.

    Messages never show the DSN itself (it may hold a password)."""
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError as exc:
        raise ConfigError(f"database.dsn: not a URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("database.dsn: expected a postgresql:// URL, got *** (hidden)")
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(",") if hosts else ():
        name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if colon and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"database.dsn: port {port!r} of host {name!r} is not 1-65535")
    query = urllib.parse.parse_qs(parts.query)
    for mode in query.get("sslmode", []):
        if mode not in _SSL_MODES:
            raise ConfigError(
                f"database.dsn: sslmode {mode!r} is not one of {', '.join(_SSL_MODES)}"
            )


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


def at_most(value: float, bound: float) -> bool:
    """`value` <= `bound`, forgiving float rounding (0.1 <= 0.3 / 3 holds)."""
    return value <= bound or math.isclose(value, bound, rel_tol=1e-9)


def num(value: float) -> str:
    return repr(round(value, 6))


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def one_line(text: object) -> str:
    return " ".join(str(text).split())
