"""The operator CLI without sockets: a fake transport stands in for the cluster."""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from raftorch.ops import commands as opscli
from raftorch.ops.client import Client, ClusterUnavailable, OpsError, Response
from raftorch.ops.manifest import ManifestError, check_references, parse_manifest

API = "http://r0:8080"
ENV = {opscli.API_ENV: API, opscli.TOKEN_ENV: "t0ken"}


def _json(status: int, body: object) -> Response:
    return Response(status, json.dumps(body).encode())


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"error": {"code": code, "message": message}})


class FakeCluster:
    """Just enough of the admin API for the CLI: adapters, bulk, artifacts; records calls."""

    def __init__(self) -> None:
        self.adapters: dict[str, dict[str, Any]] = {}
        self.artifacts: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []

    def add(self, name: str, status: str = "INACTIVE", **extra: Any) -> dict[str, Any]:
        adapter = {
            "id": str(uuid.uuid4()), "name": name, "connector": "tcp-client", "mode": "single",
            "instances": 1, "admin_state": "DISABLED", "status": status, "status_detail": "",
            "owner_pod": None, "epoch": None, "standby_pods": [], "config": {}, "artifacts": [],
            "revision": 1, **extra,
        }  # fmt: skip
        self.adapters[adapter["id"]] = adapter
        return adapter

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "GET"]

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Response:
        assert headers["Authorization"] == "Bearer t0ken"
        path = url.removeprefix(API)
        self.calls.append((method, path))
        route = path.split("?")[0].split("/")[3:]  # after /api/v1
        handler = getattr(self, f"_{method.lower()}_{route[0]}", None)
        if handler is None:
            return _error(404, "not_found", f"no route {method} {path}")
        answer: Response = handler(route[1:], body, headers, path)
        return answer

    def _get_adapters(self, rest: list[str], *_: Any) -> Response:
        items = sorted(self.adapters.values(), key=lambda a: a["name"])
        return _json(200, {"items": items})

    def _post_adapters(self, rest: list[str], body: bytes, *_: Any) -> Response:
        data = json.loads(body)
        if rest == ["bulk"]:
            targets = list(self.adapters) if data.get("all") else data["ids"]
            state = "ENABLED" if data["action"] == "enable" else "DISABLED"
            for adapter_id in targets:
                self.adapters[adapter_id].update(admin_state=state)
                self.adapters[adapter_id]["revision"] += 1
            return _json(202, {"items": [self.adapters[i] for i in targets]})
        if any(a["name"] == data["name"] for a in self.adapters.values()):
            return _error(409, "conflict", f"adapter name {data['name']!r} is taken")
        return _json(201, self.add(**data))

    def _get_artifacts(self, rest: list[str], _body: Any, _h: Any, path: str) -> Response:
        if not rest:
            return _json(200, {"items": [{k: v for k, v in a.items() if k != "content"}
                                         for a in self.artifacts]})  # fmt: skip
        version = int(path.split("version=")[1])
        [found] = [a for a in self.artifacts if a["name"] == rest[0] and a["version"] == version]
        return Response(200, found["content"])

    def _post_artifacts(
        self, rest: list[str], body: bytes, headers: Mapping[str, str], _path: str
    ) -> Response:
        self.put_artifact(rest[0], body, headers["Content-Type"])
        return _json(201, {})

    def put_artifact(self, name: str, content: bytes, media_type: str) -> None:
        version = 1 + sum(1 for a in self.artifacts if a["name"] == name)
        self.artifacts.append({"name": name, "version": version, "media_type": media_type,
                               "sha256": hashlib.sha256(content).hexdigest(),
                               "content": content})  # fmt: skip


def parse(*argv: str) -> argparse.Namespace:
    return opscli.build_parser().parse_args(list(argv))


def run(cluster: Callable[..., Response], *argv: str) -> int:
    args = parse(*argv)
    return opscli.execute(args.ops_command, args, ENV, cluster)


def manifest(**changes: Any) -> dict[str, Any]:
    content = b"<fix/>"
    data: dict[str, Any] = {
        "raftorch_manifest": 1,
        "adapters": [
            {"name": "a", "connector": "tcp-client", "mode": "single", "instances": 1,
             "config": {"port": 1}, "artifacts": ["FIX44"], "admin_state": "ENABLED"},
            {"name": "b", "connector": "pg-queue-consumer", "mode": "active_passive",
             "config": {}},
            {"name": "c", "connector": "tcp-client", "mode": "scale_out", "instances": 3,
             "config": {}, "artifacts": [], "admin_state": "DISABLED"},
        ],
        "artifacts": [
            {"name": "FIX44", "version": 1, "media_type": "text/xml",
             "sha256": hashlib.sha256(content).hexdigest(),
             "content_base64": base64.b64encode(content).decode()},
        ],
    }  # fmt: skip
    for path, value in changes.items():
        *parents, last = path.split("__")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        key: Any = int(last) if last.isdigit() else last
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value
    return data


_DELETE = object()
GOOD_SHA = manifest()["artifacts"][0]["sha256"]

BAD_MANIFESTS: list[tuple[object, dict[str, Any], str]] = [
    ([], {}, "manifest: expected an object, got an array"),
    (None, {"raftorch_manifest": _DELETE}, "manifest: raftorch_manifest: missing"),
    (None, {"raftorch_manifest": 2}, "manifest: raftorch_manifest: version 2 is not supported"),
    (None, {"extra": 1}, "manifest: extra: unknown field"),
    (None, {"adapters": {}}, "manifest: adapters: expected an array, got an object"),
    (None, {"adapters__2__mode": "hot"},
     "manifest: adapters[2].mode: 'hot' is not one of single, active_passive, scale_out"),
    (None, {"adapters__0__name": "no spaces"}, "manifest: adapters[0].name: 'no spaces' is not"),
    (None, {"adapters__0__name": "a\n"}, "manifest: adapters[0].name: 'a\\n' is not a valid"),
    (None, {"adapters__2__name": "a"}, "manifest: adapters[2].name: the same name is also at"),
    (None, {"adapters__1__connector": ""}, "manifest: adapters[1].connector: must be 1-128"),
    (None, {"adapters__0__instances": "1"}, "manifest: adapters[0].instances: expected an integer"),
    (None, {"adapters__0__instances": True}, "manifest: adapters[0].instances: expected an int"),
    (None, {"adapters__0__instances": 2}, "manifest: adapters[0].instances: must be 1 unless"),
    (None, {"adapters__2__instances": 0}, "manifest: adapters[2].instances: must be 1-1000, got 0"),
    (None, {"adapters__1__config": []}, "manifest: adapters[1].config: expected an object"),
    (None, {"adapters__1__config": _DELETE}, "manifest: adapters[1].config: missing"),
    (None, {"adapters__1__colour": "red"}, "manifest: adapters[1].colour: unknown field"),
    (None, {"adapters__0__admin_state": "ON"}, "manifest: adapters[0].admin_state: 'ON' is not"),
    (None, {"adapters__0__artifacts": ["FIX 44"]}, "manifest: adapters[0].artifacts[0]: 'FIX 44'"),
    (None, {"artifacts__0__content_base64": "***"},
     "manifest: artifacts[0].content_base64: is not valid base64"),
    (None, {"artifacts__0__content_base64": ""}, "manifest: artifacts[0].content_base64: is empty"),
    (None, {"artifacts__0__sha256": "0" * 64},
     "manifest: artifacts[0].sha256: does not match the content (which hashes to " + GOOD_SHA),
    (None, {"artifacts__0__sha256": GOOD_SHA.upper()},
     "manifest: artifacts[0].sha256: expected 64 lowercase hex digits"),
    (None, {"artifacts__0__version": 0}, "manifest: artifacts[0].version: must be 1-"),
    (None, {"artifacts__0__media_type": _DELETE}, "manifest: artifacts[0].media_type: missing"),
    (None, {"artifacts": manifest()["artifacts"] * 2},
     "manifest: artifacts[1].version: the same name and version are also at index 0"),
]  # fmt: skip


@pytest.mark.parametrize(("base", "changes", "message"), BAD_MANIFESTS)
def test_each_bad_manifest_is_one_line_naming_the_place_and_nothing_is_sent(
    base: object, changes: dict[str, Any], message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data = base if base is not None else manifest(**changes)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    assert caught.value.message.startswith(message), caught.value.message
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    cluster = FakeCluster()
    assert run(cluster, "import", str(path)) == 2
    err = capsys.readouterr().err
    assert err == f"raftorch: error: {caught.value.message}\n"
    assert "\n" not in caught.value.message
    assert cluster.calls == []


def test_a_file_that_is_not_json_or_not_there_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"raftorch_manifest": 1,')
    cluster = FakeCluster()
    assert run(cluster, "import", str(path)) == 2
    assert capsys.readouterr().err.startswith("raftorch: error: manifest: not valid JSON: ")
    assert run(cluster, "import", str(tmp_path / "missing.json")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cluster.calls == []


def test_a_reference_to_an_artifact_nowhere_is_refused_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = manifest(adapters__1__artifacts=["FIX50"])
    with pytest.raises(ManifestError, match=r"adapters\[1\].artifacts\[0\]: artifact 'FIX50'"):
        check_references(parse_manifest(data), on_cluster={"FIX44"})
    check_references(parse_manifest(data), on_cluster={"FIX50"})  # on the cluster is fine
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    cluster = FakeCluster()
    assert run(cluster, "import", str(path)) == 2
    assert "adapters[1].artifacts[0]" in capsys.readouterr().err
    assert cluster.writes() == []


def test_import_creates_what_is_missing_and_a_second_import_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeCluster()
    cluster.add("b", connector="pg-queue-consumer", mode="active_passive", config={"x": 1})
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest()))
    assert run(cluster, "import", "--json", str(path)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["adapters"]["created"] == ["a", "c"]
    assert report["adapters"]["differs"] == [{"name": "b", "fields": ["config"]}]
    assert report["artifacts"] == {"uploaded": ["FIX44 v1"], "skipped": []}
    states = {a["name"]: a["admin_state"] for a in cluster.adapters.values()}
    assert states == {"a": "ENABLED", "b": "DISABLED", "c": "DISABLED"}
    assert cluster.artifacts[0]["media_type"] == "text/xml"
    before = copy.deepcopy((cluster.adapters, cluster.artifacts))
    cluster.calls.clear()
    assert run(cluster, "import", str(path)) == 0
    assert cluster.writes() == []
    assert before == (cluster.adapters, cluster.artifacts)
    out = capsys.readouterr().out
    assert "adapters: 0 created, 2 unchanged, 1 differ" in out
    assert "artifacts: 0 uploaded, 1 skipped" in out


def test_an_artifact_whose_content_exists_under_another_version_is_skipped(
    tmp_path: Path,
) -> None:
    cluster = FakeCluster()
    cluster.put_artifact("FIX44", b"other", "text/xml")
    cluster.put_artifact("FIX44", b"<fix/>", "text/xml")  # the manifest's content, as v2
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest()))
    assert run(cluster, "import", str(path)) == 0
    assert len(cluster.artifacts) == 2


def test_export_then_import_into_an_empty_cluster_reproduces_it(tmp_path: Path) -> None:
    source = FakeCluster()
    source.put_artifact("FIX44", b"v1", "text/xml")
    source.put_artifact("FIX44", b"v2", "text/xml")
    source.add("x", admin_state="ENABLED", artifacts=["FIX44"], config={"host": "h"})
    path = tmp_path / "m.json"
    assert run(source, "export", "--output", str(path)) == 0
    target = FakeCluster()
    assert run(target, "import", str(path)) == 0
    assert [(a["version"], a["content"]) for a in target.artifacts] == [(1, b"v1"), (2, b"v2")]
    [copied] = target.adapters.values()
    assert (copied["admin_state"], copied["config"], copied["artifacts"]) == (
        "ENABLED", {"host": "h"}, ["FIX44"],
    )  # fmt: skip


# --- name resolution ----------------------------------------------------------------


def test_names_and_ids_resolve_in_order_each_once() -> None:
    cluster = FakeCluster()
    a, b = cluster.add("venue-a"), cluster.add("venue-b")
    items = list(cluster.adapters.values())
    found = opscli.resolve(items, ["venue-b", a["id"], "venue-a", b["id"]])
    assert [x["name"] for x in found] == ["venue-b", "venue-a"]
    with pytest.raises(OpsError, match="no such adapter: nope, venue-c"):
        opscli.resolve(items, ["venue-a", "nope", "venue-c"])


def test_enable_by_name_sends_the_ids_in_one_bulk_call(capsys: pytest.CaptureFixture[str]) -> None:
    cluster = FakeCluster()
    a, _ = cluster.add("venue-a"), cluster.add("venue-b")
    assert run(cluster, "adapters", "enable", "venue-a") == 0
    assert cluster.writes() == [("POST", "/api/v1/adapters/bulk")]
    assert cluster.adapters[a["id"]]["admin_state"] == "ENABLED"
    assert "enabled 1: venue-a" in capsys.readouterr().out
    assert run(cluster, "adapters", "disable", "venue-x") == 1
    assert capsys.readouterr().err == "raftorch: error: no such adapter: venue-x\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["adapters", "enable"], "name the adapters (names or ids) or give --all"),
        (["adapters", "delete", "x", "--all"], "name the adapters (names or ids) or give --all"),
        (["adapters", "create", "--name", "n", "--connector", "c", "--mode", "single",
          "--config", "[1]"], "--config: expected a JSON object"),
        (["adapters", "create", "--name", "n", "--connector", "c", "--mode", "single",
          "--config", "{"], "--config: not valid JSON"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeCluster()
    assert run(cluster, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raftorch: error: {message}") and err.count("\n") == 1
    assert cluster.writes() == []


def test_without_address_or_token_nothing_is_tried(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("status")
    assert opscli.execute(opscli.cmd_status, args, {}, FakeCluster()) == 2
    assert f"give --api URL or set {opscli.API_ENV}" in capsys.readouterr().err
    env = {opscli.API_ENV: "http://a, http://b"}
    assert opscli.execute(opscli.cmd_status, args, env, FakeCluster()) == 2
    assert f"give --token or set {opscli.TOKEN_ENV}" in capsys.readouterr().err


# --- the client ---------------------------------------------------------------------


def test_client_tries_the_next_replica_when_one_is_down_or_503_and_sticks_to_a_good_one() -> None:
    tried: list[str] = []

    def transport(method: str, url: str, body: bytes | None, h: Mapping[str, str]) -> Response:
        tried.append(url.split("/api", maxsplit=1)[0])
        if url.startswith("http://down"):
            raise ConnectionRefusedError(111, "Connection refused")
        if url.startswith("http://busy"):
            return _error(503, "unavailable", "database unavailable")
        return _json(200, {"items": []})

    client = Client(["http://down", "http://busy", "http://good/"], "t", transport)
    assert client.get_json("/api/v1/adapters") == {"items": []}
    assert client.get_json("/api/v1/adapters") == {"items": []}
    assert tried == ["http://down", "http://busy", "http://good", "http://good"]
    with pytest.raises(ClusterUnavailable) as caught:
        Client(["http://down", "http://busy"], "t", transport).get_json("/x")
    assert caught.value.message == (
        "cluster unavailable: http://down: Connection refused; "
        "http://busy: database unavailable (503 unavailable)"
    )


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_error(401, "unauthorized", "bad token"), "the token was refused (401)"),
        (_error(403, "forbidden", "role viewer may not enable adapters"),
         "the token's role may not do this: role viewer may not enable adapters (403 forbidden)"),
        (_error(409, "conflict", "adapter 'x' is ENABLED: disable it before deleting"),
         "adapter 'x' is ENABLED: disable it before deleting (409 conflict)"),
        (Response(502, b"<html>Bad gateway</html>"), "HTTP 502: <html>Bad gateway</html>"),
    ],
)  # fmt: skip
def test_refusals_become_one_line_with_the_servers_message(answer: Response, message: str) -> None:
    client = Client(["http://a"], "t", lambda *_: answer)
    with pytest.raises(OpsError) as caught:
        client.get_json("/api/v1/adapters")
    assert caught.value.message.startswith(message)
    assert caught.value.exit_code == 1


# --- waiting ------------------------------------------------------------------------


def test_progress_line_format() -> None:
    pending = {"CLAIMING": ["venue-a", "venue-b"]}
    assert opscli.format_progress(5, "ACTIVE", pending) == (
        "waiting: 3/5 ACTIVE (2 CLAIMING: venue-a, venue-b)"
    )
    many = {"INACTIVE": ["x"], "CLAIMING": [f"v{i}" for i in range(7)]}
    assert opscli.format_progress(9, "ACTIVE", many) == (
        "waiting: 1/9 ACTIVE (7 CLAIMING: v0, v1, v2, v3, v4 and 2 more; 1 INACTIVE: x)"
    )
    assert opscli.format_progress(2, "INACTIVE", {}) == "waiting: 2/2 INACTIVE"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_prints_progress_when_it_changes_or_after_10_quiet_seconds_and_returns() -> None:
    cluster = FakeCluster()
    a = cluster.add("venue-a", admin_state="ENABLED", status="CLAIMING")
    b = cluster.add("venue-b", admin_state="ENABLED", status="CLAIMING")
    clock, lines = Clock(), list[str]()
    polls = 0

    def sleep(seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 4:
            cluster.adapters[a["id"]]["status"] = "ACTIVE"
        if polls == 30:
            cluster.adapters[b["id"]]["status"] = "ACTIVE"
        clock.sleep(seconds)

    client = Client([API], "t0ken", cluster)
    done = opscli.wait_for(client, [a, b], "enable", 60, clock=clock, sleep=sleep, out=lines.append)
    assert [x["status"] for x in done] == ["ACTIVE", "ACTIVE"]
    assert opscli.POLL_SECONDS == 0.5  # a changes after 2 s, b after 15 s
    assert lines == [
        "waiting: 0/2 ACTIVE (2 CLAIMING: venue-a, venue-b)\n",
        "waiting: 1/2 ACTIVE (1 CLAIMING: venue-b)\n",  # at 2 s: changed
        "waiting: 1/2 ACTIVE (1 CLAIMING: venue-b)\n",  # at 12 s: unchanged for 10 s
    ]
    assert clock.now == pytest.approx(30 * opscli.POLL_SECONDS)


def test_wait_times_out_naming_the_adapters_not_there_yet() -> None:
    cluster = FakeCluster()
    a = cluster.add("venue-a", admin_state="ENABLED", status="ACTIVE")
    b = cluster.add("venue-b", admin_state="ENABLED", status="CLAIMING",
                    status_detail="no live pod offers connector fix")  # fmt: skip
    clock, lines = Clock(), list[str]()
    client = Client([API], "t0ken", cluster)
    with pytest.raises(OpsError) as caught:
        opscli.wait_for(client, [a, b], "enable", 1, clock=clock, sleep=clock.sleep,
                        out=lines.append)  # fmt: skip
    assert caught.value.message == (
        "timed out after 1s; not ACTIVE yet: venue-b (CLAIMING: no live pod offers connector fix)"
    )
    assert caught.value.exit_code == 1
    assert len(lines) <= 2


def test_a_replica_that_has_not_seen_the_change_does_not_count() -> None:
    cluster = FakeCluster()
    a = cluster.add("venue-a", admin_state="DISABLED", status="INACTIVE", revision=4)
    target = {**a, "revision": 5}  # the bulk answer came from a replica one change ahead
    clock = Clock()
    client = Client([API], "t0ken", cluster)
    with pytest.raises(OpsError, match=r"venue-a \(INACTIVE\)"):
        opscli.wait_for(client, [target], "disable", 0.5, clock=clock, sleep=clock.sleep,
                        out=lambda _: None)  # fmt: skip


def test_progress_that_changes_every_poll_is_printed_at_most_once_a_second() -> None:
    cluster = FakeCluster()
    items = [cluster.add(f"v{i}", admin_state="ENABLED", status="CLAIMING") for i in range(20)]
    clock, lines = Clock(), list[str]()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        arrived = next(a for a in cluster.adapters.values() if a["status"] == "CLAIMING")
        arrived["status"] = "ACTIVE"  # one more each poll: every line differs

    client = Client([API], "t0ken", cluster)
    opscli.wait_for(client, items, "enable", 60, clock=clock, sleep=sleep, out=lines.append)
    assert clock.now == pytest.approx(20 * opscli.POLL_SECONDS)
    assert len(lines) == int(clock.now / opscli.PROGRESS_SECONDS)
