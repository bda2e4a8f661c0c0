"""A stand-in Kubernetes API server on 127.0.0.1 for the acceptor owner labels.

It serves the three Pod calls the pods make (read one, list by label selector, JSON merge
patch with an optional resourceVersion precondition) over real HTTPS (a throwaway CA and
server certificate made with `cryptography`), checks the bearer token, records every
request, and can be made to fail (`mode = "down"`: 503) or hang (`mode = "hang"`).
`environ()` is what a pod in that cluster would see: the kubelet's variables and a
service-account folder with the token and the CA.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapter.connectors.fix.kubeapi import SERVICEACCOUNT_DIR_ENV

NAMESPACE = "trading"
TOKEN = "sa-token-for-the-tests"


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, False)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    return builder.sign(issuer_key or key, hashes.SHA256())


def write_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _certificate("test kubernetes CA", ca_key, None, None)
    server = _certificate("kubernetes", server_key, ca, ca_key)
    paths = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass
class FakeKubernetes:
    root: Path
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    mode: str = "up"  # "up", "down" (503), "hang" (no answer until `mode` changes)
    port: int = 0
    _version: int = 100
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add_pod(self, name: str, labels: dict[str, str] | None = None,
                annotations: dict[str, str] | None = None) -> None:  # fmt: skip
        self._version += 1
        self.pods[name] = {
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "resourceVersion": str(self._version),
                "labels": {"app.kubernetes.io/component": "adapter", **(labels or {})},
                "annotations": dict(annotations or {}),
            }
        }

    def labels(self, pod: str) -> dict[str, str]:
        return dict(self.pods[pod]["metadata"].get("labels") or {})

    def annotations(self, pod: str) -> dict[str, str]:
        return dict(self.pods[pod]["metadata"].get("annotations") or {})

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self._changed.set()

    def patches(self) -> list[tuple[str, Any]]:
        """(pod, body) of every PATCH that was answered 200, in order."""
        return [(p.rsplit("/", 1)[1], b) for m, p, q, b in self.requests if m == "PATCH 200"]

    async def start(self) -> dict[str, str]:
        ca, cert, key = write_tls(self.root / "tls")
        account = self.root / "serviceaccount"
        account.mkdir(parents=True, exist_ok=True)
        (account / "token").write_text(TOKEN + "\n")
        (account / "ca.crt").write_bytes(ca.read_bytes())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._list)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", self._get)
        app.router.add_patch("/api/v1/namespaces/{ns}/pods/{name}", self._patch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        await web.SockSite(self._runner, listener, ssl_context=context).start()
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.port),
            SERVICEACCOUNT_DIR_ENV: str(account),
        }

    async def stop(self) -> None:
        self.set_mode("up")  # release hanging handlers
        if self._runner is not None:
            await self._runner.cleanup()

    async def _gate(self, request: web.Request) -> None:
        """Authentication and the failure modes, before any handler."""
        while self.mode == "hang":
            self._changed.clear()
            await self._changed.wait()
        if self.mode == "down":
            raise web.HTTPServiceUnavailable(text='{"kind": "Status", "code": 503}')
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized(text='{"kind": "Status", "code": 401}')
        if request.match_info["ns"] != NAMESPACE:
            raise web.HTTPForbidden(text='{"kind": "Status", "code": 403}')

    def _record(self, request: web.Request, status: int, body: Any = None) -> None:
        self.requests.append((f"{request.method} {status}", request.path, request.query_string,
                              body))  # fmt: skip

    async def _answer(self, request: web.Request, body: Any = None) -> None:
        try:
            await self._gate(request)
        except web.HTTPException as exc:
            self._record(request, exc.status, body)
            raise

    async def _get(self, request: web.Request) -> web.Response:
        await self._answer(request)
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            self._record(request, 404)
            raise web.HTTPNotFound(text='{"kind": "Status", "code": 404}')
        self._record(request, 200)
        return web.json_response(pod)

    async def _list(self, request: web.Request) -> web.Response:
        await self._answer(request)
        wanted = dict(
            part.split("=", 1) for part in request.query.get("labelSelector", "").split(",") if part
        )
        items = [
            pod
            for pod in self.pods.values()
            if all(pod["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]
        self._record(request, 200)
        return web.json_response({"kind": "PodList", "items": items})

    async def _patch(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        await self._answer(request, body)
        if request.content_type != "application/merge-patch+json":
            self._record(request, 415, body)
            raise web.HTTPUnsupportedMediaType(text='{"kind": "Status", "code": 415}')
        name = request.match_info["name"]
        pod = self.pods.get(name)
        if pod is None:
            self._record(request, 404, body)
            raise web.HTTPNotFound(text='{"kind": "Status", "code": 404}')
        precondition = body.get("metadata", {}).get("resourceVersion")
        if precondition is not None and precondition != pod["metadata"]["resourceVersion"]:
            self._record(request, 409, body)
            raise web.HTTPConflict(text='{"kind": "Status", "code": 409}')
        self._version += 1
        patched = merge_patch(pod, body)
        patched["metadata"]["resourceVersion"] = str(self._version)
        self.pods[name] = patched
        self._record(request, 200, body)
        return web.json_response(patched)
