"""The C pass that escapes flow-log lines and joins them into PutLogEvents event text."""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
import pytest
from flowlog.cloudwatch._framing import frame_lines

from tests.cloudwatch.flow_lines import line, now_ms


def framed(items: list[bytes], timestamps: list[int] | None = None):
    data = b"".join(item + b"\n" for item in items)
    times = np.array(timestamps or range(len(items)), np.int64)
    starts = np.empty(len(items), np.int64)
    ends = np.empty(len(items), np.int64)
    return frame_lines(data, times, starts, ends), times, starts, ends


def assert_framed_like_orjson(items: list[bytes], timestamps: list[int] | None = None) -> None:
    text, times, starts, ends = framed(items, timestamps)
    for item, start, end in zip(items, starts.tolist(), ends.tolist(), strict=True):
        assert bytes(text[start:end]) == orjson.dumps(item.decode())[1:-1]
    if items:
        body = b'[{"timestamp":%d,"message":"' % times[0] + bytes(text) + b'"}]'
        events = json.loads(body)
        assert [e["message"] for e in events] == [item.decode() for item in items]
        assert [e["timestamp"] for e in events] == times.tolist()


def test_flow_log_lines_become_event_text_with_the_next_lines_time() -> None:
    at = now_ms()
    items = [line(at + i, i).encode() for i in range(200)]
    assert_framed_like_orjson(items, [at + i for i in range(200)])


@pytest.mark.parametrize("special", [b'"', b"\\", b"\x01", b"\t", b"\x7f", "é✓".encode()])
def test_every_length_and_position_is_escaped_like_orjson(special: bytes) -> None:
    # Lines of every length around the 8- and 16-byte steps of the vector path,
    # with the special character at every position.
    items = [
        b"a" * position + special + b"b" * (length - position)
        for length in range(40)
        for position in range(length + 1)
    ]
    assert_framed_like_orjson(items)


def test_random_bytes_are_escaped_like_orjson() -> None:
    chooser = random.Random(7)
    alphabet = [bytes([c]) for c in range(1, 128) if c != ord("\n")] + ["ü".encode(), "€".encode()]
    items = [b"".join(chooser.choices(alphabet, k=chooser.randrange(0, 300))) for _ in range(2000)]
    assert_framed_like_orjson(items, [chooser.randrange(0, 2**62) for _ in items])


def test_control_characters_grow_the_result_sixfold() -> None:
    items = [b"\x01" * 10_000, b"", b"\x1f" * 3]
    assert_framed_like_orjson(items)


def test_no_lines_frame_to_nothing() -> None:
    text, *_ = framed([])
    assert text == bytearray()


@pytest.mark.parametrize(
    ("data", "count", "times", "message"),
    [
        (b"one\ntwo", 2, None, "end with a newline"),
        (b"one\ntwo\n", 1, None, "exactly 1 lines"),
        (b"one\n", 2, None, "exactly 2 lines"),
        (b"one\ntwo\n", 2, [5, -1], "must not be negative"),
    ],
)
def test_inconsistent_input_is_refused(
    data: bytes, count: int, times: list[int] | None, message: str
) -> None:
    timestamps = np.array(times or [0] * count, np.int64)
    with pytest.raises(ValueError, match=message):
        frame_lines(data, timestamps, np.empty(count, np.int64), np.empty(count, np.int64))


def test_position_buffers_must_match_the_timestamps() -> None:
    with pytest.raises(ValueError, match="starts must hold one int64 per line"):
        frame_lines(b"a\n", np.zeros(1, np.int64), np.empty(2, np.int64), np.empty(1, np.int64))
    with pytest.raises(ValueError, match="timestamps must hold"):
        frame_lines(b"a\n", np.zeros(1, np.int32), np.empty(1, np.int64), np.empty(1, np.int64))
