"""Windowed summaries from whole batches: what each level keeps, and sums that add up."""

from __future__ import annotations

import socket

import numpy as np
import orjson
import pytest

from flowlog.cluster.peers import API, NODE, POD, Identity, Peers
from flowlog.flows.summaries import Summaries
from flowlog.records import FLOW_END, V4_MAPPED_PREFIX, FlowBatch

WINDOW_START = 1_796_400_000_000  # a multiple of 60 s
POLICIES = {3: ("frontend-policy", "stars"), 4: ("default-deny", "stars")}


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def ip(text: str) -> np.ndarray:
    return np.frombuffer(V4_MAPPED_PREFIX + socket.inet_aton(text), np.uint8)


def events(rows: list[dict]) -> FlowBatch:
    records = np.zeros(len(rows), FLOW_END)
    for record, row in zip(records, rows, strict=True):
        for name, value in row.items():
            record[name] = ip(value) if name.endswith("_ip") else value
    return FlowBatch(records, np.full(len(rows), WINDOW_START, np.int64))


def accept(src: str, sport: int, dst: str = "10.42.0.11", **more) -> dict:
    return {
        "src_ip": src,
        "src_port": sport,
        "dest_ip": dst,
        "dest_port": 80,
        "protocol": 6,
        "verdict": 1,
        "policy_id": 3,
        "packet_size": 74,
        **more,
    }


def end(src: str, sport: int, carried=(5, 500, 4, 4000), dst: str = "10.42.0.11") -> dict:
    packets_sent, bytes_sent, packets_received, bytes_received = carried
    return accept(
        src,
        sport,
        dst,
        verdict=2,
        start_ns=1,
        last_ns=2,
        packet_size=0,
        packets_sent=packets_sent,
        bytes_sent=bytes_sent,
        packets_received=packets_received,
        bytes_received=bytes_received,
    )


def deny(src: str, sport: int, size: int = 60) -> dict:
    return accept(src, sport, dst="10.42.0.12", verdict=0, policy_id=4, packet_size=size) | {
        "dest_port": 6379
    }


@pytest.fixture
def peers() -> Peers:
    peers = Peers()
    for address, name, workload in (
        ("10.42.0.10", "client-a", "deployment/client"),
        ("10.42.0.20", "client-b", "deployment/client"),
        ("10.42.0.11", "frontend-x", "deployment/frontend"),
        ("10.42.0.12", "backend-y", "deployment/backend"),
    ):
        peers.claim(API, name, address, Identity(POD, name, "stars", workload), at_ms=0)
    peers.claim(API, "node", "192.168.0.20", Identity(NODE, "node-2"), at_ms=0)
    return peers


def summarize(peers: Peers, level: str, *batches: FlowBatch, clock: Clock | None = None):
    clock = clock or Clock(WINDOW_START + 1)
    summaries = Summaries(60, level, "node-1", peers, lambda: POLICIES, clock)
    for batch in batches:
        summaries.add(batch, peers.resolve(batch))
    clock.now = WINDOW_START + 60_000
    assert summaries.due()
    return [orjson.loads(line) for line in summaries.close_window().splitlines()]


def test_many_connections_between_two_pods_are_one_peer_summary(peers):
    rows = [accept("10.42.0.10", 30000 + i) for i in range(100)]
    rows += [end("10.42.0.10", 30000 + i) for i in range(100)]
    (line,) = summarize(peers, "peer", events(rows))
    assert line["msg"] == "Flow Summary: " and line["Aggregation"] == "peer"
    assert list(line)[:4] == ["level", "timestamp", "logger", "msg"]
    assert "Src Port" not in line and line["Dest Port"] == 80
    assert (line["Src Pod"], line["Dest Pod"], line["Verdict"]) == (
        "client-a",
        "frontend-x",
        "ACCEPT",
    )
    assert (line["Policy"], line["Policy Namespace"]) == POLICIES[3]
    assert (line["Flows Started"], line["Flows Completed"]) == (100, 100)
    assert (line["Packets Sent"], line["Bytes Sent"]) == (500, 50_000)
    assert (line["Packets Received"], line["Bytes Received"]) == (400, 400_000)
    assert line["Start Time"] == "2026-12-04T16:00:00.000Z"
    assert line["End Time"] == line["timestamp"] == "2026-12-04T16:01:00.000Z"


def test_the_flow_level_keeps_source_ports_apart(peers):
    lines = summarize(
        peers, "flow", events([accept("10.42.0.10", 30001), accept("10.42.0.10", 30002)])
    )
    assert sorted(line["Src Port"] for line in lines) == [30001, 30002]


def test_the_workload_level_puts_a_workloads_pods_together(peers):
    rows = [accept("10.42.0.10", 30001), accept("10.42.0.20", 30002), accept("192.168.0.20", 30003)]
    lines = summarize(peers, "workload", events(rows))
    by_source = {line.get("Src Workload", line.get("Src Node")): line for line in lines}
    grouped = by_source["deployment/client"]
    assert grouped["Flows Started"] == 2 and grouped["Src Namespace"] == "stars"
    assert not {"Src IP", "Src Pod", "Dest IP", "Dest Pod"} & set(grouped)
    assert grouped["Dest Workload"] == "deployment/frontend"
    node = by_source["node-2"]  # a node is not a workload: it keeps its address
    assert node["Src IP"] == "192.168.0.20" and node["Flows Started"] == 1


def test_denied_attempts_are_started_flows_with_their_packets(peers):
    rows = [deny("10.42.0.10", 30000 + i, size=60 + i) for i in range(7)]
    (line,) = summarize(peers, "peer", events(rows))
    assert (line["Verdict"], line["Policy"], line["Dest Port"]) == ("DENY", "default-deny", 6379)
    assert (line["Flows Started"], line["Flows Completed"]) == (7, 0)
    assert (line["Packets Sent"], line["Bytes Sent"]) == (7, sum(60 + i for i in range(7)))


def test_outside_addresses_are_keyed_by_address_and_carry_no_names(peers):
    (line,) = summarize(peers, "peer", events([accept("203.0.113.7", 40000)]))
    assert line["Src IP"] == "203.0.113.7"
    assert not {"Src Pod", "Src Namespace", "Src Workload", "Src Node"} & set(line)


def test_windows_close_on_their_boundaries_and_their_sums_add_up(peers):
    clock = Clock(WINDOW_START + 5)
    summaries = Summaries(60, "peer", "node-1", peers, lambda: POLICIES, clock)
    written = []
    rng = np.random.default_rng(4)
    sent_total = 0
    for step in range(12):  # 10-second steps over two minutes
        clock.now = WINDOW_START + step * 10_000 + 5
        if summaries.due():
            written += summaries.close_window().splitlines()
        carried = [(int(p), int(p) * 100, 1, 10) for p in rng.integers(1, 9, 20)]
        sent_total += sum(c[1] for c in carried)
        batch = events([end("10.42.0.10", 31000 + i, c) for i, c in enumerate(carried)])
        summaries.add(batch, peers.resolve(batch))
    written += summaries.close_window(final=True).splitlines()
    lines = [orjson.loads(line) for line in written]
    assert [line["Start Time"][14:19] for line in lines] == ["00:00", "01:00"]
    assert sum(line["Flows Completed"] for line in lines) == 12 * 20
    assert sum(line["Bytes Sent"] for line in lines) == sent_total
    assert lines[-1]["End Time"] == lines[-1]["timestamp"]  # the final one ends when closed
