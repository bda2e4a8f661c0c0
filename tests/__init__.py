"""The raftorch test suite."""
