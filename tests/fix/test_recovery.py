"""Recovery inside one owner's session: a connection cut mid-stream and restored (through a
fault proxy), and a counterparty whose sequence numbers ran ahead of ours."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from adapter.sdk import SessionStatus
from devtools.postgres import free_ports
from persistence.db import Database
from persistence.session_state import SessionStateStore
from tests.chaos.proxy import ProxyServer
from tests.fix.harness import (
    FixHarness,
    create_adapter,
    enqueue_orders,
    eventually,
    fix_config,
    inbox_exec_ids,
    produce_orders,
    until,
)
from tests.fix.venue import Venue

MESSAGES = 3_000
RATE = 1_000


@pytest.mark.timeout(120)
async def test_a_cut_connection_recovers_by_resend_and_gap_fill_both_ways(
    pg_dsn: str, tmp_path: Path
) -> None:
    [port] = free_ports(1)
    venue = Venue(tmp_path / "venue", "acceptor", "FIX.4.4", port).start()
    proxies = ProxyServer()
    proxies.start()
    try:
        proxy = await asyncio.to_thread(proxies.add, "127.0.0.1", port, "fix")
        async with Database(pg_dsn) as db:
            config = fix_config("initiator", "FIX.4.4", proxy.port)
            adapter_id = await create_adapter(db, config)
            harness = FixHarness(db, adapter_id, config)
            await harness.start()
            await until(lambda: harness.status is SessionStatus.ACTIVE, "Logon answered")
            producer = asyncio.create_task(produce_orders(db, adapter_id, MESSAGES, RATE))
            venue.order(cmd="send", count=MESSAGES, rate=RATE, first=1)
            await until(lambda: venue.received_orders().total() >= 800, "a stream under way")

            await asyncio.to_thread(proxy.cut)  # both sides keep sending into the cut
            await until(lambda: harness.status is SessionStatus.ERROR, "the cut noticed", 20.0)
            assert "heartbeat missed" in harness.statuses[-1][1]
            await asyncio.to_thread(proxy.heal)
            await until(lambda: len(venue.find(event="logon")) >= 2, "a second Logon", 20.0)
            await producer

            orders = await asyncio.to_thread(venue.wait_for_orders, MESSAGES, 60.0)

            async def inbox_full() -> bool:
                return (await inbox_exec_ids(db, adapter_id)).total() >= MESSAGES

            await eventually(inbox_full, "every ExecutionReport in the inbox", 60.0)
            assert orders == {f"ord-{i}": 1 for i in range(1, MESSAGES + 1)}
            inbox = await inbox_exec_ids(db, adapter_id)
            assert inbox == {f"er-{i}": 1 for i in range(1, MESSAGES + 1)}

            # Both directions asked for what they missed, and were answered with resends
            # (PossDupFlag=Y, each message once) and gap fills for session messages.
            assert venue.find(dir="in", type="2"), "we sent no ResendRequest"
            assert venue.find(dir="out", type="2"), "QuickFIX sent no ResendRequest"
            assert venue.find(dir="in", type="4", gapfill="Y"), "we sent no gap fill"
            assert venue.find(dir="out", type="4", gapfill="Y"), "QuickFIX sent no gap fill"
            assert venue.find(dir="in", type="D", possdup="Y"), "no order was resent"
            assert await db.fetchval("SELECT count(*) FROM fix_inbox WHERE poss_dup") > 0
            assert harness.said("ResendRequest from the counterparty")
            assert harness.said("sequence gap: expected MsgSeqNum")
            assert harness.metric("raftorch_fix_sequence_gaps_total") >= 1
            assert harness.metric("raftorch_fix_resent_messages_total") >= 1
            assert harness.metric("raftorch_fix_heartbeats_missed_total") >= 1
            assert venue.problems() == []
            await harness.stop()
    except BaseException:
        print(venue.logs())
        raise
    finally:
        proxies.stop()
        venue.stop()


@pytest.mark.timeout(120)
async def test_a_reset_request_as_acceptor_answers_the_next_logon_with_reset(
    pg_dsn: str, tmp_path: Path
) -> None:
    [port] = free_ports(1)
    venue = Venue(tmp_path / "venue", "initiator", "FIX.4.4", port).start()
    try:
        async with Database(pg_dsn) as db:
            config = fix_config("acceptor", "FIX.4.4", port)
            adapter_id = await create_adapter(db, config)
            harness = FixHarness(db, adapter_id, config)
            await harness.start()
            await until(lambda: harness.status is SessionStatus.ACTIVE, "Logon answered")
            await enqueue_orders(db, adapter_id, 1, 50)
            venue.order(cmd="send", count=50, rate=500, first=1)
            await asyncio.to_thread(venue.wait_for_orders, 50, 30.0)

            async def stored_50() -> bool:
                return (await inbox_exec_ids(db, adapter_id)).total() == 50

            await eventually(stored_50, "50 ExecutionReports")
            # What the admin `reset` does: a request the owner carries out, fenced.
            await SessionStateStore(db).request_reset(harness.slot, "operator")
            await until(
                lambda: venue.find(dir="out", type="A", reset="Y", seq="1"),
                "QuickFIX's reset Logon",
            )
            assert venue.find(dir="in", type="A", reset="Y", seq="1"), "no reset Logon of ours"
            assert venue.find(dir="in", type="5", text="sequence reset requested by operator")
            assert harness.said("sequence numbers reset to 1 (as requested by operator)")
            assert await SessionStateStore(db).pending_reset(harness.slot) is None

            await enqueue_orders(db, adapter_id, 51, 60)
            venue.order(cmd="send", count=10, rate=100, first=51)
            orders = await asyncio.to_thread(venue.wait_for_orders, 60, 30.0)
            assert orders == {f"ord-{i}": 1 for i in range(1, 61)}
            # After the reset Logon (1) every message of ours, orders and any heartbeat
            # the timing put between them, continues gap-free from 2.
            ours = _numbers_since_reset(venue.find(dir="in"))
            assert ours == list(range(1, len(ours) + 1)), ours
            after = [int(r["seq"]) for r in venue.find(dir="in", type="D")[50:]]
            assert len(after) == 10 and after == sorted(set(after)) and after[0] >= 2, after

            async def stored_60() -> bool:
                return (await inbox_exec_ids(db, adapter_id)).total() == 60

            await eventually(stored_60, "the new ExecutionReports")
            rows = await db.fetch(
                "SELECT generation, seq_num FROM fix_inbox WHERE generation = 1 ORDER BY seq_num"
            )
            sent = [int(r["seq"]) for r in _since_reset(venue.find(dir="out")) if r["type"] == "8"]
            assert [r["seq_num"] for r in rows] == sent and len(sent) == 10, sent
            assert venue.problems() == []
            assert harness.status is SessionStatus.ACTIVE
            await harness.stop()
    except BaseException:
        print(venue.logs())
        raise
    finally:
        venue.stop()


def _since_reset(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records from the last Logon with ResetSeqNumFlag=Y on."""
    start = max(i for i, r in enumerate(records) if r.get("type") == "A" and r.get("reset") == "Y")
    return records[start:]


def _numbers_since_reset(records: list[dict[str, Any]]) -> list[int]:
    return [int(r["seq"]) for r in _since_reset(records)]
