"""Moving sessions back into balance, and off drained pods, by graceful handoff: pure.

A move is a `Handoff` command: the owner stops its session cleanly and releases it,
then the planner grants the slot to the chosen pod with a higher epoch (or promotes the
warm standby there). Never by expiry. Rules:

- only from a settled state: a plan that changes anything else moves nothing;
- at most one move in flight per adapter (none while any of its slots is handing off,
  waiting for its new owner, or still starting);
- within the plan's budgets (`Moves`); the leader hands out budgets per second;
- drained pods are emptied first, then the spread: no scale_out adapter with more than
  ceil(instances / pods) instances on one pod, then owned sessions per pod within one
  of each other, moving to the least loaded able pod, to its standby there if it has one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from protocol.values import DeploymentMode, PodState, SlotStatus
from raftorch.core.model import AdapterSpec, Handoff, Moves, SlotState, slot_adapter

if TYPE_CHECKING:
    from raftorch.core.planner import _Work

_MOVABLE = (SlotStatus.ACTIVE, SlotStatus.ERROR)
_BUSY = (SlotStatus.HANDING_OFF, SlotStatus.CLAIMING)


def plan_moves(work: _Work, adapters: Mapping[str, AdapterSpec], moves: Moves) -> None:
    """Add the moves this plan may make; `adapters` is the whole configuration."""
    if not moves.rebalance and not moves.drain:
        return
    desired = {a: s for a, s in adapters.items() if s.enabled}
    if not desired:  # nothing runs, nothing to move (spares counting every pod's slots)
        return
    mover = _Mover(work, desired)
    drained = mover.drain(moves.drain)
    spread = mover.spread(moves.rebalance)
    balanced = mover.balance(moves.rebalance - spread)
    if drained:
        work.reasons.append(f"moving {drained} session(s) off drained pods")
    if spread or balanced:
        work.reasons.append(f"rebalancing: moving {spread + balanced} session(s) by handoff")


class _Mover:
    def __init__(self, work: _Work, desired: Mapping[str, AdapterSpec]) -> None:
        self.work = work
        self.desired = desired
        self._busy: dict[str, bool] = {}
        self._offering: dict[str, list[str]] = {}  # connector -> ACTIVE pods offering it
        self.owned = Counter(
            {p: sum(1 for r in work.pod_slots.get(p, {}).values() if r == "ACTIVE")
             for p in work.pods}
        )  # fmt: skip

    def busy(self, adapter_id: str) -> bool:
        """A move of this adapter is in flight (or it is still coming up)."""
        found = self._busy.get(adapter_id)
        if found is None:
            found = False
            for key in self.work.adapter_slots.get(adapter_id, {}):
                s = self.work.view.slots[key]
                if s.status in _BUSY or (s.owner is None and s.handoff_to is not None):
                    found = True
                    break
            self._busy[adapter_id] = found
        return found

    def _lighter(self, than: int, pod_id: str) -> bool:
        return self.owned[pod_id] < than

    def move(self, state: SlotState, to_pod: str, reason: str) -> None:
        assert state.owner is not None
        self.work.commands.append(Handoff(state.slot, state.owner, state.epoch, to_pod, reason))
        self.owned[state.owner] -= 1
        self.owned[to_pod] += 1
        self._busy[state.adapter_id] = True

    def _offered(self, connector: str) -> list[str]:
        """The ACTIVE pods offering `connector`, found once per plan, not once per adapter
        or per slot looked at (100 adapters and 1,000 pods: 100,000 pods looked at in
        every tick of a rebalance window)."""
        found = self._offering.get(connector)
        if found is None:
            found = [p for p, pod in self.work.pods.items()
                     if pod.state is PodState.ACTIVE and connector in pod.connectors]  # fmt: skip
            self._offering[connector] = found
        return found

    def _owned_slots(self, pod_id: str) -> list[SlotState]:
        slots = self.work.view.slots
        return [slots[k] for k, role in sorted(self.work.pod_slots.get(pod_id, {}).items())
                if role == "ACTIVE"]  # fmt: skip

    def _movable(self, state: SlotState) -> AdapterSpec | None:
        spec = self.desired.get(state.adapter_id)
        if spec is None or state.status not in _MOVABLE or self.busy(state.adapter_id):
            return None
        return spec

    def _target(
        self, spec: AdapterSpec, state: SlotState, fits: Callable[[str], bool] = lambda _: True
    ) -> str | None:
        """Among able pods that `fits`: its standby first, then fewest instances of the
        adapter, then least loaded."""
        counts = self._instances(spec.adapter_id)
        load, pods = self.work.placer.load, self.work.pods
        able = [p for p in self._offered(spec.connector)
                if p != state.owner and fits(p)
                and load[p] < pods[p].capacity + (p in state.standbys)]  # fmt: skip
        if not able:
            return None
        return min(able, key=lambda p: (p not in state.standbys, counts[p], self.owned[p], p))

    def _instances(self, adapter_id: str) -> Counter[str]:
        slots = self.work.view.slots
        owners = (slots[k].owner for k in self.work.adapter_slots.get(adapter_id, {}))
        return Counter(o for o in owners if o is not None)

    # --- the three kinds of move -----------------------------------------------------

    def drain(self, budget: int) -> int:
        done = 0
        for pod_id in sorted(self.work.pods):
            if self.work.pods[pod_id].state is not PodState.DRAINING:
                continue
            for state in self._owned_slots(pod_id):
                if done >= budget:
                    return done
                spec = self._movable(state)
                target = self._target(spec, state) if spec is not None else None
                if spec is not None and target is not None:
                    self.move(state, target, "drain")
                    done += 1
        return done

    def spread(self, budget: int) -> int:
        """scale_out adapters with more than their share of instances on one pod."""
        done = 0
        for adapter_id, spec in self.desired.items():
            if done >= budget or spec.mode is not DeploymentMode.SCALE_OUT or spec.instances < 2:
                continue
            if self.busy(adapter_id):
                continue
            able = len(self._offered(spec.connector))
            if not able:
                continue
            counts = self._instances(adapter_id)
            share = math.ceil(spec.instances / able)
            crowded = max(counts, key=lambda p: (counts[p], p), default=None)
            if crowded is None or counts[crowded] <= share:
                continue
            mine = (s for s in self._owned_slots(crowded) if slot_adapter(s.slot) == adapter_id)
            state = next((s for s in mine if self._movable(s)), None)
            target = self._target(spec, state) if state is not None else None
            if state is not None and target is not None and counts[target] + 1 <= share:
                self.move(state, target, "rebalance")
                done += 1
        return done

    def balance(self, budget: int) -> int:
        """Owned sessions per ACTIVE pod within one of each other."""
        done = 0
        active = [p for p, pod in self.work.pods.items() if pod.state is PodState.ACTIVE]
        while done < budget and len(active) > 1:
            heavy = max(active, key=lambda p: (self.owned[p], p))
            moved = False
            for state in self._owned_slots(heavy):
                spec = self._movable(state)
                if spec is None or state.owner != heavy:
                    continue
                target = self._target(spec, state, partial(self._lighter, self.owned[heavy] - 1))
                counts = self._instances(spec.adapter_id)
                if target is None:
                    continue
                if spec.mode is DeploymentMode.SCALE_OUT and counts[target] >= counts[heavy]:
                    continue  # would crowd the adapter's instances on the target
                self.move(state, target, "rebalance")
                done += 1
                moved = True
                break
            if not moved:
                break
        return done
