"""The long chaos campaign: `python -m tests.chaos --mix all --duration 120`.

Runs each chosen mix in a fresh system (PostgreSQL, 3 replicas, 3 pods) and prints
and writes (`--out`, JSON) the checker's report per mix. Exit status 1 if any
invariant was violated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests.chaos.campaign import run_campaign
from tests.chaos.nemesis import LONG_MIXES, MIXES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--mix", action="append", choices=[*MIXES, "all"],
                        help="fault mix, repeatable; 'all' = the seven long mixes")  # fmt: skip
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults per mix")
    parser.add_argument("--ttl", type=float, default=3.0, help="lease TTL in seconds")
    parser.add_argument("--seed", type=int, help="random seed (default: a new one per mix)")
    parser.add_argument("--out", type=Path, help="write every mix's report here (JSON)")
    parser.add_argument("--keep", type=Path, help="keep histories and logs under this folder")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.ttl <= 0:
        parser.error("--duration and --ttl must be positive")
    mixes = [m for chosen in args.mix or ["all"]
             for m in (LONG_MIXES if chosen == "all" else (chosen,))]  # fmt: skip
    results: list[dict[str, object]] = []
    for mix in mixes:
        base = args.keep or Path(tempfile.mkdtemp(prefix="raftorch-chaos-"))
        try:
            outcome = run_campaign(
                mix, base / mix, duration=args.duration, seed=args.seed, ttl=args.ttl
            )
            results.append(outcome.to_json())
        except Exception as exc:  # the campaign itself broke: say so, go on with the next mix
            print(f"chaos: mix {mix} could not finish: {exc}", file=sys.stderr)
            results.append({"mix": mix, "violations": [{"invariant": 0, "message": str(exc)}]})
        finally:
            if args.keep is None:
                shutil.rmtree(base, ignore_errors=True)
        sys.stdout.flush()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    failed = [str(r["mix"]) for r in results if r["violations"]]
    verdict = "violations in " + ", ".join(failed) if failed else "no violations"
    print(f"chaos: {len(results)} mixes, {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
