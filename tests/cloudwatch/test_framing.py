"""The C passes that find line ends and write PutLogEvents request bodies."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest
from flowlog.cloudwatch._framing import frame_events, line_ends

from tests.cloudwatch.flow_lines import line, now_ms

HEAD = b'{"logGroupName":"/aws/eks/test/cluster","logStreamName":"node","logEvents":['


def expected_body(events: list[tuple[int, bytes]]) -> bytes:
    """The body orjson writes for the same request (and botocore would send)."""
    return orjson.dumps(
        {
            "logGroupName": "/aws/eks/test/cluster",
            "logStreamName": "node",
            "logEvents": [
                {"timestamp": time, "message": message.decode()} for time, message in events
            ],
        }
    )


def part_of(
    items: list[bytes], times: list[int]
) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """A block of the lines and every line an event."""
    data = b"".join(item + b"\n" for item in items)
    lengths = np.array([len(item) for item in items], np.int64)
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    return data, starts, lengths, np.array(times, np.int64)


def assert_framed_like_orjson(items: list[bytes], times: list[int] | None = None) -> None:
    times = list(range(len(items))) if times is None else times
    body = frame_events(HEAD, [part_of(items, times)])
    assert body == expected_body(list(zip(times, items, strict=True)))


def test_flow_log_lines_become_events_with_their_times() -> None:
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


def test_control_characters_grow_the_body_sixfold() -> None:
    items = [b"\x01" * 10_000, b"", b"\x1f" * 3]
    assert_framed_like_orjson(items)


def test_events_are_taken_from_several_blocks_skipping_lines_between() -> None:
    at = now_ms()
    first = [line(at, i).encode() for i in range(5)]
    second = [line(at + 1, 10 + i).encode() for i in range(3)]
    data, starts, lengths, times = part_of(first, [at] * 5)
    keep = [0, 2, 3]  # lines 1 and 4 are skipped
    parts = [
        (data, starts[keep], lengths[keep], times[keep]),
        part_of(second, [at + 1] * 3),
    ]
    body = frame_events(HEAD, parts)
    events = [(at, first[i]) for i in keep] + [(at + 1, item) for item in second]
    assert body == expected_body(events)


def test_no_events_make_an_empty_event_array() -> None:
    assert frame_events(HEAD, []) == HEAD + b"]}"
    assert frame_events(HEAD, [part_of([], [])]) == HEAD + b"]}"


def test_line_ends_are_every_newline() -> None:
    chooser = random.Random(3)
    for data in [b"", b"no newline", b"\n", b"\n" * 1000, b"a\nbb\n\nccc\n"] + [
        bytes(chooser.choice(b"ab\n") for _ in range(chooser.randrange(0, 5000))) for _ in range(50)
    ]:
        found = np.frombuffer(line_ends(data), np.int64)
        assert found.tolist() == [i for i, byte in enumerate(data) if byte == ord("\n")]


@pytest.mark.parametrize(
    ("starts", "lengths", "times", "message"),
    [
        ([0, 6], [3, 3], [1, 2], "event 1 lies outside its messages"),
        ([-1], [2], [1], "event 0 lies outside"),
        ([0], [-1], [1], "event 0 lies outside"),
        ([0, 4], [3, 3], [5, -1], "must not be negative"),
        ([0, 4], [3], [5, 6], "lengths must hold 2 int64s"),
    ],
)
def test_inconsistent_parts_are_refused(
    starts: list[int], lengths: list[int], times: list[int], message: str
) -> None:
    arrays = [np.array(values, np.int64) for values in (starts, lengths, times)]
    part = (b"one\ntwo\n", *arrays)
    with pytest.raises(ValueError, match=message):
        frame_events(HEAD, [part])


def test_buffers_must_hold_int64s() -> None:
    part = (b"a\n", np.zeros(1, np.int64), np.ones(1, np.int64), np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="timestamps must hold"):
        frame_events(HEAD, [part])
