"""Policies changing under a running data plane, lost events, and what close() leaves behind."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import platform

import pytest

from flowlog.config import ConfigError
from flowlog.dataplane import metrics, pinned
from flowlog.dataplane.links import Links
from flowlog.dataplane.programs import PinLayout
from flowlog.dataplane.tap import RingBufferReader
from flowlog.demo.topology import TcpServer, UdpEchoServer, open_tcp, tcp_connect, udp_send
from tests.dataplane.conftest import (
    eventually,
    peer,
    policy_document,
    read_events,
    running,
    write_policy,
)

pytestmark = pytest.mark.bpf

BPF_PROG_GET_FD_BY_ID, BPF_MAP_GET_FD_BY_ID = 13, 14
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}[platform.machine()]
_libc = ctypes.CDLL(None, use_errno=True)


def kernel_has(command: int, object_id: int) -> bool:
    """Whether the kernel still holds the program or map with this id."""
    attr = (ctypes.c_uint32 * 4)(object_id)
    fd = _libc.syscall(BPF_SYSCALL, command, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd >= 0:
        os.close(fd)
        return True
    assert ctypes.get_errno() == errno.ENOENT
    return False


def backend_policy(client, *ports: dict, isolation=("Ingress",)) -> dict:
    return policy_document(
        "backend-policy",
        [("stars", "backend")],
        isolation=list(isolation),
        ingress=[peer(f"{client.ipv4}/32", *ports)],
    )


@pytest.fixture
def pods(topology):
    return topology.add_pod("client", "stars"), topology.add_pod("backend", "stars")


def attachments(topology) -> list:
    async def query():
        async with Links(topology.node.name) as links:
            return await links.attachments()

    return asyncio.run(query())


def test_a_policy_change_applies_live_and_established_flows_carry_on(
    topology, pods, policy_dir, make_dataplane
):
    client, backend = pods
    write_policy(policy_dir, "backend.yaml", backend_policy(client, {"port": 6379}))
    dataplane = make_dataplane()

    async def scenario():
        reader = RingBufferReader(dataplane.ringbuf_fd)
        with TcpServer(backend, 6379), TcpServer(backend, 8080):
            async with running(dataplane):
                connection = await asyncio.to_thread(open_tcp, client, backend.ipv4, 6379)
                assert await asyncio.to_thread(connection.exchange)

                write_policy(policy_dir, "backend.yaml", backend_policy(client, {"port": 8080}))
                await eventually(lambda: dataplane.policy_updates >= 1)
                read_events(reader, dataplane)
                assert await asyncio.to_thread(connection.exchange)  # established: carries on
                assert read_events(reader, dataplane) == []
                assert not await asyncio.to_thread(tcp_connect, client, backend.ipv4, 6379, 0.5)
                assert await asyncio.to_thread(tcp_connect, client, backend.ipv4, 8080)
                verdicts: list[tuple[str, int]] = []

                def closed() -> bool:
                    verdicts.extend(
                        (e.verdict, e.destination_port) for e in read_events(reader, dataplane)
                    )
                    return ("EXPIRED/DELETED", 8080) in verdicts

                await eventually(closed)  # the connection's end, once its last FIN is through
                assert ("DENY", 6379) in verdicts and ("ACCEPT", 8080) in verdicts

                # No policy left: the pod is left alone again (standard mode).
                (policy_dir / "backend.yaml").unlink()
                await eventually(lambda: dataplane.status()["attached"] == {})
                assert await asyncio.to_thread(tcp_connect, client, backend.ipv4, 6379)
                assert await asyncio.to_thread(connection.exchange)
                assert read_events(reader, dataplane) == []
                connection.close()
        reader.close()

    asyncio.run(scenario())


def test_a_malformed_file_is_rejected_in_one_line_and_the_rules_in_force_stay(
    topology, pods, policy_dir, make_dataplane
):
    client, backend = pods
    good = write_policy(policy_dir, "backend.yaml", backend_policy(client, {"port": 6379}))
    dataplane = make_dataplane()
    rejected_before = metrics.POLICY_FILES_REJECTED._value.get()

    async def scenario():
        async with running(dataplane):
            good.write_text(good.read_text().replace("6379", "70000"))
            expected = f"{good}: spec.ingress[0].ports[0].port: expected 1-65535, got 70000"
            await eventually(lambda: dataplane.status()["rejected"] == {str(good): expected})
            assert dataplane.status()["last_policy_error"] == expected
            assert metrics.POLICY_FILES_REJECTED._value.get() == rejected_before + 1
            with TcpServer(backend, 6379), TcpServer(backend, 70):
                assert await asyncio.to_thread(tcp_connect, client, backend.ipv4, 6379)
                assert not await asyncio.to_thread(tcp_connect, client, backend.ipv4, 70, 0.3)

            # A new bad file does not disturb the good ones either.
            (policy_dir / "typo.yaml").write_text(
                good.read_text().replace("70000", "80").replace("ports:", "portz:")
            )
            await eventually(lambda: len(dataplane.status()["rejected"]) == 2)
            assert dataplane.status()["rejected"][str(policy_dir / "typo.yaml")] == (
                f"{policy_dir / 'typo.yaml'}: spec.ingress[0].portz: unknown field"
            )

            # Fixed: accepted, and in force.
            write_policy(policy_dir, "backend.yaml", backend_policy(client, {"port": 70}))
            (policy_dir / "typo.yaml").unlink()
            await eventually(lambda: dataplane.status()["rejected"] == {})
            await eventually(lambda: dataplane.policy_updates >= 1)
            with TcpServer(backend, 70):
                assert await asyncio.to_thread(tcp_connect, client, backend.ipv4, 70)

    asyncio.run(scenario())


def test_a_malformed_file_at_start_is_a_configuration_error(policy_dir, make_dataplane):
    (policy_dir / "bad.yaml").write_text("kind: PolicyEndpoint\n")
    with pytest.raises(ConfigError) as raised:
        make_dataplane()
    assert str(raised.value) == (
        f"{policy_dir / 'bad.yaml'}: apiVersion: expected networking.k8s.aws/v1alpha1, got None"
    )
    with pytest.raises(ConfigError, match=r"^--policy-dir /nonexistent/policies: does not exist$"):
        make_dataplane(policy_dir="/nonexistent/policies")


def test_policies_that_do_not_fit_together_are_refused_naming_the_file(
    pods, policy_dir, make_dataplane
):
    client, _ = pods
    many = [{"port": port} for port in range(1000, 1013)]
    more = [{"port": port} for port in range(2000, 2012)]
    write_policy(policy_dir, "a.yaml", backend_policy(client, *many))
    second = policy_document(
        "other-policy", [("stars", "backend")], ingress=[peer("10.0.0.0/8", *more)]
    )
    write_policy(policy_dir, "b.yaml", second)
    with pytest.raises(ConfigError) as raised:
        make_dataplane()
    assert str(raised.value) == (
        f"{policy_dir / 'b.yaml'}: pod stars/backend: ingress from {client.ipv4}/32 needs 25 "
        "port entries once its policies are merged, at most 24"
    )


def test_events_the_ring_buffer_cannot_take_are_counted(pods, policy_dir, make_dataplane):
    client, backend = pods
    write_policy(policy_dir, "backend.yaml", backend_policy(client, {"port": 6379}))
    dataplane = make_dataplane(ringbuf_size=4096)
    sent = 200  # denied datagrams, each one a DENY event; the ring holds about 56
    udp_send(client, backend.ipv4, 9999, count=sent)
    lost = dataplane.lost_events()
    with RingBufferReader(dataplane.ringbuf_fd) as reader:
        kept = read_events(reader, dataplane)
    assert lost > 0
    assert len(kept) + lost == sent
    assert {e.verdict for e in kept} == {"DENY"}

    # Event logging off: still enforced, nothing emitted, nothing lost.
    dataplane.set_event_logging(False)
    with UdpEchoServer(backend, 9999), RingBufferReader(dataplane.ringbuf_fd) as reader:
        udp_send(client, backend.ipv4, 9999, count=sent)
        assert read_events(reader, dataplane) == []
        assert not tcp_connect(client, backend.ipv4, 9999, timeout=0.3)
    assert dataplane.lost_events() == lost


def test_close_leaves_no_programs_filters_or_pins(topology, pods, policy_dir, make_dataplane):
    client, backend = pods
    write_policy(policy_dir, "backend.yaml", backend_policy(client, {"port": 6379}))
    dataplane = make_dataplane()
    pins = dataplane.pins
    program_ids = [p.id for p in pinned.pinned_programs(pins)]
    map_ids = [m.id for m in pinned.pinned_maps(pins)]
    assert len(program_ids) == 2 and len(map_ids) == 10
    assert len(attachments(topology)) == 2
    dataplane.close()
    assert not pins.root.exists()
    assert attachments(topology) == []
    qdiscs = topology.node.run(["tc", "qdisc", "show", "dev", backend.host_veth]).stdout
    assert "clsact" not in qdiscs
    # The kernel frees detached programs, then their maps, after an RCU grace period.
    asyncio.run(
        eventually(
            lambda: (
                not any(kernel_has(BPF_PROG_GET_FD_BY_ID, i) for i in program_ids)
                and not any(kernel_has(BPF_MAP_GET_FD_BY_ID, i) for i in map_ids)
            )
        )
    )
    with TcpServer(backend, 80):
        assert tcp_connect(client, backend.ipv4, 80)


def test_kept_programs_enforce_after_close_and_a_restart_keeps_established_flows(
    topology, pods, policy_dir, make_dataplane
):
    client, backend = pods
    # Egress isolated with no rules: the backend's replies pass only through conntrack.
    policy = backend_policy(client, {"port": 6379}, isolation=("Ingress", "Egress"))
    write_policy(policy_dir, "backend.yaml", policy)
    first = make_dataplane(keep_programs=True)
    with TcpServer(backend, 6379), TcpServer(backend, 80):
        connection = open_tcp(client, backend.ipv4, 6379)
        assert connection.exchange()
        first.close()
        assert PinLayout(first.pins.root).exists()
        assert len(attachments(topology)) == 2
        assert not tcp_connect(client, backend.ipv4, 80, timeout=0.3)  # still enforced
        assert connection.exchange()

        second = make_dataplane()  # a restarted agent, over the same pins
        # Nobody read the first ring buffer: its ACCEPT and DENY count as lost.
        assert second.lost_events() == 2
        assert second.status()["attached"] == {backend.host_veth: "stars/backend"}
        assert len(attachments(topology)) == 2  # replaced, not added
        assert connection.exchange()  # the pinned conntrack carried the flow over
        assert not tcp_connect(client, backend.ipv4, 80, timeout=0.3)
        connection.close()
        second.close()
    assert not first.pins.root.exists()
    assert attachments(topology) == []
