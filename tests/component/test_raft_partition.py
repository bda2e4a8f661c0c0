"""A leader cut off from the majority neither grants nor acknowledges renewals."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocol.errors import UnavailableError
from protocol.values import DeploymentMode
from raftorch.core.model import AdapterSpec, Policy, RegisterPod
from tests.component.raftcluster import (
    Cluster,
    Replica,
    StaticAdapters,
    first_plan,
    one_leader,
    wait_for,
)

TTL = 2.0


def _spec(adapter_id: str) -> AdapterSpec:
    return AdapterSpec(adapter_id, "fix", DeploymentMode.SINGLE, 1, enabled=True)


def _pod(pod_id: str) -> RegisterPod:
    return RegisterPod(pod_id, f"{pod_id}-inc", f"127.0.0.1:{pod_id}", frozenset({"fix"}), 10)


@pytest.mark.parametrize("size", [3, 5])
async def test_cut_off_leader_cannot_grant_or_renew_and_majority_reassigns(
    tmp_path: Path, size: int
) -> None:
    adapters = StaticAdapters({"a": _spec("a")})
    cluster = Cluster(size, tmp_path, adapters=adapters, policy=Policy(ttl_seconds=TTL))
    try:
        old = await one_leader(cluster)
        for replica in cluster.live():
            replica.confirmer.start()
        await old.bridge.submit([_pod("p1"), _pod("p2")])
        outcome = await first_plan(old)
        assert outcome.result is not None and len(outcome.result.granted) == 1
        [(slot, owner, old_epoch)] = outcome.result.granted
        other_pod = "p2" if owner == "p1" else "p1"
        last_ack = time.monotonic()
        assert await old.renew(owner)

        others = [r for r in cluster.live() if r is not old]
        cluster.network.cut([old.address], [r.address for r in others])
        adapters.items["b"] = _spec("b")

        # The old leader can neither acknowledge a renewal nor commit a decision.
        with pytest.raises(UnavailableError):
            await old.renew(owner)
        try:
            stale = await old.loop.run_once()
            assert not stale.leader
        except UnavailableError:
            pass
        await wait_for(lambda: not old.node.status().is_leader, 3.0, "old leader to step down")

        def majority_leader() -> Replica | None:
            leaders = [r for r in others if r.node.status().is_leader]
            return leaders[0] if len(leaders) == 1 else None

        new = await wait_for(majority_leader, 10.0, "a leader on the majority side")
        reassigned_at = None
        deadline = time.monotonic() + TTL + 10.0
        while time.monotonic() < deadline:
            assert await new.renew(other_pod) or new.loop.tracker.term is None
            await new.loop.run_once()
            current = new.node.snapshot().slots.get(slot)
            if current is not None and current.owner == other_pod:
                reassigned_at = time.monotonic()
                break
        assert reassigned_at is not None, "the majority never reassigned the slot"
        new_slot = new.node.snapshot().slots[slot]
        assert new_slot.epoch > old_epoch
        # Invariant 1: the old owner's lease (acknowledged before last_ack + TTL at the
        # latest) had ended before the new grant committed.
        assert last_ack + TTL <= reassigned_at

        isolated = old.node.snapshot()
        assert "b/0" not in isolated.slots
        assert isolated.slots[slot].epoch == old_epoch

        cluster.network.heal()
        await wait_for(
            lambda: old.node.snapshot().slots == new.node.snapshot().slots,
            10.0,
            "the old leader to converge after the heal",
        )
    finally:
        for replica in cluster.live():
            await replica.confirmer.stop()
        cluster.close()
