"""Decoding the ring buffer layouts, from hand-made bytes."""

import socket
import struct

import numpy as np
import pytest

from flowlog.records import (
    AWS_V4,
    AWS_V6,
    FLOW_END,
    FLOW_EVENT,
    LAYOUTS,
    decode,
    decode_each,
    direction_name,
    protocol_name,
    tier_name,
    verdict_name,
)


def aws_v4_record(src, sport, dst, dport, proto, verdict, size, egress, tier) -> bytes:
    return (
        socket.inet_aton(src)
        + struct.pack("<I", sport)
        + socket.inet_aton(dst)
        + struct.pack("<IIIIBB", dport, proto, verdict, size, egress, tier)
        + b"\0\0"
    )


def aws_v6_record(src, sport, dst, dport, proto, verdict, size, egress, tier) -> bytes:
    return (
        socket.inet_pton(socket.AF_INET6, src)
        + struct.pack("<I", sport)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("<IIIIBB", dport, proto, verdict, size, egress, tier)
        + b"\0\0"
    )


def address(raw: np.ndarray) -> str:
    data = bytes(raw)
    if data[:12] == bytes(10) + b"\xff\xff":
        return socket.inet_ntoa(data[12:])
    return socket.inet_ntop(socket.AF_INET6, data)


def test_layout_sizes_match_the_aws_agent():
    assert AWS_V4.itemsize == 32
    assert AWS_V6.itemsize == 56
    assert FLOW_EVENT.itemsize == 64
    assert FLOW_END.itemsize == 112
    assert {name: layout.sizes for name, layout in LAYOUTS.items()} == {
        "flowlog": (64, 112),  # a verdict, a flow end
        "aws-v4": (32,),
        "aws-v6": (56,),
    }


def test_aws_v4_fields_decode_in_bulk():
    raw = aws_v4_record("192.168.87.155", 38971, "10.0.64.6", 53, 17, 1, 74, 1, 2) + aws_v4_record(
        "10.1.2.3", 80, "10.4.5.6", 44000, 6, 0, 60, 0, 4
    )
    batch = decode(raw, LAYOUTS["aws-v4"])
    events = batch.events
    assert len(batch) == 2
    assert [address(a) for a in events["src_ip"]] == ["192.168.87.155", "10.1.2.3"]
    assert [address(a) for a in events["dest_ip"]] == ["10.0.64.6", "10.4.5.6"]
    assert events["src_port"].tolist() == [38971, 80]
    assert events["dest_port"].tolist() == [53, 44000]
    assert events["protocol"].tolist() == [17, 6]
    assert events["verdict"].tolist() == [1, 0]
    assert events["packet_size"].tolist() == [74, 60]
    assert events["is_egress"].tolist() == [1, 0]
    assert events["tier"].tolist() == [2, 4]
    assert events["endpoint_id"].tolist() == [0, 0]  # the AWS layouts carry no attribution


def test_aws_v6_addresses_decode():
    raw = aws_v6_record("2001:db8::1", 1234, "fd00::a:b", 443, 6, 1, 80, 1, 2)
    events = decode(raw, LAYOUTS["aws-v6"]).events
    assert address(events["src_ip"][0]) == "2001:db8::1"
    assert address(events["dest_ip"][0]) == "fd00::a:b"
    assert (events["src_port"][0], events["dest_port"][0]) == (1234, 443)


def test_aws_records_are_stamped_with_the_time_they_are_read():
    import time

    before = time.time_ns() // 1_000_000
    batch = decode(aws_v4_record("10.0.0.1", 1, "10.0.0.2", 2, 6, 1, 60, 0, 2), LAYOUTS["aws-v4"])
    after = time.time_ns() // 1_000_000
    assert before <= batch.epoch_ms[0] <= after


def test_own_events_keep_their_kernel_time():
    import time

    event = np.zeros(1, FLOW_END)
    event["timestamp_ns"] = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - 5_000_000_000
    batch = decode(event.tobytes(), LAYOUTS["flowlog"])
    assert abs(batch.epoch_ms[0] - (time.time_ns() // 1_000_000 - 5000)) < 50


def test_out_of_range_values_decode_to_defined_names():
    raw = aws_v4_record("10.0.0.1", 70000, "10.0.0.2", 2**32 - 1, 4000, 77, 60, 9, 200)
    events = decode(raw, LAYOUTS["aws-v4"]).events
    assert events["src_port"][0] == 65535 and events["dest_port"][0] == 65535
    assert protocol_name(int(events["protocol"][0])) == "UNKNOWN"
    assert verdict_name(int(events["verdict"][0])) == "UNKNOWN"
    assert tier_name(int(events["tier"][0])) == "UNKNOWN"
    assert direction_name(int(events["is_egress"][0])) == "egress"


@pytest.mark.parametrize(
    ("code", "name"), [(0, "DENY"), (1, "ACCEPT"), (2, "EXPIRED/DELETED"), (3, "UNKNOWN")]
)
def test_verdict_names(code, name):
    assert verdict_name(code) == name


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1, "ADMIN"),
        (2, "NETWORK_POLICY"),
        (3, "BASELINE"),
        (4, "DEFAULT"),
        (0, "UNKNOWN"),
        (5, "UNKNOWN"),
    ],
)
def test_tier_names(code, name):
    assert tier_name(code) == name


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (6, "TCP"),
        (17, "UDP"),
        (132, "SCTP"),
        (1, "ICMP"),
        (58, "ICMPv6"),
        (0, "UNKNOWN"),
        (47, "UNKNOWN"),
    ],
)
def test_protocol_names(code, name):
    assert protocol_name(code) == name


def test_verdicts_and_flow_ends_read_one_by_one_share_one_dtype():
    verdict = np.zeros(1, FLOW_EVENT)
    verdict["verdict"], verdict["dest_port"] = 1, 80
    end = np.zeros(1, FLOW_END)
    end["verdict"], end["dest_port"], end["bytes_sent"] = 2, 80, 1234
    events = decode_each([verdict.tobytes(), end.tobytes()])
    assert events.dtype == FLOW_END
    assert events["verdict"].tolist() == [1, 2]
    assert events["bytes_sent"].tolist() == [0, 1234]
