"""The programs' parsing, on hand-made frames run through BPF_PROG_TEST_RUN on a pod's veth."""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace

import pytest

from flowlog import bpf_syscall
from flowlog.dataplane.programs import EGRESS_PROGRAM, INGRESS_PROGRAM
from flowlog.dataplane.tap import RingBufferReader
from flowlog.demo.topology import Topology
from tests.dataplane.conftest import (
    loaded_dataplane,
    new_pin_dir,
    peer,
    policy_document,
    read_events,
    write_policy,
)
from tests.support import frames
from tests.support.frames import TC_ACT_OK, TC_ACT_SHOT, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN

pytestmark = pytest.mark.bpf


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """Runs the ingress program of the backend's veth on a frame: (verdict, events).

    One data plane for the module: each test uses ports of its own.
    """
    policy_dir = tmp_path_factory.mktemp("policies")
    with contextlib.ExitStack() as stack:
        topology = stack.enter_context(Topology())
        client = topology.add_pod("client", "stars")
        backend = topology.add_pod("backend", "stars")
        other = topology.add_pod("other", "stars")
        tcp_6379 = {"port": 6379}
        write_policy(
            policy_dir,
            "backend.yaml",
            policy_document(
                "backend-policy",
                [("stars", "backend")],
                isolation=["Ingress"],
                ingress=[
                    peer(f"{client.ipv4}/32", tcp_6379),
                    peer(f"{client.ipv6}/128", tcp_6379),
                    peer(f"{other.ipv6}/128"),
                ],
            ),
        )
        dataplane = stack.enter_context(
            loaded_dataplane(topology, new_pin_dir(), policy_dir=str(policy_dir))
        )
        descriptors = {}
        for name in (INGRESS_PROGRAM, EGRESS_PROGRAM):
            descriptors[name] = bpf_syscall.obj_get(str(dataplane.pins.prog(name)))
            stack.callback(os.close, descriptors[name])
        reader = stack.enter_context(RingBufferReader(dataplane.ringbuf_fd))

        def run(frame: bytes, program: str = INGRESS_PROGRAM, ifindex: int | None = None):
            target = backend.ifindex if ifindex is None else ifindex
            fd = descriptors[program]
            verdict = topology.node.call(lambda: frames.run_program(fd, frame, target))
            events = read_events(reader, dataplane)
            return verdict, [
                (e.verdict, e.protocol, e.source_port, e.destination_port) for e in events
            ]

        yield SimpleNamespace(run=run, client=client, backend=backend, other=other)


def test_arp_passes_without_an_event(judge):
    assert judge.run(frames.arp_request(judge.client.ipv4, judge.backend.ipv4)) == (TC_ACT_OK, [])


@pytest.mark.parametrize(
    "kind",
    [133, 134, 135, 136, 137],
    ids=["router-solicit", "router-advert", "neighbour-solicit", "neighbour-advert", "redirect"],
)
def test_neighbour_discovery_passes_without_an_event(judge, kind):
    frame = frames.ipv6("fe80::1", judge.backend.ipv6, 58, frames.icmp(kind))
    assert judge.run(frame) == (TC_ACT_OK, [])


def test_a_multicast_listener_report_behind_a_hop_by_hop_header_passes(judge):
    report = frames.extension(58) + frames.icmp(143)
    frame = frames.ipv6("fe80::1", "ff02::16", frames.IPPROTO_HOPOPTS, report)
    assert judge.run(frame) == (TC_ACT_OK, [])


def test_icmp_errors_pass_without_an_event(judge):
    unreachable = frames.ipv4(judge.other.ipv4, judge.backend.ipv4, 1, frames.icmp(3, 3))
    too_big = frames.ipv6(judge.client.ipv6, judge.backend.ipv6, 58, frames.icmp(2))
    assert judge.run(unreachable) == (TC_ACT_OK, [])
    assert judge.run(too_big) == (TC_ACT_OK, [])


def test_an_extension_header_we_do_not_parse_is_judged_as_unknown_protocol(judge):
    routed = frames.extension(6) + frames.tcp(40000, 6379, frames.TCP_SYN)
    from_client = frames.ipv6(judge.client.ipv6, judge.backend.ipv6, frames.IPPROTO_ROUTING, routed)
    from_other = frames.ipv6(judge.other.ipv6, judge.backend.ipv6, frames.IPPROTO_ROUTING, routed)
    # client may only use TCP 6379; other may use anything.
    assert judge.run(from_client) == (TC_ACT_SHOT, [("DENY", "UNKNOWN", 0, 0)])
    assert judge.run(from_other) == (TC_ACT_OK, [("ACCEPT", "UNKNOWN", 0, 0)])


def tcp_from_client(judge, source_port: int, flags: int) -> bytes:
    return frames.ipv4(
        judge.client.ipv4, judge.backend.ipv4, 6, frames.tcp(source_port, 6379, flags)
    )


def tcp_from_backend(judge, source_port: int, flags: int) -> bytes:
    return frames.ipv4(
        judge.backend.ipv4, judge.client.ipv4, 6, frames.tcp(6379, source_port, flags)
    )


def test_a_flow_is_reported_once_and_a_retransmitted_syn_is_part_of_it(judge):
    syn = tcp_from_client(judge, 40000, TCP_SYN)
    assert judge.run(syn) == (TC_ACT_OK, [("ACCEPT", "TCP", 40000, 6379)])
    assert judge.run(syn) == (TC_ACT_OK, [])
    assert judge.run(tcp_from_client(judge, 40000, TCP_ACK)) == (TC_ACT_OK, [])
    reply = tcp_from_backend(judge, 40000, TCP_SYN | TCP_ACK)
    assert judge.run(reply, EGRESS_PROGRAM) == (TC_ACT_OK, [])


def test_a_tcp_flow_ends_when_both_sides_have_sent_fin_once(judge):
    end = [("EXPIRED/DELETED", "TCP", 40010, 6379)]
    assert judge.run(tcp_from_client(judge, 40010, TCP_SYN))[1] == [("ACCEPT", "TCP", 40010, 6379)]
    assert judge.run(tcp_from_client(judge, 40010, TCP_FIN | TCP_ACK)) == (TC_ACT_OK, [])
    assert judge.run(tcp_from_client(judge, 40010, TCP_FIN | TCP_ACK)) == (TC_ACT_OK, [])
    fin_back = tcp_from_backend(judge, 40010, TCP_FIN | TCP_ACK)
    assert judge.run(fin_back, EGRESS_PROGRAM) == (TC_ACT_OK, end)
    assert judge.run(tcp_from_client(judge, 40010, TCP_ACK)) == (TC_ACT_OK, [])
    # The same addresses and ports again: a new connection, a new flow.
    assert judge.run(tcp_from_client(judge, 40010, TCP_SYN))[1] == [("ACCEPT", "TCP", 40010, 6379)]


def test_a_reset_ends_a_flow(judge):
    judge.run(tcp_from_client(judge, 40011, TCP_SYN))
    reset = tcp_from_backend(judge, 40011, TCP_RST)
    assert judge.run(reset, EGRESS_PROGRAM) == (
        TC_ACT_OK,
        [("EXPIRED/DELETED", "TCP", 40011, 6379)],
    )


def test_a_syn_on_a_flow_that_never_closed_ends_it_and_starts_a_new_one(judge):
    judge.run(tcp_from_client(judge, 40012, TCP_SYN))
    judge.run(tcp_from_backend(judge, 40012, TCP_SYN | TCP_ACK), EGRESS_PROGRAM)
    # The backend answers the SYN for the first time with the other end's view.
    syn_back = tcp_from_backend(judge, 40012, TCP_SYN)
    assert judge.run(syn_back, EGRESS_PROGRAM) == (
        TC_ACT_OK,
        [("EXPIRED/DELETED", "TCP", 40012, 6379), ("ACCEPT", "TCP", 6379, 40012)],
    )


def test_sctp_ports_are_read_like_udp_ports(judge):
    chunk = frames.udp(40005, 3868) + b"\0" * 8  # SCTP: ports, tag, checksum, then chunks
    from_client = frames.ipv6(judge.client.ipv6, judge.backend.ipv6, 132, chunk)
    from_other = frames.ipv6(judge.other.ipv6, judge.backend.ipv6, 132, chunk)
    assert judge.run(from_client) == (TC_ACT_SHOT, [("DENY", "SCTP", 40005, 3868)])
    assert judge.run(from_other) == (TC_ACT_OK, [("ACCEPT", "SCTP", 40005, 3868)])


def test_a_packet_of_a_flow_never_allowed_is_judged_whatever_its_flags(judge):
    ack = frames.ipv4(judge.client.ipv4, judge.backend.ipv4, 6, frames.tcp(40001, 80, 0x10))
    assert judge.run(ack) == (TC_ACT_SHOT, [("DENY", "TCP", 40001, 80)])


def test_ip_options_are_skipped_to_find_the_ports(judge):
    syn = frames.tcp(40002, 6379, frames.TCP_SYN)
    frame = frames.ipv4(judge.client.ipv4, judge.backend.ipv4, 6, syn, option_words=2)
    assert judge.run(frame) == (TC_ACT_OK, [("ACCEPT", "TCP", 40002, 6379)])


def test_a_later_fragment_is_judged_without_ports(judge):
    fragment = frames.ipv4(
        judge.client.ipv4, judge.backend.ipv4, 17, b"\0" * 16, fragment_offset=185
    )
    assert judge.run(fragment) == (TC_ACT_SHOT, [("DENY", "UDP", 0, 0)])


def test_a_cut_off_transport_header_is_judged_on_what_can_be_read(judge):
    frame = frames.ipv4(judge.client.ipv4, judge.backend.ipv4, 6, frames.tcp(40004, 6379, 0x02))
    assert judge.run(frame[:-18]) == (TC_ACT_SHOT, [("DENY", "TCP", 0, 0)])


def test_a_veth_without_an_endpoint_passes_everything_in_standard_mode(judge):
    syn = frames.ipv4(judge.other.ipv4, judge.client.ipv4, 6, frames.tcp(40003, 22, 0x02))
    assert judge.run(syn, ifindex=judge.client.ifindex) == (TC_ACT_OK, [])
