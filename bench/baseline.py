"""Baseline (a): the flow-log pipeline a user would write from bcc's documented API.

``BPF.open_ring_buffer`` with a Python callback; in it, one decode of the event
(``ctypes``, as bcc's examples do with ``b["events"].event(data)``) and one
``orjson.dumps`` of a dict, written to the file. The replay variant does the
same per-record work on a file, to compare with ``flowlog replay``.

    python -m bench.baseline replay RECORDS OUTPUT     (AWS v4 records)
    python -m bench.baseline ringbuf PINNED_RING OUTPUT SECONDS     (flowlog's events)
    python -m bench.baseline watchtower LINES ENDPOINT COUNT     (baseline b: shipping)
"""

from __future__ import annotations

import ctypes
import socket
import sys
import time

import orjson

VERDICTS = {0: "DENY", 1: "ACCEPT", 2: "EXPIRED/DELETED"}
PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6"}
TIERS = {1: "ADMIN", 2: "NETWORK_POLICY", 3: "BASELINE", 4: "DEFAULT"}


class AwsV4Event(ctypes.Structure):
    _fields_ = [
        ("src_ip", ctypes.c_uint8 * 4),
        ("src_port", ctypes.c_uint32),
        ("dest_ip", ctypes.c_uint8 * 4),
        ("dest_port", ctypes.c_uint32),
        ("protocol", ctypes.c_uint32),
        ("verdict", ctypes.c_uint32),
        ("packet_sz", ctypes.c_uint32),
        ("is_egress", ctypes.c_uint8),
        ("tier", ctypes.c_uint8),
    ]


def line(event: ctypes.Structure, source: bytes, destination: bytes, packet_size: int) -> bytes:
    """One flow-log line the usual way: a dict, then orjson (IPv4 addresses as 4 bytes)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return (
        orjson.dumps(
            {
                "level": "info",
                "timestamp": stamp,
                "logger": "ebpf-client",
                "msg": "Flow Info: ",
                "Src IP": socket.inet_ntoa(source),
                "Src Port": event.src_port,
                "Dest IP": socket.inet_ntoa(destination),
                "Dest Port": event.dest_port,
                "Proto": PROTOCOLS.get(event.protocol, "UNKNOWN"),
                "Verdict": VERDICTS.get(event.verdict, "UNKNOWN"),
                "Direction": "egress" if event.is_egress else "ingress",
                "Tier": TIERS.get(event.tier, "UNKNOWN"),
                "Packet Size": packet_size,
            }
        )
        + b"\n"
    )


def replay(records_path: str, output_path: str) -> None:
    size = ctypes.sizeof(AwsV4Event)
    with open(records_path, "rb") as source, open(output_path, "wb") as out:
        data = source.read()
        for offset in range(0, len(data) - size + 1, size):
            event = AwsV4Event.from_buffer_copy(data, offset)
            out.write(line(event, bytes(event.src_ip), bytes(event.dest_ip), event.packet_sz))


class FlowEvent(ctypes.Structure):
    """bpf/flow_event.h, as a bcc user would mirror it with ctypes."""

    _fields_ = [
        ("timestamp_ns", ctypes.c_uint64),
        ("src_ip", ctypes.c_uint8 * 16),
        ("dest_ip", ctypes.c_uint8 * 16),
        ("src_port", ctypes.c_uint16),
        ("dest_port", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),
        ("verdict", ctypes.c_uint8),
        ("is_egress", ctypes.c_uint8),
        ("tier", ctypes.c_uint8),
        ("packet_size", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("endpoint_id", ctypes.c_uint32),
        ("policy_id", ctypes.c_uint32),
    ]


RECORD_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)


def ringbuf(pinned: str, output_path: str, seconds: float) -> None:
    """What ``BPF.open_ring_buffer`` + ``ring_buffer_poll`` do, on a pinned ring buffer."""
    from bcc.libbcc import lib

    from flowlog import bpf_syscall

    with open(output_path, "ab") as out:

        def on_event(_context: int, data: int, _size: int) -> int:
            event = ctypes.cast(data, ctypes.POINTER(FlowEvent)).contents
            source, destination = bytes(event.src_ip[12:]), bytes(event.dest_ip[12:])
            out.write(line(event, source, destination, event.packet_size))
            return 0

        callback = RECORD_CALLBACK(on_event)
        manager = lib.bpf_new_ringbuf(bpf_syscall.obj_get(pinned), callback, None)
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            lib.bpf_poll_ringbuf(manager, 100)
            out.flush()
        lib.bpf_free_ringbuf(manager)


def watchtower_ship(lines_path: str, endpoint: str, count: str) -> None:
    """Baseline (b): watchtower, the popular Python CloudWatch handler, sending lines."""
    import logging

    import boto3
    import watchtower

    client = boto3.client(
        "logs",
        endpoint_url=endpoint,
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    handler = watchtower.CloudWatchLogHandler(
        log_group_name="/aws/eks/bench/cluster",
        log_stream_name="watchtower",
        boto3_client=client,
        create_log_group=True,
        send_interval=5,
    )
    logger = logging.getLogger("flow")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    with open(lines_path) as lines:
        for _, line in zip(range(int(count)), lines, strict=False):
            logger.info(line[:-1])
    handler.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "replay":
        replay(*args)
    elif command == "watchtower":
        watchtower_ship(*args)
    else:
        ringbuf(args[0], args[1], float(args[2]))
