"""raftorch: the orchestrator replica, in layers that read top-down as the data flows.

`config` (settings, configuration cache) -> `core` (model, transition tables, replicated
appliers, planner: pure) -> `raft` (pysyncobj node, asyncio bridge) -> `leader` (leader
loop, lease tracking, reporting) -> `api` (HTTP edge, admin, pod API, OpenAPI) -> `ops`
(the replica process, CLI, operator commands, manifests, demo). See docs/architecture.md.
"""

from protocol import __version__

__all__ = ["__version__"]
