"""Owner labels: the pod listening for a FIX acceptor labels its own Pod, so a Service finds it.

The way Patroni points a Service at its primary: the Helm chart renders, per entry of
``fixAcceptors``, a Service selecting the adapter pods that carry the label
``fix.raftorch.io/<acceptor name>: owner``. The pod whose acceptor starts listening as the
active owner first removes that label from any other Pod still carrying it (a killed pod
whose object is still there, a paused zombie), then puts it on its own Pod; when the
session stops listening (disable, fencing, lease loss, handoff) it removes it again. Next
to each label an annotation of the same key records the owner's epoch: a pod removes a
label only from Pods whose epoch is lower than its own, so a paused owner that wakes up
cannot take the label from its successor (it sees the higher epoch and drops its own).

All of it runs in one background task per pod process, never in the session's path: a
Kubernetes API that is slow or down delays the label (retried with back-off, each call
under a timeout), never a Logon, a stop or a lease renewal. Failures are counted in
``raftorch_fix_pod_label_requests_total`` and logged at most every 30 s per call type.
The owner checks again every `RESYNC_SECONDS` (its own label still there, nobody else's).

Off unless ``RAFTORCH_FIX_ACCEPTORS`` is set (the chart sets it, with the Pod's name and
namespace, only when ``fixAcceptors`` is not empty): outside Kubernetes nothing happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import re
import ssl
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
from prometheus_client import CollectorRegistry

from adapter.connectors.fix.kubeapi import KubeApi, KubeApiError
from adapter.connectors.fix.metrics import FixMetrics
from adapter.sdk import SessionContext
from persistence.adapters import AdapterRepository
from protocol.errors import ConfigError, RaftorchError
from protocol.values import EventLevel

log = logging.getLogger(__name__)

LABEL_PREFIX = "fix.raftorch.io"
OWNER_VALUE = "owner"
ACCEPTORS_ENV = "RAFTORCH_FIX_ACCEPTORS"
POD_NAME_ENV = "RAFTORCH_FIX_POD_NAME"
POD_NAMESPACE_ENV = "RAFTORCH_FIX_POD_NAMESPACE"
RESYNC_SECONDS = 10.0
RETRY_SECONDS = (0.5, 10.0)
LOOKUP_TIMEOUT_SECONDS = 5.0
LOG_EVERY_SECONDS = 30.0

# A DNS-1035 label: the acceptor name is the label key's name part (at most 63
# characters) and part of its Service's name (which must start with a letter).
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_ADAPTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def owner_label_key(acceptor: str) -> str:
    """The Pod label (and annotation) key of one acceptor; the chart's Services select it."""
    if not _NAME_RE.match(acceptor):
        raise ValueError(
            f"acceptor name {acceptor!r} must be a DNS label: 1-63 lower-case letters, "
            "digits or '-', starting with a letter and ending with a letter or digit"
        )
    return f"{LABEL_PREFIX}/{acceptor}"


@dataclass(frozen=True, slots=True)
class Acceptor:
    """One entry of the chart's ``fixAcceptors``: its name, the adapter, the Service port."""

    name: str
    adapter: str
    port: int

    @property
    def key(self) -> str:
        return owner_label_key(self.name)


@dataclass(frozen=True, slots=True)
class LabelSettings:
    pod: str
    namespace: str
    acceptors: Mapping[str, Acceptor]  # by adapter name

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LabelSettings | None:
        """None (labelling off) unless ACCEPTORS_ENV lists acceptors; ConfigError if off-key."""
        raw = env.get(ACCEPTORS_ENV, "").strip()
        if not raw:
            return None
        try:
            items = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{ACCEPTORS_ENV} is not JSON") from None
        if not isinstance(items, list):
            raise ConfigError(f"{ACCEPTORS_ENV} must be a JSON list")
        acceptors = dict(_acceptor(item) for item in items)
        if not acceptors:
            return None
        pod, namespace = env.get(POD_NAME_ENV, ""), env.get(POD_NAMESPACE_ENV, "")
        if not pod or not namespace:
            raise ConfigError(f"{ACCEPTORS_ENV} needs {POD_NAME_ENV} and {POD_NAMESPACE_ENV}")
        return cls(pod, namespace, acceptors)


def _acceptor(item: Any) -> tuple[str, Acceptor]:
    if not isinstance(item, dict) or set(item) != {"name", "adapter", "port"}:
        raise ConfigError(f"{ACCEPTORS_ENV}: each item is {{name, adapter, port}}, got {item!r}")
    name, adapter, port = item["name"], item["adapter"], item["port"]
    try:
        owner_label_key(str(name))
    except ValueError as exc:
        raise ConfigError(f"{ACCEPTORS_ENV}: {exc}") from None
    if not isinstance(adapter, str) or not _ADAPTER_RE.match(adapter):
        raise ConfigError(f"{ACCEPTORS_ENV}: adapter {adapter!r} is not an adapter name")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{ACCEPTORS_ENV}: port {port!r} is not a TCP port")
    return adapter, Acceptor(str(name), adapter, port)


class LabelError(Exception):
    """This pass did not finish; the worker tries again after a back-off."""


@dataclass
class Claim:
    """One session listening as the active owner on this pod."""

    context: SessionContext
    port: int
    host: str
    resolved: bool = False
    acceptor: Acceptor | None = None

    @property
    def epoch(self) -> int:
        return self.context.info.epoch


def _epoch(pod: Mapping[str, Any], key: str) -> int:
    """The owner epoch a Pod's annotation records for `key`; 0 when absent or unreadable."""
    value = (pod.get("metadata", {}).get("annotations") or {}).get(key, "")
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def _labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    labels = pod.get("metadata", {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


@dataclass
class OwnerLabels:
    """The owner labels of this pod: what its listening sessions want, carried out in the
    background. One per event loop (`for_pod`); `listening`/`released` never block."""

    settings: LabelSettings
    api: KubeApi
    metrics: FixMetrics
    clock: Callable[[], float] = time.monotonic
    _wanted: dict[str, Claim] = field(default_factory=dict)  # slot -> claim
    _applied: dict[str, int] | None = None  # own label key -> epoch; None: not read yet
    _checked: dict[str, float] = field(default_factory=dict)  # key -> last look at others
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _logged: dict[str, float] = field(default_factory=dict)
    failures: int = 0

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OwnerLabels]] = (
        weakref.WeakKeyDictionary()
    )
    _refused: ClassVar[weakref.WeakSet[asyncio.AbstractEventLoop]] = weakref.WeakSet()

    @classmethod
    def for_pod(cls, registry: CollectorRegistry | None) -> OwnerLabels | None:
        """This pod's owner labels, or None when labelling is off (or misconfigured: logged)."""
        loop = asyncio.get_running_loop()
        found = cls._by_loop.get(loop)
        if found is not None:
            return found
        try:
            settings = LabelSettings.from_env(os.environ)
            if settings is None:
                return None
            api = KubeApi.in_cluster(os.environ, settings.namespace)
        except (ConfigError, ValueError) as exc:
            if loop not in cls._refused:
                cls._refused.add(loop)
                log.error("fix owner labels are off: %s", exc)  # noqa: TRY400 - one line is all
            return None
        found = cls._by_loop[loop] = cls(settings, api, FixMetrics.of(registry))
        return found

    # --- what the connector says (each returns at once) ------------------------------

    def listening(self, context: SessionContext, port: int, host: str) -> None:
        """The session listens as the active owner: label this Pod (in the background)."""
        self._wanted[context.info.slot] = Claim(context, port, host)
        self._kick()

    def released(self, slot: str, epoch: int) -> None:
        """The session stops listening: remove the label (in the background)."""
        claim = self._wanted.get(slot)
        if claim is not None and claim.epoch == epoch:
            del self._wanted[slot]
            self._kick()

    def clear_stale(self) -> None:
        """Drop the labels this Pod carries from before a container restart (in the
        background). The first acceptor start does it too; a pod-start hook may call it
        (`OwnerLabels.for_pod(registry).clear_stale()`) so that pods owning nothing do."""
        self._kick()

    async def close(self) -> None:
        """Stop the background task (tests, and a loop that ends)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if self._by_loop.get(asyncio.get_running_loop()) is self:
            del self._by_loop[asyncio.get_running_loop()]

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def _kick(self) -> None:
        self._wake.set()
        if not self.busy:
            self._task = asyncio.create_task(self._run(), name="fix owner labels")

    # --- the background task ------------------------------------------------------------

    async def _run(self) -> None:
        """Passes until nothing is wanted or left on this Pod; back-off after a failure."""
        delay = RETRY_SECONDS[0]
        while True:
            self._wake.clear()
            try:
                await self.reconcile_once()
            except LabelError as exc:
                self.failures += 1
                self._log("pass", f"owner labels not in place, retrying in {delay:.1f}s: {exc}")
                wait, delay = delay, min(delay * 2, RETRY_SECONDS[1])
            else:
                delay = RETRY_SECONDS[0]
                if not self._wanted and not self._applied:
                    return
                wait = RESYNC_SECONDS if self._wanted else RETRY_SECONDS[1]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def reconcile_once(self) -> None:
        """One pass: forget stale labels of this Pod, drop the released ones, take the wanted
        ones (removing lower-epoch owners elsewhere first). LabelError if anything failed."""
        desired = await self._desired()
        try:
            async with self.api.session() as http:
                await self._pass(http, desired)
        except (OSError, ssl.SSLError) as exc:  # the CA file, the TLS set-up
            self._count("pass", ok=False)
            raise LabelError(f"Kubernetes API client: {exc}") from None

    async def _pass(self, http: aiohttp.ClientSession, desired: dict[str, int]) -> None:
        if self._applied is None:  # first pass of this process: what the Pod carries already
            pod = await self._api("read", self.api.get_pod(http, self.settings.pod))
            self._applied = {
                k: _epoch(pod, k)
                for k, v in _labels(pod).items()
                if k.startswith(LABEL_PREFIX + "/")
            }
        gone = [k for k in self._applied if k not in desired]
        if gone:
            await self._patch(http, self.settings.pod, dict.fromkeys(gone))
            for key in gone:
                self._applied.pop(key, None)
                self._checked.pop(key, None)
        failed: list[str] = []
        now = self.clock()
        for key, epoch in sorted(desired.items()):
            recent = now < self._checked.get(key, -math.inf) + RESYNC_SECONDS
            if self._applied.get(key) == epoch and recent:
                continue
            try:
                await self._take(http, key, epoch)
            except LabelError as exc:
                failed.append(str(exc))
        if failed:
            raise LabelError("; ".join(failed))

    async def _take(self, http: aiohttp.ClientSession, key: str, epoch: int) -> None:
        """Remove `key` from every Pod with a lower epoch, then put it on this one."""
        assert self._applied is not None
        pods = await self._api("list", self.api.list_pods(http, f"{key}={OWNER_VALUE}"))
        mine, newer, failed = False, "", ""
        for pod in pods:
            meta = pod.get("metadata", {})
            name, theirs = meta.get("name"), _epoch(pod, key)
            if name == self.settings.pod:
                mine = theirs == epoch
            elif theirs > epoch:
                newer = f"{name} (epoch {theirs})"
            else:  # conditional: 409 if that Pod changed since the list
                try:
                    await self._patch(http, str(name), {key: None}, meta.get("resourceVersion"))
                    log.info("fix owner label removed pod=%s key=%s epoch=%d", name, key, theirs)
                except LabelError as exc:
                    failed = str(exc)  # still label this Pod: the venue must reach the owner
        if newer:
            log.warning("fix owner label: a newer owner exists pod=%s key=%s", newer, key)
            self._checked[key] = self.clock()
            if key in self._applied:
                await self._patch(http, self.settings.pod, {key: None})
                del self._applied[key]
            return
        if not mine:
            await self._patch(http, self.settings.pod, {key: epoch})
            log.info("fix owner label set pod=%s key=%s epoch=%d", self.settings.pod, key, epoch)
        self._applied[key] = epoch
        self._checked[key] = self.clock()
        if failed:
            raise LabelError(failed)

    async def _desired(self) -> dict[str, int]:
        """Label key -> epoch for every listening session the chart exposes."""
        desired: dict[str, int] = {}
        for claim in list(self._wanted.values()):
            acceptor = await self._resolve(claim)
            if acceptor is not None:
                desired[acceptor.key] = max(desired.get(acceptor.key, 0), claim.epoch)
        return desired

    async def _resolve(self, claim: Claim) -> Acceptor | None:
        """The chart's acceptor for the claim's adapter (by name), once; warns of a mismatch."""
        if claim.resolved:
            return claim.acceptor
        repository = AdapterRepository(claim.context.db)
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_SECONDS):
                record = await repository.get(claim.context.info.adapter_id)
        except (RaftorchError, TimeoutError) as exc:
            raise LabelError(f"adapter name lookup: {exc}") from None
        claim.resolved, claim.acceptor = True, self.settings.acceptors.get(record.name)
        problem = _mismatch(record.name, claim, claim.acceptor)
        if problem:
            log.warning("fix owner label session=%s: %s", claim.context.info.slot, problem)
            claim.context.event(problem, level=EventLevel.WARNING)
        return claim.acceptor

    # --- calls, counts, logs ------------------------------------------------------------

    async def _patch(
        self,
        http: aiohttp.ClientSession,
        pod: str,
        changes: Mapping[str, int | None],
        version: str | None = None,
    ) -> None:
        """Put keys on `pod` (label `owner`, annotation the epoch) or remove them (None); with
        `version`, only if the Pod is still at that resourceVersion."""
        labels = {k: None if e is None else OWNER_VALUE for k, e in changes.items()}
        annotations = {k: None if e is None else str(e) for k, e in changes.items()}
        metadata: dict[str, Any] = {"labels": labels, "annotations": annotations}
        if version:
            metadata["resourceVersion"] = version
        operation = "unlabel" if None in changes.values() else "label"
        await self._api(operation, self.api.patch_metadata(http, operation, pod, metadata))

    async def _api(self, operation: str, call: Any) -> Any:
        try:
            result = await call
        except KubeApiError as exc:
            self._count(operation, ok=False)
            raise LabelError(str(exc)) from None
        self._count(operation, ok=True)
        return result

    def _count(self, operation: str, *, ok: bool) -> None:
        self.metrics.pod_label_requests.labels(operation, "ok" if ok else "error").inc()

    def _log(self, kind: str, message: str) -> None:
        now = self.clock()
        if now >= self._logged.get(kind, -math.inf) + LOG_EVERY_SECONDS:
            self._logged[kind] = now
            log.warning("%s (failures so far: %d)", message, self.failures)


def _mismatch(name: str, claim: Claim, acceptor: Acceptor | None) -> str:
    """Why the venue will not reach this session through the chart's Service, or ''."""
    if acceptor is None:
        return (
            f"adapter {name!r} is not in the chart's fixAcceptors: no Service routes a venue "
            "to this acceptor"
        )
    if acceptor.port != claim.port:
        return (
            f"fixAcceptors entry {acceptor.name!r} forwards port {acceptor.port}, but the "
            f"adapter listens on {claim.port}: set config.port to {acceptor.port}"
        )
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(claim.host).is_loopback:
            return f"the acceptor listens on {claim.host}: set config.host to 0.0.0.0"
    return ""
