"""The `fix` connector against a real QuickFIX on 127.0.0.1, in both roles, FIX 4.4 and FIXT.1.1.

The connector runs in the test process (the pod runtime's part played by `FixHarness`)
with a real PostgreSQL; QuickFIX runs as its own process (tests/fix/counterparty.py)
and records everything its application sees.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from adapter.connectors.fix.connector import FixConnector
from adapter.sdk import SessionInfo, SessionStatus
from devtools.postgres import free_ports
from persistence.db import Database
from tests.fix.harness import (
    FixHarness,
    create_adapter,
    enqueue_orders,
    eventually,
    fix_config,
    inbox_exec_ids,
    sequences,
    until,
    upload_dictionary,
)
from tests.fix.venue import Venue

MESSAGES = 10_000
RATE = 2_500  # QuickFIX's stream, messages per second

CASES = [
    ("initiator", "FIX.4.4"),
    ("acceptor", "FIX.4.4"),
    ("initiator", "FIXT.1.1"),
    ("acceptor", "FIXT.1.1"),
]


async def check_the_dictionary_both_ways(db: Database, adapter_id: str, venue: Venue) -> None:
    # The dictionary, both ways: a bad outbox row is refused and never sent, a bad
    # inbound message is answered with Reject(3), RequiredTagMissing, and not stored.
    await db.execute(
        "INSERT INTO fix_outbox (adapter_id, msg_type, fields) VALUES ($1, 'D', $2)",
        adapter_id,
        [[55, "RAFT"]],
    )

    async def refused() -> bool:
        return bool(
            await db.fetchval("SELECT rejected FROM fix_outbox WHERE fields = $1", [[55, "RAFT"]])
        )

    await eventually(refused, "the bad outbox row refused")
    venue.order(cmd="invalid")
    await until(lambda: venue.find(dir="in", type="3", reason="1"), "our Reject")
    assert "invalid-1" not in await inbox_exec_ids(db, adapter_id)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("role", "begin_string"), CASES)
async def test_ten_thousand_messages_each_way_validated_then_a_clean_logout(
    pg_dsn: str, tmp_path: Path, role: str, begin_string: str
) -> None:
    [port] = free_ports(1)
    fixt = begin_string == "FIXT.1.1"
    venue_role = "acceptor" if role == "initiator" else "initiator"
    venue = Venue(tmp_path / "venue", venue_role, begin_string, port).start()
    try:
        async with Database(pg_dsn) as db:
            name = await upload_dictionary(db, begin_string)
            config = fix_config(role, begin_string, port, data_dictionary=name)
            adapter_id = await create_adapter(db, config, artifacts=(name,))
            harness = FixHarness(db, adapter_id, config, (name,))
            await harness.start()
            await until(lambda: harness.status is SessionStatus.ACTIVE, "Logon answered")
            assert harness.statuses == [(SessionStatus.ACTIVE, "")]

            # Heartbeats both ways while idle, and a TestRequest answered.
            await until(lambda: len(venue.find(dir="in", type="0")) >= 2, "our heartbeats")
            await until(lambda: venue.find(dir="out", type="0"), "QuickFIX's heartbeats")
            venue.order(cmd="test_request", id="tr-1")
            await until(lambda: venue.find(dir="in", type="0", testreqid="tr-1"), "the answer")

            started = time.monotonic()
            await enqueue_orders(db, adapter_id, 1, MESSAGES, fixt=fixt)
            venue.order(cmd="send", count=MESSAGES, rate=RATE, first=1)
            orders = await asyncio.to_thread(venue.wait_for_orders, MESSAGES, 90.0)

            async def inbox_full() -> bool:
                return (await inbox_exec_ids(db, adapter_id)).total() >= MESSAGES

            await eventually(inbox_full, "10,000 ExecutionReports in the inbox", 90.0)
            took = time.monotonic() - started
            print(f"\n{role} {begin_string}: {MESSAGES} each way in {took:.1f}s")
            inbox = await inbox_exec_ids(db, adapter_id)
            assert orders == {f"ord-{i}": 1 for i in range(1, MESSAGES + 1)}
            assert inbox == {f"er-{i}": 1 for i in range(1, MESSAGES + 1)}

            await check_the_dictionary_both_ways(db, adapter_id, venue)

            stored = await sequences(db, harness.slot)
            await harness.stop()
            # Disable: our Logout, QuickFIX's answer, then the close.
            assert venue.find(dir="in", type="5") and venue.find(dir="out", type="5")
            assert harness.said("logged out: adapter stopped")
            assert venue.problems() == []  # QuickFIX rejected nothing of ours
            assert venue.received_orders().total() == MESSAGES
            assert stored["fix.next_sender_seq"] > MESSAGES
            assert stored["fix.next_target_seq"] > MESSAGES
            assert (
                harness.metric("raftorch_fix_messages_total", direction="out", kind="app")
                == MESSAGES
            )
            assert (
                harness.metric("raftorch_fix_messages_total", direction="in", kind="app")
                == MESSAGES + 1
            )
    except BaseException:
        print(venue.logs())
        raise
    finally:
        venue.stop()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_only_the_active_owner_of_an_acceptor_listens(pg_dsn: str) -> None:
    [port] = free_ports(1)
    async with Database(pg_dsn) as db:
        config = fix_config("acceptor", "FIX.4.4", port)
        adapter_id = await create_adapter(db, config)
        harness = FixHarness(db, adapter_id, config)
        standby = FixConnector()
        await standby.prepare(SessionInfo(harness.slot, adapter_id, 1, "pod-b", "fix", config))
        assert await asyncio.to_thread(refused, port), "a warm standby listens"
        await harness.start()
        assert not await asyncio.to_thread(refused, port), "the owner does not listen"
        await harness.stop()
        assert await asyncio.to_thread(refused, port), "still listening after stop()"
        # No Logon, so never ACTIVE (the probe's bare connection may be reported, nothing more).
        assert SessionStatus.ACTIVE not in [status for status, _ in harness.statuses]
