"""The OpenAPI document of a whole replica covers exactly its routes (admin, pod, probes)."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from raftorch.api.app import build_app
from raftorch.api.openapi import app_routes
from raftorch.config import config_from_mapping
from raftorch.ops.replica import Orchestrator
from tests.component.raftcluster import free_ports


async def test_document_matches_every_route_of_the_replica_app(tmp_path: Path) -> None:
    [raft_port] = free_ports(1)
    config = config_from_mapping(
        {
            "node": {"data_dir": str(tmp_path)},
            "raft": {"bind": f"127.0.0.1:{raft_port}", "insecure_dev_mode": True},
        }
    )
    service = Orchestrator(config)
    service._build()
    try:
        app = build_app(service.context, service.pods, ready=service.ready)
        async with TestClient(TestServer(app)) as client:
            answer = await client.get("/api/openapi.json")
            assert answer.status == 200
            document = await answer.json()
        documented = {
            (method.upper(), path) for path, ops in document["paths"].items() for method in ops
        }
        assert documented == app_routes(app)
        pod_ops = document["paths"]["/pod/v1/heartbeat"]["post"]
        assert "application/msgpack" in pod_ops["requestBody"]["content"]
    finally:
        service.node.destroy()
