"""What flowlog has pinned, described from the pins alone (for ``flowlog ebpf``)."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from dataclasses import dataclass

from flowlog import bpf_syscall
from flowlog.dataplane import maps
from flowlog.dataplane.bpf_map import BpfMap
from flowlog.dataplane.programs import MAP_NAMES, PROGRAMS, PinLayout

# The kernel's names for the map and program types flowlog uses.
MAP_TYPE_NAMES = {
    1: "hash",
    2: "array",
    6: "percpu_array",
    9: "lru_hash",
    11: "lpm_trie",
    27: "ringbuf",
}
PROG_TYPE_NAMES = {3: "sched_cls"}
# Maps whose size is their capacity in bytes rather than a number of entries.
RINGBUF_TYPE = 27
ARRAY_TYPES = (2, 6)


class _ProgInfo(ctypes.Structure):
    """The start of the kernel's struct bpf_prog_info, up to the name."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
    )


@dataclass(frozen=True)
class PinnedProgram:
    pin: str
    id: int
    name: str
    type: str
    tag: str
    instructions: int


@dataclass(frozen=True)
class PinnedMap:
    pin: str
    id: int
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int
    entries: int | None  # None where counting means nothing (arrays, ring buffers)


@contextlib.contextmanager
def _open(path: os.PathLike[str] | str) -> Iterator[int]:
    fd = bpf_syscall.obj_get(str(path))
    try:
        yield fd
    finally:
        os.close(fd)


def pinned_programs(pins: PinLayout) -> list[PinnedProgram]:
    found = []
    for name in PROGRAMS:
        path = pins.prog(name)
        if not path.exists():
            continue
        with _open(path) as fd:
            info = _ProgInfo()
            bpf_syscall.obj_info(fd, info)
        found.append(
            PinnedProgram(
                pin=str(path),
                id=info.id,
                name=info.name.decode(errors="replace"),
                type=PROG_TYPE_NAMES.get(info.type, str(info.type)),
                tag=bytes(info.tag).hex(),
                instructions=info.xlated_prog_len // 8,
            )
        )
    return found


def pinned_maps(pins: PinLayout) -> list[PinnedMap]:
    found = []
    for name in MAP_NAMES:
        path = pins.map(name)
        if not path.exists():
            continue
        with _open(path) as fd:
            info = bpf_syscall.map_info(fd)
            counted = info.type not in ARRAY_TYPES and info.type != RINGBUF_TYPE
            entries = _count_entries(fd, info.key_size) if counted else None
        found.append(
            PinnedMap(
                pin=str(path),
                id=info.id,
                name=info.name,
                type=MAP_TYPE_NAMES.get(info.type, str(info.type)),
                key_size=info.key_size,
                value_size=info.value_size,
                max_entries=info.max_entries,
                entries=entries,
            )
        )
    return found


def _count_entries(fd: int, key_size: int) -> int:
    return len(BpfMap(fd, ctypes.c_uint8 * key_size, ctypes.c_uint8))


def switches(pins: PinLayout) -> dict[str, int]:
    """The settings map's slots, and the lost-event counters summed over CPUs."""
    values = {}
    with _open(pins.map("settings")) as fd:
        table = BpfMap(fd, ctypes.c_uint32, ctypes.c_uint32)
        for label, slot in (
            ("emit_events", maps.SETTING_EMIT_EVENTS),
            ("tap_events", maps.SETTING_TAP_EVENTS),
            ("strict", maps.SETTING_STRICT),
        ):
            value = table.lookup(ctypes.c_uint32(slot))
            values[label] = value.value if value is not None else 0
    with _open(pins.map("ringbuf_lost")) as fd:
        lost = BpfMap(fd, ctypes.c_uint32, ctypes.c_uint64, per_cpu=True)
        for label, slot in (
            ("lost_policy_events", maps.LOST_POLICY_EVENTS),
            ("lost_tap_events", maps.LOST_TAP_EVENTS),
        ):
            counts = lost.lookup(ctypes.c_uint32(slot))
            values[label] = sum(counts) if counts is not None else 0
    return values


def names(pins: PinLayout) -> tuple[dict[int, tuple[str, str]], dict[int, tuple[str, str]]]:
    """endpoint_id -> (pod, namespace) and policy_id -> (policy, namespace), as published."""
    tables = []
    for map_name in ("pod_names", "policy_names"):
        found = {}
        with _open(pins.map(map_name)) as fd:
            table = BpfMap(fd, ctypes.c_uint32, maps.ObjectName)
            for key in table:
                value = table.lookup(key)
                if value is not None:
                    found[key.value] = (value.name.decode(), value.namespace.decode())
        tables.append(found)
    return tables[0], tables[1]
