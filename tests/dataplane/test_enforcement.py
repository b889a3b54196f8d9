"""Real packets between pod namespaces: what passes, what is dropped, and the events that say so."""

from __future__ import annotations

import dataclasses
import socket
import time
from types import SimpleNamespace

import pytest

from flowlog.dataplane.tap import RingBufferReader
from flowlog.demo.topology import (
    PING_DATA,
    TcpServer,
    UdpEchoServer,
    open_tcp,
    ping,
    tcp_connect,
    udp_exchange,
)
from tests.dataplane.conftest import Event, peer, policy_document, read_events, write_policy

pytestmark = pytest.mark.bpf

FAMILIES = pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
BACKEND = ("backend", "stars")
BACKEND_POLICY = ("backend-policy", "stars")
ETHERNET, IPV4, IPV6, UDP, ICMP = 14, 20, 40, 8, 8


@pytest.fixture
def stars(topology, policy_dir, make_dataplane):
    """backend isolates ingress: client may use TCP 6379 and UDP 5353, other anything."""
    client = topology.add_pod("client", "stars")
    backend = topology.add_pod("backend", "stars")
    other = topology.add_pod("other", "stars")
    allowed_ports = ({"port": 6379}, {"protocol": "UDP", "port": 5353})
    write_policy(
        policy_dir,
        "backend.yaml",
        policy_document(
            "backend-policy",
            [("stars", "backend")],
            isolation=["Ingress"],
            ingress=[
                peer(f"{client.ipv4}/32", *allowed_ports),
                peer(f"{client.ipv6}/128", *allowed_ports),
                peer(f"{other.ipv4}/32"),
                peer(f"{other.ipv6}/128"),
            ],
        ),
    )
    dataplane = make_dataplane()
    with RingBufferReader(dataplane.ringbuf_fd) as reader:
        yield SimpleNamespace(
            client=client,
            backend=backend,
            other=other,
            dataplane=dataplane,
            events=lambda: read_events(reader, dataplane),
        )


def into_backend(stars, family, verdict, protocol, source, source_port, port, policy, size=0):
    return Event(
        verdict=verdict,
        direction="ingress",
        protocol=protocol,
        source=source.address(family),
        source_port=source_port,
        destination=stars.backend.address(family),
        destination_port=port,
        tier="NETWORK_POLICY",
        pod=BACKEND,
        policy=policy,
        packet_size=size,
        ifindex=stars.backend.ifindex,
    )


def sizeless(events: list[Event]) -> list[Event]:
    """TCP options make SYN sizes vary; the rest of a verdict must match exactly.
    What flow ends carried is checked on its own."""
    assert all(
        e.packet_size >= ETHERNET + IPV4 + 20 for e in events if e.verdict != "EXPIRED/DELETED"
    )
    return [dataclasses.replace(e, packet_size=0, carried=(0, 0, 0, 0)) for e in events]


def flow_end(accept: Event) -> Event:
    return dataclasses.replace(accept, verdict="EXPIRED/DELETED")


def wait_for_events(stars, count: int, timeout: float = 10.0) -> list[Event]:
    """The events so far, once there are ``count`` (a close's last FIN may still
    be on its way when the client's socket returns)."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        events += stars.events()
        time.sleep(0.01)
    return events + stars.events()


@FAMILIES
def test_an_allowed_tcp_connection_is_an_accept_and_at_its_close_a_flow_end(stars, family):
    with TcpServer(stars.backend, 6379, family) as server:
        with open_tcp(stars.client, stars.backend.address(family), 6379, source_port=40001) as c:
            assert c.exchange(b"x" * 3000)
            assert c.exchange(b"more")
        assert server.peers == [(stars.client.address(family), 40001)]
        expected = into_backend(
            stars, family, "ACCEPT", "TCP", stars.client, 40001, 6379, BACKEND_POLICY
        )
        events = wait_for_events(stars, 2)
    assert sizeless(events) == [expected, flow_end(expected)]
    packets_sent, bytes_sent, packets_received, bytes_received = events[1].carried
    # Both payloads each way, with the handshake and the close around them.
    assert bytes_sent >= 3004 + 4 * 40 and bytes_received >= 3004 + 3 * 40
    assert packets_sent >= 5 and packets_received >= 4


@FAMILIES
def test_a_denied_tcp_connection_fails_and_each_attempt_is_a_deny_event(stars, family):
    with TcpServer(stars.backend, 80, family) as server:
        connected = tcp_connect(
            stars.client, stars.backend.address(family), 80, timeout=0.5, source_port=40002
        )
        assert not connected
        assert server.peers == []
    events = sizeless(stars.events())
    expected = into_backend(stars, family, "DENY", "TCP", stars.client, 40002, 80, BACKEND_POLICY)
    assert events and set(events) == {expected}  # the SYN, and any retransmission


@FAMILIES
def test_udp_allowed_once_then_by_conntrack_and_denied_on_other_ports(stars, family):
    address = stars.backend.address(family)
    ip_header = IPV4 if family == socket.AF_INET else IPV6
    size = ETHERNET + ip_header + UDP + len(b"ping")
    with UdpEchoServer(stars.backend, 5353, family), UdpEchoServer(stars.backend, 53, family):
        assert udp_exchange(stars.client, address, 5353, source_port=40003)
        assert udp_exchange(stars.client, address, 5353, source_port=40003)
        assert not udp_exchange(stars.client, address, 53, source_port=40004, timeout=0.5)
    assert stars.events() == [
        into_backend(
            stars, family, "ACCEPT", "UDP", stars.client, 40003, 5353, BACKEND_POLICY, size
        ),
        into_backend(stars, family, "DENY", "UDP", stars.client, 40004, 53, BACKEND_POLICY, size),
    ]


@FAMILIES
def test_icmp_needs_a_rule_without_ports(stars, family):
    address = stars.backend.address(family)
    protocol = "ICMP" if family == socket.AF_INET else "ICMPv6"
    ip_header = IPV4 if family == socket.AF_INET else IPV6
    size = ETHERNET + ip_header + ICMP + len(PING_DATA)
    assert not ping(stars.client, address, timeout=0.5)
    assert ping(stars.other, address)
    assert ping(stars.other, address)  # another identifier: a new flow
    assert stars.events() == [
        into_backend(stars, family, "DENY", protocol, stars.client, 0, 0, BACKEND_POLICY, size),
        into_backend(stars, family, "ACCEPT", protocol, stars.other, 0, 0, BACKEND_POLICY, size),
        into_backend(stars, family, "ACCEPT", protocol, stars.other, 0, 0, BACKEND_POLICY, size),
    ]


@FAMILIES
def test_a_direction_no_policy_isolates_allows_everything_and_says_so(stars, family):
    with TcpServer(stars.client, 8080, family):
        assert tcp_connect(stars.backend, stars.client.address(family), 8080, source_port=40005)
        events = wait_for_events(stars, 2)
    accept = Event(
        verdict="ACCEPT",
        direction="egress",
        protocol="TCP",
        source=stars.backend.address(family),
        source_port=40005,
        destination=stars.client.address(family),
        destination_port=8080,
        tier="DEFAULT",
        pod=BACKEND,
        policy=None,
        packet_size=0,
        ifindex=stars.backend.ifindex,
    )
    assert sizeless(events) == [accept, flow_end(accept)]


def test_pods_no_policy_selects_are_left_alone(stars):
    assert stars.dataplane.status()["attached"] == {stars.backend.host_veth: "stars/backend"}
    with TcpServer(stars.other, 9000), UdpEchoServer(stars.other, 9000, socket.AF_INET6):
        assert tcp_connect(stars.client, stars.other.ipv4, 9000)
        assert udp_exchange(stars.client, stars.other.ipv6, 9000)
    assert ping(stars.other, stars.client.ipv4)
    assert stars.events() == []
