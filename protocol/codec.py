"""Body encoding of both APIs: media types, the strict request base, decode and encode.

Bodies are validated with msgspec at the edge: unknown fields, wrong types and
out-of-range values are rejected with a message naming the field, before anything
changes. Pod bodies are msgpack (JSON accepted); admin bodies are JSON.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgpack
import msgspec

from protocol.errors import ValidationError

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


def decode(body: bytes, content_type: str, kind: type[T]) -> T:
    """Parse and validate a request body; any problem is a ValidationError naming it."""
    try:
        if content_type == MSGPACK:
            raw: Any = msgpack.unpackb(body, raw=False) if body else {}
        else:
            raw = json.loads(body) if body else {}
    except RecursionError:  # the parsers' answer to very deep nesting
        raise ValidationError("request body is nested too deeply") from None
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        kind_name = "msgpack" if content_type == MSGPACK else "JSON"
        raise ValidationError(f"request body is not valid {kind_name}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValidationError("request body must be an object")
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {exc}") from None


def encode(value: Any, content_type: str) -> bytes:
    if content_type == MSGPACK:
        packed: bytes = msgpack.packb(msgspec.to_builtins(value))
        return packed
    return msgspec.json.encode(value)
