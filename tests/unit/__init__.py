"""Unit tests: pure logic, fake clock, no sockets, no sleeps."""
