"""The token cache: revocations and resyncs from the change feed, and the race with a
verification that was under way when the revocation arrived."""

from __future__ import annotations

from persistence.changefeed import RESYNC, Change
from persistence.tokens import Role
from raftorch.api.edge import Principal, TokenCache
from raftorch.api.tokens import forget_revoked


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cache() -> tuple[TokenCache, Clock]:
    clock = Clock()
    return TokenCache(30.0, clock=clock), clock


ALICE = Principal("alice", Role.ADMIN, "id-alice")
BOB = Principal("bob", Role.VIEWER, "id-bob")


def test_entries_expire_after_the_ttl() -> None:
    cache, clock = _cache()
    cache.put("k-alice", ALICE)
    clock.now += 29.9
    assert cache.get("k-alice") == ALICE
    clock.now += 0.2
    assert cache.get("k-alice") is None


def test_a_revocation_from_the_feed_forgets_only_that_token() -> None:
    cache, _ = _cache()
    cache.put("k-alice", ALICE)
    cache.put("k-bob", BOB)
    listen = forget_revoked(cache)
    listen(Change("adapters", "update", "id-alice"))  # another table: nothing to forget
    assert cache.get("k-alice") == ALICE
    listen(Change("api_tokens", "update", "id-alice"))
    assert cache.get("k-alice") is None
    assert cache.get("k-bob") == BOB


def test_a_resync_clears_everything_in_case_a_notification_was_lost() -> None:
    cache, _ = _cache()
    cache.put("k-alice", ALICE)
    cache.put("k-bob", BOB)
    forget_revoked(cache)(RESYNC)
    assert cache.get("k-alice") is None and cache.get("k-bob") is None


def test_a_verification_older_than_a_revocation_is_not_cached() -> None:
    cache, _ = _cache()
    started = cache.generation  # a request reads the token from PostgreSQL ...
    forget_revoked(cache)(Change("api_tokens", "update", "id-alice"))  # ... revoked meanwhile
    cache.put("k-alice", ALICE, started)
    assert cache.get("k-alice") is None
    cache.put("k-alice", ALICE, cache.generation)  # a verification after it is cached
    assert cache.get("k-alice") == ALICE


def test_capacity_drops_the_oldest() -> None:
    cache = TokenCache(30.0, capacity=2, clock=Clock())
    for name in ("a", "b", "c"):
        cache.put(f"k-{name}", Principal(name, Role.VIEWER, f"id-{name}"))
    assert cache.get("k-a") is None
    assert cache.get("k-c") is not None
