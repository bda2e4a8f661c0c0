"""The values of the public contract: states, statuses, modes, event levels, name rules.

Tools outside the code script against these strings (DESIGN.md, "Public contract"), so
they are defined once, here, for the API, the pod runtime, the database and the Raft state.
"""

from __future__ import annotations

import enum
import re

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Adapter and artifact names: letters, digits, '.', '_', '-'; starting with a letter or digit."""


class AdminState(enum.StrEnum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


class DeploymentMode(enum.StrEnum):
    SINGLE = "single"
    ACTIVE_PASSIVE = "active_passive"
    SCALE_OUT = "scale_out"


class EventLevel(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class EventCategory(enum.StrEnum):
    CONNECTION = "connection"
    ACTION = "action"
    SYSTEM = "system"


class PodState(enum.StrEnum):
    """A registered pod's lifecycle as the Raft state records it."""

    ABSENT = "ABSENT"  # not in the state: never registered, expired or gone
    ACTIVE = "ACTIVE"
    DRAINING = "DRAINING"


class SlotStatus(enum.StrEnum):
    """One session slot's lease as the Raft state records it."""

    UNASSIGNED = "UNASSIGNED"  # no owner: free to grant
    CLAIMING = "CLAIMING"  # granted; the owner has not reported it running yet
    ACTIVE = "ACTIVE"  # the owner reports the session running
    ERROR = "ERROR"  # the owner reports the connector failing
    REVOKING = "REVOKING"  # adapter disabled or deleted; waiting for the owner to stop
    HANDING_OFF = "HANDING_OFF"  # moving (rebalance, drain): the owner stops, then it goes on


class AdapterStatus(enum.StrEnum):
    """The operational status an adapter shows to users (public contract)."""

    INACTIVE = "INACTIVE"
    CLAIMING = "CLAIMING"
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"
