"""The three Kubernetes API calls the acceptor's owner label needs, with in-cluster credentials.

Read one Pod, list Pods by label selector, JSON-merge-patch one Pod's metadata. The API
server is ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (the kubelet sets
both in every container); the service-account token and CA are read from the mounted
service-account folder. The token is read again for every call: the kubelet rotates
bound tokens (about hourly) and a cached one would start failing. Every call has a
timeout; nothing here retries (the caller does, in the background).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICEACCOUNT_DIR_ENV = "RAFTORCH_FIX_SERVICEACCOUNT_DIR"
"""Overrides the folder (tests; a pod never needs it)."""
REQUEST_TIMEOUT_SECONDS = 3.0
_BODY_LIMIT = 300


class KubeApiError(Exception):
    """A call failed: no answer (status 0), or an answer other than 2xx."""

    def __init__(self, operation: str, status: int, detail: str) -> None:
        super().__init__(f"{operation}: {status or 'no answer'}: {detail}")
        self.status = status


@dataclass(frozen=True, slots=True)
class KubeApi:
    """In-cluster access to the Pods of one namespace (stateless: a session per pass)."""

    base_url: str
    token_file: Path
    ca_file: Path
    namespace: str
    timeout_seconds: float = REQUEST_TIMEOUT_SECONDS

    @classmethod
    def in_cluster(cls, env: Mapping[str, str], namespace: str) -> KubeApi:
        """From the kubelet's variables; ValueError names what is missing."""
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise ValueError("KUBERNETES_SERVICE_HOST/PORT are not set (not in a pod?)")
        folder = Path(env.get(SERVICEACCOUNT_DIR_ENV) or SERVICEACCOUNT_DIR)
        address = f"[{host}]" if ":" in host else host
        return cls(f"https://{address}:{port}", folder / "token", folder / "ca.crt", namespace)

    def session(self) -> aiohttp.ClientSession:
        """A client session for one pass of calls (close it: `async with`)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), timeout=timeout)

    def _pods(self, name: str = "") -> str:
        path = f"{self.base_url}/api/v1/namespaces/{self.namespace}/pods"
        return f"{path}/{name}" if name else path

    async def get_pod(self, http: aiohttp.ClientSession, name: str) -> dict[str, Any]:
        return await self._call(http, "read", "GET", self._pods(name))

    async def list_pods(self, http: aiohttp.ClientSession, selector: str) -> list[dict[str, Any]]:
        query = {"labelSelector": selector}
        found = await self._call(http, "list", "GET", self._pods(), params=query)
        items = found.get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    async def patch_metadata(
        self,
        http: aiohttp.ClientSession,
        operation: str,
        name: str,
        metadata: Mapping[str, Any],
    ) -> None:
        """JSON merge patch (RFC 7386) of one Pod's metadata: a None value deletes a key; a
        ``resourceVersion`` in `metadata` makes it conditional (409 if the Pod changed)."""
        body = json.dumps({"metadata": metadata}).encode()
        headers = {"Content-Type": "application/merge-patch+json"}
        await self._call(http, operation, "PATCH", self._pods(name), data=body, headers=headers)

    async def _call(
        self,
        http: aiohttp.ClientSession,
        operation: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise KubeApiError(operation, 0, f"service-account token: {exc}") from None
        sent = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        sent.update(headers or {})
        try:
            async with http.request(method, url, params=params, data=data, headers=sent) as reply:
                text = await reply.text()
                if reply.status >= 300:
                    detail = " ".join(text.split())[:_BODY_LIMIT]
                    raise KubeApiError(operation, reply.status, detail)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeApiError(operation, 0, str(exc) or type(exc).__name__) from None
        try:
            answer = json.loads(text)
        except ValueError:
            raise KubeApiError(operation, reply.status, "answer is not JSON") from None
        return answer if isinstance(answer, dict) else {}
