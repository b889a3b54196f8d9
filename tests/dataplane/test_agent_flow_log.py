"""The whole agent on real packets: policies in a directory, traffic between pod
namespaces, and exactly the expected lines in the flow log."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import orjson
import pytest

from flowlog.dataplane.programs import PinLayout
from flowlog.demo.topology import TcpServer, Topology, UdpEchoServer, ping, tcp_connect, udp_send
from tests.dataplane.conftest import new_pin_dir, peer, policy_document, write_policy
from tests.support.agent_process import AgentProcess, wait_until

pytestmark = pytest.mark.bpf

NODE = "node-1"


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def summary(line: dict) -> tuple:
    """The parts of a line a test can predict (not the time, not the packet size)."""
    return (
        line["Src IP"],
        line["Src Port"],
        line["Dest IP"],
        line["Dest Port"],
        line["Proto"],
        line["Verdict"],
        line["Direction"],
        line["Tier"],
        line.get("Pod"),
        line.get("Namespace"),
        line.get("Policy"),
        line.get("Policy Namespace"),
    )


@pytest.fixture
def pin_dir():
    path = new_pin_dir()
    yield path
    PinLayout(path).remove()


def start_agent(
    topology: Topology, pin_dir: Path, log: Path, *flags: str, env: dict | None = None
) -> AgentProcess:
    agent = AgentProcess(
        "--enable-policy-event-logs",
        "--bpf-pin-dir",
        str(pin_dir),
        "--log-file",
        str(log),
        "--node-name",
        NODE,
        *flags,
        namespace=topology.node,
        env=env,
    )
    try:
        agent.wait_ready()
    except BaseException:
        agent.close()
        raise
    return agent


def stars_policies(policy_dir: Path) -> None:
    write_policy(
        policy_dir,
        "frontend.yaml",
        policy_document(
            "frontend-policy",
            [("stars", "frontend")],
            isolation=["Ingress"],
            ingress=[
                peer("10.42.0.0/16", {"protocol": "TCP", "port": 80}),
                peer("fd00:42::/64", {"protocol": "TCP", "port": 80}),
            ],
        ),
    )
    write_policy(
        policy_dir,
        "backend.yaml",
        policy_document("default-deny", [("stars", "backend")], isolation=["Ingress"]),
    )


def test_verdicts_on_real_packets_become_exact_lines(topology, policy_dir, pin_dir, tmp_path):
    client = topology.add_pod("client", "client")
    frontend = topology.add_pod("frontend", "stars")
    backend = topology.add_pod("backend", "stars")
    stars_policies(policy_dir)
    log = tmp_path / "network-policy-agent.log"
    with (
        start_agent(topology, pin_dir, log, "--policy-dir", str(policy_dir)) as agent,
        TcpServer(frontend, 80),
        TcpServer(backend, 6379),
        UdpEchoServer(frontend, 53),
        TcpServer(frontend, 80, socket.AF_INET6),
    ):
        assert tcp_connect(client, frontend.ipv4, 80, source_port=40001)
        assert not tcp_connect(client, backend.ipv4, 6379, timeout=0.5, source_port=40002)
        udp_send(client, frontend.ipv4, 53, source_port=40003)
        assert not ping(client, backend.ipv4, timeout=0.5)
        assert tcp_connect(client, frontend.ipv6, 80, source_port=40004)
        expected = {
            (
                client.ipv4,
                40001,
                frontend.ipv4,
                80,
                "TCP",
                "ACCEPT",
                "ingress",
                "NETWORK_POLICY",
                "frontend",
                "stars",
                "frontend-policy",
                "stars",
            ),
            (
                client.ipv4,
                40002,
                backend.ipv4,
                6379,
                "TCP",
                "DENY",
                "ingress",
                "NETWORK_POLICY",
                "backend",
                "stars",
                "default-deny",
                "stars",
            ),
            (
                client.ipv4,
                40003,
                frontend.ipv4,
                53,
                "UDP",
                "DENY",
                "ingress",
                "NETWORK_POLICY",
                "frontend",
                "stars",
                "frontend-policy",
                "stars",
            ),
            (
                client.ipv4,
                0,
                backend.ipv4,
                0,
                "ICMP",
                "DENY",
                "ingress",
                "NETWORK_POLICY",
                "backend",
                "stars",
                "default-deny",
                "stars",
            ),
            (
                client.ipv6,
                40004,
                frontend.ipv6,
                80,
                "TCP",
                "ACCEPT",
                "ingress",
                "NETWORK_POLICY",
                "frontend",
                "stars",
                "frontend-policy",
                "stars",
            ),
        }
        # Both TCP connections closed: each ends in a line of its own.
        expected |= {
            (*accepted[:5], "EXPIRED/DELETED", *accepted[6:])
            for accepted in expected
            if accepted[4] == "TCP" and accepted[5] == "ACCEPT"
        }
        wait_until(lambda: len(read_lines(log)) >= len(expected), message="seven lines")
        assert agent.stop() == 0
    lines = read_lines(log)
    assert sorted(map(summary, lines)) == sorted(expected)  # and nothing else: no reply lines
    assert {line["Node"] for line in lines} == {NODE}
    for end in (line for line in lines if line["Verdict"] == "EXPIRED/DELETED"):
        # SYN, ACK, FIN out; SYN-ACK, FIN back (at least), in L3 bytes.
        assert end["Packets Sent"] >= 3 and end["Packets Received"] >= 2
        assert end["Bytes Sent"] >= 3 * 40 and end["Bytes Received"] >= 2 * 40
        assert 0 <= end["Duration"] < 10 and "Packet Size" not in end
    # Shutdown removed what the agent pinned.
    assert not list(pin_dir.glob("progs/*")) and not list(pin_dir.glob("maps/*"))


def test_a_policy_file_changed_while_running(topology, policy_dir, pin_dir, tmp_path):
    client = topology.add_pod("client", "client")
    backend = topology.add_pod("backend", "stars")
    stars_policies(policy_dir)
    log = tmp_path / "flows.log"
    with (
        start_agent(topology, pin_dir, log, "--policy-dir", str(policy_dir)) as agent,
        TcpServer(backend, 6379),
    ):
        assert not tcp_connect(client, backend.ipv4, 6379, timeout=0.5, source_port=41001)
        write_policy(
            policy_dir,
            "backend.yaml",
            policy_document(
                "backend-policy",
                [("stars", "backend")],
                isolation=["Ingress"],
                ingress=[peer(f"{client.ipv4}/32", {"protocol": "TCP", "port": 6379})],
            ),
        )
        wait_until(
            lambda: tcp_connect(client, backend.ipv4, 6379, timeout=0.5, source_port=41002),
            message="the new policy",
        )
        assert agent.stop() == 0
    verdicts = [(line["Src Port"], line["Verdict"], line["Policy"]) for line in read_lines(log)]
    assert verdicts[0] == (41001, "DENY", "default-deny")
    assert verdicts[-2:] == [
        (41002, "ACCEPT", "backend-policy"),
        (41002, "EXPIRED/DELETED", "backend-policy"),
    ]


def test_strict_mode_denies_pods_without_policies(topology, policy_dir, pin_dir, tmp_path):
    client = topology.add_pod("client", "client")
    server = topology.add_pod("server", "other")
    log = tmp_path / "flows.log"
    with (
        start_agent(
            topology,
            pin_dir,
            log,
            "--policy-dir",
            str(policy_dir),
            env={"NETWORK_POLICY_ENFORCING_MODE": "strict"},
        ) as agent,
        TcpServer(server, 8080),
    ):
        assert agent.ready()["dataplane"]["enforcing_mode"] == "strict"
        assert not tcp_connect(client, server.ipv4, 8080, timeout=0.5, source_port=42001)
        wait_until(lambda: read_lines(log), message="a line")
        assert agent.stop() == 0
    first = read_lines(log)[0]
    assert (first["Src Port"], first["Verdict"], first["Tier"], first["Direction"]) == (
        42001,
        "DENY",
        "DEFAULT",
        "egress",
    )
    assert "Pod" not in first and "Policy" not in first  # nothing names a pod without policies


def test_standard_mode_leaves_pods_without_policies_alone(topology, policy_dir, pin_dir, tmp_path):
    client = topology.add_pod("client", "client")
    server = topology.add_pod("server", "other")
    log = tmp_path / "flows.log"
    with (
        start_agent(topology, pin_dir, log, "--policy-dir", str(policy_dir)) as agent,
        TcpServer(server, 8080),
    ):
        assert tcp_connect(client, server.ipv4, 8080, source_port=42002)
        assert agent.ready()["dataplane"]["attached"] == {}
        assert agent.stop() == 0
    assert read_lines(log) == []


def test_lost_events_are_counted_when_the_agent_cannot_keep_up(
    topology, policy_dir, pin_dir, tmp_path
):
    client = topology.add_pod("client", "client")
    backend = topology.add_pod("backend", "stars")
    stars_policies(policy_dir)
    log = tmp_path / "flows.log"
    sent = 2000
    with start_agent(
        topology, pin_dir, log, "--policy-dir", str(policy_dir), "--ringbuf-size", "4096"
    ) as agent:
        agent.signal(signal.SIGSTOP)  # nobody reads the ring buffer meanwhile
        try:
            udp_send(client, backend.ipv4, 9999, count=sent, source_port=43001)
        finally:
            agent.signal(signal.SIGCONT)

        def accounted() -> bool:
            written = len(read_lines(log))
            lost = agent.metric("flowlog_ringbuf_lost_events_total")
            return written + lost == sent and lost > 0

        wait_until(accounted, message="every datagram written or counted as lost")
        assert agent.ready()["ringbufLostEvents"] > 0
        assert agent.stop() == 0
        assert "verdict events lost so far because the ring buffer was full" in agent.stderr()
