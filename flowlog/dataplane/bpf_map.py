"""Reading and writing a BPF map through its file descriptor.

Uses libbcc's bpf() wrappers, so it works the same on the maps flowlog just
loaded and on maps opened from their pins by ``flowlog ebpf``.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from typing import Any

from bcc.libbcc import lib
from bcc.utils import get_possible_cpus


def _check(result: int, action: str) -> None:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{action}: {os.strerror(error)}")


class BpfMap:
    """A BPF map by file descriptor, with ctypes keys and values."""

    def __init__(self, fd: int, key_type: Any, value_type: Any, per_cpu: bool = False) -> None:
        self.fd = fd
        self.key_type = key_type
        self.value_type = value_type
        self.per_cpu = per_cpu
        self._cpus = len(get_possible_cpus()) if per_cpu else 1

    def _new_value(self) -> Any:
        return (self.value_type * self._cpus)() if self.per_cpu else self.value_type()

    def lookup(self, key: Any) -> Any | None:
        value = self._new_value()
        if lib.bpf_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value)) < 0:
            return None
        return value

    def update(self, key: Any, value: Any) -> None:
        _check(lib.bpf_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), 0), "update")

    def delete(self, key: Any) -> None:
        """Delete ``key``; an absent key is not an error."""
        result = lib.bpf_delete_elem(self.fd, ctypes.byref(key))
        if result < 0 and ctypes.get_errno() != errno.ENOENT:
            _check(result, "delete")

    def __iter__(self) -> Iterator[Any]:
        """The keys (a snapshot of a changing map may repeat or miss some)."""
        previous = None
        while True:
            following = self.key_type()
            start = ctypes.byref(previous) if previous is not None else None
            if lib.bpf_get_next_key(self.fd, start, ctypes.byref(following)) < 0:
                return
            yield following
            previous = following

    def __len__(self) -> int:
        return sum(1 for _ in self)
