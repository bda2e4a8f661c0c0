"""Prometheus metrics of the `fix` connector, shared by every FIX session of a pod.

Labels are bounded (direction, message class); never a session, adapter or pod id.
"""

from __future__ import annotations

import threading
import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter


class FixMetrics:
    """The counters of one registry; `FixMetrics.of(registry)` hands out one per registry."""

    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, FixMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.messages = Counter(
            "raftorch_fix_messages_total",
            "FIX messages sent (out) and received (in), session-level (admin) or not (app)",
            ["direction", "kind"],
            registry=registry,
        )
        self.resent = Counter(
            "raftorch_fix_resent_messages_total",
            "Application messages resent with PossDupFlag=Y after a ResendRequest",
            registry=registry,
        )
        self.heartbeats_missed = Counter(
            "raftorch_fix_heartbeats_missed_total",
            "Heartbeat intervals in which the counterparty sent nothing (a TestRequest followed)",
            registry=registry,
        )
        self.sequence_gaps = Counter(
            "raftorch_fix_sequence_gaps_total",
            "Inbound MsgSeqNum gaps detected (each answered with a ResendRequest)",
            registry=registry,
        )
        self.rejects = Counter(
            "raftorch_fix_rejects_total",
            "Session-level Rejects, sent (out) and received (in)",
            ["direction"],
            registry=registry,
        )
        self.pod_label_requests = Counter(
            "raftorch_fix_pod_label_requests_total",
            "Kubernetes API calls for acceptor owner labels (read, list, label, unlabel, pass), "
            "by result (ok, error)",
            ["operation", "result"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry | None) -> FixMetrics:
        """The metrics registered in `registry`; unregistered counters when it is None."""
        if registry is None:
            return cls(None)
        with cls._lock:
            found = cls._instances.get(registry)
            if found is None:
                found = cls._instances[registry] = cls(registry)
            return found
