"""API tokens across real replicas, through `raftorch tokens`: role checks, the secret shown
once, and a revocation every replica honours within a second (the change feed, not the
token cache's 30 s, decides)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.integration.processes import (
    ProcessCluster,
    ReplicaProcess,
    call,
    running_cluster,
    wait_until,
)
from tests.integration.test_opscli import cli, ok

REVOCATION_SECONDS = 1.0  # the public contract: effective on every replica within a second


def _answers(replica: ReplicaProcess, token: str) -> int:
    return call("GET", replica.api_url + "/api/v1/adapters", token=token, timeout=2.0).status


def test_tokens_cli_roles_shown_once_and_revocation_on_every_replica(
    tmp_path: Path, pg_dsn: str
) -> None:
    with running_cluster(tmp_path, pg_dsn) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        _roles_and_secrets(cluster)
        _revocation_everywhere(cluster)


def _roles_and_secrets(cluster: ProcessCluster) -> None:
    created = cli(cluster, "tokens", "create", "--name", "dashboard", "--role", "viewer")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("rt_") and "shown only now" in created.stderr
    listing = json.loads(ok(cluster, "tokens", "list", "--json"))
    [item] = listing["items"]
    assert (item["name"], item["role"], item["revoked_at"]) == ("dashboard", "viewer", None)
    assert "token" not in item
    assert secret not in ok(cluster, "tokens", "list") + json.dumps(listing)

    refused = cli(cluster, "tokens", "list", token=secret)
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    escalate = cli(cluster, "tokens", "create", "--name", "mine", "--role", "admin", token=secret)
    assert escalate.returncode == 1 and "forbidden" in escalate.stderr
    bad = cli(cluster, "tokens", "create", "--name", "x", "--role", "root")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    duplicate = cli(cluster, "tokens", "create", "--name", "dashboard", "--role", "viewer")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    assert len(json.loads(ok(cluster, "tokens", "list", "--json"))["items"]) == 1


def _revocation_everywhere(cluster: ProcessCluster) -> None:
    made = json.loads(ok(cluster, "tokens", "create", "--name", "on-call", "--role", "operator",
                         "--json"))  # fmt: skip
    token = made["token"]
    for replica in cluster.replicas:  # every replica verifies and caches it
        assert _answers(replica, token) == 200, replica.node_id
        assert _answers(replica, token) == 200, replica.node_id

    revoked = ok(cluster, "tokens", "revoke", "on-call")
    revoked_at = time.monotonic()
    assert "revoked on-call" in revoked
    took = {}
    for replica in cluster.replicas:
        what = f"{replica.node_id} to refuse the revoked token"
        wait_until(lambda r=replica: _answers(r, token) == 401, REVOCATION_SECONDS, what)
        took[replica.node_id] = round(time.monotonic() - revoked_at, 3)
    print(f"revocation refused after (s, since the CLI returned): {took}")
    assert all(seconds <= REVOCATION_SECONDS for seconds in took.values()), took

    again = cli(cluster, "tokens", "revoke", made["id"])
    assert again.returncode == 1 and "already revoked" in again.stderr
    unknown = cli(cluster, "tokens", "revoke", "nobody")
    assert unknown.returncode == 1 and "no such token" in unknown.stderr
