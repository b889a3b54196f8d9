"""Metrics of the flow lifecycle."""

from prometheus_client import Counter, Gauge

CONNTRACK_ENTRIES = Gauge(
    "flowlog_conntrack_entries",
    "Flows conntrack held at the last scan (open, or closed and lingering)",
)
SCAN_SECONDS = Counter(
    "flowlog_conntrack_scan_seconds", "CPU time spent scanning conntrack for idle flows"
)
EVENTS_SUMMARIZED = Counter(
    "flowlog_events_summarized", "Events counted into flow summaries instead of lines of their own"
)
SUMMARIES_WRITTEN = Counter("flowlog_summaries_written", "Flow summary lines written")
