"""What both sides of the wire share: schemas, header names, error codes, the secret type.

The lowest layer: it imports nothing of `raftorch`, `adapter` or `persistence`, so an
adapter pod and an orchestrator replica agree on the wire without importing each other.
"""

__version__ = "0.1.0"
"""The release of raftorch (orchestrator, pod runtime and this protocol ship together)."""
