"""Pod API bodies: the one-pass msgpack encoder writes what the two-pass one wrote."""

from __future__ import annotations

import msgpack
import msgspec

from protocol.codec import JSON, MSGPACK, encode
from protocol.pod import Assignment, HeartbeatReply, RegisterReply, StopOrder


def _reply(assignments: int) -> HeartbeatReply:
    return HeartbeatReply(
        term=7, leader="r1", lease_ttl_seconds=3.0, version="12.34", revision=2**40,
        assignments=[
            Assignment(slot=f"adapter-{i}/{i % 3}", adapter_id=f"adapter-{i}", role="ACTIVE",
                       epoch=2**33 + i, connector="tcp-client",
                       config={"host": "127.0.0.1", "port": 9, "nested": [1, -2, 2.5, None,
                               True, "é", {"k": b"x".decode()}]},
                       artifacts=["FIX44"])
            for i in range(25)
        ],
        stop=[StopOrder(slot="adapter-0/0", epoch=3, reason="handoff")],
        unchanged=False,
    )  # fmt: skip


def test_msgpack_answers_are_byte_identical_to_the_two_pass_encoding() -> None:
    values: list[msgspec.Struct] = [
        _reply(25),
        HeartbeatReply(
            term=1,
            leader=None,
            lease_ttl_seconds=3.0,
            version="",
            revision=0,
            assignments=[],
            stop=[],
            unchanged=True,
        ),
        RegisterReply(
            pod_id="pod-1",
            credential="c" * 43,
            lease_ttl_seconds=3.0,
            heartbeat_interval_seconds=1.0,
            term=2,
            leader="r0",
        ),
    ]
    for value in values:
        assert encode(value, MSGPACK) == msgpack.packb(msgspec.to_builtins(value))


def test_json_answers_are_unchanged() -> None:
    value = _reply(2)
    assert encode(value, JSON) == msgspec.json.encode(value)
    assert msgspec.json.decode(encode(value, JSON), type=HeartbeatReply) == value
