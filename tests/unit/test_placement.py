"""Choosing a pod: a known least number of roles (and least crowded zone) ends the search
early, same choice."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from protocol.values import DeploymentMode
from raftorch.core.model import AdapterSpec, PodInfo, Policy, RegisterPod, View
from raftorch.core.ownership import OwnershipState
from raftorch.core.placement import PROBES, ZONES_BOUNDED, Placer
from raftorch.core.planner import plan


def _pods(n: int, zones: list[str | None]) -> dict[str, PodInfo]:
    found = {}
    for i in range(n):
        pod_id, zone = f"p{i:02d}", zones[i]
        labels = (("zone", zone),) if zone is not None else ()
        found[pod_id] = PodInfo(pod_id, f"{pod_id}-inc", "127.0.0.1:1", frozenset({"fix"}), 1000,
                                labels)  # fmt: skip
    return found


@given(
    st.integers(min_value=1, max_value=PROBES).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 5), min_size=n, max_size=n),  # load
            st.lists(st.integers(0, 3), min_size=n, max_size=n),  # roles of the adapter
            st.lists(st.sampled_from([None, "a", "b"]), min_size=n, max_size=n),
        )
    )
)
def test_a_lower_bound_of_roles_gives_the_choice_a_full_search_gives(
    case: tuple[list[int], list[int], list[str | None]],
) -> None:
    loads, roles, zones = case
    pods = _pods(len(loads), zones)
    members = dict(zip(pods, roles, strict=True))
    crowd: Counter[str | None] = Counter()
    for pod_id, n in members.items():
        crowd[pods[pod_id].zone] += n

    def zone_crowd(zone: str | None) -> int:
        return crowd[zone] if zone is not None else 0

    def choose(fewest: int, quiet: bool = False) -> str | None:
        placer = Placer(pods, Counter(dict(zip(pods, loads, strict=True))))
        bound = placer.quietest(zone_crowd) if quiet else 0
        return placer.choose("fix", (), lambda p: members[p], zone_crowd, fewest=fewest,
                             quiet=bound)  # fmt: skip

    def rank(pod_id: str) -> tuple[int, int, int, str]:
        zone = pods[pod_id].zone
        return members[pod_id], crowd[zone] if zone is not None else 0, loads_of[pod_id], pod_id

    loads_of = dict(zip(pods, loads, strict=True))
    best = min(pods, key=rank)  # every pod is a candidate: no more of them than PROBES
    assert choose(min(roles)) == best
    assert choose(0) == best
    assert choose(min(roles), quiet=True) == best
    assert choose(0, quiet=True) == best


def test_with_the_bound_known_the_first_candidate_in_load_order_is_taken() -> None:
    pods = _pods(20, [None] * 20)
    asked: list[str] = []

    def roles(pod_id: str) -> int:
        asked.append(pod_id)
        return 1  # every pod already runs one instance of the adapter

    placer = Placer(pods, Counter({p: 5 for p in pods}))
    assert placer.choose("fix", (), roles, lambda _zone: 0, fewest=1) == "p00"
    assert asked == ["p00"]
    asked.clear()
    assert placer.choose("fix", (), roles, lambda _zone: 0, fewest=0) == "p01"
    assert len(asked) == 20  # without the bound: every pod is looked at (p00 too, now at 6)


def test_once_every_zone_holds_a_role_the_least_crowded_one_ends_the_search() -> None:
    """Pods in three zones, every zone already running the adapter: before the zone
    bound, each choice looked at `PROBES` candidates for an empty zone that no longer
    existed (a plan of 1,000 grants at 100,000 slots took 4 times as long)."""
    pods = _pods(90, ["abc"[i % 3] for i in range(90)])
    crowd: Counter[str | None] = Counter({"a": 2, "b": 1, "c": 1})
    asked: list[str] = []

    def roles(pod_id: str) -> int:
        asked.append(pod_id)
        return 0

    def zone_crowd(zone: str | None) -> int:
        return crowd[zone] if zone is not None else 0

    placer = Placer(pods, Counter({p: 5 for p in pods}))
    quiet = placer.quietest(zone_crowd)
    assert quiet == 1
    # p00 is in zone a (2 roles); p01, in b (1), is the first candidate of a quietest zone
    assert placer.choose("fix", (), roles, zone_crowd, quiet=quiet) == "p01"
    assert asked == ["p00", "p01"]
    asked.clear()
    again = Placer(pods, Counter({p: 5 for p in pods}))
    assert again.choose("fix", (), roles, zone_crowd) == "p01"  # the same choice, at a price:
    assert len(asked) == PROBES  # no candidate is in an empty zone


def test_the_zone_bound_is_zero_with_a_pod_in_no_zone_or_too_many_zones() -> None:
    crowd: Counter[str | None] = Counter({"a": 3, "b": 3})
    assert Placer(_pods(3, ["a", "b", None]), Counter()).quietest(lambda z: crowd[z]) == 0
    many: list[str | None] = [f"z{i}" for i in range(ZONES_BOUNDED + 1)]
    assert Placer(_pods(len(many), many), Counter()).quietest(lambda _z: 3) == 0
    assert Placer(_pods(2, ["a", "b"]), Counter()).quietest(lambda z: crowd[z]) == 3


def test_instances_beyond_the_pod_count_still_spread_evenly() -> None:
    """100 instances over 20 pods after the pod that held them all died: 5 each."""
    state = OwnershipState()
    specs = {"s": AdapterSpec("s", "fix", DeploymentMode.SCALE_OUT, 100, enabled=True)}
    joins = [RegisterPod(p.pod_id, p.incarnation, p.address, p.connectors, p.capacity)
             for p in _pods(20, [None] * 20).values()]  # fmt: skip
    state.apply("pods", 1000.0, joins)
    snap = state.snapshot()
    decided = plan(View(specs, snap.pods, snap.slots, {p: 1000.0 for p in snap.pods}),
                   1000.0, Policy(ttl_seconds=3.0))  # fmt: skip
    assert state.apply("plan", 1000.0, decided.commands).ok
    owners = Counter(s.owner for s in state.snapshot().slots.values())
    assert sorted(owners.values()) == [5] * 20
