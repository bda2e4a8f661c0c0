"""The fenced session-state store rejects every stale write and changes nothing when it does."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from persistence.db import Database
from persistence.session_state import SessionStateStore, put_in
from protocol.errors import StaleEpochError, ValidationError


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[Database]:
    async with Database(pg_dsn) as database:
        yield database


async def test_higher_epoch_wins_and_lower_is_rejected(db: Database) -> None:
    store = SessionStateStore(db)
    await store.put("s1", "seq", 10, epoch=1, owner="pod-a")
    await store.put("s1", "seq", 11, epoch=1, owner="pod-a")  # same owner, same epoch
    await store.put("s1", "seq", 20, epoch=2, owner="pod-b")  # successor
    with pytest.raises(StaleEpochError) as err:
        await store.put("s1", "seq", 12, epoch=1, owner="pod-a")  # the zombie
    assert "fence is at epoch 2 by pod-b" in err.value.message
    assert await store.get("s1", "seq") == 20
    fence = await store.fence("s1")
    assert fence is not None and (fence.epoch, fence.owner) == (2, "pod-b")


async def test_equal_epoch_from_another_owner_is_rejected(db: Database) -> None:
    store = SessionStateStore(db)
    await store.put("s1", "offset", 5, epoch=3, owner="pod-a")
    with pytest.raises(StaleEpochError):
        await store.put("s1", "offset", 6, epoch=3, owner="pod-b")
    assert await store.get("s1", "offset") == 5


async def test_claim_fences_out_the_old_owner_before_any_write(db: Database) -> None:
    store = SessionStateStore(db)
    await store.put("s1", "seq", 1, epoch=4, owner="pod-a")
    await store.claim("s1", epoch=5, owner="pod-b")
    with pytest.raises(StaleEpochError):
        await store.put("s1", "seq", 2, epoch=4, owner="pod-a")
    assert await store.get_all("s1") == {"seq": 1}


async def test_rejected_transaction_discards_the_connectors_own_rows(db: Database) -> None:
    await db.execute("CREATE TABLE sink (msg int PRIMARY KEY)")
    store = SessionStateStore(db)
    async with store.fenced("s1", 1, "pod-a") as conn:
        await conn.execute("INSERT INTO sink VALUES (1)")
        await put_in(conn, "s1", "offset", 1, 1)
    await store.claim("s1", 2, "pod-b")
    with pytest.raises(StaleEpochError):
        async with store.fenced("s1", 1, "pod-a") as conn:
            await conn.execute("INSERT INTO sink VALUES (2)")  # never reached
    assert [r["msg"] for r in await db.fetch("SELECT msg FROM sink")] == [1]
    assert await store.get("s1", "offset") == 1


async def test_invalid_arguments_are_rejected_without_writing(db: Database) -> None:
    store = SessionStateStore(db)
    for session, epoch, owner in (("", 1, "a"), ("s", 0, "a"), ("s", 1, ""), ("s", True, "a")):
        with pytest.raises(ValidationError):
            await store.put(session, "k", 1, epoch=epoch, owner=owner)
    assert await store.fence("s") is None


async def test_concurrent_shuffled_epochs_leave_the_highest_epochs_value(db: Database) -> None:
    rng = random.Random(20261126)
    store = SessionStateStore(db)
    # Each accepted write also appends to a log inside its fenced transaction: the log's
    # order is the order in which writes passed the fence (the row lock serialises them).
    await db.execute("CREATE TABLE write_log (seq bigserial PRIMARY KEY, session text, epoch int)")
    for round_no in range(5):
        session = f"race-{round_no}"
        epochs = list(range(1, 41))
        rng.shuffle(epochs)

        async def write(epoch: int, session: str = session) -> None:
            try:
                async with store.fenced(session, epoch, f"pod-{epoch}") as conn:
                    await put_in(conn, session, "v", {"epoch": epoch}, epoch)
                    await conn.execute(
                        "INSERT INTO write_log (session, epoch) VALUES ($1, $2)", session, epoch
                    )
            except StaleEpochError:
                return

        await asyncio.gather(*(write(e) for e in epochs))
        assert await store.get(session, "v") == {"epoch": 40}
        rows = await db.fetch(
            "SELECT epoch FROM write_log WHERE session = $1 ORDER BY seq", session
        )
        accepted = [r["epoch"] for r in rows]
        # No accepted write has a lower epoch than one accepted before it.
        assert accepted == sorted(accepted) and len(set(accepted)) == len(accepted)
        assert accepted[-1] == 40
