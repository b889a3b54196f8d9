"""The policy maps' keys and values (mirrors of bpf/policy_maps.h) and access to any map by fd.

Every struct of ``bpf/policy_maps.h`` is mirrored here once, field for field;
tests/dataplane/test_map_layout.py compiles the header and checks sizes and
offsets. ``BpfMap`` reads and writes a map through its file descriptor with
libbcc's bpf() wrappers, so it works the same on the maps flowlog just
loaded and on maps opened from their pins by ``flowlog ebpf``.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from typing import Any

from bcc.libbcc import lib
from bcc.utils import get_possible_cpus

MAX_PORT_RULES = 24
ENDPOINT_INGRESS_ISOLATED = 1
ENDPOINT_EGRESS_ISOLATED = 2
LOST_POLICY_EVENTS = 0
LOST_TAP_EVENTS = 1
SETTING_EMIT_EVENTS = 0
SETTING_TAP_EVENTS = 1
SETTING_STRICT = 2
SETTINGS_COUNT = 3
# Bits of the rule key's data before the address: the rules_id.
RULES_ID_BITS = 32

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class Endpoint(ctypes.Structure):
    _fields_ = (
        ("endpoint_id", u32),
        ("flags", u32),
        ("rules_id", u32),
        ("ingress_policy_id", u32),
        ("egress_policy_id", u32),
    )


class RuleKey(ctypes.Structure):
    _fields_ = (("prefixlen", u32), ("rules_id", u32), ("ip", u8 * 16))


class PortRule(ctypes.Structure):
    _fields_ = (
        ("policy_id", u32),
        ("port", u16),
        ("end_port", u16),
        ("protocol", u8),
        ("pad", u8 * 3),
    )


class RuleValue(ctypes.Structure):
    _fields_ = (("count", u32), ("ports", PortRule * MAX_PORT_RULES))


class FlowKey(ctypes.Structure):
    _fields_ = (
        ("src_ip", u8 * 16),
        ("dest_ip", u8 * 16),
        ("src_port", u16),
        ("dest_port", u16),
        ("protocol", u8),
        ("pad", u8 * 3),
        ("ifindex", u32),
    )


class FlowState(ctypes.Structure):
    _fields_ = (("policy_id", u32), ("is_egress", u8), ("pad", u8 * 3))


class ObjectName(ctypes.Structure):
    _fields_ = (("namespace", ctypes.c_char * 64), ("name", ctypes.c_char * 256))


# Every mirrored struct by its C name, for the layout test and `flowlog ebpf maps`.
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "endpoint": Endpoint,
    "rule_key": RuleKey,
    "port_rule": PortRule,
    "rule_value": RuleValue,
    "flow_key": FlowKey,
    "flow_state": FlowState,
    "object_name": ObjectName,
}


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
        if lib.bpf_delete_elem(self.fd, ctypes.byref(key)) < 0 and ctypes.get_errno() != 2:
            _check(-1, "delete")

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
