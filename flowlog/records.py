"""Flow records: the binary event layouts flowlog reads, decoded in bulk.

Every source hands the pipeline raw bytes of back-to-back fixed-size records.
``decode`` turns a whole buffer of them into one ``FlowBatch``: a numpy array
in flowlog's own layout (``FLOW_EVENT``, the mirror of ``bpf/flow_event.h``)
plus the wall-clock time of each event. The AWS agent's layouts are converted
into the same array, so everything downstream has one shape to deal with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

# --- the codes inside a record, and the names written to the flow log -------

VERDICT_DENY, VERDICT_ACCEPT, VERDICT_EXPIRED = 0, 1, 2
TIER_ADMIN, TIER_NETWORK_POLICY, TIER_BASELINE, TIER_DEFAULT = 1, 2, 3, 4

UNKNOWN = "UNKNOWN"
VERDICT_NAMES = {VERDICT_DENY: "DENY", VERDICT_ACCEPT: "ACCEPT", VERDICT_EXPIRED: "EXPIRED/DELETED"}
TIER_NAMES = {
    TIER_ADMIN: "ADMIN",
    TIER_NETWORK_POLICY: "NETWORK_POLICY",
    TIER_BASELINE: "BASELINE",
    TIER_DEFAULT: "DEFAULT",
}
PROTOCOL_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6"}
DIRECTION_NAMES = {0: "ingress", 1: "egress"}


def verdict_name(code: int) -> str:
    return VERDICT_NAMES.get(code, UNKNOWN)


def tier_name(code: int) -> str:
    return TIER_NAMES.get(code, UNKNOWN)


def protocol_name(code: int) -> str:
    return PROTOCOL_NAMES.get(code, UNKNOWN)


def direction_name(is_egress: int) -> str:
    return DIRECTION_NAMES[1 if is_egress else 0]


# --- layouts ---------------------------------------------------------------

# flowlog's own event: bpf/flow_event.h, field for field.
FLOW_EVENT = np.dtype(
    [
        ("timestamp_ns", "<u8"),
        ("src_ip", "u1", (16,)),
        ("dest_ip", "u1", (16,)),
        ("src_port", "<u2"),
        ("dest_port", "<u2"),
        ("protocol", "u1"),
        ("verdict", "u1"),
        ("is_egress", "u1"),
        ("tier", "u1"),
        ("packet_size", "<u4"),
        ("ifindex", "<u4"),
        ("endpoint_id", "<u4"),
        ("policy_id", "<u4"),
    ]
)


def _aws_layout(address_bytes: int) -> np.dtype:
    """The AWS network policy agent's ring buffer record (aws-network-policy-agent,
    pkg/ebpf/events): little-endian integers, addresses as in the packet."""
    return np.dtype(
        [
            ("src_ip", "u1", (address_bytes,)),
            ("src_port", "<u4"),
            ("dest_ip", "u1", (address_bytes,)),
            ("dest_port", "<u4"),
            ("protocol", "<u4"),
            ("verdict", "<u4"),
            ("packet_sz", "<u4"),
            ("is_egress", "u1"),
            ("tier", "u1"),
            ("pad", "V2"),
        ]
    )


AWS_V4 = _aws_layout(4)
AWS_V6 = _aws_layout(16)

# IPv4 addresses are kept as IPv4-mapped IPv6 (::ffff:a.b.c.d) in FLOW_EVENT.
V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


@dataclass(frozen=True)
class Layout:
    """One record layout a source can deliver."""

    name: str
    dtype: np.dtype
    # Whether records carry the kernel's own timestamp; the AWS layouts do not,
    # so their events are stamped with the time they were read.
    has_timestamp: bool

    @property
    def size(self) -> int:
        return self.dtype.itemsize


LAYOUTS = {
    "flowlog": Layout("flowlog", FLOW_EVENT, has_timestamp=True),
    "aws-v4": Layout("aws-v4", AWS_V4, has_timestamp=False),
    "aws-v6": Layout("aws-v6", AWS_V6, has_timestamp=False),
}


@dataclass
class FlowBatch:
    """Events in flowlog's layout, with the wall-clock time of each in ms."""

    events: np.ndarray  # dtype FLOW_EVENT
    epoch_ms: np.ndarray  # int64, milliseconds since the Unix epoch

    def __len__(self) -> int:
        return len(self.events)

    def select(self, mask: np.ndarray) -> FlowBatch:
        return FlowBatch(self.events[mask], self.epoch_ms[mask])

    @classmethod
    def empty(cls) -> FlowBatch:
        return cls(np.zeros(0, FLOW_EVENT), np.zeros(0, np.int64))


def monotonic_to_epoch_offset_ns() -> int:
    """What to add to a CLOCK_MONOTONIC reading (bpf_ktime_get_ns) for wall time."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def decode(raw: bytes | bytearray | memoryview, layout: Layout) -> FlowBatch:
    """Decode whole records from ``raw`` (its length a multiple of the record size)."""
    return decode_records(np.frombuffer(raw, dtype=layout.dtype), layout)


def decode_records(records: np.ndarray, layout: Layout) -> FlowBatch:
    """A batch of records of ``layout`` (any array of its dtype, strided views too).

    flowlog's own records are used where they lie, without a copy: the batch is
    then only valid as long as ``records`` is (the ring buffer keeps a record
    until it is released). The AWS layouts are converted into new arrays.
    """
    if layout.dtype is FLOW_EVENT:
        events = records
        epoch_ms = (
            events["timestamp_ns"].astype(np.int64) + monotonic_to_epoch_offset_ns()
        ) // 1_000_000
        return FlowBatch(events, epoch_ms)
    return _from_aws(records, width=layout.dtype["src_ip"].shape[0])


def _from_aws(records: np.ndarray, width: int) -> FlowBatch:
    now_ns = time.time_ns()
    events = np.zeros(len(records), FLOW_EVENT)
    events["timestamp_ns"] = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    for field in ("src_ip", "dest_ip"):
        if width == 4:
            events[field][:, :12] = np.frombuffer(V4_MAPPED_PREFIX, np.uint8)
            events[field][:, 12:] = records[field]
        else:
            events[field] = records[field]
    # Ports above 65535 and codes above 255 cannot be real; they are clipped to
    # values that still decode to a defined name (a port number or UNKNOWN).
    events["src_port"] = np.minimum(records["src_port"], 0xFFFF)
    events["dest_port"] = np.minimum(records["dest_port"], 0xFFFF)
    events["protocol"] = np.minimum(records["protocol"], 0xFF)
    events["verdict"] = np.minimum(records["verdict"], 0xFF)
    events["is_egress"] = records["is_egress"] != 0
    events["tier"] = records["tier"]
    events["packet_size"] = records["packet_sz"]
    epoch_ms = np.full(len(records), now_ns // 1_000_000, np.int64)
    return FlowBatch(events, epoch_ms)
