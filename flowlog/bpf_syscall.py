"""The few bpf(2) commands flowlog issues itself, through libc.

bcc compiles and loads our programs; these cover what it does not: opening a
map another agent pinned (the AWS agent's ring buffer), asking what it is,
reading and deleting many entries in one call (the agent's scan of
conntrack), and running a program on a crafted packet (BPF_PROG_TEST_RUN),
which the benchmarks use as a traffic generator.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from dataclasses import dataclass

import numpy as np

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ENABLE_STATS = 32
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_DELETE_BATCH = 27
BPF_STATS_RUN_TIME = 0
BPF_MAP_TYPE_RINGBUF = 27

_SYSCALL_NUMBERS = {"x86_64": 321, "aarch64": 280}
_libc = ctypes.CDLL(None, use_errno=True)


class _ObjGetAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
    ]


class _MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),  # next_key for BPF_MAP_GET_NEXT_KEY
        ("flags", ctypes.c_uint64),
    ]


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * 16),
    ]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


class _BatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
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
        raise OSError(error, os.strerror(error))  # FileNotFoundError for ENOENT
    return result


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    name: str
    flags: int = 0


def _address(buffer: ctypes.Array | ctypes.Structure | None) -> int:
    return ctypes.addressof(buffer) if buffer is not None else 0


def map_lookup(fd: int, key: ctypes._CData, value: ctypes._CData) -> bool:
    """Fill ``value`` with the entry for ``key``; False if there is none."""
    attr = _MapElemAttr(map_fd=fd, key=_address(key), value=_address(value))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr)
    except FileNotFoundError:
        return False
    return True


def map_update(fd: int, key: ctypes._CData, value: ctypes._CData) -> None:
    _bpf(BPF_MAP_UPDATE_ELEM, _MapElemAttr(map_fd=fd, key=_address(key), value=_address(value)))


def map_delete(fd: int, key: ctypes._CData) -> bool:
    """Delete the entry for ``key``; False if there was none."""
    try:
        _bpf(BPF_MAP_DELETE_ELEM, _MapElemAttr(map_fd=fd, key=_address(key)))
    except FileNotFoundError:
        return False
    return True


def map_next_key(fd: int, key: ctypes._CData | None, next_key: ctypes._CData) -> bool:
    """Fill ``next_key`` with the key after ``key`` (the first if None); False at the end."""
    attr = _MapElemAttr(map_fd=fd, key=_address(key), value=_address(next_key))
    try:
        _bpf(BPF_MAP_GET_NEXT_KEY, attr)
    except FileNotFoundError:
        return False
    return True


def map_lookup_batch(
    fd: int, keys: np.ndarray, values: np.ndarray, cursor: int | None
) -> tuple[int, int | None]:
    """Entries of a hash map into ``keys`` and ``values`` (arrays of the map's key
    and value records, as many as fit), from ``cursor`` (None: the start);
    returns how many, and the cursor to go on from (None once the map is done).
    A snapshot of a changing map may miss or repeat entries."""
    start = ctypes.c_uint32(cursor or 0)
    following = ctypes.c_uint32()
    attr = _BatchAttr(
        in_batch=ctypes.addressof(start) if cursor is not None else 0,
        out_batch=ctypes.addressof(following),
        keys=keys.ctypes.data,
        values=values.ctypes.data,
        count=min(len(keys), len(values)),
        map_fd=fd,
    )
    try:
        _bpf(BPF_MAP_LOOKUP_BATCH, attr)
    except FileNotFoundError:  # the last entries, or none
        return attr.count, None
    return attr.count, following.value


def map_delete_batch(fd: int, keys: np.ndarray) -> int:
    """Delete every key of ``keys`` (an array of the map's key records) that is
    there; returns how many were."""
    deleted = done = 0
    while done < len(keys):
        attr = _BatchAttr(
            keys=keys.ctypes.data + done * keys.itemsize, count=len(keys) - done, map_fd=fd
        )
        try:
            _bpf(BPF_MAP_DELETE_BATCH, attr)
        except FileNotFoundError:  # that key is gone already: go on after it
            deleted += attr.count
            done += attr.count + 1
            continue
        return deleted + attr.count
    return deleted


def enable_run_time_stats() -> int:
    """Have the kernel count every program's runs and run time while the returned
    fd is open (BPF_ENABLE_STATS), as ``sysctl kernel.bpf_stats_enabled=1`` does."""
    attr = ctypes.c_uint32(BPF_STATS_RUN_TIME)
    return _bpf(BPF_ENABLE_STATS, attr)


def possible_cpus() -> int:
    """How many values a per-CPU map holds per key."""
    with open("/sys/devices/system/cpu/possible") as ranges:
        count = 0
        for part in ranges.read().strip().split(","):
            first, _, last = part.partition("-")
            count += int(last or first) - int(first) + 1
    return count


def map_create(
    map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str
) -> int:
    """A new map; returns its file descriptor."""
    attr = _MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        map_name=name.encode()[:15],
    )
    return _bpf(BPF_MAP_CREATE, attr)


def prog_load(prog_type: int, instructions: bytes, license: str, name: str) -> int:
    """Load a program (its instructions with their maps' fds in place); returns its fd.

    A program the verifier refuses raises OSError with the verifier's last line."""
    code = ctypes.create_string_buffer(instructions, len(instructions))
    licence = ctypes.create_string_buffer(license.encode())

    def load(log: ctypes.Array | None) -> int:
        attr = _ProgLoadAttr(
            prog_type=prog_type,
            insn_cnt=len(instructions) // 8,
            insns=ctypes.addressof(code),
            license=ctypes.addressof(licence),
            log_level=1 if log is not None else 0,
            log_size=len(log) if log is not None else 0,
            log_buf=ctypes.addressof(log) if log is not None else 0,
            prog_name=name.encode()[:15],
        )
        return _bpf(BPF_PROG_LOAD, attr)

    try:
        return load(None)
    except OSError as error:
        # Again with the verifier's log, for its reason.
        log = ctypes.create_string_buffer(1 << 20)
        try:
            fd = load(log)
        except OSError:
            lines = log.value.decode(errors="replace").strip().splitlines()
            raise OSError(error.errno, lines[-1] if lines else error.strerror) from None
        return fd


def obj_pin(fd: int, path: str) -> None:
    """Pin a map or program at ``path`` in the BPF filesystem."""
    encoded = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _ObjGetAttr(pathname=ctypes.addressof(encoded), bpf_fd=fd))


def obj_get(path: str) -> int:
    """Open a pinned map or program; returns a new file descriptor."""
    encoded = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(BPF_OBJ_GET, _ObjGetAttr(pathname=ctypes.addressof(encoded)))


def obj_info(fd: int, info: ctypes.Structure) -> None:
    """Fill ``info`` (the start of struct bpf_map_info, bpf_prog_info...) for ``fd``."""
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    obj_info(fd, info)
    return MapInfo(
        info.type,
        info.id,
        info.key_size,
        info.value_size,
        info.max_entries,
        info.name.decode(errors="replace"),
        info.map_flags,
    )


# struct bpf_prog_info (UAPI): its size, and where the run statistics sit.
PROG_INFO_SIZE = 232
PROG_INFO_RUN = struct.Struct("<QQ")  # run_time_ns, run_cnt
PROG_INFO_RUN_OFFSET = 192


def prog_run_stats(fd: int) -> tuple[int, int]:
    """(nanoseconds run, runs) of a program while run-time statistics are enabled."""
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    attr = _InfoAttr(bpf_fd=fd, info_len=PROG_INFO_SIZE, info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return PROG_INFO_RUN.unpack_from(info.raw, PROG_INFO_RUN_OFFSET)


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
