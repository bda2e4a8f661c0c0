"""Cluster manifests: every adapter and artifact of a cluster as one JSON document.

`export_manifest` reads a cluster into a manifest; `parse_manifest` checks a whole
manifest before anything is sent (structure, types, names, modes, base64, sha256);
`import_manifest` applies one additively and idempotently: adapters that exist by
name and artifacts whose (name, sha256) exists as some version are left alone, the
rest is created. The cluster is reached through the small `Api` protocol, so this
module knows nothing of HTTP transports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import sys
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from protocol.values import NAME_RE

MANIFEST_VERSION = 1
MODES = ("single", "active_passive", "scale_out")
ADMIN_STATES = ("ENABLED", "DISABLED")
MAX_INSTANCES = 1000
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TOP_FIELDS = ("raftorch_manifest", "adapters", "artifacts")
_ADAPTER_REQUIRED = ("name", "connector", "mode", "config")
_ADAPTER_FIELDS = (*_ADAPTER_REQUIRED, "instances", "artifacts", "admin_state")
_ARTIFACT_FIELDS = ("name", "version", "media_type", "sha256", "content_base64")
COMPARED_FIELDS = ("connector", "mode", "instances", "config", "artifacts", "admin_state")


class ManifestError(Exception):
    """The manifest is wrong; the message names the place: ``manifest: adapters[2].mode: …``."""

    exit_code = 2  # like a usage error: the input is wrong, nothing was sent

    def __init__(self, path: str, problem: str) -> None:
        self.message = f"manifest: {path}: {problem}" if path else f"manifest: {problem}"
        super().__init__(self.message)


class Api(Protocol):
    """What export and import need from a cluster client; errors are the client's."""

    def get_json(self, path: str) -> Any: ...

    def get_items(self, path: str) -> list[Any]: ...

    def get_bytes(self, path: str) -> bytes: ...

    def post_json(self, path: str, body: Any) -> Any: ...

    def post_bytes(self, path: str, content: bytes, content_type: str) -> Any: ...


@dataclass(frozen=True)
class ManifestAdapter:
    name: str
    connector: str
    mode: str
    instances: int
    config: dict[str, Any]
    artifacts: tuple[str, ...]
    admin_state: str

    def create_body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "connector": self.connector,
            "mode": self.mode,
            "instances": self.instances,
            "config": self.config,
            "artifacts": list(self.artifacts),
        }

    def differences(self, current: Mapping[str, Any]) -> list[str]:
        """The fields in which the cluster's adapter `current` differs from this one."""
        mine = {**self.create_body(), "admin_state": self.admin_state}
        return [f for f in COMPARED_FIELDS if mine[f] != current.get(f)]


@dataclass(frozen=True)
class ManifestArtifact:
    name: str
    version: int
    media_type: str
    sha256: str
    content: bytes


@dataclass(frozen=True)
class Manifest:
    adapters: tuple[ManifestAdapter, ...]
    artifacts: tuple[ManifestArtifact, ...]


# --- validation ---------------------------------------------------------------------


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _object(
    value: object, path: str, required: Sequence[str], known: Sequence[str]
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(path, f"expected an object, got {_type_name(value)}")
    prefix = f"{path}." if path else ""
    for key in value:
        if key not in known:
            raise ManifestError(f"{prefix}{key}", f"unknown field (known: {', '.join(known)})")
    for key in required:
        if key not in value:
            raise ManifestError(f"{prefix}{key}", "missing")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestError(path, f"expected an array, got {_type_name(value)}")
    return value


def _text(value: object, path: str, max_length: int = 128) -> str:
    if not isinstance(value, str):
        raise ManifestError(path, f"expected a string, got {_type_name(value)}")
    if not value or len(value) > max_length:
        raise ManifestError(path, f"must be 1-{max_length} characters, got {value!r}")
    return value


def _name(value: object, path: str) -> str:
    text = _text(value, path)
    if not NAME_RE.fullmatch(text):
        raise ManifestError(path, f"{text!r} is not a valid name (1-128 letters, digits, . _ -)")
    return text


def _integer(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(path, f"expected an integer, got {_type_name(value)}")
    if not low <= value <= high:
        raise ManifestError(path, f"must be {low}-{high}, got {value}")
    return value


def _choice(value: object, path: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ManifestError(path, f"{value!r} is not one of {', '.join(choices)}")
    assert isinstance(value, str)
    return value


def _adapter(value: object, path: str) -> ManifestAdapter:
    raw = _object(value, path, _ADAPTER_REQUIRED, _ADAPTER_FIELDS)
    name = _name(raw["name"], f"{path}.name")
    connector = _text(raw["connector"], f"{path}.connector")
    mode = _choice(raw["mode"], f"{path}.mode", MODES)
    instances = _integer(raw.get("instances", 1), f"{path}.instances", 1, MAX_INSTANCES)
    if mode != "scale_out" and instances != 1:
        raise ManifestError(
            f"{path}.instances", f"must be 1 unless mode is scale_out, got {instances}"
        )
    config = raw["config"]
    if not isinstance(config, dict):
        raise ManifestError(f"{path}.config", f"expected an object, got {_type_name(config)}")
    refs = _list(raw.get("artifacts", []), f"{path}.artifacts")
    artifacts = tuple(_name(r, f"{path}.artifacts[{i}]") for i, r in enumerate(refs))
    admin_state = _choice(raw.get("admin_state", "DISABLED"), f"{path}.admin_state", ADMIN_STATES)
    return ManifestAdapter(name, connector, mode, instances, config, artifacts, admin_state)


def _content(value: object, path: str) -> bytes:
    if not isinstance(value, str):
        raise ManifestError(path, f"expected a string, got {_type_name(value)}")
    try:
        content = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ManifestError(path, "is not valid base64") from None
    if not content:
        raise ManifestError(path, "is empty (the cluster refuses empty artifacts)")
    return content


def _artifact(value: object, path: str) -> ManifestArtifact:
    raw = _object(value, path, _ARTIFACT_FIELDS, _ARTIFACT_FIELDS)
    name = _name(raw["name"], f"{path}.name")
    version = _integer(raw["version"], f"{path}.version", 1, 2**31 - 1)
    media_type = _text(raw["media_type"], f"{path}.media_type", 255)
    sha256 = raw["sha256"]
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ManifestError(f"{path}.sha256", f"expected 64 lowercase hex digits, got {sha256!r}")
    content = _content(raw["content_base64"], f"{path}.content_base64")
    actual = hashlib.sha256(content).hexdigest()
    if actual != sha256:
        raise ManifestError(
            f"{path}.sha256", f"does not match the content (which hashes to {actual})"
        )
    return ManifestArtifact(name, version, media_type, sha256, content)


def _no_duplicates(keys: Sequence[object], path: Callable[[int], str], what: str) -> None:
    seen: dict[object, int] = {}
    for index, key in enumerate(keys):
        if key in seen:
            raise ManifestError(path(index), f"{what} also at index {seen[key]}")
        seen[key] = index


def parse_manifest(data: object) -> Manifest:
    """Check the whole manifest; raise ManifestError naming the first problem's place."""
    raw = _object(data, "", _TOP_FIELDS, _TOP_FIELDS)
    version = raw["raftorch_manifest"]
    if type(version) is not int or version != MANIFEST_VERSION:
        raise ManifestError(
            "raftorch_manifest", f"version {version!r} is not supported (expected 1)"
        )
    adapters = [
        _adapter(a, f"adapters[{i}]") for i, a in enumerate(_list(raw["adapters"], "adapters"))
    ]
    artifacts = [
        _artifact(a, f"artifacts[{i}]") for i, a in enumerate(_list(raw["artifacts"], "artifacts"))
    ]
    _no_duplicates([a.name for a in adapters], lambda i: f"adapters[{i}].name", "the same name is")
    _no_duplicates(
        [(a.name, a.version) for a in artifacts],
        lambda i: f"artifacts[{i}].version",
        "the same name and version are",
    )
    return Manifest(tuple(adapters), tuple(artifacts))


def check_references(manifest: Manifest, on_cluster: Collection[str]) -> None:
    """Every artifact an adapter names must be in the manifest or already on the cluster."""
    available = {a.name for a in manifest.artifacts} | set(on_cluster)
    for i, adapter in enumerate(manifest.adapters):
        for j, ref in enumerate(adapter.artifacts):
            if ref not in available:
                raise ManifestError(
                    f"adapters[{i}].artifacts[{j}]",
                    f"artifact {ref!r} is neither in the manifest nor on the cluster",
                )


def read_manifest(name: str) -> Manifest:
    """Read and check the manifest in file `name` (``-``: stdin)."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError("", f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError("", f"cannot read {name}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError("", f"not valid JSON: {exc}") from None
    return parse_manifest(data)


def write_manifest(manifest: Mapping[str, Any], target: Path) -> None:
    """Write `manifest` to `target` whole or not at all (via a temporary file beside it)."""
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.replace(target)


# --- export and import --------------------------------------------------------------


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def export_manifest(api: Api) -> dict[str, Any]:
    """Every adapter and every version of every artifact, as a version-1 manifest."""
    adapters = [
        {
            "name": a["name"],
            "connector": a["connector"],
            "mode": a["mode"],
            "instances": a["instances"],
            "config": a["config"],
            "artifacts": a["artifacts"],
            "admin_state": a["admin_state"],
        }
        for a in api.get_items("/api/v1/adapters")
    ]
    artifacts = []
    for info in api.get_json("/api/v1/artifacts")["items"]:
        content = api.get_bytes(
            f"/api/v1/artifacts/{_quote(info['name'])}?version={info['version']}"
        )
        artifacts.append(
            {
                "name": info["name"],
                "version": info["version"],
                "media_type": info["media_type"],
                "sha256": hashlib.sha256(content).hexdigest(),
                "content_base64": base64.b64encode(content).decode("ascii"),
            }
        )
    return {"raftorch_manifest": MANIFEST_VERSION, "adapters": adapters, "artifacts": artifacts}


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    differs: dict[str, list[str]] = field(default_factory=dict)
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "adapters": {
                "created": self.created,
                "unchanged": self.unchanged,
                "differs": [{"name": n, "fields": f} for n, f in self.differs.items()],
            },
            "artifacts": {"uploaded": self.uploaded, "skipped": self.skipped},
        }

    def human(self) -> str:
        lines = [f"created {n}" for n in self.created]
        lines += [f"differs {n}: {', '.join(f)} (left as it is)" for n, f in self.differs.items()]
        lines += [f"uploaded artifact {n}" for n in self.uploaded]
        return "\n".join([*lines, self.summary()])

    def summary(self) -> str:
        return (
            f"adapters: {len(self.created)} created, {len(self.unchanged)} unchanged, "
            f"{len(self.differs)} differ (left as they are); artifacts: "
            f"{len(self.uploaded)} uploaded, {len(self.skipped)} skipped (already there)"
        )


def _import_artifacts(
    api: Api, manifest: Manifest, infos: list[dict[str, Any]], report: ImportReport
) -> None:
    present = {(i["name"], i["sha256"]) for i in infos}
    for artifact in sorted(manifest.artifacts, key=lambda a: (a.name, a.version)):
        label = f"{artifact.name} v{artifact.version}"
        if (artifact.name, artifact.sha256) in present:
            report.skipped.append(label)
            continue
        api.post_bytes(
            f"/api/v1/artifacts/{_quote(artifact.name)}", artifact.content, artifact.media_type
        )
        present.add((artifact.name, artifact.sha256))
        report.uploaded.append(label)


def import_manifest(api: Api, manifest: Manifest) -> ImportReport:
    """Create what the cluster lacks; modify nothing that is there. Call parse_manifest first."""
    infos: list[dict[str, Any]] = api.get_json("/api/v1/artifacts")["items"]
    check_references(manifest, {i["name"] for i in infos})
    existing = {a["name"]: a for a in api.get_items("/api/v1/adapters")}
    report = ImportReport()
    _import_artifacts(api, manifest, infos, report)
    to_enable: list[str] = []
    for spec in manifest.adapters:
        current = existing.get(spec.name)
        if current is not None:
            fields = spec.differences(current)
            if fields:
                report.differs[spec.name] = fields
            else:
                report.unchanged.append(spec.name)
            continue
        created = api.post_json("/api/v1/adapters", spec.create_body())
        report.created.append(spec.name)
        if spec.admin_state == "ENABLED":
            to_enable.append(created["id"])
    if to_enable:
        api.post_json("/api/v1/adapters/bulk", {"action": "enable", "ids": to_enable})
    return report
