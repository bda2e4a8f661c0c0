"""raftorch: the orchestrator replica (Raft state machine, lease planner, HTTP API, CLI)."""

__version__ = "0.1.0"
