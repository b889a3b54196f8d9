"""Flow records: the binary event layouts flowlog reads, decoded in bulk.

Sources hand the pipeline records in one of the layouts below. ``decode``
turns a whole array of them into one ``FlowBatch``: a numpy array in
flowlog's own layout (``FLOW_END``, the mirror of ``struct flow_end`` in
``bpf/flow_event.h``, whose first fields are ``struct flow_event``) plus the
wall-clock time of each event. Verdicts arrive as the shorter
``FLOW_EVENT`` and are read into the same dtype, with zero counters; the AWS agent's layouts
are converted into the same array, so everything downstream has one shape to
deal with.
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

# flowlog's own events: bpf/flow_event.h, field for field.
_VERDICT_FIELDS = [
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
FLOW_EVENT = np.dtype(_VERDICT_FIELDS)  # struct flow_event: ACCEPT and DENY
FLOW_END = np.dtype(  # struct flow_end: EXPIRED/DELETED, and every batch
    [
        *_VERDICT_FIELDS,
        ("start_ns", "<u8"),
        ("last_ns", "<u8"),
        ("packets_sent", "<u8"),
        ("bytes_sent", "<u8"),
        ("packets_received", "<u8"),
        ("bytes_received", "<u8"),
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
    dtype: np.dtype  # what its records are copied into
    # Record lengths it may hold (a verdict is shorter than a flow end); the
    # first ``size`` bytes of the dtype, the rest zero.
    sizes: tuple[int, ...]
    # Whether records carry the kernel's own timestamp; the AWS layouts do not,
    # so their events are stamped with the time they were read.
    has_timestamp: bool

    @property
    def size(self) -> int:
        return self.dtype.itemsize


LAYOUTS = {
    "flowlog": Layout(
        "flowlog", FLOW_END, (FLOW_EVENT.itemsize, FLOW_END.itemsize), has_timestamp=True
    ),
    "aws-v4": Layout("aws-v4", AWS_V4, (AWS_V4.itemsize,), has_timestamp=False),
    "aws-v6": Layout("aws-v6", AWS_V6, (AWS_V6.itemsize,), has_timestamp=False),
}


@dataclass
class FlowBatch:
    """Events in flowlog's layout, with the wall-clock time of each in ms."""

    events: np.ndarray  # dtype FLOW_END
    epoch_ms: np.ndarray  # int64, milliseconds since the Unix epoch

    def __len__(self) -> int:
        return len(self.events)

    def select(self, mask: np.ndarray) -> FlowBatch:
        return FlowBatch(self.events[mask], self.epoch_ms[mask])

    @classmethod
    def empty(cls) -> FlowBatch:
        return cls(np.zeros(0, FLOW_END), np.zeros(0, np.int64))


def monotonic_to_epoch_offset_ns() -> int:
    """What to add to a CLOCK_MONOTONIC reading (bpf_ktime_get_ns) for wall time."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def decode(raw: bytes | bytearray | memoryview, layout: Layout) -> FlowBatch:
    """Decode back-to-back records of ``layout``'s dtype (a multiple of its size)."""
    return decode_records(np.frombuffer(raw, dtype=layout.dtype), layout)


def decode_each(records: list[bytes]) -> np.ndarray:
    """flowlog's records one by one, verdicts and flow ends mixed, as FLOW_END
    (for people and tests reading a few at a time)."""
    events = np.zeros(len(records), FLOW_END)
    for index, record in enumerate(records):
        raw = record.ljust(FLOW_END.itemsize, b"\0")[: FLOW_END.itemsize]
        events[index] = np.frombuffer(raw, FLOW_END)[0]
    return events


def decode_records(records: np.ndarray, layout: Layout) -> FlowBatch:
    """A batch of records of ``layout``'s dtype.

    flowlog's own records are used where they lie, without a copy: the batch
    is then only valid as long as ``records`` is. The AWS layouts are
    converted into new arrays.
    """
    if layout.dtype is FLOW_END:
        return FlowBatch(records, epoch_ms_of(records["timestamp_ns"]))
    return _from_aws(records, width=layout.dtype["src_ip"].shape[0])


def epoch_ms_of(monotonic_ns: np.ndarray) -> np.ndarray:
    """Milliseconds since the Unix epoch of CLOCK_MONOTONIC readings."""
    return (monotonic_ns.astype(np.int64) + monotonic_to_epoch_offset_ns()) // 1_000_000


def _from_aws(records: np.ndarray, width: int) -> FlowBatch:
    now_ns = time.time_ns()
    events = np.zeros(len(records), FLOW_END)
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
