"""Faults and fault mixes: each fault is real (a signal, a cut proxy, a stopped database).

A fault is injected, held for a while, healed; then the schedule waits for recovery.
Every injection and heal is written to the nemesis audit trail with the pods whose
sessions it may legitimately drop (`may_drop`): a pod that was killed, paused or cut
off may lose its sessions; a leader change, a partition of a minority of replicas, a
database outage, a rolling restart, a pod stopped by SIGTERM or drained by an operator
may not (invariant 4). Pod churn and drains make the leader move sessions by graceful
handoff (the campaign runs the shipped `placement.rebalance = "on_join"`).
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from tests.chaos.harness import Pod, Replica, System
from tests.chaos.workload import FLOOD, SLOW
from tests.integration.processes import wait_until

Heal = Callable[[], None]


class Announce(Protocol):
    """Records the fault in the nemesis trail; called just before the damage is done."""

    def __call__(
        self, kind: str, targets: list[str], may_drop: list[str], pids: dict[str, int] | None = None
    ) -> None: ...


@dataclass(frozen=True)
class Injected:
    kind: str
    targets: list[str]
    hold_seconds: float
    heal: Heal
    facts: dict[str, Any] = field(default_factory=dict)  # written with the heal


def _live_pod(system: System, rng: random.Random) -> Pod:
    return rng.choice([p for p in system.pods if p.alive() and not p.paused])


def _leader(system: System) -> Replica:
    return wait_until(system.leader, 20.0, "a leader to aim at")


def _pid(process: object) -> int:
    return int(getattr(process, "pid", 0))


def _owned(system: System) -> Counter[str] | None:
    """Sessions each pod owns as the API shows them (None if no replica answered)."""
    slots = system.slots()
    if isinstance(slots, str):
        return None
    return Counter(owner for _, owner, _ in slots.values() if owner)


def _busiest_pod(system: System, rng: random.Random) -> Pod:
    """A live pod owning the most sessions (the one whose going away moves the most)."""
    live = [p for p in system.pods if p.alive() and not p.paused]
    owned = _owned(system) or Counter()
    most = max(owned[p.pod_id] for p in live)
    return rng.choice([p for p in live if owned[p.pod_id] == most])


def _registered(system: System, pod_id: str) -> bool:
    reply = system.api("GET", "/api/v1/pods")
    return reply.status == 200 and any(
        p["id"] == pod_id and p["state"] == "ACTIVE" for p in reply.body["items"]
    )


def pod_kill(system: System, rng: random.Random, announce: Announce) -> Injected:
    pod = _live_pod(system, rng)
    assert pod.process is not None
    announce("pod-kill", [pod.pod_id], [pod.pod_id], {pod.pod_id: _pid(pod.process)})
    system.kill(pod.process)
    return Injected("pod-kill", [pod.pod_id], rng.uniform(1.0, 4.0),
                    lambda: system.start_pod(pod))  # fmt: skip


def pod_pause(system: System, rng: random.Random, announce: Announce) -> Injected:
    pod = _live_pod(system, rng)
    assert pod.process is not None
    announce("pod-pause", [pod.pod_id], [pod.pod_id], {pod.pod_id: _pid(pod.process)})
    pod.process.send_signal(signal.SIGSTOP)
    pod.paused = True

    def heal() -> None:
        assert pod.process is not None
        pod.process.send_signal(signal.SIGCONT)
        pod.paused = False

    hold = rng.uniform(1.2, 2.0) * system.ttl  # past the TTL: the pod must be fenced
    return Injected("pod-pause", [pod.pod_id], hold, heal)


def pod_isolate(system: System, rng: random.Random, announce: Announce) -> Injected:
    pod = _live_pod(system, rng)
    announce("pod-isolate", [pod.pod_id], [pod.pod_id], {pod.pod_id: _pid(pod.process)})
    for proxy in pod.proxies:
        proxy.cut()

    def heal() -> None:
        for proxy in pod.proxies:
            proxy.heal()

    hold = rng.uniform(1.2, 2.0) * system.ttl
    return Injected("pod-isolate", [pod.pod_id], hold, heal)


def pod_churn(system: System, rng: random.Random, announce: Announce) -> Injected:
    """The busiest pod goes away and comes back, so that the on_join rebalance moves
    sessions back onto it by handoff. Half the time SIGTERM: the pod drains (its sessions
    stop cleanly and are handed over at once), so it may drop nothing; else kill -9, held
    past the TTL so that its registration expires and it rejoins as a new pod. Heal starts
    it again and waits (bounded) until it is registered."""
    pod = _busiest_pod(system, rng)
    assert pod.process is not None
    facts: dict[str, Any] = {"owned": (_owned(system) or Counter())[pod.pod_id]}
    pids = {pod.pod_id: _pid(pod.process)}
    if rng.random() < 0.5:
        announce("pod-churn", [pod.pod_id], [], pids)
        system.stop_gracefully(pod.process)
        facts["how"], hold = "sigterm", rng.uniform(0.5, 2.0)
    else:
        announce("pod-churn", [pod.pod_id], [pod.pod_id], pids)
        system.kill(pod.process)
        facts["how"], hold = "kill", rng.uniform(1.2, 2.0) * system.ttl
    # The process is gone: a session it never recorded a stop of ended here at the latest.
    system.nemesis_trail.record("pod_exit", pod=pod.pod_id, pid=pids[pod.pod_id])

    def heal() -> None:
        system.start_pod(pod)
        started = time.monotonic()
        try:
            wait_until(partial(_registered, system, pod.pod_id), 30.0, "the pod back")
            facts["registered_after"] = round(time.monotonic() - started, 3)
        except AssertionError:
            facts["registered_after"] = None  # recovery and the checker judge the rest

    return Injected("pod-churn", [pod.pod_id], hold, heal, facts)


def pod_drain(system: System, rng: random.Random, announce: Announce) -> Injected:
    """An operator drains the busiest pod through the admin API while it runs: its
    sessions move off by graceful handoff, so it may drop nothing. Held until it owns
    nothing and every slot is ACTIVE (bounded), then a moment; heal undrains it and asks
    for a one-shot rebalance, which moves sessions back onto it by handoff."""
    pod = _busiest_pod(system, rng)
    facts: dict[str, Any] = {"owned": (_owned(system) or Counter())[pod.pod_id]}
    announce("pod-drain", [pod.pod_id], [])
    reply = system.api("POST", f"/api/v1/pods/{pod.pod_id}/drain")
    assert reply.status == 202, reply.body
    started = time.monotonic()

    def emptied() -> bool:
        owned = _owned(system)
        return owned is not None and owned[pod.pod_id] == 0 and not system.not_active()

    try:
        wait_until(emptied, 60.0, f"{pod.pod_id} drained")
        facts["empty_after"] = round(time.monotonic() - started, 3)
    except AssertionError:
        facts["empty_after"] = None

    def heal() -> None:
        for path in (f"/api/v1/pods/{pod.pod_id}/undrain", "/api/v1/cluster/rebalance"):
            answer = system.api("POST", path)
            assert answer.status == 202, answer.body

    return Injected("pod-drain", [pod.pod_id], rng.uniform(1.0, 3.0), heal, facts)


def _kill_replica(
    system: System, replica: Replica, kind: str, rng: random.Random, announce: Announce
) -> Injected:
    assert replica.process is not None
    announce(kind, [replica.node_id], [])
    system.kill(replica.process)
    return Injected(kind, [replica.node_id], rng.uniform(0.5, 3.0),
                    lambda: system.start_replica(replica))  # fmt: skip


def leader_kill(system: System, rng: random.Random, announce: Announce) -> Injected:
    return _kill_replica(system, _leader(system), "leader-kill", rng, announce)


def replica_kill(system: System, rng: random.Random, announce: Announce) -> Injected:
    replica = rng.choice([r for r in system.replicas if r.alive()])
    return _kill_replica(system, replica, "replica-kill", rng, announce)


def leader_pause(system: System, rng: random.Random, announce: Announce) -> Injected:
    """SIGSTOP the leader for 2 x TTL or a little more: every pod's lease runs out twice
    over unless a new leader renews it (issue 12's must-show, at the shipped timers)."""
    leader = _leader(system)
    assert leader.process is not None
    announce("leader-pause", [leader.node_id], [])
    leader.process.send_signal(signal.SIGSTOP)
    leader.paused = True

    def heal() -> None:
        assert leader.process is not None
        leader.process.send_signal(signal.SIGCONT)
        leader.paused = False

    hold = rng.uniform(2.0, 2.3) * system.ttl
    return Injected("leader-pause", [leader.node_id], hold, heal)


def _cut_off(
    system: System, group: list[Replica], kind: str, rng: random.Random, announce: Announce
) -> Injected:
    """Cut every Raft link between `group` and the other replicas (pods still reach all)."""
    inside = {r.index for r in group}
    links = [
        replica.raft_proxies[peer]
        for replica in system.replicas
        for peer in replica.raft_proxies
        if (replica.index in inside) != (peer in inside)
    ]
    announce(kind, [r.node_id for r in group], [])
    for link in links:
        link.cut()

    def heal() -> None:
        for link in links:
            link.heal()

    hold = rng.uniform(1.0, 2.0) * system.ttl
    return Injected(kind, [r.node_id for r in group], hold, heal)


def partition_leader(system: System, rng: random.Random, announce: Announce) -> Injected:
    leader = _leader(system)
    injected = _cut_off(system, [leader], "partition-leader", rng, announce)
    # The cut must take effect: the majority elects a leader of its own. (If the Raft
    # links bypassed the proxies, this is where the campaign would say so.)
    majority = [r for r in system.replicas if r is not leader]
    wait_until(lambda: (new := system.leader(majority)) is not None and new is not leader,
               15.0, "the majority to elect a new leader behind the partition")  # fmt: skip
    return injected


def partition_split(system: System, rng: random.Random, announce: Announce) -> Injected:
    """A minority (with the leader half of the time) against the majority."""
    size = (len(system.replicas) - 1) // 2
    leader = _leader(system)
    others = [r for r in system.replicas if r is not leader]
    with_leader = rng.random() < 0.5
    group = [leader, *rng.sample(others, size - 1)] if with_leader else rng.sample(others, size)
    return _cut_off(system, group, "partition-split", rng, announce)


def db_stop(system: System, rng: random.Random, announce: Announce) -> Injected:
    announce("db-stop", ["postgresql"], [])
    system.pg.stop("immediate")
    return Injected("db-stop", ["postgresql"], rng.uniform(3.0, 8.0), system.pg.start)


def db_hang(system: System, rng: random.Random, announce: Announce) -> Injected:
    """Every PostgreSQL process SIGSTOPped for about 2 x TTL: a database that hangs
    (connections stay open, nothing answers), not one that is down."""
    announce("db-hang", ["postgresql"], [])
    frozen = system.pg.pause()
    assert frozen, "no PostgreSQL process to freeze"
    hold = rng.uniform(1.9, 2.2) * system.ttl
    return Injected("db-hang", ["postgresql"], hold, system.pg.resume, {"frozen": len(frozen)})


def db_hang_leader_kill(system: System, rng: random.Random, announce: Announce) -> Injected:
    """The database hung for about 2 x TTL and, inside that window, the leader SIGKILLed:
    a new leader must take office and renew every pod without the database. Heal resumes
    the database, then starts the killed replica again."""
    leader = _leader(system)
    assert leader.process is not None
    targets = ["postgresql", leader.node_id]
    announce("db-hang-leader-kill", targets, [])
    frozen = system.pg.pause()
    assert frozen, "no PostgreSQL process to freeze"
    window = rng.uniform(1.9, 2.2) * system.ttl
    into = rng.uniform(0.0, 0.4) * system.ttl
    time.sleep(into)  # where in the window the kill falls (schedule pacing, not a wait)
    system.kill(leader.process)

    def heal() -> None:
        system.pg.resume()
        system.start_replica(leader)

    facts: dict[str, Any] = {"frozen": len(frozen), "killed_after": round(into, 3)}
    return Injected("db-hang-leader-kill", targets, window - into, heal, facts)


def slow_start(system: System, rng: random.Random, announce: Announce) -> Injected:
    """Enable the `test-slow-start` adapter whose connector start hangs about 10 s; the
    pod it lands on must keep its lease and every other session. Heal disables it again,
    about when the start ends (before or after, so both a start cut short and a session
    that came up are stopped)."""
    announce("slow-start", [SLOW], [])
    system.set_enabled(SLOW, True)
    hold = system.slow_start_seconds + rng.uniform(-2.0, 2.0)
    return Injected("slow-start", [SLOW], hold, lambda: system.set_enabled(SLOW, False))


def slot_flood(system: System, rng: random.Random, announce: Announce) -> Injected:
    """Enable a scale_out adapter of a few hundred instances at once: every pod is handed
    hundreds of slots in one go and must keep its lease and its other sessions. Held
    until the API shows every instance ACTIVE (bounded), then a moment; heal disables it."""
    announce("slot-flood", [FLOOD], [])
    system.set_enabled(FLOOD, True)
    started = time.monotonic()
    try:
        wait_until(lambda: system.adapter_active(FLOOD), 120.0, f"every {FLOOD} slot ACTIVE")
        took: float | None = round(time.monotonic() - started, 3)
    except AssertionError:
        took = None  # the report says so; recovery and the checker judge the rest
    facts: dict[str, Any] = {"instances": system.flood_instances, "all_active_after": took}
    return Injected("slot-flood", [FLOOD], rng.uniform(1.0, 3.0),
                    lambda: system.set_enabled(FLOOD, False), facts)  # fmt: skip


def cluster_restart(system: System, rng: random.Random, announce: Announce) -> Injected:
    """Every replica killed at once, all started again together: a cold restart."""
    targets = [r.node_id for r in system.replicas]
    # Pods cannot renew while no replica runs: losing sessions is allowed here.
    announce("cluster-restart", targets, ["*"])
    for replica in system.replicas:
        if replica.process is not None:
            system.kill(replica.process)

    def heal() -> None:
        for replica in system.replicas:
            system.start_replica(replica)

    return Injected("cluster-restart", targets, rng.uniform(0.2, 1.0), heal)


def rolling_restart(system: System, rng: random.Random, announce: Announce) -> Injected:
    """Each replica in turn stopped (SIGTERM, as a Kubernetes rolling update does) and
    started again; the next one only once this one is ready, there is a leader and that
    leader has renewed every pod since (back well within the TTL)."""
    targets = [r.node_id for r in system.replicas]
    announce("rolling-restart", targets, [])
    for replica in system.replicas:
        assert replica.process is not None
        was_leader = system.leader() is replica
        began = time.monotonic()
        system.stop_gracefully(replica.process)
        stopped = time.monotonic()
        system.start_replica(replica)
        restarted = time.time()
        wait_until(partial(system.ready, replica), 30.0, f"{replica.node_id} back")
        ready = time.monotonic()
        wait_until(partial(system.pods_renewed_since, restarted), 20.0, "every pod renewed")
        # How long each step took (a SIGTERM stop waits for requests under way).
        system.nemesis_trail.record(
            "rolling_step", replica=replica.node_id, leader=was_leader,
            stop_seconds=round(stopped - began, 3), ready_seconds=round(ready - stopped, 3),
            renewed_seconds=round(time.monotonic() - ready, 3),
        )  # fmt: skip
    return Injected("rolling-restart", targets, 0.0, lambda: None)


FAULTS: dict[str, Callable[[System, random.Random, Announce], Injected]] = {
    "pod-kill": pod_kill,
    "pod-pause": pod_pause,
    "pod-isolate": pod_isolate,
    "leader-kill": leader_kill,
    "replica-kill": replica_kill,
    "leader-pause": leader_pause,
    "partition-leader": partition_leader,
    "partition-split": partition_split,
    "db-stop": db_stop,
    "db-hang": db_hang,
    "db-hang-leader-kill": db_hang_leader_kill,
    "slow-start": slow_start,
    "slot-flood": slot_flood,
    "cluster-restart": cluster_restart,
    "rolling-restart": rolling_restart,
    "pod-churn": pod_churn,
    "pod-drain": pod_drain,
}

MIXES: dict[str, tuple[str, ...]] = {
    # the mixes of the long campaign (`--mix all`)
    "pod-crash": ("pod-kill",),
    "pod-pause": ("pod-pause",),
    "leader-crash": ("leader-kill", "replica-kill"),
    "leader-pause": ("leader-pause",),
    "leader-churn": ("leader-pause", "leader-kill"),
    "partition": ("partition-leader", "partition-split", "pod-isolate"),
    "database": ("db-stop",),
    "database-hang": ("db-hang", "db-hang-leader-kill"),
    "pod-load": ("slow-start", "slot-flood"),
    "restart": ("cluster-restart", "rolling-restart"),
    "rebalance": ("pod-churn", "pod-drain"),
    # the short campaign's mixes, several kinds each
    "processes": ("pod-kill", "pod-pause", "leader-kill", "leader-pause", "pod-churn"),
    "network": ("partition-leader", "partition-split", "pod-isolate"),
    "infrastructure": (
        "db-stop",
        "db-hang-leader-kill",
        "cluster-restart",
        "rolling-restart",
        "slow-start",
    ),
    "mixed": tuple(FAULTS),
}
LONG_MIXES = ("pod-crash", "pod-pause", "leader-crash", "leader-pause", "leader-churn",
              "partition", "database", "database-hang", "pod-load", "restart",
              "rebalance")  # fmt: skip
SHORT_MIXES = ("processes", "network", "infrastructure")
