"""The `raftorch-adapter` command (the pod runtime; `run` arrives with the agent)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from raftorch import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftorch-adapter", description="raftorch adapter-pod runtime"
    )
    parser.add_argument("--version", action="version", version=f"raftorch-adapter {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    sys.stderr.write("raftorch-adapter: no command given; see --help\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
