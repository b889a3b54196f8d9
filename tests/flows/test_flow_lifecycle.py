"""Flows from first packet to end, on real traffic through the agent, and their summaries.

A server pod isolates its ingress; a client may reach TCP 8080, UDP 5353 and
ICMP and is denied TCP 9999. Connections of known sizes, an idle UDP flow, a
ping, denied attempts; then the flow log is read: lines per flow, counters,
and summaries that add up across windows and across a restart.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from flowlog.dataplane.programs import PinLayout
from flowlog.dataplane.tap import tapped
from flowlog.demo.topology import Pod, TcpServer, Topology, UdpEchoServer, open_tcp, ping
from flowlog.records import decode_each
from tests.dataplane.conftest import new_pin_dir, peer, policy_document, write_policy
from tests.support.agent_process import AgentProcess, wait_until

pytestmark = pytest.mark.bpf

PAYLOAD = 10_000
EXPIRED = "EXPIRED/DELETED"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Topology, Pod, Pod, Pod, Path, PinLayout]]:
    policies = tmp_path / "policies"
    policies.mkdir()
    with Topology() as topology:
        client = topology.add_pod("client", "client")
        monitor = topology.add_pod("monitor", "client")
        server = topology.add_pod("server", "stars")
        write_policy(
            policies,
            "server.yaml",
            policy_document(
                "server-policy",
                [("stars", "server")],
                isolation=["Ingress"],
                ingress=[
                    peer(f"{client.ipv4}/32", {"port": 8080}, {"protocol": "UDP", "port": 5353}),
                    peer(f"{monitor.ipv4}/32"),  # every protocol: ICMP too
                ],
            ),
        )
        pins = PinLayout(new_pin_dir())
        try:
            yield topology, client, monitor, server, policies, pins
        finally:
            pins.remove()


@contextlib.contextmanager
def agent(node, log: Path, *flags: str) -> Iterator[AgentProcess]:
    topology, _, _, _, policies, pins = node
    process = AgentProcess(
        "--enable-policy-event-logs",
        "--policy-dir",
        str(policies),
        "--bpf-pin-dir",
        str(pins.root),
        "--log-file",
        str(log),
        "--node-name",
        "node-1",
        *flags,
        namespace=topology.node,
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.close()


def lines(log: Path) -> list[dict]:
    return [orjson.loads(line) for line in log.read_bytes().splitlines()] if log.exists() else []


def send_and_close(client: Pod, server: Pod, source_port: int, size: int = PAYLOAD) -> None:
    with open_tcp(client, server.ipv4, 8080, source_port=source_port) as connection:
        assert connection.exchange(b"x" * size)


def denied_attempt(client: Pod, server: Pod, source_port: int) -> None:
    with pytest.raises(OSError):
        open_tcp(client, server.ipv4, 9999, timeout=0.5, source_port=source_port).close()


def test_each_connection_is_one_accept_and_one_end_and_idle_flows_end_after_their_timeout(
    node, tmp_path
):
    _, client, monitor, server, _, _ = node
    log = tmp_path / "flows.log"
    timeouts = "--flow-idle-timeouts=udp=2,icmp=2"
    servers = contextlib.ExitStack()
    with agent(node, log, timeouts) as process, servers:
        servers.enter_context(TcpServer(server, 8080))
        servers.enter_context(UdpEchoServer(server, 5353))
        for index in range(5):
            send_and_close(client, server, 41000 + index, PAYLOAD * (index + 1))
        with client.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((client.ipv4, 41100))
            udp.settimeout(2)
            for _ in range(3):
                udp.sendto(b"u" * 100, (server.ipv4, 5353))
                assert udp.recvfrom(1000)[0] == b"u" * 100
        last_packets = time.monotonic()
        assert ping(monitor, server.ipv4, identifier=4242)
        denied_attempt(client, server, 41300)

        def idle_ends() -> list[dict]:
            ended = [line for line in lines(log) if line["Verdict"] == EXPIRED]
            return [line for line in ended if line["Proto"] in ("UDP", "ICMP")]

        ended = wait_until(lambda: len(idle_ends()) == 2 and idle_ends(), timeout=20)
        assert time.monotonic() - last_packets >= 2  # not before their timeout
        assert process.stop() == 0
    written = lines(log)
    for index in range(5):
        flow = [line for line in written if line["Src Port"] == 41000 + index]
        assert [line["Verdict"] for line in flow] == ["ACCEPT", EXPIRED], flow
        end = flow[1]
        size = PAYLOAD * (index + 1)
        assert end["Bytes Sent"] >= size and end["Bytes Received"] >= size
        assert end["Packets Sent"] >= 3 and end["Packets Received"] >= 3
        assert end["Policy"] == "server-policy" and end["Pod"] == "server"
    udp_end = next(line for line in ended if line["Proto"] == "UDP")
    assert (udp_end["Packets Sent"], udp_end["Packets Received"]) == (3, 3)
    assert udp_end["Bytes Sent"] == udp_end["Bytes Received"] == 3 * (20 + 8 + 100)
    icmp_end = next(line for line in ended if line["Proto"] == "ICMP")
    assert (icmp_end["Packets Sent"], icmp_end["Packets Received"]) == (1, 1)
    assert [line["Verdict"] for line in written if line["Dest Port"] == 9999] == ["DENY"]


def test_flows_open_at_shutdown_end_then_unless_the_programs_stay(node, tmp_path):
    _, client, _, server, _, _ = node
    log = tmp_path / "flows.log"
    with TcpServer(server, 8080):
        with agent(node, log) as process:
            connection = open_tcp(client, server.ipv4, 8080, source_port=41200)
            assert connection.exchange(b"y" * 3000)
            assert process.stop() == 0
        (end,) = [line for line in lines(log) if line["Verdict"] == EXPIRED]
        assert end["Src Port"] == 41200 and end["Bytes Sent"] >= 3000
        connection.close()

        # With --keep-programs the flow carries on, and the next agent reports its end.
        with agent(node, log, "--keep-programs") as process:
            kept = open_tcp(client, server.ipv4, 8080, source_port=41201)
            assert kept.exchange(b"z" * 2000)
            assert process.stop() == 0
        assert not [
            line for line in lines(log) if line["Src Port"] == 41201 and line["Verdict"] == EXPIRED
        ]
        with agent(node, log) as process:
            assert kept.exchange(b"z" * 5000)
            kept.close()
            wait_until(
                lambda: [
                    line
                    for line in lines(log)
                    if line["Src Port"] == 41201 and line["Verdict"] == EXPIRED
                ]
            )
            assert process.stop() == 0
    (end,) = [
        line for line in lines(log) if line["Src Port"] == 41201 and line["Verdict"] == EXPIRED
    ]
    assert end["Bytes Sent"] >= 7000  # what it carried under both agents


def summary_lines(log: Path) -> list[dict]:
    return [line for line in lines(log) if line["msg"] == "Flow Summary: "]


def test_summaries_add_up_exactly_over_windows_and_a_restart(node, tmp_path):
    _, client, _, server, _, pins = node
    log = tmp_path / "flows.log"
    ends: list = []  # every connection's end, as the programs reported it on the tap

    def collect(tap) -> int:
        ends.extend(e for e in decode_each(tap.drain()) if int(e["verdict"]) == 2)
        return len(ends)

    with TcpServer(server, 8080):
        for run in range(2):  # a restart between the runs
            with agent(node, log, "--flow-log-aggregate=2") as process, tapped(pins) as tap:
                for round_ in range(3):
                    for index in range(4):
                        port = 42000 + run * 100 + round_ * 10 + index
                        send_and_close(client, server, port, 1000 * (port % 97 + 1))
                    denied_attempt(client, server, 42900 + run * 100 + round_)
                    time.sleep(1.1)  # the traffic spread over windows, not a synchronisation
                    collect(tap)
                expected = (run + 1) * 12
                wait_until(
                    lambda want=expected: collect(tap) >= want, message="every end on the tap"
                )
                assert process.stop() == 0
    summaries = summary_lines(log)
    assert summaries and len(summaries) == len(lines(log))  # summaries instead of lines
    accepted = [s for s in summaries if s["Verdict"] == "ACCEPT"]
    denied = [s for s in summaries if s["Verdict"] == "DENY"]
    assert len({s["Start Time"] for s in summaries}) >= 3  # several windows
    assert sum(s["Flows Started"] for s in accepted) == 24
    assert sum(s["Flows Completed"] for s in accepted) == 24
    assert sum(s["Flows Started"] for s in denied) == 6
    assert sum(s["Packets Sent"] for s in denied) == 6  # each attempt one SYN
    # To the byte: what the programs reported for every connection's end.
    assert sum(s["Bytes Sent"] for s in accepted) == sum(int(e["bytes_sent"]) for e in ends)
    assert sum(s["Bytes Received"] for s in accepted) == sum(int(e["bytes_received"]) for e in ends)
    assert {s["Aggregation"] for s in summaries} == {"peer"}
    assert all("Src Port" not in s for s in summaries)
