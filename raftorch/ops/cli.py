"""The `raftorch` command: serve, demo, operator commands, configuration check, migrate.

The CLI is the only place that configures logging. Every expected failure is one
line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import signal
import sys
from asyncio import selector_events
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persistence.db import Database
from persistence.migrate import latest_version, migrate
from protocol import __version__
from protocol.errors import RaftorchError
from protocol.logs import configure_logging
from raftorch.config import Config, Secret, load_config, with_overrides
from raftorch.ops.commands import add_operator_commands
from raftorch.ops.placement_cli import add_placement_commands
from raftorch.ops.replica import Orchestrator, pool_settings
from raftorch.ops.tokens import add_token_commands

log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _printable(value: object) -> object:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, tuple):
        return [_printable(v) for v in value]
    return value


def _cmd_config_check(config: Config, _args: argparse.Namespace) -> int:
    """Print every setting (secrets hidden; unset Raft timers as derived) and the budget."""
    tree = {
        section.name: {
            f.name: _printable(getattr(getattr(config, section.name), f.name))
            for f in dataclasses.fields(getattr(config, section.name))
        }
        for section in dataclasses.fields(config)
    }
    timers = config.raft_timers
    for name in timers.derived:
        tree["raft"][name] = getattr(timers, name)
    plan = config.timing_budget
    tree["timing_budget"] = {
        "ttl_seconds": plan.ttl_seconds,
        "total_seconds": round(plan.total_seconds, 6),
        "fits": plan.fits,
        "items": [{"what": i.what, "setting": i.key, "seconds": round(i.seconds, 6)}
                  for i in plan.items],
        "derived": list(timers.derived),
    }  # fmt: skip
    sys.stdout.write(json.dumps(tree, indent=2) + "\n")
    return 0


async def _migrate(config: Config) -> list[int]:
    async with Database(config.database.dsn.reveal(), pool_settings(config)) as db:
        return await migrate(db)


def _cmd_migrate(config: Config, _args: argparse.Namespace) -> int:
    applied = asyncio.run(_migrate(config))
    done = ", ".join(map(str, applied)) if applied else "nothing to apply"
    sys.stdout.write(f"schema at version {latest_version()} ({done})\n")
    return 0


YOUNG_COLLECTION_OBJECTS = 50_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def settle_heap() -> int:
    """Tune Python's cyclic garbage collector for a replica; the number of objects frozen.

    A full collection walks every tracked object while holding the GIL, and the Raft
    thread needs the GIL to send its append-entries: a pause longer than the election
    timeout (0.17 s at TTL 3 s) makes the followers elect a new leader. Placing 100,000
    sessions on 1,000 pods, replicas ran up to a full collection a second, of 0.1-0.9 s,
    and the leader changed 33 times in 3.5 minutes; with what follows, each replica ran
    one or two in 2.5 minutes (0.11-0.13 s) and the leader never changed
    (docs/performance.md). Two changes:

    - everything alive now (modules, functions, the configuration) goes to the
      permanent generation, which no collection walks again (after one collection, so
      that no garbage is frozen in with it);
    - the youngest generation is collected every YOUNG_COLLECTION_OBJECTS allocations
      instead of 700, so that a request's objects die young instead of being promoted
      to the old generation, whose growth is what triggers full collections;
    - a closed connection's objects are freed at once (`free_closed_transports`).
    """
    free_closed_transports()
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_OBJECTS, middle, old)
    return gc.get_freeze_count()


def free_closed_transports() -> bool:
    """Let a closed connection's transport go when its last reference does (Python 3.11).

    Python 3.11's socket transport keeps a bound method of itself (`_read_ready_cb`), so
    every closed connection left a reference cycle of about six objects (the transport,
    its socket, their dicts) that only the cyclic collector could free. Where pods hedge
    heartbeats, connections close by the thousand: placing 100,000 sessions, a
    follower's collections freed 400-8,700 of them each, and in such runs collections
    of the middle generation took up to 0.77 s of CPU, holding the GIL the Raft thread
    needs (docs/performance.md). CPython 3.12 drops the bound method when the transport
    closes (gh-100348); this does the same, once the protocol has been told of the
    loss. False where there is nothing to do."""
    transport: Any = vars(selector_events)["_SelectorSocketTransport"]  # private, 3.11
    if sys.version_info >= (3, 12) or getattr(transport, "_raftorch_frees_cycle", False):
        return False
    lost = transport._call_connection_lost

    def call_connection_lost(self: Any, exc: BaseException | None) -> None:
        try:
            lost(self, exc)
        finally:
            self._read_ready_cb = None

    transport._call_connection_lost = call_connection_lost
    transport._raftorch_frees_cycle = True
    return True


async def _serve(config: Config) -> int:
    service = Orchestrator(config)
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        stopping = asyncio.create_task(stop.wait())
        failing = asyncio.create_task(service.failed.wait())
        await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        failing.cancel()
    finally:
        await service.stop()
    return 0 if stop.is_set() else EXIT_FAILURE


def _cmd_serve(config: Config, args: argparse.Namespace) -> int:
    if args.insecure_dev_mode:
        config = with_overrides(config, {"raft.insecure_dev_mode": True})
    if config.raft.require_secret() is None:  # refused before anything starts, unless allowed
        log.warning(
            "insecure dev mode: Raft runs unencrypted on %s; anyone who can reach it can run "
            "code in this process (docs/security.md)",
            config.raft.bind,
        )
    return asyncio.run(_serve(config))


def _cmd_demo(_config: Config, args: argparse.Namespace) -> int:
    # Imported here: the demo brings test tooling (a throwaway PostgreSQL) that a serving
    # replica must not load.
    from raftorch.ops.demo import Demo, run_demo  # noqa: PLC0415

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    demo = Demo(Path(args.data_dir).resolve(), args.replicas, args.pods, args.adapters,
                args.lease_ttl, say=say)  # fmt: skip
    return asyncio.run(run_demo(demo))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftorch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"raftorch {__version__}")
    parser.add_argument("--config", help="YAML or TOML configuration file (or RAFTORCH_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("config", help="validate the configuration and print it")
    check.add_argument("action", choices=["check"])
    check.set_defaults(run=_cmd_config_check)
    mig = commands.add_parser("migrate", help="bring the database schema to the latest version")
    mig.set_defaults(run=_cmd_migrate)
    serve = commands.add_parser("serve", help="run one orchestrator replica")
    serve.add_argument(
        "--insecure-dev-mode",
        action="store_true",
        help="allow running without raft.secret (local development only)",
    )
    serve.set_defaults(run=_cmd_serve)
    demo = commands.add_parser("demo", help="run the whole system locally (Ctrl-C stops it)")
    demo.add_argument("--data-dir", default="./raftorch-demo", help="where everything lives")
    demo.add_argument("--replicas", type=int, default=3, help="orchestrator replicas")
    demo.add_argument("--pods", type=int, default=3, help="adapter pods")
    demo.add_argument("--adapters", type=int, default=3, help="sample adapters")
    demo.add_argument("--lease-ttl", type=float, default=3.0, help="lease TTL in seconds")
    demo.set_defaults(run=_cmd_demo)
    add_operator_commands(commands)
    add_token_commands(commands)
    add_placement_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        configure_logging(config.log.level, config.log.format)
        code: int = args.run(config, args)
    except RaftorchError as exc:
        sys.stderr.write(f"raftorch: error: {exc.message}\n")
        return EXIT_USAGE if exc.http_status < 500 else EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
