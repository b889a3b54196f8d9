"""One observation: what a flow-log line says about a conversation, minus what differs
from flow to flow (source port, time, sizes).

``OBSERVED_KEYS`` are the flow-log keys behind ``Observation``'s fields, in its
order: the tally builds a plain tuple of them per line, and the CloudWatch
query groups by the same keys.
"""

from __future__ import annotations

from typing import NamedTuple

SUMMARY_MESSAGE = "Flow Summary: "
EXPIRED = "EXPIRED/DELETED"
DECIDED = frozenset({"ACCEPT", "DENY"})


class Observation(NamedTuple):
    """What a line says about a conversation; ``None`` where the line does not say."""

    message: str | None  # "Flow Info: ", or "Flow Summary: " (--flow-log-aggregate)
    verdict: str
    direction: str | None  # relative to the local pod: ingress, egress
    tier: str | None
    proto: str
    dest_port: int
    src_ip: str | None
    src_pod: str | None
    src_namespace: str | None
    src_workload: str | None
    src_node: str | None
    dest_ip: str | None
    dest_pod: str | None
    dest_namespace: str | None
    dest_workload: str | None
    dest_node: str | None
    node: str | None  # the node that wrote the line
    pod: str | None  # the local pod, in every version of the line
    namespace: str | None
    policy: str | None
    policy_namespace: str | None

    @property
    def summary(self) -> bool:
        return self.message == SUMMARY_MESSAGE


# The flow-log keys behind Observation's fields, in its order.
OBSERVED_KEYS = (
    "msg",
    "Verdict",
    "Direction",
    "Tier",
    "Proto",
    "Dest Port",
    "Src IP",
    "Src Pod",
    "Src Namespace",
    "Src Workload",
    "Src Node",
    "Dest IP",
    "Dest Pod",
    "Dest Namespace",
    "Dest Workload",
    "Dest Node",
    "Node",
    "Pod",
    "Namespace",
    "Policy",
    "Policy Namespace",
)
VERDICT, DIRECTION, PROTO, DEST_PORT = 1, 2, 4, 5
SRC_IP, SRC_NAMESPACE, SRC_NODE = 6, 8, 10
DEST_IP, DEST_NAMESPACE, DEST_NODE = 11, 13, 15
LOCAL_POD, LOCAL_NAMESPACE = 17, 18
SIZE_KEYS = ("Packets Sent", "Bytes Sent", "Packets Received", "Bytes Received")
NO_SIZES = (0, 0, 0, 0)
