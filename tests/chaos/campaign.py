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

from devtools.postgres import PostgresServer
from persistence.audit import AuditTrail
from tests.chaos.checker import History, Report, check, read_events
from tests.chaos.harness import System
from tests.chaos.nemesis import FAULTS, MIXES
from tests.chaos.observer import ApiObserver
from tests.integration.processes import wait_until

RECOVERY_BOUND_SECONDS = 10.0
"""Invariant 5's stated bound: ACTIVE again within TTL + this after a fault heals."""
RECOVERY_PATIENCE_SECONDS = 30.0  # how long past the bound the schedule still waits
WHOLE_SECONDS = 30.0  # how long the schedule waits for every replica to be ready again


@dataclass
class Outcome:
    mix: str
    seed: int
    ttl: float
    duration: float
    report: Report
    recovery_seconds: list[float] = field(default_factory=list)
    root: Path | None = None
    sources: set[str] = field(default_factory=set)  # who wrote an audit trail

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
    min_each: int = 1,
) -> Outcome:
    """Run `mix` for `duration` seconds of faults in `root`, and on until every kind of the
    mix was injected `min_each` times; the outcome holds the check."""
    kinds = MIXES[mix]
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    log.write(f"chaos: mix={mix} seed={seed} ttl={ttl}s duration={duration}s "
              f"min_each={min_each} in {root}\n")  # fmt: skip
    recovery: list[float] = []
    with System(root, ttl=ttl, pg=pg) as system:
        observer = ApiObserver(
            system.replicas_to_ask, AuditTrail(system.audit_dir / "observer.audit", "observer")
        )
        try:
            system.create_workload()
            wait_until(lambda: not system.not_active(), 90.0, "every adapter ACTIVE at start")
            system.check_routing()
            observer.start()
            # The first fault is read against what the API showed before it: without an
            # answer by then, a pod fault first in the schedule measures no failover.
            wait_until(observer.answered, WHOLE_SECONDS, "a first answer to the API observer")
            trail = system.nemesis_trail
            started = time.monotonic()
            number = 0
            order: list[str] = []
            # Every kind of the mix in a seeded random order, round after round.
            while time.monotonic() - started < duration or number < len(kinds) * min_each:
                if not order:
                    order = list(kinds)
                    rng.shuffle(order)
                number += 1
                fault_id = f"f{number}"
                announced: list[float] = []

                def announce(
                    kind: str,
                    targets: list[str],
                    may_drop: list[str],
                    pids: dict[str, int] | None = None,
                    *,
                    fault_id: str = fault_id,
                    announced: list[float] = announced,
                ) -> None:
                    announced.append(time.monotonic())
                    trail.record("fault", id=fault_id, fault=kind, targets=targets,
                                 may_drop=may_drop, pids=pids or {})  # fmt: skip

                injected = FAULTS[order.pop()](system, rng, announce)
                time.sleep(injected.hold_seconds)  # the fault's duration, not a wait for state
                injected.heal()
                held = time.monotonic() - announced[0]
                trail.record("heal", id=fault_id, held=round(held, 3), **injected.facts)
                trail.record("healed_all")
                healed_at = time.monotonic()
                took, missing = _await_recovery(system, ttl, healed_at)
                trail.record("recovered", ok=not missing, missing=missing, took=took,
                             active_since=healed_at + took)  # fmt: skip
                recovery.append(took)
                _record_crashes(system)
                unready = _await_whole(system)
                gap = f" MISSING {', '.join(missing)}" if missing else ""
                gap += f" NOT READY {', '.join(unready)}" if unready else ""
                facts = "".join(f", {k} {v}" for k, v in injected.facts.items())
                log.write(f"  {fault_id} {injected.kind} {injected.targets} held {held:.1f}s"
                          f"{facts}, recovered in {took:.2f}s{gap}\n")  # fmt: skip
                log.flush()
                time.sleep(rng.uniform(0.5, 2.0))  # rest between faults (schedule pacing)
            elapsed = time.monotonic() - started
            produced = system.stop_producers()
            wait_until(lambda: system.delivered_up_to(produced), 120.0, "every message delivered")
            deliveries = system.deliveries()
            _record_crashes(system)
        except BaseException:
            sys.stderr.write(system.logs())
            raise
        finally:
            if observer.started:
                observer.stop()
    if observer.error is not None:
        raise AssertionError(f"the API observer failed: {observer.error!r}")
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
    sources = {str(event["source"]) for event in history.events}
    outcome = Outcome(mix, seed, ttl, elapsed, check(history), recovery, root, sources)
    (root / "report.json").write_text(json.dumps(outcome.to_json(), indent=2))
    log.write(outcome.report.summary() + "\n")
    return outcome


def _await_whole(system: System) -> list[str]:
    """Wait (bounded) until every replica is ready again, so that the next fault meets a
    whole cluster (one fault at a time); the replicas that were not, if it gave up."""
    try:
        wait_until(lambda: all(system.ready(r) for r in system.replicas), WHOLE_SECONDS,
                   "every replica ready")  # fmt: skip
    except AssertionError:
        unready = [r.node_id for r in system.replicas if not system.ready(r)]
        system.nemesis_trail.record("unready", replicas=unready)
        return unready
    return []


def _record_crashes(system: System) -> None:
    for process, returncode in system.crashes():
        system.nemesis_trail.record("crashed", process=process, returncode=returncode)


@dataclass
class _Stretch:
    since: float | None = None
    seen: object = None


def _await_recovery(system: System, ttl: float, healed: float) -> tuple[float, list[str]]:
    """Seconds from the heal until every enabled slot is ACTIVE *for good*, and what was
    not (if it gave up).

    For good means: ACTIVE with the same owner and epoch for a whole TTL. Right after a
    heal the orchestrator may still call ACTIVE a session whose pod just died (its lease
    has not run out yet); the TTL-long window sees that expire and move, and recovery is
    dated from the start of the window that held.
    """
    stretch = _Stretch()

    def settled() -> float | None:
        """The start of a stretch of all-ACTIVE, unchanged slots at least a TTL long."""
        now, slots = time.monotonic(), system.slots()
        if isinstance(slots, str) or any(s != "ACTIVE" for s, _, _ in slots.values()):
            stretch.since = None
        elif stretch.since is None or slots != stretch.seen:
            stretch.since, stretch.seen = now, slots
        elif now - stretch.since >= ttl:
            return stretch.since
        return None

    patience = ttl + RECOVERY_BOUND_SECONDS + RECOVERY_PATIENCE_SECONDS
    try:
        since = wait_until(settled, patience, "every slot ACTIVE for a whole TTL")
    except AssertionError:
        return time.monotonic() - healed, system.not_active() or ["<owners still changing>"]
    return since - healed, []
