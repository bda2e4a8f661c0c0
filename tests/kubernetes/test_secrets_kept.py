"""Generated secrets survive upgrades: real Helm's `lookup` reads the live Secret and the chart
renders its values again instead of new random ones.

There is no cluster here, so Helm talks to a stand-in Kubernetes API on 127.0.0.1 that answers
the two calls a cluster-aware render makes for `lookup` (the v1 resource list, one GET of the
Secret); everything else is Helm's own code.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import helm_python as helm
import pytest
import yaml

from tests.kubernetes.chart import FULLNAME, NAMESPACE, RELEASE, REQUIRED, chart

SECRET_PATH = f"/api/v1/namespaces/{NAMESPACE}/secrets/{FULLNAME}-auth"
LIVE = {
    "raft-secret": "raft-from-the-first-install",
    "admin-token": "admin-from-the-first-install",
    "pod-bootstrap-token": "pods-from-the-first-install",
}


class StandInApi(BaseHTTPRequestHandler):
    """Answers Helm's discovery of v1 and a GET of the auth Secret (when one is stored)."""

    stored: ClassVar[dict[str, Any] | None] = None
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        type(self).requests.append(path)
        if path == "/api/v1":
            self._answer(
                200,
                {
                    "kind": "APIResourceList",
                    "groupVersion": "v1",
                    "resources": [
                        {
                            "name": "secrets",
                            "singularName": "secret",
                            "namespaced": True,
                            "kind": "Secret",
                            "verbs": ["get", "list"],
                        }
                    ],
                },
            )
        elif path == SECRET_PATH and self.stored is not None:
            self._answer(200, self.stored)
        else:
            self._answer(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                },
            )

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def cluster_config() -> Iterator[helm.Config]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": url}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "namespace": NAMESPACE}}],
            "users": [{"name": "test", "user": {}}],
        }
    )
    StandInApi.stored, StandInApi.requests = None, []
    try:
        with helm.Config(kubeconfig_content=kubeconfig, namespace=NAMESPACE) as config:
            yield config
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def _rendered_auth(config: helm.Config, *, upgrade: bool) -> dict[str, str]:
    manifests = config.render(
        chart(),
        REQUIRED,
        name=RELEASE,
        namespace=NAMESPACE,
        is_install=not upgrade,
        is_upgrade=upgrade,
    )
    [auth] = [
        doc
        for doc in yaml.safe_load_all(manifests["raftorch/templates/secrets.yaml"])
        if doc and doc["metadata"]["name"] == f"{FULLNAME}-auth"
    ]
    return {key: base64.b64decode(value).decode() for key, value in auth["data"].items()}


def test_an_upgrade_keeps_the_secrets_the_first_install_generated(
    cluster_config: helm.Config,
) -> None:
    StandInApi.stored = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": f"{FULLNAME}-auth", "namespace": NAMESPACE},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in LIVE.items()},
    }
    assert _rendered_auth(cluster_config, upgrade=True) == LIVE
    assert SECRET_PATH in StandInApi.requests  # Helm did look the live Secret up


def test_a_first_install_generates_fresh_strong_secrets(cluster_config: helm.Config) -> None:
    first = _rendered_auth(cluster_config, upgrade=False)
    assert SECRET_PATH in StandInApi.requests
    assert set(first) == set(LIVE) and not set(first.values()) & set(LIVE.values())
    assert all(len(value) == 48 and value.isalnum() for value in first.values())
    assert len(set(first.values())) == 3
