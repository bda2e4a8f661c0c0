"""Choosing a pod for a new role in a slot: least loaded first, spread, in O(log pods).

A heap per connector type orders the able pods (live, ACTIVE, offering the connector,
below capacity) by (load, pod id). A choice pops candidates in that order and takes the
first that breaks no preference; preferences are soft, so a candidate that breaks some
is kept as a fallback and the best fallback wins when no candidate is clean within
`PROBES` pops. Hard rule: never two roles of one slot on one pod.

Preferences, most important first: fewest roles of the same adapter on the pod (the
instances of a scale_out adapter land on distinct pods while there are enough, then as
evenly as possible), fewest roles of the same adapter in the pod's zone (an active and
its standby in different zones), least load. Pure and deterministic.

A plan that has woken as many pods as it may `restrict`s the placer to those pods, each
up to a cap of roles: the heaps are rebuilt from them, and `exhausted` says when none
has room left.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Collection, Mapping

from protocol.values import PodState
from raftorch.core.model import PodInfo

PROBES = 32
"""Candidates examined per choice before the best fallback is taken."""

ZONES_BOUNDED = 16
"""Up to this many zones, `quietest` finds the least crowded one; beyond, it says 0."""


class Placer:
    """Pods by load, per connector; `load` is shared with the caller (roles per pod)."""

    def __init__(self, pods: Mapping[str, PodInfo], load: Counter[str]) -> None:
        self._pods = pods
        self.load = load
        self._heaps: dict[str, list[tuple[int, str]]] = {}
        self._zones = {pod_id: pod.zone for pod_id, pod in pods.items()}
        self._zone_names = frozenset(self._zones.values())  # pods forgotten later keep theirs
        self._within: frozenset[str] | None = None  # see `restrict`
        self._cap = 0
        self._open: set[str] = set()

    def restrict(self, pods: Collection[str], cap: int) -> None:
        """From now on choose only among `pods`, each up to `cap` roles (and its capacity).

        For a plan that has given work to as many pods as it may: it goes on filling
        those, up to their fair share `cap`, instead of stopping."""
        self._within, self._cap = frozenset(pods), cap
        self._open = {p for p in self._within if p in self._zones and self.load[p] < self._limit(p)}
        self._heaps.clear()  # rebuilt from the pods allowed, at their current load

    @property
    def restricted(self) -> bool:
        return self._within is not None

    def exhausted(self) -> bool:
        """Restricted, and no allowed pod can take another role."""
        return self._within is not None and not self._open

    def add(self, pod_id: str) -> None:
        """One more role on the pod (chosen by the caller, not by `choose`)."""
        self.load[pod_id] += 1
        if self._within is not None and self.load[pod_id] >= self._limit(pod_id):
            self._open.discard(pod_id)

    def _limit(self, pod_id: str) -> int:
        capacity = self._pods[pod_id].capacity
        return capacity if self._within is None else min(capacity, self._cap)

    def zone(self, pod_id: str) -> str | None:
        return self._zones.get(pod_id)

    def able(self, pod_id: str, connector: str) -> bool:
        """Live, ACTIVE and offering the connector (capacity aside)."""
        pod = self._pods.get(pod_id)
        return pod is not None and pod.state is PodState.ACTIVE and connector in pod.connectors

    def forget(self, pod_id: str) -> None:
        """The pod is gone (expired in this plan): its heap entries are skipped from now on."""
        self._zones.pop(pod_id, None)

    def fewest(self, connector: str, roles: Mapping[str, int]) -> int:
        """The fewest `roles` any able pod (allowed, if restricted) holds: a bound for
        `choose` until one of them loses a role (roles only added keep it a bound)."""
        pods = self._zones if self._within is None else self._within & self._zones.keys()
        return min((roles.get(p, 0) for p in pods if self.able(p, connector)), default=0)

    def quietest(self, zone_crowd: Callable[[str | None], int]) -> int:
        """A lower bound of `zone_crowd` over the candidates: the count of the least
        crowded zone any pod was in (0 with a pod in no zone, or too many zones to look
        at). Without it a choice could stop early only at an empty zone, so once every
        zone held a role of the adapter each choice probed `PROBES` candidates."""
        names = self._zone_names
        if None in names or len(names) > ZONES_BOUNDED:
            return 0
        return min((zone_crowd(zone) for zone in names), default=0)

    def offered(self, connector: str) -> bool:
        return any(self.able(p, connector) for p in self._zones)

    def _heap(self, connector: str) -> list[tuple[int, str]]:
        heap = self._heaps.get(connector)
        if heap is None:
            pods = self._zones if self._within is None else self._within & self._zones.keys()
            heap = [(self.load[p], p) for p in sorted(pods)
                    if self.able(p, connector) and self.load[p] < self._limit(p)]  # fmt: skip
            heapq.heapify(heap)
            self._heaps[connector] = heap
        return heap

    def choose(
        self,
        connector: str,
        exclude: Collection[str],
        adapter_members: Callable[[str], int],
        zone_crowd: Callable[[str | None], int],
        *,
        fewest: int = 0,
        quiet: int = 0,
    ) -> str | None:
        """The best pod for a new role, or None; its load goes up by one.

        `fewest` and `quiet` are lower bounds of `adapter_members` and `zone_crowd` over
        the candidates: the first candidate (in load order) that reaches both is the best
        one. With 0, a candidate must hold no role of the adapter, in an empty zone, for
        that; once every pod holds one (100 instances over 20 pods), or every zone
        does, a caller that knows better (`fewest`, `quietest`) saves the probes."""
        heap = self._heap(connector)
        aside: list[tuple[int, str]] = []
        best: tuple[int, int, int, str] | None = None
        probes = 0
        limit = self._limit if self._within is not None else lambda p: self._pods[p].capacity
        while heap and probes < PROBES:
            load, pod_id = heapq.heappop(heap)
            if pod_id not in self._zones or self.load[pod_id] >= limit(pod_id):
                continue  # gone or full: drop the entry
            if load != self.load[pod_id]:
                heapq.heappush(heap, (self.load[pod_id], pod_id))  # stale: reorder
                continue
            aside.append((load, pod_id))
            if pod_id in exclude:
                continue
            probes += 1
            rank = (adapter_members(pod_id), zone_crowd(self.zone(pod_id)), load, pod_id)
            if best is None or rank < best:
                best = rank
            if rank[:2] == (fewest, quiet):
                break  # breaks no preference, and nothing later is less loaded
        chosen = best[3] if best is not None else None
        for entry in aside:
            if entry[1] != chosen:
                heapq.heappush(heap, entry)
        if chosen is None:
            return None
        self.add(chosen)
        if self.load[chosen] < limit(chosen):
            heapq.heappush(heap, (self.load[chosen], chosen))
        return chosen
