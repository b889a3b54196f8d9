"""Fixtures for the data plane's integration tests: a node, pods, policies, and our programs.

Every test gets its own namespaces (removed on exit, pass or fail) and its
own pin directory under /sys/fs/bpf (unpinned on exit); a last check at the
end of the session fails if anything of ours is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pyroute2 import netns

from flowlog.config import Settings
from flowlog.dataplane import Dataplane
from flowlog.dataplane.programs import PinLayout
from flowlog.dataplane.tap import RingBufferReader
from flowlog.demo.topology import NAME_PREFIX, Topology
from flowlog.records import (
    decode_each,
    direction_name,
    protocol_name,
    tier_name,
    verdict_name,
)

BPF_FS = Path("/sys/fs/bpf")
PIN_PREFIX = "flowlog-test-"
SMALL_RINGBUF = 64 * 1024


# --- policies -------------------------------------------------------------------


def policy_document(
    name: str,
    pods: list[tuple[str, str]],
    ingress: list[dict] | None = None,
    egress: list[dict] | None = None,
    isolation: list[str] | None = None,
    namespace: str = "stars",
) -> dict:
    """A PolicyEndpoint for pods given as (namespace, name)."""
    spec: dict = {
        "policyRef": {"name": name, "namespace": namespace},
        "podSelectorEndpoints": [{"name": pod, "namespace": ns} for ns, pod in pods],
    }
    if isolation is not None:
        spec["podIsolation"] = isolation
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.aws/v1alpha1",
        "kind": "PolicyEndpoint",
        "metadata": {"name": f"{name}-x1", "namespace": namespace},
        "spec": spec,
    }


def write_policy(directory: Path, file_name: str, *documents: dict) -> Path:
    """Write atomically, as kubelet and editors do, so a watcher never sees half a file."""
    path = directory / file_name
    partial = directory / f".{file_name}.partial"
    partial.write_text(yaml.safe_dump_all(documents))
    partial.rename(path)
    return path


def peer(cidr: str, *ports: dict, excepts: list[str] | None = None) -> dict:
    rule: dict = {"cidr": cidr}
    if excepts:
        rule["except"] = excepts
    if ports:
        rule["ports"] = list(ports)
    return rule


# --- events ---------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A verdict event in the words a flow log uses."""

    verdict: str
    direction: str
    protocol: str
    source: str
    source_port: int
    destination: str
    destination_port: int
    tier: str
    pod: tuple[str, str] | None  # (name, namespace)
    policy: tuple[str, str] | None
    packet_size: int
    ifindex: int
    # What a flow end (EXPIRED/DELETED) says the flow carried: packets and bytes
    # from its source, and back.
    carried: tuple[int, int, int, int] = (0, 0, 0, 0)


def _address(raw) -> str:
    address = ipaddress.IPv6Address(bytes(raw))
    return str(address.ipv4_mapped or address)


def read_events(reader: RingBufferReader, dataplane: Dataplane) -> list[Event]:
    """Every event in the ring buffer now (events are written before a packet moves on)."""
    raw = reader.drain()
    names = dataplane.attribution
    return [
        Event(
            verdict=verdict_name(int(e["verdict"])),
            direction=direction_name(int(e["is_egress"])),
            protocol=protocol_name(int(e["protocol"])),
            source=_address(e["src_ip"]),
            source_port=int(e["src_port"]),
            destination=_address(e["dest_ip"]),
            destination_port=int(e["dest_port"]),
            tier=tier_name(int(e["tier"])),
            pod=names.endpoints.get(int(e["endpoint_id"])),
            policy=names.policies.get(int(e["policy_id"])),
            packet_size=int(e["packet_size"]),
            ifindex=int(e["ifindex"]),
            carried=(
                int(e["packets_sent"]),
                int(e["bytes_sent"]),
                int(e["packets_received"]),
                int(e["bytes_received"]),
            ),
        )
        for e in decode_each(raw)
    ]


# --- waiting ----------------------------------------------------------------------


async def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {predicate}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(dataplane: Dataplane) -> AsyncIterator[asyncio.Task]:
    """``dataplane.run()`` in the background, as the agent runs it; cancelled on exit."""
    task = asyncio.create_task(dataplane.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture
def topology() -> Iterator[Topology]:
    with Topology() as topo:
        yield topo


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    return directory


def new_pin_dir() -> Path:
    return BPF_FS / f"{PIN_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def loaded_dataplane(topology: Topology, pin_dir: Path, **settings: object) -> Iterator[Dataplane]:
    """A Dataplane on the topology's node namespace, closed and unpinned on exit."""
    values = {
        "bpf_pin_dir": str(pin_dir),
        "ringbuf_size": SMALL_RINGBUF,
        "enable_policy_event_logs": True,
    }
    values.update(settings)
    dataplane = Dataplane(Settings(**values), netns=topology.node.name)
    try:
        dataplane.load()
        yield dataplane
    finally:
        dataplane.settings = dataplane.settings.replace(keep_programs=False)
        dataplane.close()
        PinLayout(pin_dir).remove()


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    path = new_pin_dir()
    yield path
    PinLayout(path).remove()


@pytest.fixture
def make_dataplane(
    topology: Topology, policy_dir: Path, pin_dir: Path
) -> Iterator[Callable[..., Dataplane]]:
    """Load Dataplanes on the test's node namespace; every one is closed at the end."""
    with contextlib.ExitStack() as stack:

        def make(**settings: object) -> Dataplane:
            settings = {"policy_dir": str(policy_dir), **settings}
            return stack.enter_context(loaded_dataplane(topology, pin_dir, **settings))

        yield make


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    # Pins of test runs that were killed (their namespaces go with the next Topology).
    for path in BPF_FS.glob(f"{PIN_PREFIX}*-*"):
        pid = path.name.removeprefix(PIN_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            PinLayout(path).remove()
    yield
    ours = f"{NAME_PREFIX}-{os.getpid()}-"
    leftovers = [name for name in netns.listnetns() if name.startswith(ours)]
    leftovers += [
        str(path) for path in BPF_FS.glob(f"{PIN_PREFIX}{os.getpid()}-*") if path.exists()
    ]
    assert not leftovers, f"left behind: {leftovers}"
