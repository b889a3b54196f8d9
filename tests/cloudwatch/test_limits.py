"""The PutLogEvents limits checker: every breach is found, a valid call passes."""

from __future__ import annotations

from flowlog.cloudwatch.limits import (
    EVENT_OVERHEAD_BYTES,
    HOUR_MS,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    check_put_log_events,
    measure_put_log_events,
)

NOW_MS = 1_795_000_000_000


def body(events: list[tuple[int, str]]) -> dict:
    return {
        "logGroupName": "/aws/eks/test/cluster",
        "logStreamName": "aws-network-policy-agent-audit-node",
        "logEvents": [{"timestamp": ts, "message": message} for ts, message in events],
    }


def test_a_call_within_every_limit_passes() -> None:
    events = [(NOW_MS - 1000 + i, f"line {i}") for i in range(100)]
    assert check_put_log_events(body(events), at_ms=NOW_MS) == []


def test_exactly_at_the_count_and_byte_limits_passes() -> None:
    size = MAX_BATCH_BYTES // MAX_BATCH_EVENTS - EVENT_OVERHEAD_BYTES
    events = [(NOW_MS, "x" * size)] * MAX_BATCH_EVENTS
    assert check_put_log_events(body(events), at_ms=NOW_MS) == []
    one_call = [(NOW_MS, "x" * (MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES))]
    assert check_put_log_events(body(one_call), at_ms=NOW_MS) == []


def test_too_many_events() -> None:
    problems = check_put_log_events(body([(NOW_MS, "x")] * 10_001), at_ms=NOW_MS)
    assert problems == ["10001 events in one call (limit 10000)"]


def test_too_many_bytes_counts_26_per_event() -> None:
    # 1,048,576 bytes of messages alone fit; with 26 bytes per event they do not.
    events = [(NOW_MS, "x" * 1024)] * 1024
    assert check_put_log_events(body(events), at_ms=NOW_MS) == [
        f"{1024 * (1024 + 26)} bytes counting 26 per event (limit 1048576)"
    ]


def test_utf8_bytes_are_counted_not_characters() -> None:
    events = [(NOW_MS, "é" * 600_000)]  # 1,200,000 bytes
    problems = check_put_log_events(body(events), at_ms=NOW_MS)
    assert "1 events message over 1048576 bytes (first: logEvents[0])" in problems


def test_a_call_is_measured_as_the_byte_limit_counts_it() -> None:
    events = [(NOW_MS, "é" * 10), (NOW_MS + 1, "line")]  # 20 and 4 UTF-8 bytes
    assert measure_put_log_events(body(events), at_ms=NOW_MS) == ([], 20 + 4 + 2 * 26)


def test_events_out_of_order_and_spanning_more_than_a_day() -> None:
    events = [(NOW_MS - 30 * HOUR_MS, "a"), (NOW_MS, "b"), (NOW_MS - HOUR_MS, "c")]
    assert check_put_log_events(body(events), at_ms=NOW_MS) == [
        "1 events not in chronological order (first: logEvents[2])",
        "events span 30.0 hours (limit 24)",
    ]


def test_events_too_old_or_too_new() -> None:
    events = [(NOW_MS - 15 * 24 * HOUR_MS, "old"), (NOW_MS + 3 * HOUR_MS, "new")]
    problems = check_put_log_events(body(events), at_ms=NOW_MS)
    assert "1 events older than 14 days (first: logEvents[0])" in problems
    assert "1 events more than 2 hours ahead (first: logEvents[1])" in problems


def test_missing_names_and_empty_messages() -> None:
    assert check_put_log_events({"logEvents": []}) == [
        "logGroupName: missing or empty",
        "logStreamName: missing or empty",
        "logEvents: missing or empty",
    ]
    problems = check_put_log_events(body([(NOW_MS, "")]), at_ms=NOW_MS)
    assert problems == ["1 events message missing or empty (first: logEvents[0])"]


def test_breaches_are_listed_in_the_order_the_events_show_them() -> None:
    events = body([(NOW_MS, "a"), (NOW_MS, "b"), (NOW_MS - 1, "ü")])
    events["logEvents"][1]["timestamp"] = "soon"
    events["logEvents"].insert(0, {"timestamp": 2**70, "message": "big"})
    assert check_put_log_events(events, at_ms=NOW_MS) == [
        "2 events timestamp missing or not an integer (first: logEvents[0])",
        "1 events not in chronological order (first: logEvents[3])",
    ]


def test_one_malformed_event_among_well_formed_ones_is_found() -> None:
    well_formed = [(NOW_MS + i, f"line {i}") for i in range(1000)]
    for broken, problem in [
        ({"timestamp": True, "message": "a bool"}, "timestamp missing or not an integer"),
        ({"timestamp": 2**63, "message": "too big"}, "timestamp missing or not an integer"),
        ({"timestamp": float(NOW_MS), "message": "a float"}, "timestamp missing or not an integer"),
        ({"message": "no time"}, "timestamp missing or not an integer"),
        ({"timestamp": NOW_MS, "message": 7}, "message missing or empty"),
        ("not an object", "message missing or empty"),
    ]:
        call = body(well_formed)
        call["logEvents"][500] = broken
        assert f"1 events {problem} (first: logEvents[500])" in check_put_log_events(
            call, at_ms=NOW_MS
        ), broken
