"""Operator commands against a running cluster: status, adapters, export, import.

Every command talks to the admin API of any replica (``--api URL``, repeatable, or
``RAFTORCH_CLI_API``, comma-separated) with a bearer token (``--token`` or
``RAFTORCH_CLI_TOKEN``); an unreachable replica or one answering 503 makes it try the
next. ``--json`` prints JSON instead of tables. Every failure is one line on stderr:
exit 1 for the cluster's refusals and outages, 2 for usage errors and bad manifests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from raftorch.ops.client import (
    API_ENV,
    EXIT_FAILURE,
    TOKEN_ENV,
    Client,
    ClusterUnavailable,
    OpsError,
    Transport,
    UsageError,
    client_from,
    reason_of,
    urllib_transport,
)
from raftorch.ops.manifest import (
    ManifestError,
    export_manifest,
    import_manifest,
    read_manifest,
    write_manifest,
)

POLL_SECONDS = 0.5
PROGRESS_SECONDS = 1.0
"""Progress lines come at most this often, and at least every `PROGRESS_QUIET_SECONDS`."""
PROGRESS_QUIET_SECONDS = 10.0
DEFAULT_WAIT_SECONDS = 120.0
GOALS = {"enable": ("ENABLED", "ACTIVE"), "disable": ("DISABLED", "INACTIVE")}
ADAPTERS = "/api/v1/adapters"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [list(headers)] + [["-" if v is None or v == "" else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def emit(args: argparse.Namespace, data: object, human: str) -> None:
    sys.stdout.write((json.dumps(data, indent=2) if args.json else human) + "\n")


def adapter_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ("NAME", "ID", "CONNECTOR", "MODE", "ADMIN_STATE", "STATUS", "OWNER_POD", "EPOCH")
    rows = [
        [a["name"], a["id"], a["connector"], a["mode"], a["admin_state"], a["status"],
         a["owner_pod"], a["epoch"], ",".join(a["standby_pods"])]
        for a in items
    ]  # fmt: skip
    return table((*headers, "STANDBY_PODS"), rows)


# --- status ---------------------------------------------------------------------------


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    cluster = client.get_json("/api/v1/cluster")
    leader_url = next((r["api_url"] for r in cluster["replicas"] if r["role"] == "leader"), "")
    client.prefer(leader_url)  # only the leader knows the heartbeat times
    pods = [
        {"id": p["id"], "state": p["state"], "sessions": len(p["sessions"]),
         "last_heartbeat": p["last_heartbeat"]}
        for p in client.get_json("/api/v1/pods")["items"]
    ]  # fmt: skip
    counts: dict[str, int] = {}
    adapters = client.get_items(ADAPTERS)
    for adapter in adapters:
        counts[adapter["status"]] = counts.get(adapter["status"], 0) + 1
    data = {
        "leader": cluster["leader"],
        "term": cluster["term"],
        "replicas": cluster["replicas"],
        "pods": pods,
        "adapters": {"total": len(adapters), "by_status": dict(sorted(counts.items()))},
    }
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    human = "\n\n".join(
        [
            f"leader: {cluster['leader'] or '(none)'}  term: {cluster['term']}",
            table(("REPLICA", "ROLE", "API_URL"),
                  [(r["id"], r["role"], r["api_url"]) for r in cluster["replicas"]]),
            table(("POD", "STATE", "SESSIONS", "LAST_HEARTBEAT"),
                  [(p["id"], p["state"], p["sessions"], p["last_heartbeat"]) for p in pods]),
            f"adapters: {len(adapters)} ({by_status})",
        ]
    )  # fmt: skip
    emit(args, data, human)
    return 0


# --- adapters -------------------------------------------------------------------------


def resolve(items: Sequence[Mapping[str, Any]], wanted: Sequence[str]) -> list[Mapping[str, Any]]:
    """The adapters named by id or name, in the order given, each once."""
    by_id = {a["id"]: a for a in items}
    by_name = {a["name"]: a for a in items}
    found: dict[str, Mapping[str, Any]] = {}
    missing = []
    for key in wanted:
        adapter = by_id.get(key) or by_name.get(key)
        if adapter is None:
            missing.append(key)
        else:
            found.setdefault(adapter["id"], adapter)
    if missing:
        raise OpsError(f"no such adapter: {', '.join(missing)}")
    return list(found.values())


def targets(client: Client, args: argparse.Namespace) -> list[Mapping[str, Any]]:
    if args.all == bool(args.adapters):
        raise UsageError("name the adapters (names or ids) or give --all, not both")
    items: list[Mapping[str, Any]] = client.get_items(ADAPTERS)
    return list(items) if args.all else resolve(items, args.adapters)


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    items = client.get_items(ADAPTERS)
    emit(args, {"items": items}, adapter_table(items) if items else "no adapters")
    return 0


def _config_arg(args: argparse.Namespace) -> dict[str, Any]:
    if args.config_file is not None:
        try:
            text = Path(args.config_file).read_text(encoding="utf-8")
        except OSError as exc:
            reason = reason_of(exc)
            raise UsageError(f"--config-file: cannot read {args.config_file}: {reason}") from None
        where = "--config-file"
    else:
        text, where = args.adapter_config or "{}", "--config"
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{where}: expected a JSON object")
    return config


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "connector": args.connector,
        "mode": args.mode,
        "instances": args.instances,
        "config": _config_arg(args),
        "artifacts": args.artifact or [],
    }
    created = client.post_json(ADAPTERS, body)
    emit(args, created, f"created {created['name']} ({created['id']}), DISABLED")
    return 0


def cmd_enable_disable(client: Client, args: argparse.Namespace) -> int:
    action = args.adapters_command
    if args.timeout < 0:
        raise UsageError(f"--timeout: must not be negative, got {args.timeout:g}")
    if args.all and not args.adapters:
        answer = client.post_json(f"{ADAPTERS}/bulk", {"action": action, "all": True})
    else:
        ids = [a["id"] for a in targets(client, args)]
        answer = client.post_json(f"{ADAPTERS}/bulk", {"action": action, "ids": ids})
    items = answer["items"]
    names = ", ".join(a["name"] for a in items) or "nothing to do"
    if args.wait:
        items = wait_for(client, items, action, args.timeout)
    result = [{"id": a["id"], "name": a["name"], "admin_state": a["admin_state"],
               "status": a["status"]} for a in items]  # fmt: skip
    done = f"; all {GOALS[action][1]}" if args.wait else ""
    emit(args, {"action": action, "adapters": result}, f"{action}d {len(items)}: {names}{done}")
    return 0


def cmd_reset_delete(client: Client, args: argparse.Namespace) -> int:
    action = args.adapters_command
    done, failed = [], []
    for adapter in targets(client, args):
        path = f"{ADAPTERS}/{urllib.parse.quote(adapter['id'], safe='')}"
        try:
            if action == "delete":
                client.delete(path)
            else:
                client.post_json(path + "/reset")
        except ClusterUnavailable:
            raise
        except OpsError as exc:
            failed.append({"name": adapter["name"], "error": exc.message})
            sys.stderr.write(f"raftorch: error: {action} {adapter['name']}: {exc.message}\n")
        else:
            done.append(adapter["name"])
    verb = "deleted" if action == "delete" else "reset"
    human = f"{verb} {len(done)}: {', '.join(done) or 'none'}"
    emit(args, {"action": action, "done": done, "failed": failed}, human)
    return EXIT_FAILURE if failed else 0


# --- waiting --------------------------------------------------------------------------


def _pending_state(adapter: Mapping[str, Any] | None, revision: int, action: str) -> str | None:
    """None when `adapter` is where `action` leads, else the state to show it under."""
    admin_state, status = GOALS[action]
    if adapter is None:
        return "DELETED"
    if adapter["revision"] < revision:  # this replica has not seen the change yet
        return "PENDING"
    if adapter["admin_state"] == admin_state and adapter["status"] == status:
        return None
    return str(adapter["status"])


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def format_progress(total: int, goal: str, pending: Mapping[str, Sequence[str]]) -> str:
    """``waiting: 3/5 ACTIVE (2 CLAIMING: venue-a, venue-b)``."""
    waiting = sum(len(n) for n in pending.values())
    parts = [f"{len(n)} {state}: {_names(n)}" for state, n in sorted(pending.items()) if n]
    detail = f" ({'; '.join(parts)})" if parts else ""
    return f"waiting: {total - waiting}/{total} {goal}{detail}"


def _timeout_message(
    timeout: float, goal: str, targets: Sequence[Mapping[str, Any]], current: Mapping[str, Any]
) -> str:
    late = []
    for target in targets:
        now = current.get(target["id"])
        state = now["status"] if now else "DELETED"
        detail = f": {now['status_detail']}" if now and now.get("status_detail") else ""
        late.append(f"{target['name']} ({state}{detail})")
    listed = "; ".join(late[:10]) + (f"; and {len(late) - 10} more" if len(late) > 10 else "")
    return f"timed out after {timeout:g}s; not {goal} yet: {listed}"


def _progress(
    current: Mapping[str, Mapping[str, Any]], items: Sequence[Mapping[str, Any]], action: str
) -> dict[str, list[Mapping[str, Any]]]:
    """The adapters of `items` not yet where `action` leads, by the state to show them under."""
    pending: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        state = _pending_state(current.get(item["id"]), item["revision"], action)
        if state is not None:
            pending.setdefault(state, []).append(item)
    return pending


def wait_for(
    client: Client,
    items: Sequence[Mapping[str, Any]],
    action: str,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    out: Callable[[str], object] | None = None,
) -> list[Mapping[str, Any]]:
    """Poll until every adapter of `items` reached the goal of `action`; return their states.

    Progress lines go to `out` (default: stderr); past `timeout` seconds, OpsError names
    the adapters not there yet.
    """
    write = out or sys.stderr.write
    goal = GOALS[action][1]
    deadline = clock() + timeout
    shown, shown_at = "", -PROGRESS_QUIET_SECONDS
    current: dict[str, Mapping[str, Any]] = {}
    late = list(items)
    while True:
        try:
            current = {a["id"]: a for a in client.get_items(ADAPTERS)}
        except ClusterUnavailable as exc:
            line = f"waiting: {exc.message}"
        else:
            pending = _progress(current, items, action)
            if not pending:
                return [current[item["id"]] for item in items]
            late = [a for group in pending.values() for a in group]
            names = {state: [a["name"] for a in group] for state, group in pending.items()}
            line = format_progress(len(items), goal, names)
        now = clock()
        if now >= deadline:
            raise OpsError(_timeout_message(timeout, goal, late, current))
        quiet = now - shown_at
        if quiet >= PROGRESS_SECONDS and (line != shown or quiet >= PROGRESS_QUIET_SECONDS):
            write(line + "\n")
            shown, shown_at = line, now
        sleep(max(0.0, min(POLL_SECONDS, deadline - now)))


# --- export and import ----------------------------------------------------------------


def cmd_export(client: Client, args: argparse.Namespace) -> int:
    manifest = export_manifest(client)
    if args.output in (None, "-"):
        sys.stdout.write(json.dumps(manifest, indent=2) + "\n")
        return 0
    try:
        write_manifest(manifest, Path(args.output))
    except OSError as exc:
        raise OpsError(f"cannot write {args.output}: {reason_of(exc)}") from None
    counts = {"adapters": len(manifest["adapters"]), "artifacts": len(manifest["artifacts"])}
    human = f"exported {counts['adapters']} adapters, {counts['artifacts']} artifact versions"
    emit(args, {"output": args.output, **counts}, f"{human} to {args.output}")
    return 0


def cmd_import(client: Client, args: argparse.Namespace) -> int:
    report = import_manifest(client, read_manifest(args.file))
    emit(args, report.as_json(), report.human())
    return 0


# --- argparse -------------------------------------------------------------------------

Command = Callable[[Client, argparse.Namespace], int]


def execute(
    command: Command,
    args: argparse.Namespace,
    environ: Mapping[str, str] = os.environ,
    transport: Transport = urllib_transport,
) -> int:
    """Run `command`; expected failures become one line on stderr and an exit status."""
    try:
        return command(client_from(args, environ, transport), args)
    except (OpsError, ManifestError) as exc:
        sys.stderr.write(f"raftorch: error: {exc.message}\n")
        return exc.exit_code
    except BrokenPipeError:
        return EXIT_FAILURE


def _runner(command: Command) -> Callable[[object, argparse.Namespace], int]:
    """Wrap a command as ``run(config, args)``; the configuration is not needed."""

    def run(_config: object, args: argparse.Namespace) -> int:
        return execute(command, args)

    return run


def _bind(parser: argparse.ArgumentParser, command: Command) -> None:
    parser.set_defaults(run=_runner(command), ops_command=command)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("cluster")
    where = f"admin API of a replica; repeat or comma-separate (env {API_ENV})"
    group.add_argument("--api", action="append", metavar="URL", help=where)
    group.add_argument("--token", help=f"bearer token (env {TOKEN_ENV})")
    group.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return common


def _add_create(actions: Any, common: argparse.ArgumentParser) -> None:
    create = actions.add_parser("create", parents=[common], help="create an adapter (DISABLED)")
    create.add_argument("--name", required=True)
    create.add_argument("--connector", required=True)
    create.add_argument("--mode", required=True, choices=["single", "active_passive", "scale_out"])
    create.add_argument("--instances", type=int, default=1, help="slots (scale_out only)")
    create.add_argument("--artifact", action="append", metavar="NAME", help="repeatable")
    source = create.add_mutually_exclusive_group()
    source.add_argument("--config", dest="adapter_config", metavar="JSON", help="a JSON object")
    source.add_argument("--config-file", metavar="FILE", help="a file holding a JSON object")
    _bind(create, cmd_create)


def _add_adapter_commands(adapters: argparse.ArgumentParser, common: Any) -> None:
    actions = adapters.add_subparsers(dest="adapters_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="list adapters")
    _bind(listing, cmd_list)
    _add_create(actions, common)
    helps = {
        "enable": "enable adapters",
        "disable": "disable adapters",
        "reset": "forget adapters' session state",
        "delete": "delete DISABLED adapters",
    }
    for action, what in helps.items():
        sub = actions.add_parser(action, parents=[common], help=what)
        sub.add_argument("adapters", nargs="*", metavar="NAME_OR_ID")
        sub.add_argument("--all", action="store_true", help="every adapter")
        if action not in GOALS:
            _bind(sub, cmd_reset_delete)
            continue
        goal = f"until each is {GOALS[action][1]} (progress on stderr)"
        sub.add_argument("--wait", action="store_true", help=goal)
        sub.add_argument("--timeout", type=float, default=DEFAULT_WAIT_SECONDS, metavar="SECONDS",
                         help="for --wait (default %(default)g)")  # fmt: skip
        _bind(sub, cmd_enable_disable)


def add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add status, adapters, export and import to the `raftorch` subcommands."""
    common = _common()
    status = commands.add_parser(
        "status", parents=[common], help="leader, replicas, pods, adapters"
    )
    _bind(status, cmd_status)
    adapters = commands.add_parser("adapters", help="list, create, enable, disable, reset, delete")
    _add_adapter_commands(adapters, common)
    export = commands.add_parser("export", parents=[common], help="write a manifest of the cluster")
    export.add_argument("--output", "-o", metavar="FILE", help="default: stdout")
    _bind(export, cmd_export)
    imp = commands.add_parser("import", parents=[common], help="apply a manifest (additive)")
    imp.add_argument("file", metavar="FILE", help="the manifest ('-' for stdin)")
    _bind(imp, cmd_import)


def build_parser() -> argparse.ArgumentParser:
    from raftorch.ops.placement_cli import add_placement_commands  # noqa: PLC0415 - they import
    from raftorch.ops.tokens import add_token_commands  # noqa: PLC0415 - this module

    parser = argparse.ArgumentParser(prog="raftorch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_operator_commands(commands)
    add_token_commands(commands)
    add_placement_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(None, args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
