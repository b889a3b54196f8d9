"""The CloudWatch exporter's Prometheus metrics (default registry, served by the agent).

Gauges carry the flow log they describe (``log_file``), since ``flowlog ship``
can follow several files in one process.
"""

from prometheus_client import Counter, Gauge, Histogram

from flowlog.cloudwatch.limits import MAX_BATCH_EVENTS

EVENTS_SENT = Counter("flowlog_cloudwatch_events_sent", "Events CloudWatch Logs accepted")
BYTES_SENT = Counter(
    "flowlog_cloudwatch_bytes_sent",
    "Message bytes (UTF-8, without the 26 per event the limits add) CloudWatch Logs accepted",
)
BATCHES = Counter("flowlog_cloudwatch_batches", "PutLogEvents calls CloudWatch Logs accepted")
CALLS = Counter(
    "flowlog_cloudwatch_calls", "CloudWatch Logs API calls made, retries included", ["operation"]
)
EVENTS_PER_BATCH = Histogram(
    "flowlog_cloudwatch_events_per_batch",
    "Events in each accepted PutLogEvents call",
    buckets=(1, 10, 100, 500, 1000, 2000, 3000, 4000, 5000, 7500, MAX_BATCH_EVENTS),
)
ERRORS = Counter(
    "flowlog_cloudwatch_errors",
    "Failed CloudWatch Logs calls, by error code (or exception name)",
    ["code"],
)
EVENTS_REJECTED = Counter(
    "flowlog_cloudwatch_events_rejected",
    "Events CloudWatch Logs refused and that are not sent again, by reason "
    "(too_new, too_old, expired from rejectedLogEventsInfo; or the error code of a refused call)",
    ["reason"],
)
EVENTS_SKIPPED = Counter(
    "flowlog_cloudwatch_events_skipped",
    "Lines not sent because CloudWatch Logs would refuse them, by reason "
    "(too_old: over 14 days; too_new: over 2 hours ahead; empty)",
    ["reason"],
)
EVENTS_TRUNCATED = Counter(
    "flowlog_cloudwatch_events_truncated",
    "Lines over the 1 MB event limit, sent cut short with a marker",
)
EVENTS_UNTIMED = Counter(
    "flowlog_cloudwatch_events_untimed",
    "Lines without a readable timestamp, sent with the time they were read",
)
EVENTS_LOST = Counter(
    "flowlog_cloudwatch_events_lost",
    "Lines deleted by log retention before they could be sent",
)
FILES_LOST = Counter(
    "flowlog_cloudwatch_files_lost",
    "Flow-log files found gone at start before they were completely sent "
    "(their unsent lines cannot be counted)",
)
BACKLOG_EVENTS = Gauge(
    "flowlog_cloudwatch_backlog_events",
    "Events in the flow log not yet acknowledged by CloudWatch Logs "
    "(exact for lines already read, estimated from the mean line size for the rest)",
    ["log_file"],
)
BACKLOG_BYTES = Gauge(
    "flowlog_cloudwatch_backlog_bytes",
    "Bytes of the flow log not yet acknowledged by CloudWatch Logs",
    ["log_file"],
)
LAG_SECONDS = Gauge(
    "flowlog_cloudwatch_lag_seconds",
    "Age of the oldest event read but not yet acknowledged (0 when caught up)",
    ["log_file"],
)
ACCESS_PROBLEM = Gauge(
    "flowlog_cloudwatch_access_problem",
    "1 while CloudWatch Logs refuses our permissions or credentials (see /readyz for detail)",
    ["log_file"],
)
PER_FILE_GAUGES = (BACKLOG_EVENTS, BACKLOG_BYTES, LAG_SECONDS, ACCESS_PROBLEM)
