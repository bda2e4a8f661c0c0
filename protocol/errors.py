"""The one error hierarchy of raftorch: every error has a code, an HTTP status and a retry hint.

It lives in the lowest layer so that `persistence`, `raftorch` and `adapter` all raise
the same types; the HTTP layer renders any `RaftorchError` as
``{"error": {"code", "message"}}`` with ``http_status``.
"""

from __future__ import annotations

from typing import ClassVar


class RaftorchError(Exception):
    """Base of every error raftorch raises on purpose."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class ConfigError(RaftorchError):
    """Configuration is invalid; start-up must stop with this one-line message."""

    code = "invalid_config"
    http_status = 400


class ValidationError(RaftorchError):
    """Input from outside (HTTP body, manifest, plugin output) is malformed."""

    code = "invalid_input"
    http_status = 400


class NotFoundError(RaftorchError):
    """The named object does not exist."""

    code = "not_found"
    http_status = 404


class ConflictError(RaftorchError):
    """The request contradicts current state (duplicate name, delete while enabled...)."""

    code = "conflict"
    http_status = 409


class StaleEpochError(ConflictError):
    """A fenced write carried an epoch older than the stored one (or a rival owner's)."""

    code = "stale_epoch"


class UnavailableError(RaftorchError):
    """A dependency (PostgreSQL, the Raft leader) cannot be reached right now."""

    code = "unavailable"
    http_status = 503
    retriable = True


class RegistrationExpiredError(RaftorchError):
    """The pod is not registered (expired, left, or never was): stop all, re-register."""

    code = "registration_expired"
    http_status = 410
