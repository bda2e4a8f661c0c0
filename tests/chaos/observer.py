"""Failover as a user sees it: the public admin API sampled while the campaign runs.

`ApiObserver` asks `GET /api/v1/adapters` every `period` seconds (through one replica while
it answers, else the next; a request waits at most `timeout`) and writes to its own audit
trail (source "observer") each slot's (status, owner, epoch) whenever it changes, as
`api_slot` {slot, adapter, status, owner, epoch, sent, seen, prev, via}: `seen` is when the
answer that showed the change arrived (`sent` when it was asked for, `via` which replica
answered) and `prev` when the answer before it arrived, so the change happened in
(prev, seen]. Times are CLOCK_MONOTONIC, like every trail's `t`. A slot that leaves the
answer (its adapter was disabled) is recorded with status "GONE". At the end `api_summary`
says how many answers there were and the largest gap between two of them. Nothing here
reads raftorch's internals: what it records is what a script polling the API would see.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from persistence.audit import AuditTrail
from tests.integration.processes import call

SAMPLE_PERIOD_SECONDS = 0.075
SAMPLE_TIMEOUT_SECONDS = 0.5
REST_PER_REQUEST = 3.0
"""After each round the observer rests at least this many times as long as the round took,
so it never keeps a replica (or the host) busy more than a quarter of the time: answers
listing the 600 slots of `slot-flood` take ~50 ms here, and asking every 75 ms would load
a replica by two thirds of a core on a two-core machine."""
MAX_SAMPLES = 100_000  # a bound on the loop whatever happens (over 2 hours at the period)

SlotView = tuple[str, str, str, int]  # adapter name, status, owner ("" if none), epoch (0)


@dataclass
class ObserverStats:
    samples: int = 0
    failures: int = 0
    max_gap: float = 0.0


class ApiObserver:
    """Samples the adapters list in a thread of its own; `start()`, later `stop()`."""

    def __init__(
        self,
        replicas: Callable[[], dict[str, str]],
        trail: AuditTrail,
        *,
        period: float = SAMPLE_PERIOD_SECONDS,
        timeout: float = SAMPLE_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._replicas = replicas  # name -> API base URL of the replicas worth asking now
        self._trail = trail
        self._period, self._timeout, self._clock = period, timeout, clock
        self._stopping = threading.Event()
        self._answered = threading.Event()  # set by the first answer that listed the slots
        self._thread = threading.Thread(target=self._run, daemon=True, name="api-observer")
        self._known: dict[str, SlotView] = {}
        self._last_seen: float | None = None
        self._preferred = ""
        self.stats = ObserverStats()
        self.error: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self) -> None:
        self._trail.open()
        self._thread.start()

    def answered(self) -> bool:
        """Whether some replica has answered with the slots yet: a fault injected before
        the first answer could not be read against what the API showed."""
        return self._answered.is_set()

    def stop(self) -> ObserverStats:
        self._stopping.set()
        if self.started:
            self._thread.join(timeout=10)
        self._trail.record("api_summary", samples=self.stats.samples,
                           failures=self.stats.failures, max_gap=self.stats.max_gap)  # fmt: skip
        self._trail.close()
        return self.stats

    def _run(self) -> None:
        try:
            due = self._clock()
            for _ in range(MAX_SAMPLES):
                began = self._clock()
                self.sample()
                # A fixed cadence, but never busier than REST_PER_REQUEST allows, and no
                # burst to catch up after a late wake-up.
                now = self._clock()
                rest = max(REST_PER_REQUEST * (now - began), self._period / 2)
                due = max(due + self._period, now + rest)
                if self._stopping.wait(max(0.0, due - now)):
                    return
        except BaseException as exc:  # surfaced by the campaign (`error`)
            self.error = exc

    def sample(self) -> bool:
        """One request; True if some replica answered with the adapters list."""
        replicas = self._replicas()
        for name in sorted(replicas, key=lambda name: name != self._preferred):
            sent = self._clock()
            slots = self._ask(replicas[name])
            if slots is None:
                continue
            self._preferred = name
            self._observed(slots, sent, self._clock(), name)
            return True
        self.stats.failures += 1
        return False

    def _ask(self, url: str) -> dict[str, SlotView] | None:
        try:
            reply = call("GET", url + "/api/v1/adapters", timeout=self._timeout)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        if reply.status != 200 or not isinstance(reply.body, dict):
            return None
        try:
            return {
                str(slot["slot"]): (
                    str(adapter["name"]),
                    str(slot["status"]),
                    str(slot["owner_pod"] or ""),
                    int(slot["epoch"] or 0),
                )
                for adapter in reply.body["items"]
                for slot in adapter["slots"]
            }
        except (KeyError, TypeError, ValueError):
            return None

    def _observed(self, slots: dict[str, SlotView], sent: float, seen: float, via: str) -> None:
        prev = self._last_seen
        self.stats.samples += 1
        if prev is not None:
            self.stats.max_gap = max(self.stats.max_gap, seen - prev)
        for slot, view in slots.items():
            if self._known.get(slot) != view:
                adapter, status, owner, epoch = view
                self._trail.record("api_slot", at=seen, slot=slot, adapter=adapter,
                                   status=status, owner=owner, epoch=epoch, sent=sent,
                                   seen=seen, prev=prev, via=via)  # fmt: skip
        for slot in self._known.keys() - slots.keys():
            adapter = self._known[slot][0]
            self._trail.record("api_slot", at=seen, slot=slot, adapter=adapter, status="GONE",
                               owner="", epoch=0, sent=sent, seen=seen, prev=prev,
                               via=via)  # fmt: skip
        self._known = slots
        self._last_seen = seen
        self._answered.set()
