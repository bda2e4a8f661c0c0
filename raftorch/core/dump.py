"""The replicated state as pysyncobj's full dump stores it: plain msgpack, versioned.

pysyncobj pickles the replicated object for its dump; pickling our classes would tie
every dump to module and class names (a rename, a layout change or an upgrade could
not read it back). The state is therefore dumped as plain lists and numbers, and the
indexes are rebuilt on load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack
import msgspec

from protocol.values import PodState, SlotStatus
from raftorch.core.cowmap import CowMap
from raftorch.core.model import ApplyResult, PodInfo, ReplicaInfo, SlotState
from raftorch.core.snapshot import rebuild_indexes

if TYPE_CHECKING:
    from raftorch.core.snapshot import Snapshot

DUMP_FORMAT = 1
SLOT_ROW = ("slot", "adapter_id", "owner", "epoch", "standbys", "status", "detail",
            "changed_at", "handoff_to")  # fmt: skip
"""A slot's row in the dump: `SlotState`'s fields, in this order. A field added to or
moved in SlotState changes the format (tests/unit/test_dump.py checks they match)."""
astuple = msgspec.structs.astuple


class UnreadableDumpError(ValueError):
    """A dump this version cannot read (written by a newer one, or damaged)."""


def dump_state(snapshot: Snapshot, applied: Mapping[str, ApplyResult]) -> bytes:
    """The state in DUMP_FORMAT. Written on the Raft thread while it sends nothing, so
    it must be quick: a slot's row is its fields in order (`msgspec.structs.astuple`,
    the status as its value) and msgspec encodes the whole, 0.1 s at 100,000 slots
    where building the rows in Python and msgpack's packer took 0.3 s."""
    data = {
        "format": DUMP_FORMAT,
        "pods": [[p.pod_id, p.incarnation, p.address, sorted(p.connectors), p.capacity,
                  [list(kv) for kv in p.labels], p.state.value, p.registered_at]
                 for p in snapshot.pods.values()],
        "slots": [astuple(s) for s in snapshot.slots.values()],  # the fields of SLOT_ROW
        "replicas": [[r.node_id, r.raft_address, r.api_url] for r in snapshot.replicas.values()],
        "epoch_counter": snapshot.epoch_counter,
        "epoch_floor": snapshot.epoch_floor,
        "applied_entries": snapshot.applied_entries,
        "leader_marker": list(snapshot.leader_marker),
        "floor_confirmed": snapshot.floor_confirmed,
        "changes": snapshot.changes,
        "applied": [[r.request_id, [list(x) for x in r.rejected], [list(g) for g in r.granted],
                     r.error] for r in applied.values()],
    }  # fmt: skip
    return msgspec.msgpack.encode(data)


def load_state(payload: bytes) -> tuple[Snapshot, dict[str, ApplyResult]]:
    try:
        data: dict[str, Any] = msgpack.unpackb(payload)
        if data.get("format") != DUMP_FORMAT:
            raise UnreadableDumpError(f"dump format {data.get('format')!r} is not {DUMP_FORMAT}")
        pods = [PodInfo(p[0], p[1], p[2], frozenset(p[3]), p[4], tuple(tuple(kv) for kv in p[5]),
                        PodState(p[6]), p[7]) for p in data["pods"]]  # fmt: skip
        slots = [SlotState(s[0], s[1], s[2], s[3], tuple(s[4]), SlotStatus(s[5]), s[6], s[7],
                           s[8]) for s in data["slots"]]  # fmt: skip
        replicas = CowMap({r[1]: ReplicaInfo(r[0], r[1], r[2]) for r in data["replicas"]})
        snapshot = rebuild_indexes(
            pods, slots, replicas=replicas, epoch_counter=data["epoch_counter"],
            epoch_floor=data["epoch_floor"], applied_entries=data["applied_entries"],
            leader_marker=tuple(data["leader_marker"]), floor_confirmed=data["floor_confirmed"],
            changes=data["changes"],
        )  # fmt: skip
        applied = {a[0]: ApplyResult(a[0], tuple(tuple(x) for x in a[1]),
                                     tuple(tuple(g) for g in a[2]), error=a[3])
                   for a in data["applied"]}  # fmt: skip
    except (KeyError, IndexError, TypeError, ValueError) as exc:  # msgpack errors are ValueErrors
        raise UnreadableDumpError(f"cannot read the Raft state dump: {exc}") from exc
    return snapshot, applied
