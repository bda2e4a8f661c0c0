"""Loading settings: defaults < a YAML or TOML file < ``RAFTORCH_*`` environment variables.

`load_config()` reads an optional YAML (``.yaml``/``.yml``) or TOML (``.toml``) file, then
``RAFTORCH_<SECTION>__<KEY>`` environment variables, and returns a validated `Config`. Every
problem is one `ConfigError` with a one-line message naming the dotted key (such as
``lease.ttl_seconds``) and the offending value(s). Unknown keys are errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from protocol.errors import ConfigError
from protocol.secret import Secret
from raftorch.config.settings import Config
from raftorch.config.validation import one_line, show

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


def config_from_mapping(data: Mapping[str, object], *, source: str = "mapping") -> Config:
    """Defaults overlaid with `data`, shaped like a config file: ``{section: {key: value}}``.

    Values must have their native types (numbers, booleans, strings, lists of strings);
    `source` names `data` in error messages.
    """
    return _apply(Config(), _flatten(data, f"in {source}"))


def with_overrides(
    base: Config, overrides: Mapping[str, object], *, source: str = "overrides"
) -> Config:
    """A copy with dotted keys (``"lease.ttl_seconds"``) replaced and validated as a whole.

    String values are parsed like environment variables (for CLI flags); other values
    must have their native types.
    """
    values = {k: _Raw(v, isinstance(v, str), f"in {source}") for k, v in overrides.items()}
    _check_known(values)
    return _apply(base, values)


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
        raise ConfigError(f"config file {path} is not valid TOML: {one_line(exc)}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's snippet of the file (it may hold a secret)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return one_line(exc)
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
            shown = show(settings)
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
        shown = "***" if base is Secret else show(raw.value)
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
