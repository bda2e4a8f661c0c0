"""raftorch adapter-pod runtime: agent, connector SDK, built-in connectors."""
