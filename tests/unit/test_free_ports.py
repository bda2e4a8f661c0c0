"""The test harness's free ports come from below the kernel's ephemeral range."""

from __future__ import annotations

import contextlib
import socket

import pytest

import devtools.postgres
from devtools.postgres import _ephemeral_low, free_ports


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    # Below it, an outgoing connection's source port cannot take one before it is bound.
    assert all(1024 <= port < _ephemeral_low() for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the range narrowed to 64 ports and half of them listened on, every one handed
    out is from the other half."""
    monkeypatch.setattr(devtools.postgres, "BELOW_EPHEMERAL", 64)
    low = _ephemeral_low()
    held = []
    try:
        for port in range(low - 64, low, 2):
            sock = socket.socket()
            with contextlib.suppress(OSError):  # already in use elsewhere: taken anyway
                sock.bind(("127.0.0.1", port))
                sock.listen()
            held.append(sock)
        ports = free_ports(16)
        assert len(set(ports)) == 16
        assert all(port % 2 != low % 2 or not low - 64 <= port < low for port in ports)
    finally:
        for sock in held:
            sock.close()
