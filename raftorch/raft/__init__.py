"""Raft replication: the hardened pysyncobj node and the one bridge to asyncio."""
