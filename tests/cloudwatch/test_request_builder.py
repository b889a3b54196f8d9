"""Request bodies and batches: timestamps, escaping, and every PutLogEvents limit."""

from __future__ import annotations

import datetime
import json
import random
import time
from pathlib import Path

import botocore.session
import numpy as np
import pytest
from botocore.serialize import create_serializer

from flowlog.cloudwatch.limits import (
    EVENT_OVERHEAD_BYTES,
    HOUR_MS,
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    check_put_log_events,
)
from flowlog.cloudwatch.request_builder import (
    TRUNCATION_MARKER,
    Batch,
    RequestBuilder,
    parse_timestamps,
    timestamp_of_line,
)
from flowlog.cloudwatch.tail import Block, LogFile
from tests.cloudwatch.conftest import metric_delta
from tests.cloudwatch.flow_lines import iso, line, lines, now_ms, text

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
GROUP, STREAM = "/aws/eks/test/cluster", "aws-network-policy-agent-audit-ip-10-0-0-1"
FILE = LogFile(Path("network-policy-agent.log"), "f1", (0, 0))


def block_of(items: list[str], file: LogFile = FILE, start: int = 0) -> Block:
    data = text(items)
    return Block(file, start, data, start + len(data))


def all_batches(*blocks: Block, at_ms: int | None = None) -> list[Batch]:
    builder = RequestBuilder(GROUP, STREAM)
    batches = []
    for block in blocks:
        builder.add(block, at_ms)
        while batch := builder.complete_batch():
            batches.append(batch)
    while batch := builder.next_batch():
        batches.append(batch)
    return batches


def decoded(batch: Batch) -> dict:
    assert batch.body is not None
    return json.loads(batch.body)


def messages(batches: list[Batch]) -> list[str]:
    return [e["message"] for b in batches if b.body for e in decoded(b)["logEvents"]]


def botocore_body(events: list[dict]) -> dict:
    """What botocore itself would send for these events."""
    model = botocore.session.get_session().get_service_model("logs")
    request = create_serializer("json").serialize_to_request(
        {"logGroupName": GROUP, "logStreamName": STREAM, "logEvents": events},
        model.operation_model("PutLogEvents"),
    )
    return json.loads(request["body"])


# --- timestamps -----------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        "2026-11-22T05:00:00.123Z",
        "2000-02-29T23:59:59.999Z",
        "2024-02-29T00:00:00.000Z",
        "2026-12-31T23:59:59.999Z",
        "2100-03-01T12:34:56.789Z",
        "1970-01-01T00:00:00.000Z",
        "1969-12-31T23:59:59.999Z",
        "0001-03-01T00:00:00.000Z",
    ],
)
def test_timestamps_are_parsed_like_the_standard_library(moment: str) -> None:
    data = (line(0, 1).replace(iso(0), moment) + "\n").encode()
    expected = datetime.datetime.fromisoformat(moment.replace("Z", "+00:00"))
    buffer = np.frombuffer(data, np.uint8)
    parsed_ms, parsed = parse_timestamps(buffer, np.array([0]), np.array([len(data) - 1]))
    assert parsed.tolist() == [True]
    assert parsed_ms.tolist() == [round(expected.timestamp() * 1000)]


def test_a_block_of_random_times_is_parsed_like_the_standard_library() -> None:
    chooser = random.Random(3)
    first = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)
    span_ms = int((datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC) - first).total_seconds())
    moments = [
        first + datetime.timedelta(milliseconds=chooser.randrange(span_ms * 1000))
        for _ in range(5000)
    ]
    texts = [f"{m.year:04d}-{m:%m-%dT%H:%M:%S}.{m.microsecond // 1000:03d}Z" for m in moments]
    items = [line(0, index).replace(iso(0), text) for index, text in enumerate(texts)]
    data = "".join(item + "\n" for item in items).encode()
    lengths = np.array([len(item) for item in items])
    starts = np.cumsum(lengths + 1) - lengths - 1
    parsed_ms, parsed = parse_timestamps(np.frombuffer(data, np.uint8), starts, lengths)
    assert parsed.all()
    expected = [round((m - EPOCH).total_seconds() * 1000) for m in moments]
    assert parsed_ms.tolist() == expected


@pytest.mark.parametrize(
    "bad",
    [
        '{"level":"warn","timestamp":"2026-11-22T05:00:00.123Z","msg":"x"}',
        '{"level":"info","timestamp":"2026-13-22T05:00:00.123Z","msg":"x"}',
        '{"level":"info","timestamp":"2026-11-22T25:00:00.123Z","msg":"x"}',
        '{"level":"info","timestamp":"2026-11-22 05:00:00.123Z","msg":"x"}',
        '{"level":"info","timestamp":"2026-11-2X05:00:00.123Z","msg":"x"}',
        '{"level":"info","timestamp":"2026-11-22T05:00:00.123+00:00"}',
        "short",
    ],
)
def test_lines_in_another_shape_are_not_parsed_in_bulk(bad: str) -> None:
    data = (bad + "\n").encode()
    buffer = np.frombuffer(data, np.uint8)
    _, parsed = parse_timestamps(buffer, np.array([0]), np.array([len(data) - 1]))
    assert parsed.tolist() == [False]


def test_other_json_lines_have_their_time_read_one_by_one() -> None:
    assert timestamp_of_line(b'{"msg":"x","timestamp":"2026-11-22T05:00:00.5+01:00"}') == (
        round(datetime.datetime(2026, 11, 22, 4, 0, 0, 500000, datetime.UTC).timestamp() * 1000)
    )
    assert timestamp_of_line(b'{"ts":1795300000.25,"msg":"x"}') == 1_795_300_000_250
    assert timestamp_of_line(b'{"msg":"no time"}') is None
    assert timestamp_of_line(b"not json") is None


def test_each_event_carries_the_flow_time_of_its_line() -> None:
    start = now_ms() - HOUR_MS
    items = lines(50, start_ms=start, step_ms=1000, aws_every=3)
    [batch] = all_batches(block_of(items))
    events = decoded(batch)["logEvents"]
    assert [e["timestamp"] for e in events] == [start + i * 1000 for i in range(50)]
    assert [e["message"] for e in events] == items


def test_a_line_without_a_time_is_sent_with_the_time_it_was_read() -> None:
    untimed = metric_delta("flowlog_cloudwatch_events_untimed_total")
    at = now_ms()
    [batch] = all_batches(block_of(['{"msg":"no time here"}']), at_ms=at)
    assert decoded(batch)["logEvents"] == [{"timestamp": at, "message": '{"msg":"no time here"}'}]
    assert untimed() == 1


# --- bodies --------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [
        lines(300, aws_every=4),
        [line(now_ms(), 1).replace("frontend-abc", "naïve-pod-ü-日本")],
        [line(now_ms(), 2).replace("frontend-abc", 'back\\slash \\"quoted\\"')],
        [line(now_ms(), 3).replace("frontend-abc", "tab\there\rand\x01control")],
        [line(now_ms(), 4).replace("frontend-abc", "del\x7fbyte")],
        [line(now_ms() - 60_000, 5), '{"plain":"json"} with text after'],
    ],
    ids=["flow-lines", "non-ascii", "backslashes", "control-characters", "del", "other-json"],
)
def test_body_is_exactly_what_botocore_would_send(items: list[str]) -> None:
    [batch] = all_batches(block_of(items))
    body = decoded(batch)
    assert body == botocore_body(body["logEvents"])
    assert [e["message"] for e in body["logEvents"]] == items
    assert check_put_log_events(body) == []
    assert batch.events == len(items)
    assert batch.message_bytes == sum(len(item.encode()) for item in items)


def test_invalid_utf8_is_sent_as_replacement_characters() -> None:
    data = text(lines(2))[:-1].replace(b"frontend", b"front\xffend") + b"\n"
    [batch] = all_batches(Block(FILE, 0, data, len(data)))
    assert "front\ufffdend" in decoded(batch)["logEvents"][1]["message"]
    # Two newlines are not part of any message; each \xff became three bytes.
    assert batch.message_bytes == len(data) - 2 + 2 * 2


# --- the limits ----------------------------------------------------------------


def test_batches_hold_at_most_10000_events() -> None:
    start = now_ms() - HOUR_MS
    items = [f'{{"level":"info","timestamp":"{iso(start)}","n":{i}}}' for i in range(25_000)]
    batches = all_batches(block_of(items))
    assert [b.events for b in batches] == [10_000, 10_000, 5_000]
    assert messages(batches) == items


def test_batches_are_filled_to_the_byte_limit_counting_26_per_event() -> None:
    items = lines(12_000)
    batches = all_batches(block_of(items))
    sent = 0
    for batch in batches:
        size = batch.message_bytes + EVENT_OVERHEAD_BYTES * batch.events
        assert size <= MAX_BATCH_BYTES
        assert check_put_log_events(decoded(batch)) == []
        sent += batch.events
        if sent < len(items):  # full: the next line would not have fitted
            assert size + len(items[sent]) + EVENT_OVERHEAD_BYTES > MAX_BATCH_BYTES
    assert messages(batches) == items


def test_a_batch_can_be_exactly_at_the_byte_limit() -> None:
    start = now_ms() - HOUR_MS
    head = f'{{"level":"info","timestamp":"{iso(start)}","pad":"'
    size = MAX_BATCH_BYTES // 4 - EVENT_OVERHEAD_BYTES
    items = [head + "x" * (size - len(head) - 2) + '"}'] * 5
    batches = all_batches(block_of(items))
    assert [b.events for b in batches] == [4, 1]
    assert batches[0].message_bytes + 4 * EVENT_OVERHEAD_BYTES == MAX_BATCH_BYTES


def test_a_batch_ends_where_time_goes_backwards() -> None:
    start = now_ms() - HOUR_MS
    items = lines(10, start_ms=start) + lines(10, start_ms=start - 5000, first_number=10)
    batches = all_batches(block_of(items))
    assert [b.events for b in batches] == [10, 10]
    for batch in batches:
        stamps = [e["timestamp"] for e in decoded(batch)["logEvents"]]
        assert stamps == sorted(stamps)


def test_a_batch_spans_at_most_24_hours() -> None:
    start = now_ms() - 13 * 24 * HOUR_MS
    items = lines(31, start_ms=start, step_ms=HOUR_MS)  # 30 hours
    batches = all_batches(block_of(items))
    assert [b.events for b in batches] == [25, 6]  # hour 0 to hour 24 inclusive, then the rest
    for batch in batches:
        assert check_put_log_events(decoded(batch)) == []


def test_an_oversized_line_is_truncated_with_a_marker_and_counted() -> None:
    truncated = metric_delta("flowlog_cloudwatch_events_truncated_total")
    big = line(now_ms(), 1)[:-1] + ',"pad":"' + "y" * (2 * MAX_BATCH_BYTES) + '"}'
    items = [line(now_ms(), 0), big, line(now_ms(), 2)]
    batches = all_batches(block_of(items))
    sent = messages(batches)
    assert sent[0] == items[0] and sent[2] == items[2]
    assert sent[1].endswith(TRUNCATION_MARKER)
    assert len(sent[1].encode()) == MAX_MESSAGE_BYTES
    assert big.startswith(sent[1].removesuffix(TRUNCATION_MARKER))
    assert truncated() == 1
    for batch in batches:
        assert check_put_log_events(decoded(batch)) == []


def test_events_too_old_too_new_or_empty_are_counted_not_sent() -> None:
    old = metric_delta("flowlog_cloudwatch_events_skipped_total", reason="too_old")
    new = metric_delta("flowlog_cloudwatch_events_skipped_total", reason="too_new")
    empty = metric_delta("flowlog_cloudwatch_events_skipped_total", reason="empty")
    now = now_ms()
    good = lines(4, start_ms=now - HOUR_MS)
    items = [
        good[0],
        line(now - 15 * 24 * HOUR_MS, 100),
        good[1],
        "",
        line(now + 3 * HOUR_MS, 101),
        good[2],
        good[3],
        line(now + 3 * HOUR_MS, 102),
    ]
    block = block_of(items)
    batches = all_batches(block, at_ms=now)
    assert messages(batches) == good
    assert (old(), new(), empty()) == (1, 2, 1)
    # What was skipped is acknowledged with the batch that follows it.
    assert batches[-1].position.offset == block.end


def test_a_block_of_nothing_sendable_is_still_acknowledged() -> None:
    now = now_ms()
    block = block_of(lines(5, start_ms=now - 20 * 24 * HOUR_MS))
    [batch] = all_batches(block, at_ms=now)
    assert (batch.body, batch.events, batch.position.offset) == (None, 0, block.end)


def test_batches_join_blocks_and_files_and_acknowledge_the_last_line_sent() -> None:
    start = now_ms() - HOUR_MS
    first = lines(3, start_ms=start)
    second = lines(3, start_ms=start + 10, first_number=3)
    other_file = LogFile(Path("network-policy-agent.log"), "f2", (1, 0))
    builder = RequestBuilder(GROUP, STREAM)
    builder.add(block_of(first))
    assert builder.complete_batch() is None  # could still grow
    builder.add(block_of(second, file=other_file, start=100))
    assert builder.complete_batch() is None
    batch = builder.next_batch()
    assert batch is not None and messages([batch]) == first + second
    assert (batch.position.file, batch.position.offset) == (other_file, 100 + len(text(second)))
    assert builder.next_batch() is None


def test_pending_events_report_their_age_for_the_flush_deadline() -> None:
    start = now_ms() - HOUR_MS
    builder = RequestBuilder(GROUP, STREAM)
    assert builder.oldest_pending is None
    builder.add(block_of(lines(2, start_ms=start)))
    read_at, first_ms = builder.oldest_pending
    assert read_at <= time.monotonic()
    assert first_ms == start and builder.pending_events == 2
    assert builder.pending_bytes == len(text(lines(2, start_ms=start))) - 2 + 2 * 26
