"""The state's persistent map: a dict's behaviour, old versions unchanged, and untracked."""

from __future__ import annotations

import enum
import gc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.values import PodState, SlotStatus
from raftorch.core.cowmap import EMPTY, MAX_BUCKET, CowMap
from raftorch.core.model import PodInfo, SlotState
from raftorch.core.snapshot import Batch, Snapshot, rebuild_indexes

keys = st.text(alphabet="abcdef/0123", max_size=4)
operation = st.tuples(st.sampled_from(["set", "del", "pop", "finish"]), keys, st.integers())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, st.integers(), max_size=300), st.lists(operation, max_size=400))
def test_behaves_like_a_dict_and_keeps_every_version(
    start: dict[str, int], operations: list[tuple[str, str, int]]
) -> None:
    current = CowMap(start)
    model = dict(start)
    versions = [(current, dict(model))]
    mutation = current.mutate()
    for name, key, value in operations:
        if name == "set":
            mutation[key] = value
            model[key] = value
        elif name == "del":
            if key in model:
                del mutation[key]
                del model[key]
            else:
                with pytest.raises(KeyError):
                    del mutation[key]
        elif name == "pop":
            assert mutation.pop(key, None) == model.pop(key, None)
        else:
            finished = mutation.finish()
            versions.append((finished, dict(model)))
            mutation = finished.mutate() if value % 2 else mutation  # go on, or anew
        assert len(mutation) == len(model)
        assert (key in mutation) == (key in model)
        assert mutation.get(key) == model.get(key)
    versions.append((mutation.finish(), dict(model)))
    for version, expected in versions:  # a later change never shows in an earlier map
        assert dict(version.items()) == expected
        assert sorted(version) == sorted(expected)
        assert sorted(version.values()) == sorted(expected.values())
        assert len(version) == len(expected)
        assert version == expected and version == CowMap(expected)
        assert all(version[k] == v for k, v in expected.items())


def test_an_unchanged_mutation_gives_back_the_same_map() -> None:
    base = CowMap({"a": 1})
    mutation = base.mutate()
    mutation.pop("missing", None)
    assert mutation.finish() is base
    assert not mutation.changed


def test_buckets_grow_and_shrink_with_the_map() -> None:
    size = MAX_BUCKET * 64
    grown = CowMap[str, int]().mutate()
    for i in range(size):
        grown[f"s{i}"] = i
    big = grown.finish()
    assert len(big._buckets) >= 64  # no bucket holds anything like the whole map
    assert max(len(b) for b in big._buckets) < 4 * MAX_BUCKET
    shrinking = big.mutate()
    for i in range(size - 3):
        del shrinking[f"s{i}"]
    small = shrinking.finish()
    assert len(small._buckets) == 1
    assert dict(small.items()) == {f"s{i}": i for i in range(size - 3, size)}
    assert len(big) == size  # the big one is unchanged


def test_one_change_copies_one_bucket() -> None:
    big = CowMap({f"s{i}": i for i in range(MAX_BUCKET * 64)})
    mutation = big.mutate()
    mutation["s1"] = -1
    changed = mutation.finish()
    shared = sum(a is b for a, b in zip(big._buckets, changed._buckets, strict=True))
    assert shared == len(big._buckets) - 1
    assert big["s1"] == 1 and changed["s1"] == -1


def _tracked_reachable(root: Any) -> int:
    """Objects the cyclic collector tracks among everything reachable from `root`."""
    seen: set[int] = set()
    stack, tracked = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        tracked += gc.is_tracked(obj)
        stack.extend(r for r in gc.get_referents(obj) if not isinstance(r, type | enum.Enum))
    return tracked


def test_the_state_of_many_slots_is_a_few_objects_to_the_collector() -> None:
    """What the trie-based state cost: about one tracked node per three entries of every
    index, 30,000 at 10,000 slots; a collection walks each of them (cowmap's docstring)."""
    pods = [PodInfo(f"p{i}", f"p{i}-1", "127.0.0.1:1", frozenset({"fix"}), 1000,
                    (), PodState.ACTIVE, 0.0) for i in range(100)]  # fmt: skip
    slots = [SlotState(f"a{i % 100}/{i}", f"a{i % 100}", f"p{i % 100}", i + 1, (),
                       SlotStatus.ACTIVE) for i in range(10_000)]  # fmt: skip
    state = rebuild_indexes(pods, slots, epoch_counter=10_000)
    batch = Batch(state, 1.0)  # and after an entry that moves 1,000 of them
    for slot in slots[:1000]:
        batch.vacate(batch.slot(slot.slot))
    after = batch.finish(state.applied_entries + 1)
    gc.collect()  # tuples of untracked dicts are untracked by the first collection
    for snapshot in (state, after):
        assert len(snapshot.slots) == 10_000
        tracked = _tracked_reachable(snapshot)
        # the pods and their info, the per-pod and per-adapter maps, the snapshot itself
        assert tracked < 5 * len(pods) + 2 * 100 + 50, tracked
    assert len(after.unassigned) == 1000 and len(state.unassigned) == 0
    assert sum(len(r) for r in after.pod_slots.values()) == 9000


def test_empty_is_empty_and_equal_to_any_empty_mapping() -> None:
    assert not EMPTY and len(EMPTY) == 0 and EMPTY == {} and CowMap() == EMPTY
    assert Snapshot().slots == {}
    assert hash(CowMap({"a": 1})) == hash(CowMap([("a", 1)]))
