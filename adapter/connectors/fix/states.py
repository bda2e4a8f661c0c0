"""The states a FIX session's connection goes through, and the ways it can end."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    AWAIT_LOGON = "await_logon"
    LOGON_SENT = "logon_sent"
    ACTIVE = "active"
    LOGOUT_SENT = "logout_sent"


class EndKind(enum.Enum):
    NETWORK = "network"  # connection lost, closed or silent: connect again
    LOGOUT = "logout"  # the counterparty logged out: connect again
    PROTOCOL = "protocol"  # the counterparty broke the protocol: connect again, later
    STORE = "store"  # PostgreSQL failed: connect again from the durable state
    STOPPED = "stopped"  # we were asked to stop and have logged out
    RESET = "reset"  # logged out to reset sequence numbers at the next Logon
    SEQUENCE_TOO_LOW = "sequence_too_low"  # needs an operator: ERROR, no retry
    FENCED = "fenced"  # a newer epoch owns the session: stop for good


@dataclass(frozen=True, slots=True)
class Ended:
    kind: EndKind
    reason: str
    logged_on: bool


class SessionEnd(Exception):
    def __init__(self, kind: EndKind, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason
