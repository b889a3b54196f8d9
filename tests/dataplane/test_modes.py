"""Standard and strict mode, and pods whose veths come and go while the data plane runs."""

from __future__ import annotations

import asyncio
import socket

import pytest

from flowlog.dataplane.tap import RingBufferReader
from flowlog.demo.topology import TcpServer, ping, tcp_connect
from tests.dataplane.conftest import (
    eventually,
    peer,
    policy_document,
    read_events,
    running,
    write_policy,
)

pytestmark = pytest.mark.bpf


def verdicts(events):
    """(verdict, direction, pod name, policy name, tier) of each verdict (flow ends aside)."""
    return [
        (
            e.verdict,
            e.direction,
            e.pod[0] if e.pod else None,
            e.policy[0] if e.policy else None,
            e.tier,
        )
        for e in events
        if e.verdict != "EXPIRED/DELETED"
    ]


def test_standard_mode_attaches_nothing_without_policies(topology, make_dataplane):
    client = topology.add_pod("client", "stars")
    backend = topology.add_pod("backend", "stars")
    dataplane = make_dataplane()
    assert dataplane.status()["attached"] == {}
    with RingBufferReader(dataplane.ringbuf_fd) as reader, TcpServer(backend, 6379):
        assert tcp_connect(client, backend.ipv4, 6379)
        assert ping(backend, client.ipv6)
        assert read_events(reader, dataplane) == []


def test_strict_mode_denies_until_a_pods_policies_arrive(topology, policy_dir, make_dataplane):
    client = topology.add_pod("client", "stars")
    backend = topology.add_pod("backend", "stars")
    dataplane = make_dataplane(enforcing_mode="strict")
    assert dataplane.status()["attached"] == {client.host_veth: None, backend.host_veth: None}

    async def scenario():
        reader = RingBufferReader(dataplane.ringbuf_fd)
        async with running(dataplane):
            with TcpServer(backend, 6379):
                assert not await asyncio.to_thread(
                    tcp_connect, client, backend.ipv4, 6379, 0.5, 41001
                )
                denied = read_events(reader, dataplane)
                # Dropped as it leaves the client: strict mode's default, no pod or policy known.
                assert denied and set(verdicts(denied)) == {
                    ("DENY", "egress", None, None, "DEFAULT")
                }
                assert {(e.source_port, e.destination_port) for e in denied} == {(41001, 6379)}

                write_policy(
                    policy_dir,
                    "stars.yaml",
                    policy_document(
                        "client-policy",
                        [("stars", "client")],
                        isolation=["Egress"],
                        egress=[peer(f"{backend.ipv4}/32", {"port": 6379})],
                    ),
                    policy_document(
                        "backend-policy",
                        [("stars", "backend")],
                        isolation=["Ingress"],
                        ingress=[peer(f"{client.ipv4}/32", {"port": 6379})],
                    ),
                )
                await eventually(lambda: dataplane.policy_updates >= 1)
                assert await asyncio.to_thread(tcp_connect, client, backend.ipv4, 6379)
            assert verdicts(read_events(reader, dataplane)) == [
                ("ACCEPT", "egress", "client", "client-policy", "NETWORK_POLICY"),
                ("ACCEPT", "ingress", "backend", "backend-policy", "NETWORK_POLICY"),
            ]
            # Once a pod has policies, a direction none of them isolates is open.
            assert await asyncio.to_thread(ping, backend, client.ipv4)
            assert verdicts(read_events(reader, dataplane)) == [
                ("ACCEPT", "egress", "backend", None, "DEFAULT"),
                ("ACCEPT", "ingress", "client", None, "DEFAULT"),
            ]
        reader.close()

    asyncio.run(scenario())


def test_strict_mode_attaches_a_new_pod_at_once(topology, make_dataplane):
    client = topology.add_pod("client", "stars")
    dataplane = make_dataplane(enforcing_mode="strict")

    async def scenario():
        async with running(dataplane):
            late = topology.add_pod("late", "stars")
            await eventually(lambda: late.host_veth in dataplane.status()["attached"])
            assert not await asyncio.to_thread(ping, client, late.ipv4, 0.5)

    asyncio.run(scenario())


def test_a_pod_whose_veth_appears_later_is_attached_then(topology, policy_dir, make_dataplane):
    client = topology.add_pod("client", "stars")
    backend = topology.add_pod("backend", "stars", create_veth=False)
    write_policy(
        policy_dir,
        "backend.yaml",
        policy_document(
            "backend-policy",
            [("stars", "backend")],
            ingress=[peer(f"{client.ipv6}/128", {"port": 6379})],
        ),
    )
    dataplane = make_dataplane()
    assert dataplane.status()["attached"] == {}

    async def scenario():
        reader = RingBufferReader(dataplane.ringbuf_fd)
        async with running(dataplane):
            topology.connect(backend)
            await eventually(lambda: backend.host_veth in dataplane.status()["attached"])
            with TcpServer(backend, 6379, socket.AF_INET6), TcpServer(backend, 80, socket.AF_INET6):
                assert await asyncio.to_thread(tcp_connect, client, backend.ipv6, 6379)
                assert not await asyncio.to_thread(tcp_connect, client, backend.ipv6, 80, 0.5)
            events = read_events(reader, dataplane)
            assert [(e.verdict, e.destination_port) for e in events][:3] == [
                ("ACCEPT", 6379),
                ("EXPIRED/DELETED", 6379),
                ("DENY", 80),
            ]
            assert {e.ifindex for e in events} == {backend.ifindex}

            # The pod goes away: so does its attachment.
            topology.disconnect(backend)
            await eventually(lambda: dataplane.status()["attached"] == {})
        reader.close()

    asyncio.run(scenario())
