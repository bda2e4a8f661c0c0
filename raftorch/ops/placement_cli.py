"""`raftorch pods list|drain|undrain` and `raftorch rebalance`: placement, by operators.

`pods drain POD --wait` returns once no session runs on the pod any more (each moved
off by graceful handoff, the pod still running), so maintenance can go on; `undrain`
makes it a placement target again; `rebalance` restores the spread now.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from raftorch.ops.client import Client, OpsError
from raftorch.ops.commands import POLL_SECONDS, _bind, _common, emit, table

PODS = "/api/v1/pods"


def _pod_path(pod_id: str, action: str) -> str:
    return f"{PODS}/{urllib.parse.quote(pod_id, safe='')}/{action}"


def pod_table(items: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for p in items:
        owned = sum(1 for s in p["sessions"] if s["role"] == "ACTIVE")
        standby = len(p["sessions"]) - owned
        rows.append([p["id"], p["state"], owned, standby, p["last_heartbeat"]])
    return table(("POD", "STATE", "ACTIVE", "STANDBY", "LAST_HEARTBEAT"), rows)


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    items = client.get_json(PODS)["items"]
    emit(args, {"items": items}, pod_table(items) if items else "no registered pods")
    return 0


def _owned(client: Client, pod_id: str) -> int | None:
    """Sessions the pod still owns (None once it is gone)."""
    pod = next((p for p in client.get_json(PODS)["items"] if p["id"] == pod_id), None)
    if pod is None:
        return None
    return sum(1 for s in pod["sessions"] if s["role"] == "ACTIVE")


def cmd_drain(client: Client, args: argparse.Namespace) -> int:
    pod = client.post_json(_pod_path(args.pod, "drain"))
    owned = sum(1 for s in pod["sessions"] if s["role"] == "ACTIVE")
    if not args.wait:
        emit(args, pod, f"pod {args.pod} is draining: {owned} session(s) to move off")
        return 0
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    while owned:
        if time.monotonic() > deadline:
            raise OpsError(f"pod {args.pod} still owns {owned} session(s) after {args.timeout:g}s")
        time.sleep(POLL_SECONDS)  # the poll interval of --wait
        left = _owned(client, args.pod)
        if left is None:
            raise OpsError(f"pod {args.pod} left the cluster while it was draining")
        if left != owned and not args.json:
            sys.stderr.write(f"pod {args.pod}: {left} session(s) left to move\n")
        owned = left
    took = time.monotonic() - started
    human = f"pod {args.pod} drained: no session runs on it ({took:.1f}s); it keeps running"
    emit(args, {"pod": args.pod, "drained": True, "seconds": round(took, 2)}, human)
    return 0


def cmd_undrain(client: Client, args: argparse.Namespace) -> int:
    pod = client.post_json(_pod_path(args.pod, "undrain"))
    emit(args, pod, f"pod {args.pod} is a placement target again ({pod['state']})")
    return 0


def cmd_rebalance(client: Client, args: argparse.Namespace) -> int:
    answer = client.post_json("/api/v1/cluster/rebalance")
    emit(args, answer, "rebalancing by handoff for up to "
         f"{answer['window_seconds']:g}s (policy {answer['policy']})")  # fmt: skip
    return 0


def add_placement_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `pods list|drain|undrain` and `rebalance` to the `raftorch` subcommands."""
    common = _common()
    pods = commands.add_parser("pods", help="list, drain and undrain adapter pods")
    actions = pods.add_subparsers(dest="pods_command", required=True, metavar="ACTION")
    _bind(actions.add_parser("list", parents=[common], help="pods and their sessions"), cmd_list)
    drain = actions.add_parser(
        "drain", parents=[common], help="move every session off a pod by handoff; it keeps running"
    )
    drain.add_argument("pod", metavar="POD", help="the pod id")
    drain.add_argument("--wait", action="store_true", help="return once it runs no session")
    drain.add_argument("--timeout", type=float, default=120.0, help="seconds --wait may take")
    _bind(drain, cmd_drain)
    undrain = actions.add_parser("undrain", parents=[common], help="a placement target again")
    undrain.add_argument("pod", metavar="POD", help="the pod id")
    _bind(undrain, cmd_undrain)
    balance = commands.add_parser("rebalance", parents=[common],
                                  help="restore the spread now, by graceful handoff")  # fmt: skip
    _bind(balance, cmd_rebalance)
