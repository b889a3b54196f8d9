"""A node and its pods in network namespaces, wired as the VPC CNI wires them.

The "node" namespace holds one host-side veth per pod, named ``eni`` + the
first 11 hex characters of sha1("<namespace>.<pod>"), with a /32 (and /128)
route to the pod through it; forwarding is on in the node namespace only.
Each pod namespace has ``eth0`` with a /32 (and /128) address and a default
route through a link-local gateway on the host side (169.254.1.1 and
fe80::1), so pods reach each other through the node, where flowlog's
programs sit. Nothing here touches the namespace the caller runs in.

Namespaces are named ``flowlog-<pid>-<random>-...``; ``Topology`` deletes
them on exit, and a new ``Topology`` first deletes any left behind by a
process that no longer exists.

The traffic helpers (``TcpServer``, ``tcp_connect``, ``open_tcp``,
``UdpEchoServer``, ``udp_exchange``, ``udp_send``, ``ping``) run inside a
pod's namespace from this process, each bounded by a timeout or a count::

    with Topology() as topo:
        client = topo.add_pod("client", "stars")
        backend = topo.add_pod("backend", "stars")
        with TcpServer(backend, 6379):
            assert tcp_connect(client, backend.ipv4, 6379)
        assert ping(client, backend.ipv6)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import re
import secrets
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns

from flowlog.dataplane.naming import host_veth_name

NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "flowlog"
GATEWAY_IPV4 = "169.254.1.1"
GATEWAY_IPV6 = "fe80::1"
POD_IPV4_PREFIX = "10.42.0."
POD_IPV6_PREFIX = "fd00:42::"
CLONE_NEWNET = 0x40000000
DEFAULT_TIMEOUT = 2.0
# Upper bound on a server thread's life, whatever the test does.
SERVER_LIFETIME = 120.0

_libc = ctypes.CDLL(None, use_errno=True)
_T = TypeVar("_T")


class Namespace:
    """A network namespace created by this library, addressed by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def netlink(self, function: Callable[[IPRoute], _T]) -> _T:
        """``function(ipr)`` with a synchronous pyroute2 IPRoute inside the namespace.

        It runs on a thread of its own, so callers may be inside an event loop.
        """

        def with_iproute() -> _T:
            with IPRoute() as ipr:
                return function(ipr)

        return self.call(with_iproute)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` to run inside the namespace; keeps this mount namespace (and bpffs)."""
        return ["nsenter", f"--net={self.path}", *argv]

    def run(
        self, argv: Sequence[str], timeout: float = 10.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, check=check
        )

    def call(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` on a thread that has entered the namespace.

        Sockets it creates stay in the namespace after the thread ends.
        """
        outcome: list[Any] = []

        def enter_and_call() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        error = ctypes.get_errno()
                        raise OSError(error, os.strerror(error), str(self.path))
                finally:
                    os.close(fd)
                outcome.append((True, function()))
            except BaseException as error:
                outcome.append((False, error))

        thread = threading.Thread(target=enter_and_call, name=f"netns {self.name}")
        thread.start()
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        return self.call(lambda: socket.socket(family, kind, proto))

    def sysctl(self, key: str, value: str) -> None:
        path = Path("/proc/sys") / key.replace(".", "/")
        self.call(lambda: path.write_text(value))


@dataclass
class Pod:
    """A pod: its own namespace, its addresses, and its veth in the node namespace."""

    name: str
    namespace: str
    ipv4: str
    ipv6: str
    netns: Namespace
    host_veth: str
    node: Namespace = field(repr=False)

    @property
    def ifindex(self) -> int:
        """Index of the host-side veth in the node namespace."""
        found = self.node.netlink(lambda ipr: ipr.link_lookup(ifname=self.host_veth))
        if not found:
            raise LookupError(f"{self.host_veth} does not exist")
        return found[0]

    def address(self, family: int) -> str:
        return self.ipv6 if family == socket.AF_INET6 else self.ipv4

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        return self.netns.socket(family, kind, proto)


class Topology:
    """A node namespace and pod namespaces; removes all of them on exit."""

    def __init__(self, prefix: str | None = None) -> None:
        remove_stale_namespaces()
        self.prefix = prefix or f"{NAME_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.pods: dict[tuple[str, str], Pod] = {}
        self._namespaces: list[Namespace] = []
        self._next_host = 10
        self.node = self._create_namespace("node")
        try:
            self.node.sysctl("net.ipv4.ip_forward", "1")
            self.node.sysctl("net.ipv6.conf.all.forwarding", "1")
            self.node.netlink(lambda ipr: ipr.link("set", index=1, state="up"))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _create_namespace(self, suffix: str) -> Namespace:
        namespace = Namespace(f"{self.prefix}-{suffix}")
        netns.create(namespace.name)
        self._namespaces.append(namespace)
        # Addresses are usable at once: no duplicate address detection.
        namespace.sysctl("net.ipv6.conf.default.accept_dad", "0")
        namespace.sysctl("net.ipv6.conf.all.accept_dad", "0")
        return namespace

    def add_pod(
        self,
        name: str,
        namespace: str = "default",
        ipv4: str | None = None,
        ipv6: str | None = None,
        create_veth: bool = True,
    ) -> Pod:
        """A pod namespace wired to the node; ``create_veth=False`` defers the wiring.

        Addresses default to the next free 10.42.0.N and fd00:42::N.
        """
        host = self._next_host
        self._next_host += 1
        pod = Pod(
            name=name,
            namespace=namespace,
            ipv4=ipv4 or f"{POD_IPV4_PREFIX}{host}",
            ipv6=ipv6 or f"{POD_IPV6_PREFIX}{host:x}",
            netns=self._create_namespace(f"pod{host}"),
            host_veth=host_veth_name(namespace, name),
            node=self.node,
        )
        self.pods[(namespace, name)] = pod
        if create_veth:
            self.connect(pod)
        return pod

    def connect(self, pod: Pod) -> None:
        """Create the pod's veth pair, addresses and routes (as the CNI does at pod start)."""

        def wire_pod(inside: IPRoute) -> None:
            inside.link("set", index=1, state="up")
            eth0 = inside.link_lookup(ifname="eth0")[0]
            inside.link("set", index=eth0, state="up")
            inside.addr("add", index=eth0, address=pod.ipv4, prefixlen=32)
            inside.addr("add", index=eth0, address=pod.ipv6, prefixlen=128)
            inside.route("add", dst=f"{GATEWAY_IPV4}/32", oif=eth0, scope="link")
            inside.route("add", dst="0.0.0.0/0", gateway=GATEWAY_IPV4, oif=eth0)
            inside.route("add", dst="::/0", gateway=GATEWAY_IPV6, oif=eth0)

        def wire_node(node: IPRoute) -> None:
            node.link(
                "add",
                ifname=pod.host_veth,
                kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": str(pod.netns.path)},
            )
            host = node.link_lookup(ifname=pod.host_veth)[0]
            node.link("set", index=host, state="up")
            node.addr("add", index=host, address=GATEWAY_IPV4, prefixlen=32)
            node.addr("add", index=host, address=GATEWAY_IPV6, prefixlen=64)
            node.route("add", dst=f"{pod.ipv4}/32", oif=host, scope="link")
            node.route("add", dst=f"{pod.ipv6}/128", oif=host)

        self.node.netlink(wire_node)
        pod.netns.netlink(wire_pod)

    def disconnect(self, pod: Pod) -> None:
        """Delete the pod's veth pair (as the CNI does at pod deletion)."""

        def delete(node: IPRoute) -> None:
            for index in node.link_lookup(ifname=pod.host_veth):
                node.link("del", index=index)

        self.node.netlink(delete)

    def close(self) -> None:
        for namespace in reversed(self._namespaces):
            with contextlib.suppress(OSError):
                netns.remove(namespace.name)
        self._namespaces.clear()


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces this library created in processes that have since died."""
    removed = []
    pattern = re.compile(rf"{NAME_PREFIX}-(\d+)-[0-9a-f]+-")
    for name in netns.listnetns():
        match = pattern.match(name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            with contextlib.suppress(OSError):
                netns.remove(name)
                removed.append(name)
    return removed


# --- traffic ------------------------------------------------------------------


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class _Server:
    """A server socket in a pod, served by a thread until the context exits."""

    def __init__(self, pod: Pod, port: int, family: int, kind: int) -> None:
        self.pod = pod
        self.family = family
        self.sock = pod.socket(family, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((pod.address(family), port))
        self.port = self.sock.getsockname()[1]
        self.peers: list[tuple[str, int]] = []  # who got an answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        deadline = time.monotonic() + SERVER_LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline:
            if select.select([self.sock], [], [], 0.05)[0]:
                self._handle()

    def _handle(self) -> None:
        raise NotImplementedError


class TcpServer(_Server):
    """Accepts TCP connections on ``port`` and echoes what each sends."""

    def __init__(self, pod: Pod, port: int, family: int = socket.AF_INET) -> None:
        super().__init__(pod, port, family, socket.SOCK_STREAM)
        self.sock.listen(64)

    def _handle(self) -> None:
        connection, peer = self.sock.accept()
        self.peers.append(peer[:2])
        threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    def _echo(self, connection: socket.socket) -> None:
        deadline = time.monotonic() + SERVER_LIFETIME
        with connection:
            connection.settimeout(0.2)
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    data = connection.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                connection.sendall(data)


class UdpEchoServer(_Server):
    """Answers every UDP datagram on ``port`` with the same bytes."""

    def __init__(self, pod: Pod, port: int, family: int = socket.AF_INET) -> None:
        super().__init__(pod, port, family, socket.SOCK_DGRAM)

    def _handle(self) -> None:
        data, peer = self.sock.recvfrom(65536)
        self.peers.append(peer[:2])
        self.sock.sendto(data, peer)


class TcpConnection:
    """An open TCP connection from a pod; ``exchange`` checks that it still carries data."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def exchange(self, payload: bytes = b"ping") -> bool:
        """Send ``payload``; True if the same bytes come back within the timeout."""
        try:
            self.sock.sendall(payload)
            received = b""
            deadline = time.monotonic() + self.timeout
            while len(received) < len(payload):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(len(payload) - len(received))
                if not chunk:
                    return False
                received += chunk
            return received == payload
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TcpConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_tcp(
    pod: Pod, address: str, port: int, timeout: float = DEFAULT_TIMEOUT, source_port: int = 0
) -> TcpConnection:
    """Connect from ``pod``; raises OSError (TimeoutError, refused...) if it cannot."""
    family = _family(address)
    sock = pod.socket(family, socket.SOCK_STREAM)
    try:
        if source_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((pod.address(family), source_port))
        sock.settimeout(timeout)
        sock.connect((address, port))
    except OSError:
        sock.close()
        raise
    return TcpConnection(sock, timeout)


def tcp_connect(
    pod: Pod, address: str, port: int, timeout: float = DEFAULT_TIMEOUT, source_port: int = 0
) -> bool:
    """True if ``pod`` can open a connection and get an echo back within ``timeout``."""
    try:
        with open_tcp(pod, address, port, timeout, source_port) as connection:
            return connection.exchange()
    except OSError:
        return False


def udp_exchange(
    pod: Pod,
    address: str,
    port: int,
    payload: bytes = b"ping",
    timeout: float = DEFAULT_TIMEOUT,
    source_port: int = 0,
) -> bool:
    """Send one datagram from ``pod``; True if the echo comes back within ``timeout``."""
    family = _family(address)
    with pod.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((pod.address(family), source_port))
        sock.settimeout(timeout)
        sock.sendto(payload, (address, port))
        try:
            data, peer = sock.recvfrom(65536)
        except TimeoutError:
            return False
        return data == payload and ipaddress.ip_address(peer[0]) == ipaddress.ip_address(address)


def udp_send(
    pod: Pod,
    address: str,
    port: int,
    count: int = 1,
    payload: bytes = b"ping",
    source_port: int = 0,
) -> None:
    """Send ``count`` datagrams from ``pod`` without waiting for anything (load, not a check)."""
    family = _family(address)
    with pod.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((pod.address(family), source_port))
        for _ in range(count):
            sock.sendto(payload, (address, port))


ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129
PING_DATA = b"flowlog"  # after the identifier and sequence number


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(
    pod: Pod, address: str, timeout: float = DEFAULT_TIMEOUT, identifier: int | None = None
) -> bool:
    """One ICMP or ICMPv6 echo from ``pod``; True if the reply arrives within ``timeout``."""
    family = _family(address)
    identifier = secrets.randbits(16) if identifier is None else identifier
    if family == socket.AF_INET6:
        proto, request, reply = socket.IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY
    else:
        proto, request, reply = socket.IPPROTO_ICMP, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY
    body = struct.pack("!HH", identifier, 1) + PING_DATA
    header = struct.pack("!BBH", request, 0, 0)
    # The kernel fills in the ICMPv6 checksum (it covers a pseudo-header).
    if family == socket.AF_INET:
        header = struct.pack("!BBH", request, 0, _checksum(header + body))
    with pod.socket(family, socket.SOCK_RAW, proto) as sock:
        sock.sendto(header + body, (address, 0))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], remaining)[0]:
                return False
            try:
                data, peer = sock.recvfrom(65536)
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                raise
            if family == socket.AF_INET:
                data = data[(data[0] & 0x0F) * 4 :]  # raw IPv4 sockets include the IP header
            kind, _, _, got_id = struct.unpack_from("!BBHH", data)
            same_peer = ipaddress.ip_address(peer[0]) == ipaddress.ip_address(address)
            if kind == reply and got_id == identifier and same_peer:
                return True
    return False
