"""Synthetic pods: many in one asyncio process, speaking the public pod API in msgpack.

Each pod does what `adapter.agent` does on the wire, without connectors: registers with
the bootstrap token, heartbeats every `heartbeat_interval_seconds` with its incarnation
credential (the complete session list every tenth time and after a leader change, else
only what changed), hedges a heartbeat not answered within the retry interval to the next
replica (at most one attempt open per replica, skipping for 1 s one that refused the
connection, the copies marked as hedges, the first answer wins, as
`PodClient.hedged_post`), keeps an assignments long-poll open (the leader first, then each
replica in turn after a random pause, backing off as the agent does), starts every
ACTIVE assignment at once (reporting it ACTIVE in an immediate heartbeat, as the agent
reports a state change at once), stops what it is told to stop. Every heartbeat is
recorded: wall send time, latency from the first attempt to the answer that won, HTTP
status (0: no answer within the lease), and how many hedged attempts it took. So is
every *lapse*: an acknowledgement that came after the pod's own lease had ended (the
send time of the last acknowledged heartbeat + TTL - safety margin, as the agent counts
it). The agent would have stopped every session at that moment, even though the leader
never expired the pod.

Run as `python -m bench.fleet SPEC.json`; stdin `stop` ends it, after which the results
are written to the spec's `results` path. stdout carries `registered N`, and with
`report_acks`, `ack POD SEND_TIME` for every acknowledged heartbeat.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from adapter.agent import FULL_REPORT_EVERY, POLL_BACKOFF_SECONDS, POLL_WAIT_SPREAD
from adapter.client import UNREACHABLE_BACKOFF_SECONDS
from bench.control import stop_on_stdin
from protocol.codec import MSGPACK
from protocol.pod import HEDGE_HEADER, LEADER_HEADER
from raftorch.ops.cli import settle_heap

REGISTER_CONCURRENCY = 32
LONG_POLL_SECONDS = 20.0
RETRY_SECONDS = 0.1  # the shipped retry_interval_seconds
REFUSED = -1  # `Fleet.post`'s status when the replica refused the connection
LAG_PROBE_SECONDS = 0.05
LAG_REPORT_SECONDS = 0.1


@dataclass
class Recorder:
    """Every heartbeat: wall send time, seconds to the answer, HTTP status."""

    sent: array.array[float] = field(default_factory=lambda: array.array("d"))
    latency: array.array[float] = field(default_factory=lambda: array.array("d"))
    status: array.array[int] = field(default_factory=lambda: array.array("i"))
    registrations: int = 0
    expired: int = 0
    hedges: array.array[int] = field(default_factory=lambda: array.array("i"))
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (wall start, seconds)
    lapses: list[tuple[float, float]] = field(default_factory=list)  # (wall time, seconds late)

    def add(self, sent: float, latency: float, status: int, hedges: int = 0) -> None:
        self.sent.append(sent)
        self.latency.append(latency)
        self.status.append(status)
        self.hedges.append(hedges)


class Fleet:
    """`count` pods named `{prefix}{i}` against `urls`; `run()` until `stop` is set."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.urls: list[str] = list(spec["urls"])
        self.token: str = spec["pod_token"]
        self.rec = Recorder()
        self.stop = asyncio.Event()
        self.report_acks = bool(spec.get("report_acks"))
        self._register_gate = asyncio.Semaphore(REGISTER_CONCURRENCY)
        self.registered = 0

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        async with aiohttp.ClientSession(connector=connector) as self.http:
            pods = [Pod(self, f"{self.spec['prefix']}{i}") for i in range(self.spec["count"])]
            tasks = [asyncio.create_task(p.run()) for p in pods]
            tasks.append(asyncio.create_task(self.watch_lag()))
            await self.stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.held = {p.pod_id: len(p.sessions) for p in pods}

    async def watch_lag(self) -> None:
        """Record when this process's own event loop fell behind (the load generator must
        not be what delays heartbeats: its stalls are reported with the figures)."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            lag = time.monotonic() - before - LAG_PROBE_SECONDS
            if lag > LAG_REPORT_SECONDS:
                self.rec.stalls.append((time.time() - lag, lag))

    def prefer(self, leader: str | None) -> None:
        if leader and (url := leader.rstrip("/")) in self.urls and self.urls[0] != url:
            self.urls.remove(url)
            self.urls.insert(0, url)

    async def post(
        self,
        path: str,
        body: dict[str, Any],
        token: str,
        timeout: float,
        *,
        url: str | None = None,
        hedge: bool = False,
    ) -> tuple[int, Any]:
        """POST to `url` (the preferred replica by default); (status, decoded body); (0, None)
        for no answer, (REFUSED, None) when the connection was refused."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": MSGPACK, "Accept": MSGPACK}
        if hedge:
            headers[HEDGE_HEADER] = "1"
        url = url or self.urls[0]
        try:
            async with self.http.post(
                url + path,
                data=msgpack.packb(body),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as answer:
                payload = await answer.read()
                self.prefer(answer.headers.get(LEADER_HEADER))
                return answer.status, _decode(payload, answer.content_type)
        except aiohttp.ClientConnectorError:
            return REFUSED, None
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    def rotate(self) -> None:
        """No answer or 503: the next replica first."""
        self.urls.append(self.urls.pop(0))


class Pod:
    """One synthetic pod's lease keeping and assignments."""

    def __init__(self, fleet: Fleet, pod_id: str) -> None:
        self.fleet = fleet
        self.pod_id = pod_id
        self.credential: str | None = None
        self.interval = 1.0
        self.ttl = 3.0
        self.margin = 0.5
        self.lease_end: float | None = None  # monotonic; None until the first acknowledgement
        self.sessions: dict[str, tuple[int, str]] = {}  # slot -> (epoch, ACTIVE | STOPPED)
        self.acked: dict[str, tuple[int, str]] = {}
        self.since_full = FULL_REPORT_EVERY
        self.acked_term = -1
        self.version = ""
        self.revision = -1
        self.wake = asyncio.Event()
        self.down: dict[str, float] = {}  # url -> monotonic end of its back-off (refused)

    async def register(self) -> None:
        spec = self.fleet.spec
        body = {
            "pod_id": self.pod_id,
            "address": "",
            "capacity": spec["capacity"],
            "connectors": [{"type": t} for t in spec["connectors"]],
            "labels": {"zone": "abc"[hash(self.pod_id) % 3]},
        }
        while True:
            async with self.fleet._register_gate:
                status, reply = await self.fleet.post(
                    "/pod/v1/register", body, self.fleet.token, 10.0
                )
            if status == 201:
                break
            if status in (0, 503):
                self.fleet.rotate()
            await asyncio.sleep(0.5)
        self.credential = reply["credential"]
        self.interval = reply["heartbeat_interval_seconds"]
        self.ttl = reply["lease_ttl_seconds"]
        self.margin = reply["safety_margin_seconds"]
        self.lease_end = None
        self.sessions, self.acked, self.version, self.revision = {}, {}, "", -1
        self.since_full = FULL_REPORT_EVERY
        self.fleet.rec.registrations += 1

    async def run(self) -> None:
        await self.register()
        self.fleet.registered += 1
        if self.fleet.registered == self.fleet.spec["count"]:
            # From now on no collection at all: the collector would stop all the pods at
            # once, which real pods, each in its own process, never are. Its young
            # collections took 50-155 ms each in the second after a leader kill, while
            # the refused and cancelled attempts of a thousand pods left cycles behind
            # (docs/performance.md, "The first plan of a new term"). What the cycles hold
            # stays allocated: the peak RSS is reported (`rss_mb`).
            gc.freeze()
            gc.disable()
            _say(f"registered {self.fleet.registered}")
        poll = asyncio.create_task(self.poll())
        try:
            await asyncio.sleep(random.uniform(0, self.interval))  # spread the fleet's beats
            next_beat = time.monotonic()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), next_beat - time.monotonic())
                self.wake.clear()
                started = time.monotonic()
                await self.heartbeat()
                # An interval after this one, whether it was due or woken early (a session
                # started or stopped), as the agent does: never longer.
                next_beat = started + self.interval
        finally:
            poll.cancel()

    def body(self) -> tuple[dict[str, Any], dict[str, tuple[int, str]]]:
        complete = self.since_full >= FULL_REPORT_EVERY
        reports = dict(self.sessions)
        if not complete:
            reports = {
                s: v for s, v in reports.items() if v[1] == "STOPPED" or self.acked.get(s) != v
            }
        body = {
            "pod_id": self.pod_id,
            "complete": complete,
            "version": self.version,
            "sessions": [{"slot": s, "epoch": e, "status": st} for s, (e, st) in reports.items()],
        }
        return body, reports

    async def heartbeat(self) -> None:
        """One heartbeat, hedged across replicas until answered or the lease is gone."""
        assert self.credential is not None
        body, reports = self.body()
        first = time.time()
        give_up = time.monotonic() + self.ttl
        while True:
            sent, started = time.time(), time.monotonic()
            won, hedges = await self.hedged(body, give_up)
            answered = time.monotonic()
            status, reply = won[1] if won is not None else (0, {})
            self.fleet.rec.add(sent, answered - started, status, hedges)
            if status == 200 and won is not None:
                self.renewed(won[0], answered)
                sent = time.time() - (answered - won[0])  # the winning attempt's send
                break
            if status in (403, 410):
                self.fleet.rec.expired += 1
                await self.register()
                return
            if status == 0 or status >= 500:
                self.fleet.rotate()
            if time.monotonic() >= give_up:
                return
            await asyncio.sleep(RETRY_SECONDS)
        if self.fleet.report_acks:
            _say(f"ack {self.pod_id} {sent:.3f} {first:.3f}")
        self.acknowledged(reply.get("term", -1), body["complete"], reports)
        self.apply(reply)
        for order in reply.get("stop", ()):
            current = self.sessions.get(order["slot"])
            if current is None or current[0] != order["epoch"]:
                continue
            if order["reason"] in ("revoked", "handoff"):  # stops cleanly: report STOPPED
                self.sessions[order["slot"]] = (order["epoch"], "STOPPED")
                self.wake.set()
            else:  # fenced
                del self.sessions[order["slot"]]

    async def hedged(
        self, body: dict[str, Any], give_up: float
    ) -> tuple[tuple[float, tuple[int, Any]] | None, int]:
        """The agent's hedging: the preferred replica first, then the next one every
        RETRY_SECONDS while nothing answered, one attempt open per replica; the first
        answer other than none or 503 wins, with its attempt's send time (monotonic).
        Returns it (or None) and how many attempts beyond the first were made."""
        assert self.credential is not None
        Won = tuple[float, tuple[int, Any]] | None
        urls, tasks = list(self.fleet.urls), dict[asyncio.Task[Won], str]()
        credential, launched, turn = self.credential, 0, 0
        next_launch = time.monotonic()

        async def attempt(url: str, hedge: bool) -> tuple[float, tuple[int, Any]] | None:
            at = time.monotonic()
            answer = await self.fleet.post(
                "/pod/v1/heartbeat", body, credential, max(0.05, give_up - at), url=url, hedge=hedge
            )
            if answer[0] == REFUSED:
                self.down[url] = time.monotonic() + UNREACHABLE_BACKOFF_SECONDS
            return None if answer[0] in (REFUSED, 0, 503) else (at, answer)

        try:
            while (now := time.monotonic()) < give_up:
                # Not a replica that refused the connection lately, unless every one did.
                down = {u for u in urls if self.down.get(u, 0.0) > now}
                down = down if len(down) < len(urls) else set()
                free = [u for u in urls[turn:] + urls[:turn] if u not in tasks.values()]
                free = [u for u in free if u not in down]
                if now >= next_launch and free:
                    hedge = bool(tasks)  # a copy only while an earlier attempt is open
                    tasks[asyncio.create_task(attempt(free[0], hedge))] = free[0]
                    launched, turn = launched + 1, urls.index(free[0]) + 1
                    next_launch = now + RETRY_SECONDS
                    free = free[1:]
                back = min((self.down[u] for u in down), default=give_up)
                until = min(next_launch if free else back, give_up)
                if not tasks:
                    await asyncio.sleep(max(0.0, until - time.monotonic()))
                    continue
                done, _ = await asyncio.wait(
                    tasks, timeout=max(0.0, until - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                for task in done:
                    del tasks[task]
                    if (won := task.result()) is not None:
                        return won, launched - 1
                if done and launched < len(urls):
                    next_launch = time.monotonic()  # refused at once: the next one now
            return None, max(0, launched - 1)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def renewed(self, sent: float, answered: float) -> None:
        """The lease now ends at the answered attempt's send time + TTL - margin; an answer
        that came after the previous end is a lapse (the agent's watchdog fired)."""
        if self.lease_end is not None and answered > self.lease_end:
            self.fleet.rec.lapses.append((time.time(), answered - self.lease_end))
        self.lease_end = max(self.lease_end or sent, sent + self.ttl - self.margin)

    def acknowledged(self, term: int, complete: bool, reports: dict[str, tuple[int, str]]) -> None:
        for slot, value in reports.items():  # a stop the leader has heard of is done
            if value[1] == "STOPPED" and self.sessions.get(slot) == value:
                del self.sessions[slot]
        if term != self.acked_term:  # another leader: tell it everything next time (agent)
            self.acked, self.acked_term, self.since_full = {}, term, FULL_REPORT_EVERY
            return
        self.since_full = 0 if complete else self.since_full + 1
        if complete:
            self.acked = {}
        for slot, value in reports.items():
            if value[1] == "STOPPED":
                self.acked.pop(slot, None)
            else:
                self.acked[slot] = value

    def apply(self, reply: dict[str, Any]) -> bool:
        """Start every ACTIVE assignment not running here (then report it at once); False
        when the answer was read from older state than what was applied."""
        if reply["revision"] < self.revision:
            return False
        self.revision = reply["revision"]
        if reply.get("unchanged"):
            return True
        self.version = reply["version"]
        wanted = {a["slot"]: a["epoch"] for a in reply["assignments"] if a["role"] == "ACTIVE"}
        changed = False
        for slot, epoch in wanted.items():
            current = self.sessions.get(slot)
            if current is None or current[0] != epoch:
                self.sessions[slot] = (epoch, "ACTIVE")
                changed = True
        if any(s not in wanted and v[1] != "STOPPED" for s, v in self.sessions.items()):
            # Running here but no longer assigned (revoked, handed off, fenced): keep it
            # until the heartbeat's stop order says how to stop it, as the agent does.
            changed = True
        if changed:
            self.wake.set()
        return True

    async def poll(self) -> None:
        """The assignments long-poll as the agent keeps it: each replica in turn, the leader
        first (any replica answers it), the next one after a random pause of up to a
        heartbeat interval when the last gave no answer; after a round with none applied,
        a back-off from 0.1 to 2 s (POLL_BACKOFF_SECONDS)."""
        backoff = POLL_BACKOFF_SECONDS[0]
        while True:
            answered = True
            for url in list(self.fleet.urls):
                if not answered:  # the last replica gave no answer: as the agent, a pause
                    await asyncio.sleep(random.uniform(0.0, self.interval))
                applied = await self.poll_once(url)
                if applied:
                    backoff = POLL_BACKOFF_SECONDS[0]
                    break
                answered = applied is not None
            else:
                await asyncio.sleep(backoff)
                backoff = min(POLL_BACKOFF_SECONDS[1], backoff * 2)

    async def poll_once(self, url: str) -> bool | None:
        """Whether the answer was applied (False: read from older state); None: no answer."""
        wait = LONG_POLL_SECONDS * random.uniform(1.0 - POLL_WAIT_SPREAD, 1.0)
        query = f"?pod_id={self.pod_id}&version={self.version}&wait_seconds={wait:.3f}"
        headers = {"Authorization": f"Bearer {self.credential}", "Accept": MSGPACK}
        try:
            async with self.fleet.http.get(
                url + "/pod/v1/assignments" + query,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=wait + 5),
            ) as answer:
                payload = await answer.read()
                if answer.status == 200:
                    # Older than applied (a lagging replica answers at once): back off.
                    return self.apply(_decode(payload, answer.content_type))
        except (aiohttp.ClientError, TimeoutError):
            pass
        return None


def _decode(payload: bytes, content_type: str) -> Any:
    if not payload:
        return {}
    if content_type == MSGPACK:
        return msgpack.unpackb(payload)
    return json.loads(payload)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _main(spec: dict[str, Any]) -> dict[str, Any]:
    fleet = Fleet(spec)
    control_task = await stop_on_stdin(fleet.stop)
    await fleet.run()
    control_task.cancel()
    rec = fleet.rec
    return {
        "sent": rec.sent.tolist(),
        "latency": rec.latency.tolist(),
        "status": rec.status.tolist(),
        "registrations": rec.registrations,
        "expired": rec.expired,
        "hedges": rec.hedges.tolist(),
        "held": fleet.held,
        "stalls": rec.stalls,
        "lapses": rec.lapses,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(spec_path: str) -> None:
    # A thousand pods in one process make a heap the size of a replica's, and Python's
    # default collector then stalls this loop for 0.1-0.3 s at a time: the latencies
    # measured would be the load generator's own. Tuned as the replicas are.
    settle_heap()
    spec = json.loads(Path(spec_path).read_text())
    results = asyncio.run(_main(spec))
    Path(spec["results"]).write_text(json.dumps(results))
    _say("done")


if __name__ == "__main__":
    main(sys.argv[1])
