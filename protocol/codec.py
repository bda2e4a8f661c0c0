"""Body encoding of both APIs: media types, the strict request base, decode and encode.

Bodies are validated with msgspec at the edge: unknown fields, wrong types and
out-of-range values are rejected with a message naming the field, before anything
changes. Pod bodies are msgpack (JSON accepted); admin bodies are JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn, TypeVar

import msgpack
import msgspec

from protocol.errors import ValidationError
from protocol.values import PATTERN_WORDS

MSGPACK = "application/msgpack"
JSON = "application/json"


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are errors."""


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    """Stable machine-readable code, e.g. not_found, conflict, invalid_input."""
    message: str
    """One line for humans."""


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every 4xx/5xx answer carries this body."""

    error: ErrorDetail


T = TypeVar("T")


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes | str) -> Any:
    """Strict JSON: NaN, Infinity and -Infinity are refused (PostgreSQL and every other
    JSON reader would refuse them later, with a worse message)."""
    return json.loads(body, parse_constant=_no_constants)


def check_finite(value: Any, where: str) -> None:
    """Refuse non-finite numbers anywhere in `value` (1e999 parses as infinity; msgpack can
    carry NaN): ValueError naming the first one's place."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{path} is {item!r}: numbers must be finite")
        if isinstance(item, dict):
            stack.extend((f"{path}.{k}", v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))


def decode(body: bytes, content_type: str, kind: type[T]) -> T:
    """Parse and validate a request body; any problem is a ValidationError naming it."""
    return convert(parse_body(body, content_type), kind)


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The body as builtins (an object), before validation: a ValidationError if it is not
    msgpack (or JSON) at all. Lets a caller look at sizes before validating everything."""
    try:
        if content_type == MSGPACK:
            raw: Any = msgpack.unpackb(body, raw=False) if body else {}
        else:
            raw = parse_json(body) if body else {}
    except RecursionError:  # the parsers' answer to very deep nesting
        raise ValidationError("request body is nested too deeply") from None
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        kind_name = "msgpack" if content_type == MSGPACK else "JSON"
        raise ValidationError(f"request body is not valid {kind_name}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValidationError("request body must be an object")
    return raw


def convert(raw: dict[str, Any], kind: type[T]) -> T:
    """Validate a parsed body as `kind`; a ValidationError naming what is wrong."""
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {readable(str(exc))}") from None


def readable(message: str) -> str:
    """msgspec's message with a pattern's meaning in place of the regular expression."""
    for pattern, words in PATTERN_WORDS.items():
        message = message.replace(f"`str` matching regex {pattern!r}", words)
    return message


_MSGPACK_ENCODER = msgspec.msgpack.Encoder()


def encode(value: Any, content_type: str) -> bytes:
    """An answer body. msgpack straight from the structs in one pass (C): the same bytes
    as msgpack.packb(msgspec.to_builtins(value)) for what the pod API answers (no
    datetimes), at a seventh of the cost on a heartbeat answer with assignments."""
    if content_type == MSGPACK:
        return _MSGPACK_ENCODER.encode(value)
    return msgspec.json.encode(value)
