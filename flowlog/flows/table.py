"""Flows that end without a close: found by scanning conntrack in batches.

The programs report a TCP flow's end themselves, at its close (FIN both ways
or RST), and leave its entry frozen. Everything else ends by going idle,
which no packet announces: every ``scan_seconds`` (a quarter of the shortest
idle timeout, from 0.5 to 5 s) the agent reads conntrack
in batches of entries (``BPF_MAP_LOOKUP_BATCH``, a few system calls for the
whole table), picks with numpy the flows idle past their protocol's timeout,
turns them into flow-end records exactly like the programs' own, and deletes
them and the closed entries whose linger has passed (``BPF_MAP_DELETE_BATCH``).
The cost grows with the flows held, not with the packets; the benchmarks
measure it.

A packet that arrives between the scan and the delete is counted in an
entry about to go: the flow's next packet is judged again and starts a new
flow. At shutdown every open flow ends the same way, unless the programs
stay (``--keep-programs``), and with them the counts.
"""

from __future__ import annotations

import socket
import time

import numpy as np

from flowlog import bpf_syscall
from flowlog.dataplane import maps
from flowlog.flows.timeouts import ICMP_PROTOCOLS, IdleTimeouts
from flowlog.records import FLOW_END, VERDICT_EXPIRED, FlowBatch, epoch_ms_of

FLOW_KEY = np.dtype(maps.FlowKey)
FLOW_STATE = np.dtype(maps.FlowState)
# How often conntrack is scanned: a quarter of the shortest idle timeout, so a
# flow ends at most a quarter late, within these bounds.
SCAN_FRACTION = 0.25
SCAN_SECONDS_RANGE = (0.5, 5.0)
# A closed flow's entry stays this long, so its last packets (the final ACK,
# retransmitted FINs) still pass as part of it.
CLOSED_LINGER_SECONDS = 10.0
BATCH_ENTRIES = 4096


def flow_ends(keys: np.ndarray, states: np.ndarray, now_ns: int) -> np.ndarray:
    """FLOW_END records for conntrack entries, the flow as its first packet travelled."""
    records = np.zeros(len(keys), FLOW_END)
    upper = (states["flags"] & maps.FLOW_SOURCE_IS_UPPER) != 0
    records["src_ip"] = np.where(upper[:, None], keys["upper_ip"], keys["lower_ip"])
    records["dest_ip"] = np.where(upper[:, None], keys["lower_ip"], keys["upper_ip"])
    ports = ~np.isin(keys["protocol"], ICMP_PROTOCOLS)  # ICMP keys hold the echo id
    records["src_port"] = np.where(upper, keys["upper_port"], keys["lower_port"]) * ports
    records["dest_port"] = np.where(upper, keys["lower_port"], keys["upper_port"]) * ports
    records["timestamp_ns"] = now_ns
    records["protocol"] = keys["protocol"]
    records["verdict"] = VERDICT_EXPIRED
    records["is_egress"] = states["is_egress"]
    records["tier"] = states["tier"]
    records["ifindex"] = keys["ifindex"]
    records["endpoint_id"] = states["endpoint_id"]
    records["policy_id"] = states["policy_id"]
    records["start_ns"] = states["start_ns"]
    records["last_ns"] = states["last_ns"]
    records["packets_sent"] = states["packets"][:, maps.FLOW_SENT]
    records["bytes_sent"] = states["bytes"][:, maps.FLOW_SENT]
    records["packets_received"] = states["packets"][:, maps.FLOW_RECEIVED]
    records["bytes_received"] = states["bytes"][:, maps.FLOW_RECEIVED]
    return records


class FlowTable:
    """Conntrack, read and pruned from user space."""

    def __init__(self, conntrack_fd: int, timeouts: IdleTimeouts | None = None) -> None:
        self.fd = conntrack_fd
        self.timeouts = timeouts or IdleTimeouts()
        self._keys = np.zeros(BATCH_ENTRIES, FLOW_KEY)
        self._states = np.zeros(BATCH_ENTRIES, FLOW_STATE)
        self.entries = 0  # held at the last scan
        self.scan_cpu_seconds = 0.0  # how long the last scan took, in CPU time
        shortest = min(
            getattr(self.timeouts, name.replace("-", "_")) for name in IdleTimeouts.NAMES
        )
        low, high = SCAN_SECONDS_RANGE
        self.scan_seconds = min(high, max(low, shortest * SCAN_FRACTION))

    def entries_now(self) -> tuple[np.ndarray, np.ndarray]:
        """Every entry: (keys, states)."""
        keys, states = [], []
        cursor: int | None = None
        while True:
            count, cursor = bpf_syscall.map_lookup_batch(self.fd, self._keys, self._states, cursor)
            keys.append(self._keys[:count].copy())
            states.append(self._states[:count].copy())
            if cursor is None:
                break
        return np.concatenate(keys), np.concatenate(states)

    def expire(self, now_ns: int | None = None) -> FlowBatch:
        """End the flows idle past their timeout; remove them and closed entries done lingering."""
        started = time.process_time()
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) if now_ns is None else now_ns
        keys, states = self.entries_now()
        self.entries = len(keys)
        timeouts = self.timeouts.by_protocol()[keys["protocol"]]
        half_open = (keys["protocol"] == socket.IPPROTO_TCP) & (
            states["packets"][:, maps.FLOW_RECEIVED] == 0
        )
        timeouts[half_open] = int(self.timeouts.tcp_half_open * 1e9)
        idle_for = now - states["last_ns"].astype(np.int64)
        ended = (states["flags"] & maps.FLOW_ENDED) != 0
        idle = ~ended & (idle_for > timeouts)
        lingered = ended & (idle_for > int(CLOSED_LINGER_SECONDS * 1e9))
        batch = self._end(keys[idle], states[idle], now)
        bpf_syscall.map_delete_batch(self.fd, np.ascontiguousarray(keys[idle | lingered]))
        self.scan_cpu_seconds = time.process_time() - started
        return batch

    def end_all(self) -> FlowBatch:
        """End every flow still open and empty the table (the agent is going away)."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        keys, states = self.entries_now()
        open_flows = (states["flags"] & maps.FLOW_ENDED) == 0
        batch = self._end(keys[open_flows], states[open_flows], now)
        bpf_syscall.map_delete_batch(self.fd, np.ascontiguousarray(keys))
        return batch

    @staticmethod
    def _end(keys: np.ndarray, states: np.ndarray, now_ns: int) -> FlowBatch:
        records = flow_ends(keys, states, now_ns)
        return FlowBatch(records, epoch_ms_of(records["timestamp_ns"]))
