"""`python -m bench <name> ...`: run one bench, print its table, write its JSON."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import etcd, scenarios
from bench.cluster import BenchError
from bench.load import kill_leftovers
from bench.measure import write_report


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = top.add_subparsers(dest="bench", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workers",
            type=int,
            default=1,
            help="load generator processes (asyncio each; default 1)",
        )
        p.add_argument("--json", type=Path, help="write the report here (default: none)")
        p.add_argument(
            "--workdir", type=Path, help="keep logs and data here (default: a temporary directory)"
        )

    p = sub.add_parser("renewals", help="N pods at 1 Hz, no sessions, side by side with etcd")
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=60.0, help="measured window")
    p.add_argument("--no-etcd", action="store_true", help="raftorch alone")
    common(p)
    p = sub.add_parser("scale", help="P pods x S sessions: placement, heartbeats, CPU, RSS")
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--sessions", type=int, default=100_000)
    p.add_argument("--instances", type=int, default=100, help="slots per scale_out adapter")
    p.add_argument("--hold", type=float, default=300.0, help="seconds measured once placed")
    common(p)
    p = sub.add_parser("mass-failover", help="kill -9 a pod holding K sessions")
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--pods", type=int, default=20, help="pods that take the sessions over")
    p.add_argument("--instances", type=int, default=100)
    common(p)
    p = sub.add_parser("leader-failover", help="kill -9 the leader with many sessions held")
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--sessions", type=int, default=100_000)
    p.add_argument("--instances", type=int, default=100)
    p.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds after the kill before sessions are compared",
    )
    p.add_argument(
        "--held",
        type=float,
        default=10.0,
        help="seconds every session is held (ACTIVE) before the kill",
    )
    common(p)
    return top


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    try:
        return await _run(args, workdir)
    finally:
        await kill_leftovers()


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    opts = scenarios.Options(workdir=workdir, workers=args.workers)
    if args.bench == "renewals":
        with_etcd = not args.no_etcd
        if with_etcd and not etcd.available():
            raise SystemExit("etcd is not on PATH (install Debian's etcd-server) or use --no-etcd")
        return await scenarios.renewals(opts, args.pods, args.seconds, with_etcd)
    if args.bench == "scale":
        return await scenarios.scale(opts, args.pods, args.sessions, args.instances, args.hold)
    if args.bench == "mass-failover":
        return await scenarios.mass_failover(opts, args.sessions, args.pods, args.instances)
    return await scenarios.leader_failover(
        opts, args.pods, args.sessions, args.instances, settle=args.settle, held=args.held
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    params = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("json", "workdir", "bench")
    }
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{args.bench}-")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        figures = asyncio.run(run(args, workdir))
    except BenchError as exc:  # the system under test did not do what the bench needs
        print(f"bench {args.bench} failed: {exc}; logs are in {workdir}", file=sys.stderr)
        return 1
    except Exception:
        print(f"bench {args.bench} failed; logs are in {workdir}", file=sys.stderr)
        raise
    write_report(args.bench, params, figures, args.json)
    if "failed" in figures:  # reported with what the run saw up to then
        print(f"bench {args.bench} failed: {figures['failed']}; logs are in {workdir}",
              file=sys.stderr)  # fmt: skip
        return 1
    if temporary:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
