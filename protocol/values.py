"""The values of the public contract: states, statuses, modes, event levels, name rules.

Tools outside the code script against these strings (DESIGN.md, "Public contract"), so
they are defined once, here, for the API, the pod runtime, the database and the Raft state.
"""

from __future__ import annotations

import enum
import re

# Patterns end in \Z, not $: Python's $ also matches before a trailing newline, so
# "x\n" would pass. The OpenAPI document shows them with $ (`raftorch.api.openapi`),
# which in JSON Schema's regex dialect already means the very end.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
"""Adapter, artifact and token names: letters, digits, '.', '_', '-'; starting with a letter
or digit."""
POD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
"""Pod ids (a Kubernetes pod name fits)."""
_HEX_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SLOT_RE = re.compile(rf"^{_HEX_ID}/[0-9]{{1,4}}\Z")
"""Session slots: `<adapter id>/<index>`, the id in its canonical lower-case form."""
UUID_RE = re.compile(rf"^{_HEX_ID}\Z", re.IGNORECASE)
"""Adapter and token ids: the 8-4-4-4-12 hex form only (no braces, `urn:uuid:` or bare hex:
one spelling per id, and nothing PostgreSQL would parse differently)."""
PRINTABLE_RE = re.compile(r"^[^\x00-\x1f\x7f-\x9f]*\Z")
"""Free text that ends up in log lines, labels and the Portal: no control characters
(newlines would split log lines; escape sequences would drive a terminal)."""

PATTERN_WORDS = {
    NAME_RE.pattern: "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
    POD_ID_RE.pattern: "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    SLOT_RE.pattern: "a session slot: '<adapter id>/<index>'",
    UUID_RE.pattern: "an id in the form 8-4-4-4-12 hex digits",
    PRINTABLE_RE.pattern: "text without control characters",
}
"""What each pattern means, for error messages (the pattern itself helps no one)."""


def canonical_id(text: object) -> str | None:
    """`text` as an id in lower case, or None when it is not one."""
    if isinstance(text, str) and UUID_RE.match(text):
        return text.lower()
    return None


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
