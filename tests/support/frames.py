"""Hand-made Ethernet frames, and running a tc program on one with BPF_PROG_TEST_RUN.

For the packets real traffic between namespaces does not easily produce:
ARP, neighbour discovery, extension headers, fragments, truncated headers.
Checksums are left zero: the programs do not read them.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import platform
import socket
import struct

ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
TCP_SYN, TCP_ACK = 0x02, 0x10
IPPROTO_HOPOPTS, IPPROTO_ROUTING = 0, 43
TC_ACT_OK, TC_ACT_SHOT = 0, 2

BPF_PROG_TEST_RUN = 10
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}[platform.machine()]
SK_BUFF_SIZE = 192  # sizeof(struct __sk_buff)
SK_BUFF_IFINDEX = 40  # offsetof(struct __sk_buff, ifindex)
_libc = ctypes.CDLL(None, use_errno=True)


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


class _TestRunAttr(ctypes.Structure):
    _fields_ = (
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
    )


def run_program(prog_fd: int, frame: bytes, ifindex: int) -> int:
    """The program's verdict on ``frame`` as if it crossed ``ifindex`` (a device of this
    thread's network namespace)."""
    data = ctypes.create_string_buffer(frame, len(frame))
    context = ctypes.create_string_buffer(SK_BUFF_SIZE)
    struct.pack_into("<I", context, SK_BUFF_IFINDEX, ifindex)
    attr = _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(frame),
        data_in=ctypes.addressof(data),
        repeat=1,
        ctx_size_in=SK_BUFF_SIZE,
        ctx_in=ctypes.addressof(context),
    )
    if _libc.syscall(BPF_SYSCALL, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)):
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return attr.retval
