"""The long chaos campaign: `python -m tests.chaos --mix all --duration 120`.

Runs each chosen mix in a fresh system (PostgreSQL, 3 replicas, 3 pods) and prints
and writes (`--out`, JSON) the checker's report per mix, then one line per mix with
its fault counts and unexcused drops. `--min-faults N` goes on past `--duration`
until every fault kind of the mix was injected N times (`--mix leader-churn
--min-faults 30`: 30 leader pauses of 2 x TTL and 30 leader kills). Exit status 1 if
any invariant was violated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.chaos.campaign import run_campaign
from tests.chaos.nemesis import LONG_MIXES, MIXES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--mix", action="append", choices=[*MIXES, "all"],
                        help=f"fault mix, repeatable; 'all' = the {len(LONG_MIXES)} long "
                             "mixes")  # fmt: skip
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults per mix")
    parser.add_argument("--min-faults", type=int, default=1, metavar="N",
                        help="go on until every fault kind of the mix ran N times "
                             "(default 1)")  # fmt: skip
    parser.add_argument("--ttl", type=float, default=3.0, help="lease TTL in seconds")
    parser.add_argument("--seed", type=int, help="random seed (default: a new one per mix)")
    parser.add_argument("--out", type=Path, help="write every mix's report here (JSON)")
    parser.add_argument("--keep", type=Path, help="keep histories and logs under this folder")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.ttl <= 0:
        parser.error("--duration and --ttl must be positive")
    if not 1 <= args.min_faults <= 1000:
        parser.error(f"--min-faults {args.min_faults}: use 1 to 1000")
    mixes = [m for chosen in args.mix or ["all"]
             for m in (LONG_MIXES if chosen == "all" else (chosen,))]  # fmt: skip
    results: list[dict[str, object]] = []
    for mix in mixes:
        base = args.keep or Path(tempfile.mkdtemp(prefix="raftorch-chaos-"))
        try:
            outcome = run_campaign(mix, base / mix, duration=args.duration, seed=args.seed,
                                   ttl=args.ttl, min_each=args.min_faults)  # fmt: skip
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
    for result in results:
        print(_counts(result))
    failed = [str(r["mix"]) for r in results if r["violations"]]
    verdict = "violations in " + ", ".join(failed) if failed else "no violations"
    print(f"chaos: {len(results)} mixes, {verdict}")
    return 1 if failed else 0


def _counts(result: dict[str, Any]) -> str:
    """One line per mix: every fault kind with its count and shortest hold, the drops."""
    if "fault_counts" not in result:
        return f"chaos: {result['mix']}: did not finish"
    holds = result.get("fault_holds_seconds", {})
    faults = ", ".join(
        f"{kind} {n}" + (f" (held >= {holds[kind]['min']:.1f}s)" if kind in holds else "")
        for kind, n in sorted(result["fault_counts"].items())
    )
    api = result["api_failover_beyond_ttl_seconds"]
    beyond = "-" if api["p99"] is None else f"{api['p99']:.3f}s"
    return (f"chaos: {result['mix']}: {faults}; drops not excused {result['drops_unexcused']}, "
            f"excused {result['drops_excused']}; API failover beyond TTL p99 {beyond}; "
            f"violations {len(result['violations'])}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
