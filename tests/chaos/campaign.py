"""One campaign: a system, a workload, a fault schedule, then the history and its check.

The schedule injects one fault at a time, holds it, heals it, and waits for every
enabled adapter to be ACTIVE again (recorded as `healed_all` / `recovered`), then
rests a moment and goes on until the duration is used up. At the end the producers
stop, every produced message must reach its sink, and the checker reads the merged
audit trails, the producers' counts and the sink rows.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persistence.localserver import PostgresServer
from tests.chaos.checker import History, Report, check, read_events
from tests.chaos.harness import System
from tests.chaos.nemesis import FAULTS, MIXES
from tests.integration.processes import wait_until

RECOVERY_BOUND_SECONDS = 10.0
"""Invariant 5's stated bound: ACTIVE again within TTL + this after a fault heals."""
RECOVERY_PATIENCE_SECONDS = 30.0  # how long past the bound the schedule still waits
POLL_SECONDS = 0.1


@dataclass
class Outcome:
    mix: str
    seed: int
    ttl: float
    duration: float
    report: Report
    recovery_seconds: list[float] = field(default_factory=list)
    root: Path | None = None

    def to_json(self) -> dict[str, Any]:
        recovery = sorted(self.recovery_seconds)
        return {
            "mix": self.mix,
            "seed": self.seed,
            "ttl_seconds": self.ttl,
            "duration_seconds": round(self.duration, 1),
            "recovery_bound_seconds": RECOVERY_BOUND_SECONDS,
            "recovery_after_heal_seconds": {
                "count": len(recovery),
                "max": round(recovery[-1], 3) if recovery else None,
            },
            **self.report.to_json(),
        }


def run_campaign(
    mix: str,
    root: Path,
    *,
    duration: float = 60.0,
    seed: int | None = None,
    ttl: float = 3.0,
    pg: PostgresServer | None = None,
    log: Any = sys.stdout,
) -> Outcome:
    """Run `mix` for `duration` seconds of faults in `root`; the outcome holds the check."""
    kinds = MIXES[mix]
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    log.write(f"chaos: mix={mix} seed={seed} ttl={ttl}s duration={duration}s in {root}\n")
    recovery: list[float] = []
    with System(root, ttl=ttl, pg=pg) as system:
        try:
            system.create_workload()
            wait_until(lambda: not system.not_active(), 90.0, "every adapter ACTIVE at start")
            trail = system.nemesis_trail
            started = time.monotonic()
            number = 0
            while time.monotonic() - started < duration:
                number += 1
                fault_id = f"f{number}"
                kind = rng.choice(kinds)
                injected = FAULTS[kind](system, rng)
                trail.record("fault", id=fault_id, fault=injected.kind,
                             targets=injected.targets, may_drop=injected.may_drop)  # fmt: skip
                time.sleep(injected.hold_seconds)  # the fault's duration, not a wait for state
                injected.heal()
                trail.record("heal", id=fault_id)
                trail.record("healed_all")
                took, missing = _await_recovery(system, ttl)
                trail.record("recovered", ok=not missing, missing=missing, took=took)
                recovery.append(took)
                gap = f" MISSING {', '.join(missing)}" if missing else ""
                held = injected.hold_seconds
                log.write(f"  {fault_id} {injected.kind} {injected.targets} held {held:.1f}s, "
                          f"recovered in {took:.2f}s{gap}\n")  # fmt: skip
                time.sleep(rng.uniform(0.5, 2.0))  # rest between faults (schedule pacing)
            elapsed = time.monotonic() - started
            produced = system.stop_producers()
            wait_until(lambda: system.delivered_up_to(produced), 120.0, "every message delivered")
            deliveries = system.deliveries()
        except BaseException:
            sys.stderr.write(system.logs())
            raise
    history = History(
        events=read_events(sorted((root / "audit").glob("*.audit"))),
        ttl=ttl,
        recovery_bound=RECOVERY_BOUND_SECONDS,
        produced=produced,
        deliveries=deliveries,
    )
    (root / "history.json").write_text(json.dumps({
        "ttl": history.ttl, "recovery_bound": history.recovery_bound,
        "produced": history.produced, "deliveries": history.deliveries,
        "events": history.events,
    }))  # fmt: skip
    outcome = Outcome(mix, seed, ttl, elapsed, check(history), recovery, root)
    (root / "report.json").write_text(json.dumps(outcome.to_json(), indent=2))
    log.write(outcome.report.summary() + "\n")
    return outcome


def _await_recovery(system: System, ttl: float) -> tuple[float, list[str]]:
    """Seconds until every enabled adapter is ACTIVE, and what was not (if it gave up)."""
    healed = time.monotonic()
    deadline = healed + ttl + RECOVERY_BOUND_SECONDS + RECOVERY_PATIENCE_SECONDS
    missing = system.not_active()
    while missing and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        missing = system.not_active()
    return time.monotonic() - healed, missing
