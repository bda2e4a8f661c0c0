"""The replicated entry: a versioned envelope of commands, encoded to bytes for the Raft log.

pysyncobj pickles what a replicated method is called with. An entry is therefore
passed as plain bytes: pickling bytes cannot fail on any replica, and decoding happens
inside the applier, where a command type this replica does not know is caught and
reported instead of wedging pysyncobj's apply loop (a rolling upgrade meets exactly
this: a new replica leads, an old one follows).
"""

from __future__ import annotations

import msgspec

from raftorch.core.model import Command

ENTRY_FORMAT = 1
"""Raised only for a change no older replica could apply correctly; new command types
alone need no new format (an older replica stops at them, see `UndecodableEntryError`)."""


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One Raft entry: an envelope format, an idempotency key, the leader's wall time."""

    format: int
    request_id: str
    at: float
    commands: tuple[Command, ...]


MAX_ENTRY_BYTES = 3 * 1024 * 1024
"""An encoded entry is never larger: pysyncobj must never split it (see raftorch.raft.node)."""


class EntryTooLargeError(ValueError):
    """A plan or batch that would not fit in one entry: callers split their work."""


class UndecodableEntryError(Exception):
    """This replica cannot read a committed entry: it must stop applying (and say so)."""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Entry)


def encode_entry(request_id: str, at: float, commands: tuple[Command, ...]) -> bytes:
    payload = _ENCODER.encode(Entry(ENTRY_FORMAT, request_id, at, commands))
    if len(payload) > MAX_ENTRY_BYTES:
        raise EntryTooLargeError(
            f"a Raft entry of {len(commands)} commands is {len(payload)} bytes, above "
            f"{MAX_ENTRY_BYTES}"
        )
    return payload


def decode_entry(payload: bytes) -> Entry:
    """The entry in `payload`; raises UndecodableEntryError saying what is not understood."""
    try:
        entry = _DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise UndecodableEntryError(f"cannot decode a replicated entry: {exc}") from None
    if entry.format != ENTRY_FORMAT:
        raise UndecodableEntryError(
            f"replicated entry format {entry.format} is not {ENTRY_FORMAT} (this version)"
        )
    return entry
