"""Replicas look peer names up again within seconds (a restarted pod has a new IP address)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pysyncobj import dns_resolver

from raftorch.config import Config, RaftConfig, Secret
from raftorch.raft.node import PEER_DNS_CACHE_SECONDS, build_conf

PEER = "raftorch-1.raftorch-peers.prod.svc.cluster.local"


class FakeDns:
    """getaddrinfo answering one address for PEER, changed by the test (a pod restart)."""

    def __init__(self) -> None:
        self.address = "10.0.0.11"

    def __call__(self, host: str, *_args: object) -> list[tuple[object, ...]]:
        assert host == PEER
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.address, 0))]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeDns, FakeClock]:
    fake, clock = FakeDns(), FakeClock()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    monkeypatch.setattr(dns_resolver, "monotonicTime", clock)
    # The resolver is process-wide: give this test a fresh one with pysyncobj's defaults.
    monkeypatch.setattr(dns_resolver, "_g_resolver", None)
    return fake, clock


def _after_restart(
    resolver: dns_resolver.DnsCachingResolver, fake: FakeDns, clock: FakeClock, seconds: float
) -> str | None:
    assert resolver.resolve(PEER) == "10.0.0.11"
    fake.address = "10.0.0.99"  # the peer pod restarted elsewhere
    clock.now += seconds
    return resolver.resolve(PEER)


def test_a_replica_reaches_a_restarted_peer_at_its_new_address_within_seconds(
    tmp_path: Path, dns: tuple[FakeDns, FakeClock]
) -> None:
    fake, clock = dns
    config = Config(raft=RaftConfig(secret=Secret("s3cret-s3cret-s3cret")))
    build_conf(config.raft, config.raft_timers, tmp_path)
    resolver = dns_resolver.globalDnsResolver()
    assert PEER_DNS_CACHE_SECONDS <= 5.0
    assert _after_restart(resolver, fake, clock, PEER_DNS_CACHE_SECONDS + 0.1) == "10.0.0.99"


def test_without_the_setting_pysyncobj_keeps_the_old_address_for_minutes(
    dns: tuple[FakeDns, FakeClock],
) -> None:
    fake, clock = dns
    resolver = dns_resolver.globalDnsResolver()  # pysyncobj's own cache times
    assert _after_restart(resolver, fake, clock, 60.0) == "10.0.0.11"
