"""The API observer against real HTTP servers on loopback: what it records, and that it
moves on to another replica when one does not answer. Stepped by hand (`sample()`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from persistence.audit import AuditTrail
from tests.chaos.observer import ApiObserver
from tests.integration.processes import wait_until


class FakeReplica(ThreadingHTTPServer):
    """Answers GET /api/v1/adapters with `adapters` (or `status` when that is not 200)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.adapters: list[dict[str, Any]] = []
        self.status = 200
        self.asked = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeReplica

    def do_GET(self) -> None:
        self.server.asked += 1
        ok = self.path == "/api/v1/adapters" and self.server.status == 200
        body = json.dumps({"items": self.server.adapters} if ok else {"error": {}}).encode()
        self.send_response(self.server.status if self.path == "/api/v1/adapters" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def adapter(name: str, *slots: tuple[str, str | None, int | None]) -> dict[str, Any]:
    return {"name": name, "slots": [
        {"slot": f"{name}/{i}", "status": status, "owner_pod": owner, "epoch": epoch}
        for i, (status, owner, epoch) in enumerate(slots)
    ]}  # fmt: skip


@pytest.fixture
def replicas() -> Iterator[list[FakeReplica]]:
    servers = [FakeReplica(), FakeReplica()]
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_changes_are_recorded_once_with_when_and_through_whom(
    replicas: list[FakeReplica], tmp_path: Path
) -> None:
    r0, r1 = replicas
    trail = tmp_path / "observer.audit"
    observer = ApiObserver(lambda: {"r0": r0.url, "r1": r1.url}, AuditTrail(trail, "observer"))
    r0.adapters = [adapter("a", ("CLAIMING", "pod-1", 4))]
    assert observer.sample()
    assert observer.sample()  # nothing changed: nothing recorded
    r0.adapters = [adapter("a", ("ACTIVE", "pod-1", 4)), adapter("b", ("ACTIVE", "pod-2", 5))]
    assert observer.sample()
    r0.adapters = [adapter("b", ("ACTIVE", "pod-2", 5))]  # a disabled
    assert observer.sample()
    observer.stop()

    seen = [(r["slot"], r["status"], r["owner"], r["epoch"], r["via"])
            for r in records(trail) if r["kind"] == "api_slot"]  # fmt: skip
    assert seen == [
        ("a/0", "CLAIMING", "pod-1", 4, "r0"),
        ("a/0", "ACTIVE", "pod-1", 4, "r0"),
        ("b/0", "ACTIVE", "pod-2", 5, "r0"),
        ("a/0", "GONE", "", 0, "r0"),
    ]
    first, *later = [r for r in records(trail) if r["kind"] == "api_slot"]
    assert first["prev"] is None and first["sent"] <= first["seen"] == first["t"]
    assert all(r["prev"] < r["seen"] for r in later)
    [summary] = [r for r in records(trail) if r["kind"] == "api_summary"]
    assert (summary["samples"], summary["failures"]) == (4, 0)
    assert r1.asked == 0  # r0 answered every time


def test_a_replica_that_fails_is_passed_over_and_the_next_one_kept(
    replicas: list[FakeReplica], tmp_path: Path
) -> None:
    r0, r1 = replicas
    trail = tmp_path / "observer.audit"
    observer = ApiObserver(lambda: {"r0": r0.url, "r1": r1.url}, AuditTrail(trail, "observer"))
    r0.status = 503
    r1.adapters = [adapter("a", ("ACTIVE", "pod-1", 4))]
    assert observer.sample()
    assert observer.sample()
    assert (r0.asked, r1.asked) == (1, 2)  # after one failure r1 is asked first
    r1.status = 500
    assert not observer.sample()  # nobody answered: a failure, nothing recorded
    observer.stop()

    assert [r["via"] for r in records(trail) if r["kind"] == "api_slot"] == ["r1"]
    assert observer.stats.failures == 1 and observer.stats.samples == 2


def test_the_first_answer_is_awaited_and_failures_do_not_count_as_one(
    replicas: list[FakeReplica], tmp_path: Path
) -> None:
    r0, r1 = replicas
    observer = ApiObserver(lambda: {"r0": r0.url, "r1": r1.url},
                           AuditTrail(tmp_path / "observer.audit", "observer"))  # fmt: skip
    r0.status = r1.status = 503
    assert not observer.sample()
    assert not observer.answered()  # nobody answered yet
    r1.status = 200
    r1.adapters = [adapter("a", ("ACTIVE", "pod-1", 4))]
    observer.start()  # the thread samples on its own now
    wait_until(observer.answered, 10.0, "the observer's first answer")
    assert observer.stats.samples >= 1
    observer.stop()
