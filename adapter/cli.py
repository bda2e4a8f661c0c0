"""The `raftorch-adapter` command: run an adapter pod, or check its settings.

Expected failures are one line on stderr and a non-zero exit, never a traceback.
SIGTERM (or Ctrl-C) drains the pod: its sessions stop cleanly and are handed over
at once, then the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from adapter.agent import Agent
from adapter.config import AgentConfig, add_arguments, from_arguments
from adapter.connectors.fix.ownerlabel import OwnerLabels
from adapter.metrics import PodMetrics
from adapter.plugins import load_connectors
from adapter.sdk import Connector
from protocol import __version__
from protocol.errors import ConfigError, RaftorchError
from protocol.logs import configure_logging

DRAIN_SECONDS = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftorch-adapter", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"raftorch-adapter {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run an adapter pod")
    add_arguments(run)
    check = commands.add_parser("check", help="validate the pod settings like run, print them")
    add_arguments(check)
    return parser


def _check(config: AgentConfig) -> int:
    """The settings `run` would use, secrets hidden; fails like `run` on bad ones."""
    _offered(config)
    shown = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    shown |= {"bootstrap_token": "***", "database_dsn": "***", "labels": dict(config.labels)}
    sys.stdout.write(json.dumps(shown, indent=2) + "\n")
    return 0


def _offered(config: AgentConfig) -> dict[str, type[Connector]]:
    """The connector types this pod offers; every one asked for must be installed."""
    available = load_connectors()
    wanted = config.connectors or tuple(available)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ConfigError(f"connector types not installed: {', '.join(missing)}")
    return {c: available[c] for c in wanted}


async def _serve_metrics(agent: Agent, config: AgentConfig) -> web.AppRunner:
    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(agent.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        body = {
            "status": "failed" if agent.failed else "alive",
            "registered": agent.credential is not None,
            "lease_remaining_seconds": agent.lease_remaining(),
        }
        if agent.failed:
            body["reason"] = agent.failed
        return web.json_response(body, status=503 if agent.failed else 200)

    async def readyz(_request: web.Request) -> web.Response:
        why = agent.failed or ("" if agent.credential is not None else "not registered")
        return web.json_response({"ready": agent.ready, "reason": why or "ready"},
                                 status=200 if agent.ready else 503)  # fmt: skip

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.metrics_host, config.metrics_port).start()
    return runner


async def _run(config: AgentConfig) -> int:
    connectors = _offered(config)
    metrics = PodMetrics(CollectorRegistry())
    agent = Agent(config, connectors, metrics)
    metrics.watch(agent)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    labels = _clear_stale_owner_labels(connectors, metrics.registry)
    runner = await _serve_metrics(agent, config)
    try:
        await agent.run(stop)
        async with asyncio.timeout(DRAIN_SECONDS):
            await agent.drain()
    finally:
        await runner.cleanup()
        await agent.close()
        if labels is not None:
            await labels.close()
    return 0


def _clear_stale_owner_labels(
    connectors: dict[str, type[Connector]], registry: CollectorRegistry
) -> OwnerLabels | None:
    """A restarted container keeps its Pod's labels: a FIX acceptor owner label left from
    before the restart would send the venue here. Cleared in the background at start
    (no-op outside Kubernetes; docs/fix.md, "Acceptors on Kubernetes")."""
    if "fix" not in connectors:
        return None
    labels = OwnerLabels.for_pod(registry)
    if labels is not None:
        labels.clear_stale()
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        config = from_arguments(args)
        if args.command == "check":
            return _check(config)
        return asyncio.run(_run(config))
    except RaftorchError as exc:
        sys.stderr.write(f"raftorch-adapter: error: {exc.message}\n")
        return 2 if exc.http_status < 500 else 1
    except OSError as exc:
        sys.stderr.write(f"raftorch-adapter: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
