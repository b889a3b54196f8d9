"""The data plane's Prometheus metrics (the agent serves the default registry).

Events the ring buffer could not take are not counted here: the agent reads
``Dataplane.lost_events()`` into ``flowlog_ringbuf_lost_events_total``.
"""

from prometheus_client import Counter, Gauge

POLICIES_LOADED = Gauge(
    "flowlog_dataplane_policies_loaded",
    "Network policies (PolicyEndpoint policyRefs) in force",
)
PODS_ATTACHED = Gauge(
    "flowlog_dataplane_pods_attached",
    "Pod veths with flowlog's programs attached",
)
POLICY_FILES_REJECTED = Counter(
    "flowlog_dataplane_policy_files_rejected",
    "Policy file versions rejected (malformed, or too many port entries); "
    "the rules in force before stay in force",
)
