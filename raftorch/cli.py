"""The `raftorch` command: configuration checks and database migrations (more to come).

The CLI is the only place that configures logging. Every expected failure is one
line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence

from persistence.db import Database, PoolSettings
from persistence.errors import RaftorchError
from persistence.migrate import latest_version, migrate
from raftorch import __version__
from raftorch.config import Config, Secret, load_config

EXIT_USAGE = 2
EXIT_FAILURE = 1


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def pool_settings(config: Config) -> PoolSettings:
    db = config.database
    return PoolSettings(
        min_size=db.min_pool_size,
        max_size=db.max_pool_size,
        connect_timeout_seconds=db.connect_timeout_seconds,
        connect_attempts=db.connect_attempts,
        retry_backoff_initial_seconds=db.retry_backoff_initial_seconds,
        retry_backoff_max_seconds=db.retry_backoff_max_seconds,
        command_timeout_seconds=db.command_timeout_seconds,
    )


def _printable(value: object) -> object:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, tuple):
        return [_printable(v) for v in value]
    return value


def _cmd_config_check(config: Config, _args: argparse.Namespace) -> int:
    tree = {
        section.name: {
            f.name: _printable(getattr(getattr(config, section.name), f.name))
            for f in dataclasses.fields(getattr(config, section.name))
        }
        for section in dataclasses.fields(config)
    }
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
