"""The benches: renewals (side by side with etcd), scale, mass failover, leader failover."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import etcd
from bench.cluster import BenchError, Cluster, Replica
from bench.load import FleetProcess, Results, split, stop_all
from bench.measure import ProcessGroup

VENUE_PORT = 9  # the tcp-client config of the bench's adapters; synthetic pods never dial it
REGISTER_SECONDS = 600.0
ENABLING_SECONDS = 2.0
"""`scale` reports the heartbeats sent this soon after the bulk enable on their own: the
moment every replica learns of all the adapters and the leader's first plans go out."""


@dataclass
class Options:
    workdir: Path
    workers: int = 1
    ttl: float = 3.0
    say: Any = print


class Sampler:
    """Peak RSS of the replicas once a second, and a check that none died."""

    def __init__(self, cluster: Cluster, group: ProcessGroup) -> None:
        self.cluster, self.group = cluster, group

    @contextlib.asynccontextmanager
    async def running(self, check_alive: bool = True) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                self.group.sample_rss()
                if check_alive:
                    self.cluster.check_alive()
                await asyncio.sleep(1.0)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.group.sample_rss()


async def start_fleets(
    cluster: Cluster,
    opts: Options,
    name: str,
    pods: int,
    capacity: int,
    *,
    workers: int | None = None,
    acks: bool = False,
) -> list[FleetProcess]:
    """`pods` synthetic pods over `workers` processes, all registered on return."""
    fleets = []
    first = 0
    for i, count in enumerate(split(pods, workers or opts.workers)):
        spec = {
            "urls": cluster.urls,
            "pod_token": cluster.pod_token,
            "count": count,
            "prefix": f"{name}-{i}-",
            "capacity": capacity,
            "connectors": ["tcp-client"],
            "report_acks": acks,
        }
        fleets.append(FleetProcess(opts.workdir, f"{name}-{i}", spec))
        first += count
    for fleet in fleets:
        await fleet.start()
    for fleet in fleets:
        await fleet.wait_registered(REGISTER_SECONDS)
    return fleets


PLACE_SECONDS = 600.0
LOST_PODS_FRACTION = 0.5
"""Placing gives up once fewer than this share of the pods is still registered: the
cluster is expiring pods faster than they come back (on this 2-core machine, a leader
too busy to take their renewals, then leader changes that took minutes to settle, if
they did; docs/performance.md) and the rest of the run would only wait for
PLACE_SECONDS."""


class PlacingFailed(BenchError):
    """Not every session was placed; `enabled_at` (wall clock) for the report."""

    def __init__(self, message: str, enabled_at: float) -> None:
        super().__init__(message)
        self.enabled_at = enabled_at


async def place(
    cluster: Cluster,
    sessions: int,
    instances: int,
    watch: Replica,
    *,
    seconds: float = PLACE_SECONDS,
    pods: int = 0,
) -> tuple[list[str], float, float]:
    """Create and enable scale_out adapters for `sessions` slots; (ids, enable wall time,
    seconds until `watch` counts every slot ACTIVE). PlacingFailed when that does not
    happen within `seconds`, or when fewer than LOST_PODS_FRACTION of `pods` remain."""
    count = math.ceil(sessions / instances)
    ids = await cluster.create_adapters(count, instances, VENUE_PORT)
    enabled_at = time.time()
    started = time.monotonic()
    await cluster.enable(ids)
    total = count * instances

    async def all_active() -> bool:
        cluster.check_alive()
        counts = await cluster.session_counts(watch)
        if counts["pods"] < pods * LOST_PODS_FRACTION:
            raise BenchError(
                f"pods are expiring faster than they register again: {counts['pods']} of "
                f"{pods} registered, {counts.get('ACTIVE', 0)} of {total} sessions ACTIVE, "
                f"{time.monotonic() - started:.1f}s after enabling"
            )
        return counts.get("ACTIVE", 0) >= total

    try:
        await cluster.until(all_active, seconds, f"{total} sessions ACTIVE")
    except BenchError as exc:  # a replica exited, the time ran out, or the pods went
        raise PlacingFailed(f"placing failed: {exc}", enabled_at) from exc
    return ids, enabled_at, time.monotonic() - started


async def verify_placed(
    cluster: Cluster, watch: Replica, total: int, not_on: str | None = None
) -> dict[str, int]:
    """Every slot ACTIVE with an owner, through the admin API (and none on `not_on`)."""
    slots = await cluster.slots_by_owner(watch)
    active = sum(1 for owner, status, _ in slots.values() if owner and status == "ACTIVE")
    on_victim = sum(1 for owner, _, _ in slots.values() if not_on and owner == not_on)
    return {"slots": len(slots), "active": active, "expected": total, "on_killed_pod": on_victim}


def groups(cluster: Cluster, fleets: list[FleetProcess]) -> tuple[ProcessGroup, ProcessGroup]:
    return ProcessGroup("replicas", cluster.pids()), ProcessGroup("load", [f.pid for f in fleets])


# --- renewals -----------------------------------------------------------------------------


async def renewals(opts: Options, pods: int, seconds: float, with_etcd: bool) -> dict[str, Any]:
    """N pods heartbeating at 1 Hz (no sessions) and, in the same run, N etcd leases kept
    alive at 1 Hz by a 3-member etcd cluster."""
    figures: dict[str, Any] = {}
    async with Cluster(opts.workdir / "raftorch", ttl=opts.ttl) as cluster:
        members = etcd.EtcdCluster(opts.workdir) if with_etcd else None
        try:
            loads = await start_fleets(cluster, opts, "pod", pods, capacity=1)
            if members is not None:
                members.start()
                await members.wait_ready()
                spec = {
                    "ports": members.client_ports,
                    "count": pods,
                    "ttl": round(opts.ttl),
                    "interval": 1.0,
                }
                keeper = FleetProcess(opts.workdir, "etcd", spec, module="bench.etcd")
                await keeper.start()
                await keeper.wait_registered(REGISTER_SECONDS)
            opts.say(f"[renewals] {pods} pods and {pods if members else 0} etcd leases running")
            await asyncio.sleep(3.0)  # every pod and lease past its first beat
            raft_cpu, raft_load = groups(cluster, loads)
            etcd_cpu = ProcessGroup("etcd", members.pids() if members else [])
            etcd_load = ProcessGroup("etcd-load", [keeper.pid] if members else [])
            for group in (raft_cpu, raft_load, etcd_cpu, etcd_load):
                group.start()
            start = time.time()
            async with Sampler(cluster, raft_cpu).running():
                await asyncio.sleep(seconds)
            end = time.time()
            cores = {g.name: g.cores() for g in (raft_cpu, raft_load, etcd_cpu, etcd_load)}
            raft = await stop_all(loads)
            figures["raftorch"] = _renewal_figures(
                raft, start=start, end=end, cores=cores["replicas"], load=cores["load"], pods=pods
            )
            figures["raftorch"]["replica_rss_mb"] = raft_cpu.peak_rss_mb()
            figures["raftorch"]["pod_lease_lapses"] = raft.lapsed
            figures["raftorch"]["load_generator_rss_mb"] = raft.rss_mb
            if members is not None:
                kept = await stop_all([keeper])
                figures["etcd"] = _renewal_figures(
                    kept,
                    start=start,
                    end=end,
                    cores=cores["etcd"],
                    load=cores["etcd-load"],
                    pods=pods,
                )
                ratio = (cores["replicas"] or 0) / (cores["etcd"] or math.inf)
                figures["cpu_ratio_raftorch_over_etcd"] = round(ratio, 2)
        finally:
            if members is not None:
                members.stop()
    figures["window_seconds"] = seconds
    return figures


def _renewal_figures(
    results: Results,
    *,
    start: float,
    end: float,
    cores: float | None,
    load: float | None,
    pods: int,
) -> dict[str, Any]:
    window = results.window(start, end)
    return {
        "server_cpu_cores": cores,
        "load_generator_cpu_cores": load,
        "renewals": window["heartbeats"],
        "hedged_attempts": window["hedged_attempts"],
        "latency": window["latency"],
        "non_200": window["non_200"],
        "non_200_by_status": window["non_200_by_status"],
        "expired": results.expired,
        "clients": pods,
    }


# --- scale --------------------------------------------------------------------------------


async def scale(
    opts: Options, pods: int, sessions: int, instances: int, hold: float
) -> dict[str, Any]:
    """P pods x S sessions: time to place, then heartbeats, CPU and RSS while holding."""
    async with Cluster(opts.workdir / "raftorch", ttl=opts.ttl) as cluster:
        capacity = max(1, 2 * math.ceil(sessions / pods))
        fleets = await start_fleets(cluster, opts, "pod", pods, capacity)
        opts.say(f"[scale] {pods} pods registered; enabling {sessions} sessions")
        cpu, load = groups(cluster, fleets)
        watch = await cluster.follower()
        async with Sampler(cluster, cpu).running():
            cpu.start()
            load.start()
            try:
                _, enabled_at, took = await place(cluster, sessions, instances, watch, pods=pods)
            except PlacingFailed as failed:
                cores = {"replica_cpu_cores": cpu.cores(), "load_generator_cpu_cores": load.cores()}
                results = await stop_all(fleets)
                return _failed_placing(failed, results, cores, cpu.peak_rss_mb())
            placing = {"replica_cpu_cores": cpu.cores(), "load_generator_cpu_cores": load.cores()}
            placed_at = time.time()
            opts.say(f"[scale] every session ACTIVE {took:.1f}s after enabling; holding {hold:g}s")
            check = await verify_placed(cluster, watch, sessions)
            cpu.start()
            load.start()
            start = time.time()
            await asyncio.sleep(hold)
            end = time.time()
            holding = {"replica_cpu_cores": cpu.cores(), "load_generator_cpu_cores": load.cores()}
        held = await cluster.hedges_held()
        results = await stop_all(fleets)
    return {
        "time_to_place_seconds": round(took, 2),
        "placed": check,
        "placing": {**placing, "heartbeats": results.window(enabled_at, placed_at)},
        "enabling": {"heartbeats": results.window(enabled_at, enabled_at + ENABLING_SECONDS)},
        "holding": {**holding, "heartbeats": results.window(start, end), "seconds": hold},
        "expired_pods": results.expired,
        "pod_lease_lapses": results.lapsed,
        "load_generator_rss_mb": results.rss_mb,
        "hedges_held_by_followers": held,
        "replica_peak_rss_mb": cpu.peak_rss_mb(),
    }


def _failed_placing(
    failed: PlacingFailed, results: Results, cores: dict[str, float | None], rss: list[float]
) -> dict[str, Any]:
    """What the run saw up to the failure (the bench then exits non-zero); `cores` were
    measured before the load generator stopped."""
    start, end = failed.enabled_at, time.time()
    return {
        "failed": str(failed),
        "time_to_place_seconds": None,
        "placing": {**cores, "heartbeats": results.window(start, end)},
        "enabling": {"heartbeats": results.window(start, start + ENABLING_SECONDS)},
        "expired_pods": results.expired,
        "pod_lease_lapses": results.lapsed,
        "load_generator_rss_mb": results.rss_mb,
        "replica_peak_rss_mb": rss,
    }


# --- failovers ----------------------------------------------------------------------------


async def mass_failover(opts: Options, sessions: int, pods: int, instances: int) -> dict[str, Any]:
    """One pod holds every session; its process is killed (-9): from its expiry (seen
    through the API) to every session ACTIVE elsewhere.

    The one setting changed: `placement.rebalance` off. With the shipped `on_join`, the
    pods joining after the victim has its sessions would draw them off it by handoff
    (that is what it is for) and no pod would hold K sessions at the kill; expiry and
    failover, which are measured, do not depend on it."""
    settings = {"RAFTORCH_PLACEMENT__REBALANCE": "off"}
    async with Cluster(opts.workdir / "raftorch", ttl=opts.ttl, settings=settings) as cluster:
        [victim] = await start_fleets(cluster, opts, "victim", 1, sessions, workers=1, acks=True)
        victim_id = "victim-0-0"
        watch = await cluster.follower()
        _, _, took = await place(cluster, sessions, instances, watch, pods=1)
        others = await start_fleets(
            cluster, opts, "pod", pods, max(1, 2 * math.ceil(sessions / pods))
        )
        held = await _held_by(cluster, watch, victim_id)
        opts.say(f"[mass-failover] {victim_id} holds {held} sessions; killing it")
        await asyncio.sleep(2.0)  # every other pod past its first heartbeats
        before = await cluster.session_counts(watch)
        killed_at = time.time()
        await victim.kill()
        lease_end = victim.acks[victim_id] + opts.ttl  # the leader's expiry is no earlier
        expired_at, active_at = await _watch_failover(cluster, watch, sessions, before["pods"])
        check = await verify_placed(cluster, watch, sessions, not_on=victim_id)
        results = await stop_all(others)
    return {
        "sessions_on_killed_pod": held,
        "time_to_place_seconds": round(took, 2),
        "expiry_seen_to_all_active_seconds": round(active_at - expired_at, 3),
        "lease_end_to_all_active_seconds": round(active_at - lease_end, 3),
        "kill_to_expiry_seen_seconds": round(expired_at - killed_at, 3),
        "kill_to_all_active_seconds": round(active_at - killed_at, 3),
        "placed_after": check,
        "other_pods": pods,
        "other_pods_heartbeats": results.window(killed_at, active_at),
        "expired_other_pods": results.expired,
        "other_pods_lease_lapses": results.lapsed,
        "load_generator_rss_mb": results.rss_mb,
    }


async def _held_by(cluster: Cluster, watch: Replica, pod_id: str) -> int:
    slots = await cluster.slots_by_owner(watch)
    return sum(1 for owner, status, _ in slots.values() if owner == pod_id and status == "ACTIVE")


async def _watch_failover(
    cluster: Cluster, watch: Replica, total: int, pods: int
) -> tuple[float, float]:
    """(wall time the killed pod was seen gone, wall time every slot was ACTIVE again)."""
    expired_at: float | None = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            counts = await cluster.session_counts(watch)
        except (aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.02)  # too busy to answer in time: look again
            continue
        now = time.time()
        if expired_at is None and counts["pods"] < pods:
            expired_at = now
        if expired_at is not None and counts.get("ACTIVE", 0) >= total:
            return expired_at, now
        await asyncio.sleep(0.02)
    raise BenchError("the killed pod's sessions were not all ACTIVE elsewhere within 120 s")


async def leader_failover(
    opts: Options, pods: int, sessions: int, instances: int, *, settle: float, held: float
) -> dict[str, Any]:
    """Every session placed and held for `held` seconds, then the leader is kill -9'd:
    sessions dropped, time to the first acknowledged renewal. The heartbeats of the held
    seconds are reported too: right after placing 100,000 sessions the system is still
    busy (pods reporting, the load generator falling behind), and a kill then measures
    that as well (docs/performance.md, "The leader kill's second")."""
    async with Cluster(opts.workdir / "raftorch", ttl=opts.ttl) as cluster:
        fleets = await start_fleets(
            cluster, opts, "pod", pods, max(1, 2 * math.ceil(sessions / pods))
        )
        watch = await cluster.follower()
        _, _, took = await place(cluster, sessions, instances, watch, pods=pods)
        placed_at = time.time()
        await asyncio.sleep(held)
        before = await cluster.slots_by_owner(watch)
        leader = await cluster.leader()
        if leader is None:
            raise BenchError("no leader before the kill")
        opts.say(f"[leader-failover] {sessions} sessions ACTIVE; kill -9 {leader.node_id}")
        killed_at = time.time()
        cluster.kill(leader)
        new_leader = None
        while new_leader is None:
            new_leader = await cluster.leader()
            await asyncio.sleep(0.02)
        elected = time.time() - killed_at
        await asyncio.sleep(settle)  # past any lease an old leader could have promised
        after = await cluster.slots_by_owner(watch)
        # Moved: not ACTIVE afterwards, or granted again (another owner or a new epoch).
        moved = {slot: held[2] for slot, held in before.items()
                 if held[0] is None or after.get(slot) != (held[0], "ACTIVE", held[2])}  # fmt: skip
        # The shipped `on_join` rebalancing may be moving sessions by handoff at the kill
        # (for 60 s after the last pod joined): a planned move, not a drop.
        handed_off = await cluster.handed_off(watch, moved) if moved else set()
        for slot in sorted(moved):
            how = "handed off" if slot in handed_off else "DROPPED"
            opts.say(f"[leader-failover] {slot} {how}: {before[slot]} -> {after.get(slot)}")
        results = await stop_all(fleets)
    dropped = len(moved) - len(handed_off)
    # Renewals of heartbeats sent after the kill: only a live leader can have answered
    # them (one sent before may have been answered by the old leader as it died).
    acks = [
        s + lat - killed_at
        for s, lat, st in zip(results.sent, results.latency, results.status, strict=True)
        if st == 200 and s > killed_at
    ]
    return {
        "sessions": len(before),
        "time_to_place_seconds": round(took, 2),
        "killed": leader.node_id,
        "new_leader_seen_seconds": round(elected, 3),
        "first_acknowledged_renewal_seconds": round(min(acks), 3) if acks else None,
        "sessions_dropped": dropped,
        "sessions_handed_off": len(handed_off),
        "expired_pods": results.expired,
        "pod_lease_lapses": results.lapsed,
        "load_generator_rss_mb": results.rss_mb,
        "heartbeats_while_held": results.window(placed_at, killed_at),
        "heartbeats_after_kill": results.window(killed_at, killed_at + settle),
    }
