"""Metrics of the cluster view: the API's informers, and the names they give flows."""

from prometheus_client import Counter, Gauge

WATCH_RESTARTS = Counter(
    "flowlog_kube_watch_restarts",
    "Lists or watches of the Kubernetes API that failed and were tried again, by kind",
    ["kind"],
)
RELISTS = Counter(
    "flowlog_kube_relists",
    "Lists made again because the server had compacted the resourceVersion away (410), by kind",
    ["kind"],
)
OBJECTS = Gauge("flowlog_kube_objects", "Objects held from the Kubernetes API, by kind", ["kind"])
POLICIES_REJECTED = Counter(
    "flowlog_kube_policyendpoints_rejected",
    "PolicyEndpoint versions from the API that could not be enforced",
)
EVENTS_POSTED = Counter(
    "flowlog_kube_events_posted",
    "Kubernetes Events posted about rejected PolicyEndpoints, by result",
    ["result"],
)
CHECKPOINT_READS = Counter(
    "flowlog_ipam_checkpoint_reads",
    "Reads of the VPC CNI checkpoint, by result (ok, missing, malformed)",
    ["result"],
)
ADDRESSES = Gauge("flowlog_peer_addresses", "Addresses the agent can name, from every source")
