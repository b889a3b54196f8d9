"""Reading and writing a BPF map through its file descriptor.

Plain bpf(2) calls (``flowlog.bpf_syscall``), so it works the same on maps
opened from their pins by the agent and by ``flowlog ebpf``, and the agent
never loads bcc's compiler libraries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flowlog import bpf_syscall


class BpfMap:
    """A BPF map by file descriptor, with ctypes keys and values."""

    def __init__(self, fd: int, key_type: Any, value_type: Any, per_cpu: bool = False) -> None:
        self.fd = fd
        self.key_type = key_type
        self.value_type = value_type
        self.per_cpu = per_cpu
        self._cpus = bpf_syscall.possible_cpus() if per_cpu else 1

    def _new_value(self) -> Any:
        return (self.value_type * self._cpus)() if self.per_cpu else self.value_type()

    def lookup(self, key: Any) -> Any | None:
        value = self._new_value()
        return value if bpf_syscall.map_lookup(self.fd, key, value) else None

    def update(self, key: Any, value: Any) -> None:
        bpf_syscall.map_update(self.fd, key, value)

    def delete(self, key: Any) -> None:
        """Delete ``key``; an absent key is not an error."""
        bpf_syscall.map_delete(self.fd, key)

    def __iter__(self) -> Iterator[Any]:
        """The keys (a snapshot of a changing map may repeat or miss some)."""
        previous = None
        while True:
            following = self.key_type()
            if not bpf_syscall.map_next_key(self.fd, previous, following):
                return
            yield following
            previous = following

    def __len__(self) -> int:
        return sum(1 for _ in self)
