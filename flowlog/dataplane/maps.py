"""The policy maps' keys, values and constants: the mirror of bpf/policy_maps.h.

Every struct of the header is mirrored here once, field for field;
tests/dataplane/test_map_layout.py compiles the header and checks sizes,
offsets and constants.
"""

from __future__ import annotations

import ctypes

MAX_PORT_RULES = 24
ENDPOINT_INGRESS_ISOLATED = 1
ENDPOINT_EGRESS_ISOLATED = 2
LOST_POLICY_EVENTS = 0
LOST_TAP_EVENTS = 1
SETTING_EMIT_EVENTS = 0
SETTING_TAP_EVENTS = 1
SETTING_STRICT = 2
SETTINGS_COUNT = 3
FLOW_SOURCE_IS_UPPER = 1
FLOW_FIN_SENT = 2
FLOW_FIN_RECEIVED = 4
FLOW_RESET = 8
FLOW_ENDED = 16
FLOW_SENT = 0
FLOW_RECEIVED = 1
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
        ("lower_ip", u8 * 16),
        ("upper_ip", u8 * 16),
        ("lower_port", u16),
        ("upper_port", u16),
        ("protocol", u8),
        ("pad", u8 * 3),
        ("ifindex", u32),
    )


class FlowState(ctypes.Structure):
    _fields_ = (
        ("start_ns", u64),
        ("last_ns", u64),
        ("packets", u64 * 2),
        ("bytes", u64 * 2),
        ("flags", u64),
        ("policy_id", u32),
        ("endpoint_id", u32),
        ("is_egress", u8),
        ("tier", u8),
        ("pad", u8 * 6),
    )


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
