"""Windowed summaries: one line per flow key per window instead of one per verdict.

As VPC Flow Logs and Calico's flow logs do, events are counted into the
window open when they arrive (windows are aligned to multiples of their
length, in UTC), and at its end each key of the window becomes one summary
line. What a key keeps depends on the level (``--flow-log-aggregate-by``):

* ``flow``: the 5-tuple, both ends' identities, direction, verdict, policy;
* ``peer`` (the default): the same without the source port, so the many
  short connections between two pods to one port are one line;
* ``workload``: pods of one workload together (``deployment/frontend``),
  each end keyed by its namespace and workload instead of its pod and
  address; nodes and outside addresses stay as they are.

A summary counts ``Flows Started`` (verdicts: an allowed flow's first packet,
or a denied attempt), ``Flows Completed`` (flow ends), and packets and bytes
each way: a flow's counters arrive with its end, in the window it ends in; a
denied attempt adds its packet to ``Packets Sent``/``Bytes Sent`` of its DENY
summary. Over any run of windows the sums are exact.

The grouping is numpy over whole batches (one ``np.unique`` of packed keys);
Python runs once per distinct key of a batch, not per event. A window still
open when the agent stops is written then, ending at that moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import orjson

from flowlog.cluster.peers import NODE, POD, Peers
from flowlog.flows import metrics
from flowlog.records import (
    VERDICT_ACCEPT,
    VERDICT_DENY,
    VERDICT_EXPIRED,
    FlowBatch,
    direction_name,
    protocol_name,
    verdict_name,
)

FLOW, PEER, WORKLOAD = "flow", "peer", "workload"
MESSAGE = "Flow Summary: "
_V4_PREFIX = bytes(10) + b"\xff\xff"

# What a summary's key is made of, packed so a batch groups with one np.unique.
KEY = np.dtype(
    [
        ("src_ip", "u1", (16,)),
        ("dest_ip", "u1", (16,)),
        ("src_port", "<u2"),
        ("dest_port", "<u2"),
        ("protocol", "u1"),
        ("verdict", "u1"),
        ("is_egress", "u1"),
        ("pad", "u1"),
        ("policy_id", "<u4"),
        ("src_peer", "<i4"),  # the peer id, or at workload level the workload's group
        ("dest_peer", "<i4"),
    ]
)
COUNTERS = (
    "started",
    "completed",
    "packets_sent",
    "bytes_sent",
    "packets_received",
    "bytes_received",
)


@dataclass
class Summary:
    """One key's counts in the open window."""

    key: np.void  # a KEY record
    started: int = 0
    completed: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0


def _iso(epoch_ms: int) -> str:
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _address(raw: bytes) -> str:
    import socket

    if raw[:12] == _V4_PREFIX:
        return socket.inet_ntoa(raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


class Summaries:
    """Counts of the open window, and its lines when it closes."""

    def __init__(
        self,
        window_seconds: int,
        level: str,
        node_name: str,
        peers: Peers | None,
        policies: Callable[[], Mapping[int, tuple[str, str]]],
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.window_ms = window_seconds * 1000
        self.level = level
        self.node_name = node_name
        self.peers = peers
        self.policies = policies
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.window_start = self._window_of(self.clock())
        self.open: dict[bytes, Summary] = {}
        self._groups = np.zeros(1, np.int32)  # peer id -> workload group id
        self._groups_version: int | None = None
        self._group_names: dict[int, tuple[str, str]] = {}

    def _window_of(self, epoch_ms: int) -> int:
        return epoch_ms // self.window_ms * self.window_ms

    # --- counting ---------------------------------------------------------------

    def add(self, batch: FlowBatch, peer_ids: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Count a batch into the open window."""
        events = batch.events
        count = len(events)
        if not count:
            return
        src_peers, dest_peers = (
            peer_ids if peer_ids is not None else (np.zeros(count, np.int32),) * 2
        )
        keys = np.zeros(count, KEY)
        verdict = events["verdict"]
        is_end = verdict == VERDICT_EXPIRED
        is_deny = verdict == VERDICT_DENY
        keys["verdict"] = np.where(is_end, VERDICT_ACCEPT, verdict)  # an end belongs to its flow
        for name in ("src_ip", "dest_ip", "dest_port", "protocol", "is_egress", "policy_id"):
            keys[name] = events[name]
        keys["src_peer"], keys["dest_peer"] = src_peers, dest_peers
        if self.level == FLOW:
            keys["src_port"] = events["src_port"]
        elif self.level == WORKLOAD:
            groups = self._workload_groups()
            for end, peers in (("src", src_peers), ("dest", dest_peers)):
                group = groups[np.clip(peers, 0, len(groups) - 1)]
                grouped = group > 0
                keys[f"{end}_peer"] = np.where(grouped, -group, peers)
                keys[f"{end}_ip"][grouped] = 0
        packed = keys.view(np.dtype((np.void, KEY.itemsize)))
        unique, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        length = len(unique)
        ends_only = np.where(is_end, 1, 0)

        def total(weights: np.ndarray) -> list[int]:
            return np.bincount(inverse, weights=weights, minlength=length).astype(np.int64).tolist()

        sums = {
            "started": total(np.where(is_end, 0, 1)),
            "completed": total(ends_only),
            "packets_sent": total(np.where(is_end, events["packets_sent"], is_deny)),
            "bytes_sent": total(
                np.where(is_end, events["bytes_sent"], np.where(is_deny, events["packet_size"], 0))
            ),
            "packets_received": total(events["packets_received"] * ends_only),
            "bytes_received": total(events["bytes_received"] * ends_only),
        }
        packed_keys, size = unique.tobytes(), KEY.itemsize
        for index in range(length):
            raw = packed_keys[index * size : (index + 1) * size]
            summary = self.open.get(raw)
            if summary is None:
                summary = self.open[raw] = Summary(keys[first[index]].copy())
            for name in COUNTERS:
                setattr(summary, name, getattr(summary, name) + sums[name][index])
        metrics.EVENTS_SUMMARIZED.inc(count)

    def _workload_groups(self) -> np.ndarray:
        """Each peer id's workload group (1 up; 0: not a pod of a known workload)."""
        peers = self.peers
        if peers is None:
            return self._groups
        if peers.version != self._groups_version:
            self._groups_version = peers.version
            numbers: dict[tuple[str, str], int] = {
                name: number for number, name in self._group_names.items()
            }
            groups = [0]
            for ident in range(1, peers.numbered + 1):
                identity = peers.identity(ident)
                if identity is None or identity.kind != POD or not identity.workload:
                    groups.append(0)
                    continue
                name = (identity.namespace, identity.workload)
                if name not in numbers:
                    numbers[name] = len(numbers) + 1
                    self._group_names[numbers[name]] = name
                groups.append(numbers[name])
            self._groups = np.array(groups, np.int32)
        return self._groups

    # --- closing windows ------------------------------------------------------------

    def due(self) -> bool:
        return self.clock() >= self.window_start + self.window_ms

    def close_window(self, final: bool = False) -> bytes:
        """The open window's lines (ending now when ``final``), and a new window."""
        now = self.clock()
        end = now if final else self.window_start + self.window_ms
        lines = b"".join(
            self._line(summary, self.window_start, end) for summary in self.open.values()
        )
        metrics.SUMMARIES_WRITTEN.inc(len(self.open))
        self.open = {}
        self.window_start = self._window_of(now)
        return lines

    def _line(self, summary: Summary, start: int, end: int) -> bytes:
        key = summary.key
        record: dict[str, object] = {
            "level": "info",
            "timestamp": _iso(end),
            "logger": "ebpf-client",
            "msg": MESSAGE,
            "Aggregation": self.level,
        }
        src_peer, dest_peer = int(key["src_peer"]), int(key["dest_peer"])
        if src_peer >= 0:
            record["Src IP"] = _address(key["src_ip"].tobytes())
        if self.level == FLOW:
            record["Src Port"] = int(key["src_port"])
        if dest_peer >= 0:
            record["Dest IP"] = _address(key["dest_ip"].tobytes())
        protocol = int(key["protocol"])
        record["Dest Port"] = int(key["dest_port"])
        record["Proto"] = protocol_name(protocol)
        record["Verdict"] = verdict_name(int(key["verdict"]))
        record["Direction"] = direction_name(int(key["is_egress"]))
        record["Node"] = self.node_name
        policy = self.policies().get(int(key["policy_id"]))
        if policy is not None:
            record["Policy"], record["Policy Namespace"] = policy
        for end_name, peer in (("Src", src_peer), ("Dest", dest_peer)):
            record.update(self._end_keys(end_name, peer))
        record.update(
            {
                "Start Time": _iso(start),
                "End Time": _iso(end),
                "Flows Started": summary.started,
                "Flows Completed": summary.completed,
                "Packets Sent": summary.packets_sent,
                "Bytes Sent": summary.bytes_sent,
                "Packets Received": summary.packets_received,
                "Bytes Received": summary.bytes_received,
            }
        )
        return orjson.dumps(record) + b"\n"

    def _end_keys(self, end: str, peer: int) -> dict[str, str]:
        if peer < 0:  # a workload group
            namespace, workload = self._group_names[-peer]
            return {f"{end} Namespace": namespace, f"{end} Workload": workload}
        identity = self.peers.identity(peer) if self.peers is not None and peer else None
        if identity is None:
            return {}
        if identity.kind == NODE:
            return {f"{end} Node": identity.name}
        keys = {f"{end} Pod": identity.name, f"{end} Namespace": identity.namespace}
        if identity.workload:
            keys[f"{end} Workload"] = identity.workload
        return keys
