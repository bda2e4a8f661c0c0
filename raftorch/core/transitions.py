"""The transition tables of raftorch's state machines: pod, session slot, adapter status.

Each table is the single authority on which transitions are legal; `check` raises
`IllegalTransitionError` on any other. `docs/lease-protocol.md` draws its state
diagrams from these tables (`python -m raftorch.core.transitions`).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from protocol.errors import ConflictError
from protocol.values import AdapterStatus, PodState, SlotStatus


class IllegalTransitionError(ConflictError):
    """A state change the transition table does not allow."""

    code = "illegal_transition"


S = TypeVar("S", bound=enum.Enum)


@dataclass(frozen=True, slots=True)
class TransitionTable(Generic[S]):
    """Allowed transitions of one concept, with the event that causes each."""

    name: str
    edges: Mapping[tuple[S, S], str]

    def allowed(self, src: S, dst: S) -> bool:
        return (src, dst) in self.edges

    def check(self, src: S, dst: S) -> None:
        if (src, dst) not in self.edges:
            raise IllegalTransitionError(
                f"{self.name}: illegal transition {src.value} -> {dst.value}"
            )

    def mermaid(self) -> str:
        """A Mermaid state diagram of the table."""
        lines = ["stateDiagram-v2"]
        for (src, dst), event in self.edges.items():
            lines.append(f"    {src.value} --> {dst.value}: {event}")
        return "\n".join(lines)


def _table(name: str, edges: Iterable[tuple[S, S, str]]) -> TransitionTable[S]:
    return TransitionTable(name, {(src, dst): event for src, dst, event in edges})


P, L, A = PodState, SlotStatus, AdapterStatus

POD_TRANSITIONS: TransitionTable[PodState] = _table(
    "pod",
    [
        (P.ABSENT, P.ACTIVE, "register"),
        (P.ACTIVE, P.ACTIVE, "re-register (new incarnation)"),
        (P.ACTIVE, P.DRAINING, "drain (SIGTERM, or an operator)"),
        (P.DRAINING, P.DRAINING, "drain again"),
        (P.DRAINING, P.ACTIVE, "undrain (operator) / re-register (new incarnation)"),
        (P.ACTIVE, P.ABSENT, "expire (no renewal for TTL)"),
        (P.DRAINING, P.ABSENT, "leave / expire"),
    ],
)

SLOT_TRANSITIONS: TransitionTable[SlotStatus] = _table(
    "slot",
    [
        (L.UNASSIGNED, L.CLAIMING, "grant"),
        (L.CLAIMING, L.ACTIVE, "owner reports running"),
        (L.CLAIMING, L.ERROR, "owner reports error"),
        (L.ACTIVE, L.ERROR, "owner reports error"),
        (L.ERROR, L.ACTIVE, "owner reports running"),
        (L.ACTIVE, L.CLAIMING, "owner reports restarting"),
        (L.ERROR, L.CLAIMING, "owner reports restarting"),
        (L.CLAIMING, L.UNASSIGNED, "release / expire / fenced"),
        (L.ACTIVE, L.UNASSIGNED, "release / expire / fenced"),
        (L.ERROR, L.UNASSIGNED, "release / expire / fenced"),
        (L.UNASSIGNED, L.REVOKING, "adapter disabled"),
        (L.CLAIMING, L.REVOKING, "adapter disabled"),
        (L.ACTIVE, L.REVOKING, "adapter disabled"),
        (L.ERROR, L.REVOKING, "adapter disabled"),
        (L.CLAIMING, L.HANDING_OFF, "handoff (rebalance, drain)"),
        (L.ACTIVE, L.HANDING_OFF, "handoff (rebalance, drain)"),
        (L.ERROR, L.HANDING_OFF, "handoff (rebalance, drain)"),
        (L.HANDING_OFF, L.UNASSIGNED, "owner stopped and released / expired"),
        (L.HANDING_OFF, L.REVOKING, "adapter disabled"),
    ],
)

ADAPTER_TRANSITIONS: TransitionTable[AdapterStatus] = _table(
    "adapter",
    [
        (A.INACTIVE, A.CLAIMING, "enable"),
        (A.CLAIMING, A.ACTIVE, "all slots running"),
        (A.CLAIMING, A.ERROR, "connector error"),
        (A.ACTIVE, A.CLAIMING, "failover"),
        (A.ACTIVE, A.ERROR, "connector error"),
        (A.ERROR, A.ACTIVE, "connector recovered"),
        (A.ERROR, A.CLAIMING, "failover / restart"),
        (A.CLAIMING, A.INACTIVE, "disable"),
        (A.ACTIVE, A.INACTIVE, "disable"),
        (A.ERROR, A.INACTIVE, "disable"),
    ],
)

ALL_TABLES: tuple[
    TransitionTable[PodState] | TransitionTable[SlotStatus] | TransitionTable[AdapterStatus], ...
] = (
    POD_TRANSITIONS,
    SLOT_TRANSITIONS,
    ADAPTER_TRANSITIONS,
)


def main() -> None:
    """Print every table as a Mermaid diagram (used to regenerate docs)."""
    for table in ALL_TABLES:
        sys.stdout.write(f"### {table.name}\n\n```mermaid\n{table.mermaid()}\n```\n\n")


if __name__ == "__main__":
    main()
