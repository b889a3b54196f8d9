"""The limits of one PutLogEvents call, and a checker for request bodies.

From the CloudWatch Logs API reference. moto enforces none of the size limits,
so the test proxy and the benchmark's validating endpoint run every request
body through ``check_put_log_events`` to prove the exporter keeps them.
"""

from __future__ import annotations

import time
from operator import itemgetter
from typing import Any

import numpy as np

MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
# Each event counts its UTF-8 message bytes plus this towards MAX_BATCH_BYTES.
EVENT_OVERHEAD_BYTES = 26
MAX_EVENT_BYTES = 1_048_576
# An event alone in a call must still fit the call, so this is the most one
# message can carry.
MAX_MESSAGE_BYTES = MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES
HOUR_MS = 3_600_000
MAX_BATCH_SPAN_MS = 24 * HOUR_MS
# Events older or further ahead than this are rejected one by one.
MAX_EVENT_AGE_MS = 14 * 24 * HOUR_MS
MAX_EVENT_LEAD_MS = 2 * HOUR_MS


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_put_log_events(body: dict[str, Any], at_ms: int | None = None) -> list[str]:
    """Every way ``body`` (a decoded PutLogEvents request) breaks the limits."""
    return measure_put_log_events(body, at_ms)[0]


def measure_put_log_events(body: dict[str, Any], at_ms: int | None = None) -> tuple[list[str], int]:
    """Every way ``body`` (a decoded PutLogEvents request) breaks the limits, and its
    size as the byte limit counts it (UTF-8 message bytes, 26 more per event).

    An empty list means the call is within every limit. Events too old or too
    new (relative to ``at_ms``, default now) are listed too: CloudWatch would
    reject them one by one, and the exporter must not send them. Each kind of
    breach is one entry, with a count and the first offending index.

    The events are looked at in bulk (``map`` over them, then numpy), with no
    Python loop per event when they are well formed: the benchmark's endpoint
    checks every call with this, on the same two cores as the client it
    measures, and must not be the slower of the two.
    """
    at_ms = now_ms() if at_ms is None else at_ms
    problems = [
        f"{key}: missing or empty"
        for key in ("logGroupName", "logStreamName")
        if not isinstance(body.get(key), str) or not body[key]
    ]
    events = body.get("logEvents")
    if not isinstance(events, list) or not events:
        return [*problems, "logEvents: missing or empty"], 0
    if len(events) > MAX_BATCH_EVENTS:
        problems.append(f"{len(events)} events in one call (limit {MAX_BATCH_EVENTS})")
    sizes, integers, times = _columns(events)
    has_message = sizes > 0
    timed = has_message & integers

    indexes = np.flatnonzero(timed)
    valid_times = times[indexes]
    # In the order a per-event check would meet them: by first index, then by kind.
    breaches = {
        "message missing or empty": np.flatnonzero(~has_message),
        f"message over {MAX_EVENT_BYTES} bytes": np.flatnonzero(sizes > MAX_EVENT_BYTES),
        "timestamp missing or not an integer": np.flatnonzero(has_message & ~timed),
        "not in chronological order": indexes[1:][valid_times[1:] < valid_times[:-1]],
        "older than 14 days": indexes[valid_times < at_ms - MAX_EVENT_AGE_MS],
        "more than 2 hours ahead": indexes[valid_times > at_ms + MAX_EVENT_LEAD_MS],
    }
    found = [
        (int(offending[0]), rank, kind, len(offending))
        for rank, (kind, offending) in enumerate(breaches.items())
        if len(offending)
    ]
    for first, _, kind, count in sorted(found):
        problems.append(f"{count} events {kind} (first: logEvents[{first}])")
    total_bytes = int(sizes.sum()) + EVENT_OVERHEAD_BYTES * int(np.count_nonzero(has_message))
    if total_bytes > MAX_BATCH_BYTES:
        problems.append(
            f"{total_bytes} bytes counting {EVENT_OVERHEAD_BYTES} per event "
            f"(limit {MAX_BATCH_BYTES})"
        )
    if len(valid_times) and valid_times.max() - valid_times.min() > MAX_BATCH_SPAN_MS:
        hours = (valid_times.max() - valid_times.min()) / HOUR_MS
        problems.append(f"events span {hours:.1f} hours (limit 24)")
    return problems, total_bytes


def _columns(events: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each event's message size in UTF-8 bytes (0 if it has none), whether its
    timestamp is a 64-bit integer, and the timestamp (0 if not)."""
    fast = _well_formed_columns(events)
    if fast is not None:
        messages, times = fast
        integers = np.ones(len(events), bool)
    else:
        messages = [e.get("message") if isinstance(e, dict) else None for e in events]
        messages = [m if isinstance(m, str) else "" for m in messages]
        stamps = [e.get("timestamp") if isinstance(e, dict) else None for e in events]
        integers = np.array([_is_int64(t) for t in stamps], bool)
        times = np.array(
            [t if ok else 0 for t, ok in zip(stamps, integers.tolist(), strict=True)], np.int64
        )
    if "".join(messages).isascii():
        sizes = np.fromiter(map(len, messages), np.int64, len(messages))
    else:
        sizes = np.array([len(m.encode("utf-8", "surrogatepass")) for m in messages], np.int64)
    return sizes, integers, times


def _well_formed_columns(events: list[Any]) -> tuple[list[str], np.ndarray] | None:
    """The messages and timestamps when every event is an object with a string
    message and an integer timestamp, the usual case, found without a Python
    loop per event; None otherwise."""
    if set(map(type, events)) != {dict}:
        return None
    try:
        messages = list(map(itemgetter("message"), events))
        stamps = list(map(itemgetter("timestamp"), events))
    except KeyError:
        return None
    if set(map(type, messages)) != {str} or set(map(type, stamps)) != {int}:
        return None
    try:
        return messages, np.fromiter(stamps, np.int64, len(stamps))
    except OverflowError:
        return None


def _is_int64(value: Any) -> bool:
    return type(value) is int and -(2**63) <= value < 2**63
