"""PostgreSQL access for raftorch: migrations, repositories, change feed, fenced session state."""
