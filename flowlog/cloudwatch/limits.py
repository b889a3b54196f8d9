"""The limits of one PutLogEvents call, and a checker for request bodies.

From the CloudWatch Logs API reference. moto enforces none of the size limits,
so the test proxy and the benchmark's validating endpoint run every request
body through ``check_put_log_events`` to prove the exporter keeps them.
"""

from __future__ import annotations

import time
from typing import Any

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
    """Every way ``body`` (a decoded PutLogEvents request) breaks the limits.

    An empty list means the call is within every limit. Events too old or too
    new (relative to ``at_ms``, default now) are listed too: CloudWatch would
    reject them one by one, and the exporter must not send them. Each kind of
    breach is one entry, with a count and the first offending index.
    """
    at_ms = now_ms() if at_ms is None else at_ms
    problems = [
        f"{key}: missing or empty"
        for key in ("logGroupName", "logStreamName")
        if not isinstance(body.get(key), str) or not body[key]
    ]
    events = body.get("logEvents")
    if not isinstance(events, list) or not events:
        return [*problems, "logEvents: missing or empty"]
    if len(events) > MAX_BATCH_EVENTS:
        problems.append(f"{len(events)} events in one call (limit {MAX_BATCH_EVENTS})")
    breaches: dict[str, list[int]] = {}
    total_bytes = 0
    timestamps: list[int] = []
    for index, event in enumerate(events):
        message = event.get("message") if isinstance(event, dict) else None
        timestamp = event.get("timestamp") if isinstance(event, dict) else None
        if not isinstance(message, str) or not message:
            breaches.setdefault("message missing or empty", []).append(index)
            continue
        size = len(message.encode("utf-8", "surrogatepass"))
        total_bytes += size + EVENT_OVERHEAD_BYTES
        if size > MAX_EVENT_BYTES:
            breaches.setdefault(f"message over {MAX_EVENT_BYTES} bytes", []).append(index)
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            breaches.setdefault("timestamp missing or not an integer", []).append(index)
            continue
        if timestamps and timestamp < timestamps[-1]:
            breaches.setdefault("not in chronological order", []).append(index)
        if timestamp < at_ms - MAX_EVENT_AGE_MS:
            breaches.setdefault("older than 14 days", []).append(index)
        if timestamp > at_ms + MAX_EVENT_LEAD_MS:
            breaches.setdefault("more than 2 hours ahead", []).append(index)
        timestamps.append(timestamp)
    for kind, indexes in breaches.items():
        problems.append(f"{len(indexes)} events {kind} (first: logEvents[{indexes[0]}])")
    if total_bytes > MAX_BATCH_BYTES:
        problems.append(
            f"{total_bytes} bytes counting {EVENT_OVERHEAD_BYTES} per event "
            f"(limit {MAX_BATCH_BYTES})"
        )
    if timestamps and max(timestamps) - min(timestamps) > MAX_BATCH_SPAN_MS:
        hours = (max(timestamps) - min(timestamps)) / HOUR_MS
        problems.append(f"events span {hours:.1f} hours (limit 24)")
    return problems
