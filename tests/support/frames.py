"""Hand-made Ethernet frames, and running a tc program on one with BPF_PROG_TEST_RUN.

For the packets real traffic between namespaces does not easily produce:
ARP, neighbour discovery, extension headers, fragments, truncated headers.
Checksums are left zero: the programs do not read them.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from flowlog.bpf_syscall import prog_test_run

ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
IPPROTO_HOPOPTS, IPPROTO_ROUTING = 0, 43
TC_ACT_OK, TC_ACT_SHOT = 0, 2


def ethernet(kind: int, payload: bytes) -> bytes:
    return b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + struct.pack("!H", kind) + payload


def ipv4(source: str, destination: str, protocol: int, payload: bytes, **options: int) -> bytes:
    words = options.get("option_words", 0)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45 + words,
        0,
        20 + words * 4 + len(payload),
        0,
        options.get("fragment_offset", 0),
        64,
        protocol,
        0,
        socket.inet_aton(source),
        socket.inet_aton(destination),
    )
    return ethernet(ETH_P_IP, header + b"\x01" * (words * 4) + payload)


def ipv6(source: str, destination: str, next_header: int, payload: bytes) -> bytes:
    header = struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
    addresses = ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address(destination).packed
    return ethernet(ETH_P_IPV6, header + addresses + payload)


def extension(next_header: int, body: bytes = b"\0" * 6) -> bytes:
    """An IPv6 extension header of 8 bytes (hop-by-hop, routing, ...)."""
    return struct.pack("!BB", next_header, 0) + body


def tcp(source_port: int, destination_port: int, flags: int) -> bytes:
    return struct.pack(
        "!HHIIBBHHH", source_port, destination_port, 0, 0, 5 << 4, flags, 65535, 0, 0
    )


def udp(source_port: int, destination_port: int, payload: bytes = b"ping") -> bytes:
    return struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload


def icmp(kind: int, code: int = 0, rest: bytes = b"\0\0\0\0") -> bytes:
    return struct.pack("!BBH", kind, code, 0) + rest


def arp_request(sender: str, target: str) -> bytes:
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1)
    body += b"\x02\0\0\0\0\x02" + socket.inet_aton(sender) + b"\0" * 6 + socket.inet_aton(target)
    return ethernet(ETH_P_ARP, body)


def run_program(prog_fd: int, frame: bytes, ifindex: int) -> int:
    """The program's verdict on ``frame`` as if it crossed ``ifindex`` (a device of this
    thread's network namespace)."""
    verdict, _ = prog_test_run(prog_fd, frame, ifindex=ifindex)
    return verdict
