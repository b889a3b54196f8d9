"""The exact bytes of flow-log lines, for whole batches."""

import calendar
import socket
import time
from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest

from flowlog.cluster.peers import NODE, POD, Identity, Peers
from flowlog.format import TIMESTAMP_OFFSET, FlowFormatter
from flowlog.records import FLOW_END, V4_MAPPED_PREFIX, FlowBatch, monotonic_to_epoch_offset_ns

SEED_KEYS = [
    "level",
    "timestamp",
    "logger",
    "msg",
    "Src IP",
    "Src Port",
    "Dest IP",
    "Dest Port",
    "Proto",
    "Verdict",
]
OUR_KEYS = [
    "Direction",
    "Tier",
    "Packet Size",
    "Node",
    "Pod",
    "Namespace",
    "Policy",
    "Policy Namespace",
]
MAY_30_2023 = calendar.timegm((2023, 5, 30, 16, 5, 32)) * 1000 + 573


@dataclass
class Names:
    endpoints: dict = field(default_factory=dict)
    policies: dict = field(default_factory=dict)
    version: int = 1


def ip16(text: str) -> np.ndarray:
    if ":" in text:
        packed = socket.inet_pton(socket.AF_INET6, text)
    else:
        packed = V4_MAPPED_PREFIX + socket.inet_aton(text)
    return np.frombuffer(packed, np.uint8)


def event(
    src="192.168.87.155",
    sport=38971,
    dst="10.0.64.6",
    dport=53,
    proto=17,
    verdict=1,
    egress=1,
    tier=2,
    size=74,
    endpoint=0,
    policy=0,
) -> np.ndarray:
    record = np.zeros(1, FLOW_END)
    record["src_ip"], record["dest_ip"] = ip16(src), ip16(dst)
    record["src_port"], record["dest_port"] = sport, dport
    record["protocol"], record["verdict"], record["is_egress"], record["tier"] = (
        proto,
        verdict,
        egress,
        tier,
    )
    record["packet_size"], record["endpoint_id"], record["policy_id"] = size, endpoint, policy
    return record


def batch_of(*records: np.ndarray, epoch_ms: int = MAY_30_2023) -> FlowBatch:
    events = np.concatenate(records)
    return FlowBatch(events, np.full(len(events), epoch_ms, np.int64))


def test_the_seed_example_line_exactly():
    line = FlowFormatter("ip-192-168-1-1.ec2.internal").format(batch_of(event()))
    assert line == (
        b'{"level":"info","timestamp":"2023-05-30T16:05:32.573Z","logger":"ebpf-client",'
        b'"msg":"Flow Info: ","Src IP":"192.168.87.155","Src Port":38971,'
        b'"Dest IP":"10.0.64.6","Dest Port":53,"Proto":"UDP","Verdict":"ACCEPT",'
        b'"Direction":"egress","Tier":"NETWORK_POLICY","Packet Size":74,'
        b'"Node":"ip-192-168-1-1.ec2.internal"}\n'
    )


def test_pod_and_policy_appear_when_known_in_key_order():
    names = Names({3: ("frontend-abc", "stars")}, {7: ("allow-ui", "stars")})
    out = FlowFormatter("node-1", names).format(batch_of(event(endpoint=3, policy=7)))
    parsed = orjson.loads(out)
    assert list(parsed) == SEED_KEYS + OUR_KEYS
    assert (parsed["Pod"], parsed["Namespace"]) == ("frontend-abc", "stars")
    assert (parsed["Policy"], parsed["Policy Namespace"]) == ("allow-ui", "stars")


def test_unknown_or_stale_ids_leave_the_keys_out():
    names = Names({1: ("a", "b")}, {1: ("p", "q")})
    out = FlowFormatter("n", names).format(batch_of(event(endpoint=99, policy=0)))
    assert list(orjson.loads(out)) == [*SEED_KEYS, "Direction", "Tier", "Packet Size", "Node"]


def test_names_added_later_are_used_by_the_next_batch():
    names = Names()
    formatter = FlowFormatter("n", names)
    assert b'"Pod"' not in formatter.format(batch_of(event(endpoint=1)))
    names.endpoints[1] = ("late-pod", "ns")
    names.version += 1
    assert orjson.loads(formatter.format(batch_of(event(endpoint=1))))["Pod"] == "late-pod"


def test_names_are_json_escaped():
    names = Names({1: ('we"ird\\pod', "ns")}, {})
    out = FlowFormatter('node "1"', names).format(batch_of(event(endpoint=1)))
    parsed = orjson.loads(out)
    assert parsed["Pod"] == 'we"ird\\pod' and parsed["Node"] == 'node "1"'


@pytest.mark.parametrize(
    ("proto", "verdict", "egress", "tier", "expected"),
    [
        (6, 0, 0, 2, ("TCP", "DENY", "ingress", "NETWORK_POLICY")),
        (17, 1, 1, 4, ("UDP", "ACCEPT", "egress", "DEFAULT")),
        (132, 2, 0, 1, ("SCTP", "EXPIRED/DELETED", "ingress", "ADMIN")),
        (1, 1, 0, 3, ("ICMP", "ACCEPT", "ingress", "BASELINE")),
        (58, 0, 1, 2, ("ICMPv6", "DENY", "egress", "NETWORK_POLICY")),
        (99, 9, 1, 0, ("UNKNOWN", "UNKNOWN", "egress", "UNKNOWN")),
    ],
)
def test_codes_become_names(proto, verdict, egress, tier, expected):
    out = FlowFormatter("n").format(
        batch_of(event(proto=proto, verdict=verdict, egress=egress, tier=tier))
    )
    parsed = orjson.loads(out)
    assert (parsed["Proto"], parsed["Verdict"], parsed["Direction"], parsed["Tier"]) == expected


def test_ipv6_and_ipv4_in_one_batch():
    out = FlowFormatter("n").format(
        batch_of(event(src="2001:db8::7", dst="fd00::1"), event(src="10.0.0.1", dst="10.0.0.2"))
    )
    first, second = (orjson.loads(line) for line in out.splitlines())
    assert (first["Src IP"], first["Dest IP"]) == ("2001:db8::7", "fd00::1")
    assert (second["Src IP"], second["Dest IP"]) == ("10.0.0.1", "10.0.0.2")


def test_many_addresses_across_batches_keep_their_text():
    formatter = FlowFormatter("n")
    rng = np.random.default_rng(7)
    for _ in range(3):
        quads = rng.integers(0, 2**32, 500, dtype=np.uint64)
        # Pairs that share both direct-mapped slots are resolved the slow way.
        quads[:2] = [0x0A000001, 0x0B000001]
        texts = [socket.inet_ntoa(int(q).to_bytes(4, "big")) for q in quads]
        records = [event(src=text, dst=texts[-1 - i]) for i, text in enumerate(texts)]
        lines = formatter.format(batch_of(*records)).splitlines()
        assert [orjson.loads(line)["Src IP"] for line in lines] == texts
        assert [orjson.loads(line)["Dest IP"] for line in lines] == texts[::-1]


def test_packet_sizes_beyond_64k():
    out = FlowFormatter("n").format(
        batch_of(event(size=65535), event(size=65536), event(size=4_000_000_000))
    )
    assert [orjson.loads(line)["Packet Size"] for line in out.splitlines()] == [
        65535,
        65536,
        4_000_000_000,
    ]


def test_timestamps_are_utc_milliseconds_at_a_fixed_offset():
    records = [event(), event(), event()]
    events = np.concatenate(records)
    epoch_ms = np.array([MAY_30_2023, MAY_30_2023 + 427, MAY_30_2023 + 86_400_000], np.int64)
    lines = FlowFormatter("n").format(FlowBatch(events, epoch_ms)).splitlines()
    stamps = [line[TIMESTAMP_OFFSET : TIMESTAMP_OFFSET + 24].decode() for line in lines]
    assert stamps == [
        "2023-05-30T16:05:32.573Z",
        "2023-05-30T16:05:33.000Z",
        "2023-05-31T16:05:32.573Z",
    ]
    assert [orjson.loads(line)["timestamp"] for line in lines] == stamps


def test_a_very_long_name_beside_an_unnamed_event():
    long_pod = "p" * 400
    names = Names({1: (long_pod, "ns")}, {})
    formatter = FlowFormatter("n", names)
    records = [event(endpoint=1), event(endpoint=0), event(endpoint=1)]
    lines = formatter.format(batch_of(*records)).splitlines()
    assert [orjson.loads(line).get("Pod") for line in lines] == [long_pod, None, long_pod]


def test_a_large_random_batch_is_valid_json_line_for_line():
    rng = np.random.default_rng(3)
    count = 20_000
    events = np.zeros(count, FLOW_END)
    for column in ("src_ip", "dest_ip"):
        events[column][:, :12] = np.frombuffer(V4_MAPPED_PREFIX, np.uint8)
        events[column][:, 12:] = rng.integers(0, 256, (count, 4))
    for column, high in (
        ("src_port", 65536),
        ("dest_port", 65536),
        ("protocol", 256),
        ("verdict", 256),
        ("is_egress", 2),
        ("tier", 256),
        ("packet_size", 70000),
        ("endpoint_id", 5),
        ("policy_id", 5),
    ):
        events[column] = rng.integers(0, high, count)
    names = Names({1: ("a", "b"), 2: ("pod-" * 10, "namespace")}, {3: ("deny-all", "x")})
    epoch_ms = np.sort(rng.integers(MAY_30_2023, MAY_30_2023 + 10_000, count))
    out = FlowFormatter("node", names).format(FlowBatch(events, epoch_ms))
    lines = out.splitlines()
    assert len(lines) == count and out.endswith(b"\n")
    for line, src_port, size in zip(lines, events["src_port"], events["packet_size"], strict=True):
        parsed = orjson.loads(line)
        assert parsed["Src Port"] == src_port and parsed["Packet Size"] == size


def test_an_empty_batch_is_no_bytes():
    assert FlowFormatter("n").format(FlowBatch.empty()) == b""


def test_formatting_does_not_depend_on_the_local_time_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        out = FlowFormatter("n").format(batch_of(event()))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert b'"timestamp":"2023-05-30T16:05:32.573Z"' in out


FLOW_END_KEYS = [
    "Start Time",
    "Duration",
    "Packets Sent",
    "Bytes Sent",
    "Packets Received",
    "Bytes Received",
]


def flow_end(start_ms: int, active_ns: int, carried: tuple[int, int, int, int], **fields):
    record = event(verdict=2, **fields)
    start_ns = start_ms * 1_000_000 - monotonic_to_epoch_offset_ns()
    record["start_ns"], record["last_ns"] = start_ns, start_ns + active_ns
    (
        record["packets_sent"],
        record["bytes_sent"],
        record["packets_received"],
        record["bytes_received"],
    ) = carried
    return record


def test_a_flow_end_carries_its_counters_instead_of_a_packet_size():
    names = Names({3: ("frontend-abc", "stars")}, {7: ("allow-ui", "stars")})
    started_ms = time.time_ns() // 1_000_000 - 61_250  # CLOCK_MONOTONIC: since boot
    record = flow_end(started_ms, 1_234_500_000, (12, 1840, 10, 90_000), endpoint=3, policy=7)
    parsed = orjson.loads(FlowFormatter("n", names).format(batch_of(record)))
    assert list(parsed) == [
        *SEED_KEYS,
        *(k for k in OUR_KEYS if k != "Packet Size"),
        *FLOW_END_KEYS,
    ]
    assert parsed["Verdict"] == "EXPIRED/DELETED"
    # The kernel's monotonic clock and the wall clock agree to a millisecond or two.
    start = calendar.timegm(time.strptime(parsed["Start Time"][:19], "%Y-%m-%dT%H:%M:%S"))
    start_ms = start * 1000 + int(parsed["Start Time"][20:23])
    assert abs(start_ms - started_ms) <= 2
    assert parsed["Duration"] == 1.235  # seconds, to the millisecond
    assert [parsed[k] for k in FLOW_END_KEYS[2:]] == [12, 1840, 10, 90_000]


def test_an_expired_record_without_counters_is_an_aws_line():
    """The AWS agent's EXPIRED/DELETED records carry a packet size and no counters."""
    parsed = orjson.loads(FlowFormatter("n").format(batch_of(event(verdict=2, size=60))))
    assert parsed["Verdict"] == "EXPIRED/DELETED" and parsed["Packet Size"] == 60
    assert not set(FLOW_END_KEYS) & set(parsed)


def test_both_ends_are_named_by_their_peer_ids():
    peers = Peers()
    pod = Identity(POD, "client-7d9", "client", "deployment/client")
    peers.claim("api", "uid-1", "10.0.0.1", pod, at_ms=0)
    peers.claim("api", "uid-2", "10.0.0.2", Identity(NODE, "ip-10-0-0-2"), at_ms=0)
    formatter = FlowFormatter("n", Names({1: ("frontend", "stars")}, {}), peers)
    batch = batch_of(
        event(src="10.0.0.1", dst="10.0.0.2", endpoint=1),
        event(src="10.0.0.2", dst="192.0.2.1"),
    )
    first, second = map(orjson.loads, formatter.format(batch, peers.resolve(batch)).splitlines())
    assert list(first)[-4:] == ["Src Pod", "Src Namespace", "Src Workload", "Dest Node"]
    assert (first["Src Pod"], first["Src Namespace"], first["Src Workload"]) == (
        "client-7d9",
        "client",
        "deployment/client",
    )
    assert first["Dest Node"] == "ip-10-0-0-2" and first["Pod"] == "frontend"
    assert second["Src Node"] == "ip-10-0-0-2"
    assert not {"Dest Pod", "Dest Node", "Dest Namespace"} & set(second)


def test_ipv6_text_is_what_the_socket_library_writes():
    rng = np.random.default_rng(11)
    addresses = []
    for _ in range(300):
        words = (rng.integers(0, 3, 8) > 0) * rng.integers(0, 65536, 8)  # runs of zeros, often
        addresses.append(
            socket.inet_ntop(socket.AF_INET6, b"".join(int(w).to_bytes(2, "big") for w in words))
        )
    addresses = [a for a in addresses if not a.startswith("::ffff:")]
    records = [event(src=a, dst=a) for a in addresses]
    lines = FlowFormatter("n").format(batch_of(*records)).splitlines()
    assert [orjson.loads(line)["Src IP"] for line in lines] == addresses


def test_a_batch_larger_than_a_block_comes_in_blocks_of_whole_lines():
    count = 9000  # about 3 MB of lines: three blocks of 1 MB
    events = np.concatenate([event(sport=i % 60000 + 1) for i in range(count)])
    batch = FlowBatch(events, np.full(count, MAY_30_2023))
    # Each block is valid until the next one: keep a copy.
    blocks = [(bytes(block), lines) for block, lines in FlowFormatter("n").chunks(batch)]
    assert len(blocks) >= 3
    assert sum(lines for _, lines in blocks) == count
    assert all(bytes(block).count(b"\n") == lines for block, lines in blocks)
    assert all(bytes(block).endswith(b"}\n") for block, _ in blocks)
