"""A FIX session across owners, as real processes: 3 replicas, 2 pods, real PostgreSQL, and
QuickFIX as the venue. kill -9 of the owner mid-stream, a SIGSTOPped owner that wakes up
after its lease moved, and the admin `reset` after a database restore."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from devtools.postgres import free_ports
from persistence.db import Database
from tests.fix.harness import enqueue_orders, fix_config
from tests.fix.venue import Venue
from tests.integration.processes import (
    PodProcess,
    ProcessCluster,
    adapter_state,
    call,
    running_cluster,
    start_pod,
    stop_pod,
    wait_until,
)
from tests.integration.test_adapter_pods import sql

MESSAGES = 5_000
RATE = 1_000  # messages per second, each way


@dataclass
class System:
    cluster: ProcessCluster
    pods: list[PodProcess]
    venue: Venue
    adapter_id: str

    @property
    def api(self) -> str:
        return self.cluster.replicas[0].api_url

    def state(self) -> dict[str, Any] | None:
        return adapter_state(self.cluster, self.adapter_id)

    def events(self) -> list[dict[str, Any]]:
        reply = call("GET", f"{self.api}/api/v1/adapters/{self.adapter_id}/events?limit=1000")
        return reply.body["items"] if reply.status == 200 else []  # type: ignore[no-any-return]

    def said(self, part: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if part in e["description"]]


@contextmanager
def fix_system(tmp_path: Path, dsn: str) -> Iterator[System]:
    """The cluster, two pods, QuickFIX as acceptor, and an enabled active_passive adapter
    whose initiator logs on to it."""
    [port] = free_ports(1)
    venue = Venue(tmp_path / "venue", "acceptor", "FIX.4.4", port).start()
    pods: list[PodProcess] = []
    try:
        with running_cluster(tmp_path, dsn) as cluster:
            wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
            pods += [start_pod(cluster, f"pod-{i}", tmp_path) for i in range(2)]
            body = {
                "name": "venue",
                "connector": "fix",
                "mode": "active_passive",
                "config": fix_config("initiator", "FIX.4.4", port),
            }
            created = call("POST", cluster.replicas[0].api_url + "/api/v1/adapters", body)
            assert created.status == 201, created.body
            system = System(cluster, pods, venue, created.body["id"])
            assert (
                call("POST", f"{system.api}/api/v1/adapters/{system.adapter_id}/enable").status
                == 202
            )
            yield system
    except BaseException:
        for pod in pods:
            if pod.log_path.exists():
                sys.stderr.write(f"--- {pod.pod_id}\n{pod.log_path.read_text()[-4000:]}\n")
        sys.stderr.write(venue.logs())
        raise
    finally:
        for pod in pods:
            if pod.alive():
                stop_pod(pod, signal.SIGKILL)
        venue.stop()


def active_with_standby(system: System) -> dict[str, Any] | None:
    state = system.state()
    return state if state and state["status"] == "ACTIVE" and state["standby_pods"] else None


def active_elsewhere(system: System, old: str) -> dict[str, Any] | None:
    state = system.state()
    return state if state and state["status"] == "ACTIVE" and state["owner_pod"] != old else None


class Producer(threading.Thread):
    """Inserts `total` orders into the outbox at about `rate` per second."""

    def __init__(self, dsn: str, adapter_id: str, total: int = MESSAGES) -> None:
        super().__init__(daemon=True)
        self.dsn, self.adapter_id, self.total = dsn, adapter_id, total
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:
            self.error = exc

    async def _produce(self) -> None:
        async with Database(self.dsn) as db:
            started, batch = time.monotonic(), RATE // 20
            for first in range(1, self.total + 1, batch):
                await asyncio.sleep(max(0.0, started + (first - 1) / RATE - time.monotonic()))
                await enqueue_orders(db, self.adapter_id, first, min(self.total, first + batch - 1))


def inbox_exec_ids(dsn: str, adapter_id: str) -> dict[str, int]:
    rows = sql(dsn, "SELECT fields FROM fix_inbox WHERE adapter_id = $1", adapter_id)
    found: dict[str, int] = {}
    for row in rows:
        for tag, value in _json(row["fields"]):
            if tag == 17:
                found[value] = found.get(value, 0) + 1
    return found


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def check_exactly_once(system: System, dsn: str, total: int = MESSAGES) -> None:
    orders = wait_until(
        lambda: (c := system.venue.received_orders()).total() >= total and c,
        90.0,
        "every order at QuickFIX",
    )
    assert orders == {f"ord-{i}": 1 for i in range(1, total + 1)}

    def stored() -> dict[str, int] | None:
        found = inbox_exec_ids(dsn, system.adapter_id)
        return found if sum(found.values()) >= total else None

    inbox = wait_until(stored, 90.0, "every ExecutionReport stored")
    assert inbox == {f"er-{i}": 1 for i in range(1, total + 1)}
    assert system.venue.problems() == [], "QuickFIX rejected a message or a sequence number"


def logons_with_prior_max(venue: Venue) -> list[tuple[int, int]]:
    """For each Logon QuickFIX received: (its MsgSeqNum, the highest MsgSeqNum before it)."""
    out, highest = [], 0
    for record in venue.records():
        if record.get("dir") == "in" and "seq" in record:
            seq = int(record["seq"])
            if record.get("type") == "A":
                out.append((seq, highest))
            highest = max(highest, seq)
    return out


@pytest.mark.timeout(240)
def test_kill_9_of_the_owner_mid_stream_the_standby_continues_the_sequence(
    tmp_path: Path, pg_dsn: str
) -> None:
    with fix_system(tmp_path, pg_dsn) as system:
        first = wait_until(lambda: active_with_standby(system), 60.0, "ACTIVE with a standby")
        producer = Producer(pg_dsn, system.adapter_id)
        producer.start()
        system.venue.order(cmd="send", count=MESSAGES, rate=RATE, first=1)
        wait_until(lambda: system.venue.received_orders().total() >= 1_500, 60.0, "a stream")
        victim = next(p for p in system.pods if p.pod_id == first["owner_pod"])
        stop_pod(victim, signal.SIGKILL)
        killed = time.monotonic()
        second = wait_until(lambda: active_elsewhere(system, victim.pod_id), 30.0, "takeover")
        print(f"\nFIX kill -9 failover: logged on again after {time.monotonic() - killed:.2f}s")
        assert second["epoch"] > first["epoch"]
        producer.join(timeout=60)
        assert producer.error is None
        check_exactly_once(system, pg_dsn)
        # The new owner's Logon carried a MsgSeqNum above everything QuickFIX had seen.
        logons = logons_with_prior_max(system.venue)
        assert len(logons) >= 2 and all(seq > before for seq, before in logons)


def old_epoch_rows(dsn: str, adapter_id: str, epoch: int) -> tuple[int, int, int]:
    [row] = sql(
        dsn,
        "SELECT (SELECT count(*) FROM fix_journal WHERE epoch = $1) AS j, "
        "(SELECT count(*) FROM fix_inbox WHERE epoch = $1 AND adapter_id = $2) AS i, "
        "(SELECT count(*) FROM fix_outbox WHERE epoch = $1 AND adapter_id = $2) AS o",
        epoch,
        adapter_id,
    )
    return int(row["j"]), int(row["i"]), int(row["o"])


@pytest.mark.timeout(240)
def test_a_paused_owner_wakes_after_its_lease_moved_and_sends_nothing(
    tmp_path: Path, pg_dsn: str
) -> None:
    with fix_system(tmp_path, pg_dsn) as system:
        first = wait_until(lambda: active_with_standby(system), 60.0, "ACTIVE with a standby")
        producer = Producer(pg_dsn, system.adapter_id)
        producer.start()
        system.venue.order(cmd="send", count=MESSAGES, rate=RATE, first=1)
        wait_until(lambda: system.venue.received_orders().total() >= 1_000, 60.0, "a stream")
        zombie = next(p for p in system.pods if p.pod_id == first["owner_pod"])
        assert zombie.process is not None
        zombie.process.send_signal(signal.SIGSTOP)
        try:
            second = wait_until(lambda: active_elsewhere(system, zombie.pod_id), 30.0, "takeover")
            frozen = old_epoch_rows(pg_dsn, system.adapter_id, first["epoch"])
            logons = len(system.venue.find(dir="in", type="A"))
            wait_until(
                lambda: system.venue.received_orders().total() >= 2_500,
                60.0,
                "the new owner sending",
            )
        finally:
            zombie.process.send_signal(signal.SIGCONT)

        def zombie_stopped() -> bool:
            text = call("GET", f"http://127.0.0.1:{zombie.metrics_port}/metrics", token=None).body
            page = text.decode() if isinstance(text, bytes) else ""
            return "raftorch_pod_self_fencing_total 1.0" in page and (
                'raftorch_pod_sessions{role="ACTIVE"' not in page
            )

        wait_until(zombie_stopped, 20.0, "the resumed owner to stop its session")
        producer.join(timeout=60)
        assert producer.error is None
        check_exactly_once(system, pg_dsn)
        assert second["epoch"] > first["epoch"]
        # Nothing the old owner did after it was paused landed: not a journal row (so no
        # MsgSeqNum), not an inbox row, not an outbox row marked sent; and QuickFIX saw no
        # Logon after the new owner's, so no message of the old owner reached it.
        assert old_epoch_rows(pg_dsn, system.adapter_id, first["epoch"]) == frozen
        assert len(system.venue.find(dir="in", type="A")) == logons
        assert all(seq > before for seq, before in logons_with_prior_max(system.venue))


def session_state(dsn: str, slot: str) -> dict[str, Any]:
    rows = sql(dsn, "SELECT key, value FROM session_state WHERE session = $1", slot)
    return {r["key"]: _json(r["value"]) for r in rows if r["key"].startswith("fix.")}


def restore(dsn: str, slot: str, saved: dict[str, Any]) -> None:
    """What a point-in-time restore does to the session's rows: the sequence numbers, the
    journal, the inbox and the outbox go back to the backup (QuickFIX keeps its own)."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            sender, target = saved["fix.next_sender_seq"], saved["fix.next_target_seq"]
            for key, value in saved.items():
                await conn.execute(
                    "UPDATE session_state SET value = $3::jsonb WHERE session = $1 AND key = $2",
                    slot,
                    key,
                    json.dumps(value),
                )
            await conn.execute(
                "DELETE FROM fix_journal WHERE slot = $1 AND seq_num >= $2", slot, sender
            )
            await conn.execute(
                "DELETE FROM fix_inbox WHERE slot = $1 AND seq_num >= $2", slot, target
            )
            await conn.execute(
                "UPDATE fix_outbox SET sent_at = NULL, seq_num = NULL, slot = NULL, "
                "generation = NULL, epoch = NULL WHERE slot = $1 AND seq_num >= $2",
                slot,
                sender,
            )
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.mark.timeout(240)
def test_a_restored_database_goes_to_error_and_reset_starts_both_sides_at_1(
    tmp_path: Path, pg_dsn: str
) -> None:
    with fix_system(tmp_path, pg_dsn) as system:
        state = wait_until(lambda: active_with_standby(system), 60.0, "ACTIVE with a standby")
        slot = state["slots"][0]["slot"]
        produce(pg_dsn, system.adapter_id, 1, 200)
        system.venue.wait_for_orders(200, 30.0)
        saved = session_state(pg_dsn, slot)  # the backup
        produce(pg_dsn, system.adapter_id, 201, 400)
        system.venue.wait_for_orders(400, 30.0)
        assert (
            call("POST", f"{system.api}/api/v1/adapters/{system.adapter_id}/disable").status == 202
        )
        wait_until(lambda: (s := system.state()) and s["status"] == "INACTIVE", 30.0, "INACTIVE")
        # Disable logged out cleanly: our Logout, and QuickFIX's answer.
        assert system.venue.find(dir="in", type="5", text="adapter stopped")
        assert system.venue.find(dir="out", type="5")
        restore(pg_dsn, slot, saved)
        assert (
            call("POST", f"{system.api}/api/v1/adapters/{system.adapter_id}/enable").status == 202
        )
        wait_until(lambda: (s := system.state()) and s["status"] == "ERROR", 30.0, "ERROR")
        # The connector's own event says what happened and what to do.
        [told] = wait_until(
            lambda: system.said("Our outbound MsgSeqNum is behind"), 20.0, "the explanatory event"
        )
        assert told["level"] == "error" and "MsgSeqNum too low" in told["description"]
        assert "/reset" in told["description"] and "restore" in told["description"]
        assert system.venue.received_orders().total() == 400  # nothing sent under old numbers
        assert system.venue.find(dir="out", type="5", text=told_text(told))

        reply = call("POST", f"{system.api}/api/v1/adapters/{system.adapter_id}/reset")
        assert reply.status == 202, reply.body
        wait_until(lambda: active_with_standby(system), 30.0, "ACTIVE after the reset")
        assert system.venue.find(dir="in", type="A", reset="Y", seq="1")
        assert system.venue.find(dir="out", type="A", reset="Y", seq="1")
        # The restore made orders 201-400 unsent again: after the reset they go out first,
        # from MsgSeqNum 2 on (the reset Logon is 1), then the new ones.
        produce(pg_dsn, system.adapter_id, 401, 410)
        system.venue.order(cmd="send", count=10, rate=100, first=1)
        wait_until(lambda: system.venue.received_orders().total() >= 610, 30.0, "the orders")
        after = [r for r in system.venue.find(dir="in", type="D")][400:]
        assert [r["clordid"] for r in after] == [f"ord-{i}" for i in range(201, 411)]
        assert [int(r["seq"]) for r in after] == list(range(2, 212))
        wait_until(
            lambda: sum(inbox_exec_ids(pg_dsn, system.adapter_id).values()) >= 10,
            30.0,
            "the new ExecutionReports",
        )
        rows = sql(
            pg_dsn,
            "SELECT generation, seq_num FROM fix_inbox WHERE adapter_id = $1 ORDER BY seq_num",
            system.adapter_id,
        )
        assert [(r["generation"], r["seq_num"]) for r in rows] == [(1, s) for s in range(2, 12)]
        assert system.said("sequence reset requested by")
        assert system.said("sequence numbers reset to 1 (as requested by")


def told_text(event: dict[str, Any]) -> str:
    """QuickFIX's Logout text, as our event quotes it ("... logged out: TEXT. Our ...")."""
    return str(event["description"]).split("logged out: ", 1)[1].split(". Our", 1)[0]


def produce(dsn: str, adapter_id: str, first: int, last: int) -> None:
    async def run() -> None:
        async with Database(dsn) as db:
            await enqueue_orders(db, adapter_id, first, last)

    asyncio.run(run())
