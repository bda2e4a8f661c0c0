"""Transition tables: illegal moves raise; the documented diagrams match the code."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from protocol.values import AdapterStatus, PodState, SlotStatus
from raftorch.core.transitions import (
    ADAPTER_TRANSITIONS,
    POD_TRANSITIONS,
    SLOT_TRANSITIONS,
    IllegalTransitionError,
    main,
)

DOC = Path(__file__).parents[2] / "docs" / "lease-protocol.md"


def test_illegal_transitions_raise() -> None:
    with pytest.raises(IllegalTransitionError, match="slot: illegal transition REVOKING"):
        SLOT_TRANSITIONS.check(SlotStatus.REVOKING, SlotStatus.ACTIVE)
    with pytest.raises(IllegalTransitionError):
        POD_TRANSITIONS.check(PodState.ABSENT, PodState.DRAINING)
    with pytest.raises(IllegalTransitionError):
        ADAPTER_TRANSITIONS.check(AdapterStatus.INACTIVE, AdapterStatus.ACTIVE)
    SLOT_TRANSITIONS.check(SlotStatus.UNASSIGNED, SlotStatus.CLAIMING)


def test_documented_diagrams_are_generated_from_the_tables() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        main()
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- generated: statemachines -->\n") + len(
        "<!-- generated: statemachines -->\n"
    )
    end = text.index("<!-- /generated: statemachines -->")
    assert text[start:end] == out.getvalue(), (
        "docs/lease-protocol.md is stale: regenerate with python -m raftorch.core.transitions"
    )
