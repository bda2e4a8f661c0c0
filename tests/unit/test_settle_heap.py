"""A serving replica freezes what it built at start-up out of the cyclic collector's walks
and collects its youngest generation less often."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from raftorch.core.model import SlotState
from raftorch.ops.cli import YOUNG_COLLECTION_OBJECTS, free_closed_transports, settle_heap


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


class _Lost(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(None)


def test_a_closed_connection_is_freed_without_the_cyclic_collector() -> None:
    """Python 3.11's transport kept a bound method of itself, so each closed connection
    waited for a collection: thousands a second where pods hedge heartbeats."""
    free_closed_transports()  # as settle_heap does
    assert free_closed_transports() is False  # once is enough (and 3.12 needs none)

    async def closed_transport() -> weakref.ref[asyncio.BaseTransport]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            transport, protocol = await loop.create_connection(_Lost, "127.0.0.1", port)
            transport.close()
            async with asyncio.timeout(10.0):
                await protocol.lost
            return weakref.ref(transport)
        finally:
            server.close()

    gc.disable()
    try:
        gone = asyncio.run(closed_transport())
        assert gone() is None  # freed by its reference count alone
    finally:
        gc.enable()
