"""Garbage on the Raft port changes nothing (issue 13, finding 3), against three replicas.

As found: without the secret, a 4-byte length header of 2^31-1 and then 32 MiB sent to a
follower's Raft port cost 7 s of CPU on its Raft thread and forced elections (term 2 -> 5).
Here every replica is watched while that is sent: no term changes, the follower stays
ready and in the cluster, and it still applies what the leader commits afterwards.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftorch.raft.inbound import HANDSHAKE_SECONDS
from tests.integration.processes import (
    POD_TOKEN,
    ProcessCluster,
    ReplicaProcess,
    call,
    running_cluster,
    wait_until,
)

GARBAGE_BYTES = 32 * 1024 * 1024
HUGE_LENGTH = 2**31 - 1  # the largest length pysyncobj's 4-byte header can announce
WATCH_AFTER_SECONDS = 3.0  # the shipped TTL: longer than any election timeout derived from it


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_server: Any, pg_template: str
) -> Iterator[ProcessCluster]:
    name = "hostile_raft"
    pg_server.create_database(name, template=pg_template)
    root: Path = tmp_path_factory.mktemp("hostile-raft")
    with running_cluster(root, pg_server.dsn(name)) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        yield cluster
    pg_server.drop_database(name)


def _health(replica: ReplicaProcess) -> dict[str, Any]:
    reply = call("GET", replica.api_url + "/api/v1/cluster/health", timeout=2.0)
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


@dataclass
class Watch:
    """Every replica's term and readiness, sampled until stopped."""

    cluster: ProcessCluster
    samples: list[tuple[str, int, bool, bool]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for replica in self.cluster.replicas:
                try:
                    h = _health(replica)
                except (OSError, AssertionError) as exc:  # a stalled replica times out
                    self.failures.append(f"{replica.node_id}: {exc}")
                    continue
                self.samples.append((replica.node_id, h["term"], h["ready"], h["has_quorum"]))
            self.stop.wait(0.1)


def _send_garbage(address: tuple[str, int]) -> int:
    """A huge length header, then 32 MiB of random bytes; how many bytes went out."""
    sent = 0
    chunk = os.urandom(1024 * 1024)
    with socket.create_connection(address, timeout=10.0) as conn:
        try:
            conn.sendall(struct.pack("<i", HUGE_LENGTH))
            while sent < GARBAGE_BYTES:
                conn.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the replica may drop the connection early: that is fine
            pass
    return sent


@pytest.mark.timeout(180)
def test_garbage_to_a_followers_raft_port_changes_no_term(cluster: ProcessCluster) -> None:
    leader = wait_until(cluster.leader, 30.0, "a leader")
    follower = next(r for r in cluster.replicas if r is not leader)
    terms = {_health(r)["term"] for r in cluster.replicas}
    assert len(terms) == 1, terms
    [term] = terms
    watch = Watch(cluster)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    try:
        started = time.monotonic()
        sent = _send_garbage(("127.0.0.1", follower.raft_port))
        took = time.monotonic() - started
        deadline = time.monotonic() + WATCH_AFTER_SECONDS
        wait_until(lambda: time.monotonic() > deadline, WATCH_AFTER_SECONDS + 1.0,
                   "the watch after the garbage")  # fmt: skip
    finally:
        watch.stop.set()
        watcher.join(timeout=10.0)
    print(f"\nsent {sent} bytes of garbage in {took:.1f} s; {len(watch.samples)} samples")
    # The follower closed the connection at the header: it never buffered the 32 MiB.
    assert sent < GARBAGE_BYTES, sent
    assert not watch.failures, watch.failures[:5]
    changed = [s for s in watch.samples if s[1] != term or not s[2] or not s[3]]
    assert not changed, f"term {term} before; changed or not ready: {changed[:5]}"
    assert len(watch.samples) >= 3 * len(cluster.replicas), len(watch.samples)
    assert cluster.leader() is leader
    # Still in the cluster: the follower applies what the leader commits now (a pod's
    # registration is a Raft entry, answered 201 once committed).
    registered = call("POST", leader.api_url + "/pod/v1/register", raw=msgpack.packb(
        {"pod_id": "after-garbage", "capacity": 1}), content_type="application/msgpack",
        token=POD_TOKEN)  # fmt: skip
    assert registered.status == 201, registered.body

    def follower_pods() -> list[str]:
        reply = call("GET", follower.api_url + "/api/v1/pods", timeout=2.0)
        return [p["id"] for p in reply.body["items"]]

    wait_until(lambda: "after-garbage" in follower_pods(), 10.0,
               "the follower to apply the registration")  # fmt: skip
    assert _health(follower)["term"] == term


def _listening(port: int) -> set[str]:
    """The local addresses a socket listens on at `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]  # host order
                # (not socket.inet_ntop: importing pysyncobj replaces it with a Windows-only one)
                found.add(str(ipaddress.ip_address(b"".join(words))))
    return found


def test_the_raft_port_listens_on_raft_bind_only(cluster: ProcessCluster) -> None:
    for replica in cluster.replicas:
        assert _listening(replica.raft_port) == {"127.0.0.1"}, replica.node_id


def test_a_connection_that_never_identifies_itself_is_closed(cluster: ProcessCluster) -> None:
    follower = next(r for r in cluster.replicas if r is not cluster.leader())
    with socket.create_connection(("127.0.0.1", follower.raft_port), timeout=10.0) as conn:
        opened = time.monotonic()
        conn.settimeout(HANDSHAKE_SECONDS + 5.0)
        assert conn.recv(1) == b"", "the replica closes the silent connection"  # EOF
        waited = time.monotonic() - opened
    assert HANDSHAKE_SECONDS - 0.5 <= waited <= HANDSHAKE_SECONDS + 5.0, waited
