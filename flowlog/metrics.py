"""The pipeline's Prometheus metrics, and the Go agent's that users already alert on.

Subsystems with metrics of their own (the data plane, the CloudWatch exporter)
define them beside their code; all live in the default registry, which the
agent serves on its metrics address.
"""

from prometheus_client import Counter, Gauge, disable_created_metrics

# Only the totals: the *_created series double the output and nobody graphs them.
disable_created_metrics()

# The Go agent's names, kept so existing dashboards and alerts keep working.
DROP_COUNT = Counter(
    "network_policy_drop_count",
    "Packets denied by network policy, by direction",
    ["direction"],
)
DROP_BYTES = Counter(
    "network_policy_drop_bytes",
    "Bytes of packets denied by network policy, by direction",
    ["direction"],
)

EVENTS = Counter("flowlog_events", "Verdict events read from the source, by verdict", ["verdict"])
EVENTS_NOT_LOGGED = Counter(
    "flowlog_events_not_logged",
    "Events read but deliberately not written, by reason "
    "(verdict_filtered: not in --flow-log-verdicts; logging_disabled: enablePolicyEventLogs off)",
    ["reason"],
)
RECORDS_REJECTED = Counter(
    "flowlog_records_rejected",
    "Raw records that could not be decoded (partial, or of an unexpected size), by reason",
    ["reason"],
)
RINGBUF_LOST = Counter(
    "flowlog_ringbuf_lost_events",
    "Events the kernel could not put in the ring buffer because it was full",
)
LINES_WRITTEN = Counter("flowlog_lines_written", "Flow-log lines written")
BYTES_WRITTEN = Counter("flowlog_bytes_written", "Flow-log bytes written")
LINES_DROPPED = Counter(
    "flowlog_lines_dropped",
    "Flow-log lines that could not be written (e.g. disk full), by errno",
    ["reason"],
)
ROTATIONS = Counter("flowlog_log_rotations", "Flow-log file rotations")
BATCH_LATENCY = Gauge(
    "flowlog_last_batch_delay_seconds",
    "Age of the newest event of the last batch when it was written",
)
CONFIG_RELOADS = Counter(
    "flowlog_config_reloads", "Configuration file reloads, by result", ["result"]
)
