"""pysyncobj hardening settings and the vote guard (pure parts; no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import ConfigError
from raftorch.config import Config, RaftConfig, Secret
from raftorch.raft.node import build_conf
from raftorch.raft.transport import VoteGuard


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_secret_refuses_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_conf(RaftConfig(), Config().raft_timers, tmp_path)
    assert "\n" not in err.value.message
    assert err.value.message.startswith("raft.secret is not set")


def test_insecure_dev_mode_runs_without_password(tmp_path: Path) -> None:
    conf = build_conf(RaftConfig(insecure_dev_mode=True), Config().raft_timers, tmp_path)
    assert conf.password is None


def test_hardened_settings(tmp_path: Path) -> None:
    secret = "s3cret-s3cret-s3cret"
    config = Config(raft=RaftConfig(secret=Secret(secret), election_timeout_max_seconds=1.2))
    conf = build_conf(config.raft, config.raft_timers, tmp_path / "data")
    assert conf.password == secret
    assert conf.leaderFallbackTimeout == pytest.approx(3 * 1.2)  # pysyncobj default: 30 s
    assert conf.appendEntriesUseBatch is False
    # pysyncobj's default is 5 s; a dropped link must be redialled within an election.
    assert conf.connectionRetryTime == pytest.approx(1.2 / 3 / 2)
    assert conf.autoTick is False
    assert conf.useFork is False
    assert conf.logCompactionSplit is True  # the replicas write their full dumps in turn
    assert conf.journalFile == str(tmp_path / "data" / "raft.journal")
    assert conf.fullDumpFile == str(tmp_path / "data" / "raft.dump")
    assert (tmp_path / "data").is_dir()
    conf.validate()  # pysyncobj's own consistency checks pass


def test_vote_guard_holds_votes_for_one_election_timeout() -> None:
    clock = FakeClock()
    guard = VoteGuard(1.4, clock)
    vote = {"type": "request_vote", "term": 7}
    assert not guard.allows(vote)
    assert guard.allows({"type": "append_entries", "term": 7})
    clock.now += 1.39
    assert not guard.allows(vote)
    clock.now += 0.02
    assert guard.allows(vote)
