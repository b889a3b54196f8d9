"""flowlog ebpf progs|maps|events, beside a loaded data plane."""

from __future__ import annotations

import re
import threading
import time

import pytest

from flowlog.cli import main
from flowlog.dataplane import pinned
from flowlog.dataplane.tap import RingBufferReader
from flowlog.demo.topology import TcpServer, tcp_connect
from tests.dataplane.conftest import peer, policy_document, read_events, write_policy

pytestmark = pytest.mark.bpf

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def stars(topology, policy_dir, make_dataplane):
    client = topology.add_pod("client", "stars")
    backend = topology.add_pod("backend", "stars")
    write_policy(
        policy_dir,
        "backend.yaml",
        policy_document(
            "backend-policy",
            [("stars", "backend")],
            ingress=[peer(f"{client.ipv4}/32", {"port": 6379})],
        ),
    )
    dataplane = make_dataplane()
    return client, backend, dataplane, ["--bpf-pin-dir", str(dataplane.pins.root)]


def test_progs_lists_the_programs_and_the_veths_they_are_on(stars, topology, capsys):
    _, backend, _, pins = stars
    assert main(["ebpf", "progs", *pins, "--netns", topology.node.name]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert [line[1:3] for line in lines[1:3]] == [
        ["handle_ingress", "sched_cls"],
        ["handle_egress", "sched_cls"],
    ]
    assert [backend.host_veth, str(backend.ifindex), "tc-egress", "handle_ingress"] in lines
    assert [backend.host_veth, str(backend.ifindex), "tc-ingress", "handle_egress"] in lines


def test_maps_lists_every_map_and_the_switches(stars, capsys):
    assert main(["ebpf", "maps", *stars[3]]) == 0
    out = capsys.readouterr().out
    names = [line.split()[1] for line in out.splitlines()[1:11]]
    assert names == [
        "endpoints",
        "ingress_rules",
        "egress_rules",
        "conntrack",
        "policy_events",
        "tap_events",
        "ringbuf_lost",
        "settings",
        "pod_names",
        "policy_names",
    ]
    assert out.splitlines()[1].split()[6] == "1"  # one endpoint programmed
    assert "emit_events=1 tap_events=0 strict=0 lost_policy_events=0" in out


def test_events_prints_live_verdicts_without_taking_them_from_the_agent(stars, topology, capsys):
    client, backend, dataplane, pins = stars

    def traffic():
        deadline = time.monotonic() + 20
        while not pinned.switches(dataplane.pins)["tap_events"] and time.monotonic() < deadline:
            time.sleep(0.02)  # polling another thread's progress, with a deadline
        with TcpServer(backend, 6379), TcpServer(backend, 80):
            tcp_connect(client, backend.ipv4, 6379, source_port=42001)
            tcp_connect(client, backend.ipv4, 80, timeout=0.3, source_port=42002)

    with RingBufferReader(dataplane.ringbuf_fd) as agent:
        sender = threading.Thread(target=traffic)
        sender.start()
        command = ["ebpf", "events", *pins, "--netns", topology.node.name]
        status = main([*command, "--count", "3", "--duration", "20"])
        sender.join()
        verdicts = [e.verdict for e in read_events(agent, dataplane)][:3]
        assert verdicts == ["ACCEPT", "EXPIRED/DELETED", "DENY"]
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    client_ip, backend_ip = re.escape(client.ipv4), re.escape(backend.ipv4)
    named = "pod=stars/backend policy=stars/backend-policy tier=NETWORK_POLICY"
    expected = [
        rf"ACCEPT ingress TCP {client_ip}:42001 -> {backend_ip}:6379 {named} size=\d+ veth=\w+",
        rf"EXPIRED/DELETED ingress TCP {client_ip}:42001 -> {backend_ip}:6379 {named} "
        r"sent=[3-9]/\d+B received=[2-9]/\d+B duration=\d\.\d{3}s veth=\w+",
        rf"DENY ingress TCP {client_ip}:42002 -> {backend_ip}:80 {named} size=\d+ veth=\w+",
    ]
    assert len(lines) == len(expected)
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(f"{TIMESTAMP} {pattern}", line), line
        assert line.endswith(f"veth={backend.host_veth}")
    assert pinned.switches(dataplane.pins)["tap_events"] == 0


def test_nothing_pinned_is_an_error(tmp_path, capsys):
    assert main(["ebpf", "progs", "--bpf-pin-dir", str(tmp_path / "none")]) == 1
    assert "nothing pinned under" in capsys.readouterr().err
