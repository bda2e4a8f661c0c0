"""FIX framing and encoding (adapter/connectors/fix/codec.py), and data dictionary checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adapter.connectors.fix import codec
from adapter.connectors.fix.dictionary import (
    INVALID_MSG_TYPE,
    INVALID_TAG,
    REQUIRED_TAG_MISSING,
    TAG_NOT_DEFINED_FOR_TYPE,
    VALUE_INCORRECT,
    DataDictionary,
)
from protocol.errors import ValidationError

HEADER = codec.Header("FIX.4.4", "US", "VENUE")
FIX44 = Path(sys.prefix) / "share" / "quickfix" / "FIX44.xml"


def order(seq: int, symbol: str = "RAFT") -> bytes:
    body = [(11, f"o{seq}"), (55, symbol), (54, "1"), (60, "20260101-00:00:00"), (40, "1")]
    return codec.encode(HEADER, "D", seq, "20260101-00:00:00.000", body)


def test_encode_writes_length_and_checksum_that_the_framer_accepts() -> None:
    raw = order(7)
    assert raw.startswith(b"8=FIX.4.4\x019=") and raw.endswith(b"\x01")
    [frame] = codec.Framer().feed(raw)
    message = codec.decode(frame)  # type: ignore[arg-type]
    assert (message.msg_type, message.seq_num, message.get(55)) == ("D", 7, "RAFT")
    assert message.body() == [
        (11, "o7"),
        (55, "RAFT"),
        (54, "1"),
        (60, "20260101-00:00:00"),
        (40, "1"),
    ]


def test_frames_split_anywhere_are_put_back_together() -> None:
    stream = b"".join(order(i) for i in range(1, 6))
    framer = codec.Framer()
    frames = []
    for i in range(0, len(stream), 7):
        frames += framer.feed(stream[i : i + 7])
    assert [codec.decode(f).seq_num for f in frames] == [1, 2, 3, 4, 5]  # type: ignore[arg-type]


def test_a_bad_checksum_or_length_is_dropped_and_the_next_frame_still_arrives() -> None:
    bad_sum = order(1).replace(b"RAFT", b"RAFU")
    bad_length = order(2).replace(b"9=", b"9=1", 1)
    out = codec.Framer().feed(b"noise" + bad_sum + bad_length + order(3))
    garbled = [o for o in out if isinstance(o, codec.Garbled)]
    good = [codec.decode(o) for o in out if isinstance(o, bytes)]
    assert [m.seq_num for m in good] == [3]
    assert any("CheckSum" in str(g) for g in garbled)
    assert any("bytes before BeginString" in str(g) for g in garbled)


def test_a_possdup_resend_carries_its_original_sending_time() -> None:
    raw = codec.encode(
        HEADER,
        "D",
        4,
        "20260102-00:00:00.000",
        [(11, "x")],
        orig_sending_time="20260101-00:00:00.000",
    )
    message = codec.decode(raw)
    assert message.flag(codec.POSS_DUP_FLAG) and message.get(122) == "20260101-00:00:00.000"


@pytest.fixture(scope="module")
def fix44() -> DataDictionary:
    return DataDictionary.parse(FIX44.read_bytes())


def test_dictionary_accepts_a_valid_order(fix44: DataDictionary) -> None:
    assert fix44.version == "FIX.4.4"
    body = [(11, "o1"), (55, "RAFT"), (54, "1"), (60, "20260101-00:00:00"), (40, "1")]
    assert fix44.check("D", body) is None


@pytest.mark.parametrize(
    ("msg_type", "body", "reason"),
    [
        ("D", [(55, "RAFT"), (54, "1"), (60, "t"), (40, "1")], REQUIRED_TAG_MISSING),
        ("D", [(11, "o"), (54, "Q"), (60, "t"), (40, "1")], VALUE_INCORRECT),
        ("D", [(11, "o"), (54, "1"), (60, "t"), (40, "1"), (99999, "x")], INVALID_TAG),
        ("D", [(11, "o"), (54, "1"), (60, "t"), (40, "1"), (150, "0")], TAG_NOT_DEFINED_FOR_TYPE),
        ("ZZ", [(11, "o")], INVALID_MSG_TYPE),
    ],
)
def test_dictionary_names_what_is_wrong(
    fix44: DataDictionary, msg_type: str, body: list[tuple[int, str]], reason: int
) -> None:
    problem = fix44.check(msg_type, body)
    assert problem is not None and problem.reason == reason, problem


def test_not_a_dictionary_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="artifact 'x' is not XML"):
        DataDictionary.parse(b"{}", "artifact 'x'")
    with pytest.raises(ValidationError, match="is not a QuickFIX data dictionary"):
        DataDictionary.parse(b"<fix/>")
