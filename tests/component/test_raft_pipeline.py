"""The leader sends each log entry to a follower once while acknowledgements trail behind.

pysyncobj set a follower's next index back to what the follower had acknowledged, behind
what the leader had already sent; every acknowledgement that trailed made the leader send
the entries in flight again, and the follower truncate and re-add them (its "truncating
already-applied log entries" warnings). `GuardedTransport` keeps the next index where it
was (`raftorch/raft/transport.py`). Real pysyncobj nodes on loopback, the shipped timers.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftorch.core.model import RegisterPod
from raftorch.raft.transport import GuardedTransport
from tests.component import raftcluster
from tests.component.raftcluster import Cluster, Network, one_leader, wait_for

received: defaultdict[str, Counter[int]] = defaultdict(Counter)
partitionable = raftcluster.transport_for


def counting_transport(network: Network) -> type[GuardedTransport]:
    base = partitionable(network)

    class Counting(base):  # type: ignore[valid-type,misc]
        def _onMessageReceived(self, node: Any, message: Any) -> None:
            if isinstance(message, dict) and message.get("type") == "append_entries":
                me = str(self._syncObj.selfNode.id)
                for entry in message.get("entries", ()):
                    received[me][entry[1]] += 1
            super()._onMessageReceived(node, message)

    return Counting


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    received.clear()
    monkeypatch.setattr(raftcluster, "transport_for", counting_transport)
    c = Cluster(3, tmp_path)
    yield c
    c.close()


async def test_entries_in_flight_are_not_sent_again(cluster: Cluster) -> None:
    leader = await one_leader(cluster)

    async def writer(w: int) -> None:  # a stream of commits, as heartbeats' barriers are
        for i in range(40):
            pod = f"p{w}-{i}"
            await leader.bridge.submit(
                [RegisterPod(pod, f"inc-{pod}", "127.0.0.1:1", frozenset(), 1)]
            )

    await asyncio.gather(*(writer(w) for w in range(8)))
    last = leader.node.status().commit_index
    followers = [r for r in cluster.live() if r is not leader]
    await wait_for(lambda: all(r.node.status().commit_index >= last for r in followers), 10.0,
                   "every follower caught up")  # fmt: skip
    transport = leader.node._SyncObj__transport  # type: ignore[attr-defined]
    # The situation under test happened: acknowledgements trailed what was sent.
    assert transport.rewinds_kept > 0
    for r in followers:
        counts = received[str(r.node.selfNode.id)]
        again = sorted(index for index, n in counts.items() if n > 1)
        assert len(counts) >= 320
        assert again == [], f"{r.address}: {len(again)} entries received more than once"
