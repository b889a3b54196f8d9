"""The few bpf(2) commands flowlog issues itself, through libc.

bcc compiles and loads our programs; these cover what it does not: opening a
map another agent pinned (the AWS agent's ring buffer), asking what it is,
and running a program on a crafted packet (BPF_PROG_TEST_RUN), which the
benchmarks use as a traffic generator.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from dataclasses import dataclass

BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_TYPE_RINGBUF = 27

_SYSCALL_NUMBERS = {"x86_64": 321, "aarch64": 280}
_libc = ctypes.CDLL(None, use_errno=True)


class _ObjGetAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
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
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


def _bpf(command: int, attr: ctypes.Structure) -> int:
    number = _SYSCALL_NUMBERS.get(platform.machine())
    if number is None:
        raise OSError(f"bpf(2) syscall number unknown on {platform.machine()}")
    result = _libc.syscall(number, command, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    name: str


def obj_pin(fd: int, path: str) -> None:
    """Pin a map or program at ``path`` in the BPF filesystem."""
    encoded = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _ObjGetAttr(pathname=ctypes.addressof(encoded), bpf_fd=fd))


def obj_get(path: str) -> int:
    """Open a pinned map or program; returns a new file descriptor."""
    encoded = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(BPF_OBJ_GET, _ObjGetAttr(pathname=ctypes.addressof(encoded)))


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return MapInfo(
        info.type,
        info.id,
        info.key_size,
        info.value_size,
        info.max_entries,
        info.name.decode(errors="replace"),
    )


SK_BUFF_SIZE = 192  # sizeof(struct __sk_buff)
SK_BUFF_IFINDEX = 40  # offsetof(struct __sk_buff, ifindex)


def prog_test_run(
    prog_fd: int, packet: bytes, repeat: int = 1, ifindex: int = 0
) -> tuple[int, int]:
    """Run a tc program ``repeat`` times on ``packet``; returns (verdict, ns per run).

    ``ifindex`` (a device of the calling thread's network namespace) is what the
    program sees as skb->ifindex; 0 keeps the kernel's default (loopback).
    """
    data = ctypes.create_string_buffer(packet, len(packet))
    context = ctypes.create_string_buffer(SK_BUFF_SIZE)
    struct.pack_into("<I", context, SK_BUFF_IFINDEX, ifindex)
    attr = _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(packet),
        data_in=ctypes.addressof(data),
        repeat=repeat,
        ctx_size_in=SK_BUFF_SIZE if ifindex else 0,
        ctx_in=ctypes.addressof(context) if ifindex else 0,
    )
    _bpf(BPF_PROG_TEST_RUN, attr)
    return attr.retval, attr.duration
