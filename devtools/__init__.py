"""Tooling for tests and the demo (a throwaway PostgreSQL); no runtime module imports it."""
