"""Tests against a real PostgreSQL started by the test session."""
