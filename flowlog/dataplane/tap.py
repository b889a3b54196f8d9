"""Reading verdict events one by one, for people and tests rather than for throughput.

``RingBufferReader`` drains a ring buffer with libbcc's ring buffer API (one
callback per record: fine at the rates a person reads, far too slow for the
agent, whose consumer is ``flowlog.sources.ringbuf``). ``tapped`` switches on
the programs' second ring buffer, ``tap_events``, for as long as a
``flowlog ebpf events`` runs, so that watching never takes events away from
the agent, which has the only consumer position of ``policy_events``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

from flowlog import bpf_syscall
from flowlog.dataplane import maps
from flowlog.dataplane.bpf_map import BpfMap
from flowlog.dataplane.programs import TAP_MAP, PinLayout

# libbcc's callback: (context, record, size) -> 0 to go on.
RECORD_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)


class RingBufferReader:
    """Collects the raw records of a BPF ring buffer map (by fd) as they arrive."""

    def __init__(self, map_fd: int) -> None:
        from bcc.libbcc import lib  # here only: it maps clang and LLVM into the process

        self._lib = lib
        self.records: list[bytes] = []
        self._callback = RECORD_CALLBACK(self._on_record)  # kept alive with self
        self._manager = self._lib.bpf_new_ringbuf(map_fd, self._callback, None)
        if not self._manager:
            error = ctypes.get_errno()
            raise OSError(error, f"cannot open ring buffer: {os.strerror(error)}")

    def _on_record(self, _context: int, data: int, size: int) -> int:
        self.records.append(ctypes.string_at(data, size))
        return 0

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Records that arrived within ``timeout_ms`` (all that are ready, at once if any)."""
        self._lib.bpf_poll_ringbuf(self._manager, timeout_ms)
        return self.take()

    def drain(self) -> list[bytes]:
        """Every record already in the ring buffer, without waiting."""
        self._lib.bpf_consume_ringbuf(self._manager)
        return self.take()

    def take(self) -> list[bytes]:
        records, self.records = self.records, []
        return records

    def close(self) -> None:
        if self._manager:
            self._lib.bpf_free_ringbuf(self._manager)
            self._manager = None

    def __enter__(self) -> RingBufferReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def pinned_map(path: Path) -> Iterator[int]:
    """The fd of a pinned map, closed on exit."""
    try:
        fd = bpf_syscall.obj_get(str(path))
    except OSError as error:
        raise FileNotFoundError(
            error.errno, f"{path}: {os.strerror(error.errno or 0)} (is the agent running?)"
        ) from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def tapped(pins: PinLayout) -> Iterator[RingBufferReader]:
    """A reader of ``tap_events``, which the programs fill while this context is open."""
    with (
        pinned_map(pins.map("settings")) as settings_fd,
        pinned_map(pins.map(TAP_MAP)) as tap_fd,
        RingBufferReader(tap_fd) as reader,
    ):
        reader.drain()  # what an earlier watcher left unread is old news
        settings = BpfMap(settings_fd, ctypes.c_uint32, ctypes.c_uint32)
        slot = ctypes.c_uint32(maps.SETTING_TAP_EVENTS)
        settings.update(slot, ctypes.c_uint32(1))
        try:
            yield reader
        finally:
            settings.update(slot, ctypes.c_uint32(0))
