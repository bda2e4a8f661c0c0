"""A serving replica freezes what it built at start-up out of the cyclic collector's walks
and collects its youngest generation less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from raftorch.core.model import SlotState
from raftorch.ops.cli import YOUNG_COLLECTION_OBJECTS, settle_heap


@pytest.fixture
def thawed() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test run collects as usual
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("thawed")
def test_what_lives_at_start_up_is_frozen_and_later_objects_are_not() -> None:
    before = object.__new__(type("Built", (), {}))  # an object of the start-up heap
    frozen = settle_heap()
    after = object.__new__(type("Later", (), {}))
    assert frozen == gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_OBJECTS
    assert gc.is_tracked(before) and gc.is_tracked(after)
    tracked = {id(o) for o in gc.get_objects()}  # the permanent generation is not listed
    assert id(before) not in tracked
    assert id(after) in tracked


def test_slot_states_are_not_tracked_by_the_cyclic_collector() -> None:
    slot = SlotState("a/0", "a", "pod-1", 3, ("pod-2",))
    assert not gc.is_tracked(slot)
