"""JSON flow-log lines for a whole batch of events at once.

The lines themselves are written in C (``flowlog/_format.c``), one pass over
the batch with no Python code per event; this side gives it what can only be
known here, JSON-escaped once: the node's name, the names of the codes (as
``flowlog.records`` defines them), and per id the text of the local pod, of
the policy and of each end's identity. Tables are rebuilt only when what they
hold changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import numpy as np
import orjson

from flowlog._format import DEST_PEERS, ENDPOINTS, POLICIES, SRC_PEERS, Formatter
from flowlog.records import (
    DIRECTION_NAMES,
    FLOW_END,
    FlowBatch,
    monotonic_to_epoch_offset_ns,
    protocol_name,
    tier_name,
    verdict_name,
)

# Every line starts so; readers find the timestamp right after it.
HEAD = b'{"level":"info","timestamp":"'
TIMESTAMP_OFFSET = len(HEAD)
SRC, DEST = "Src", "Dest"
# Lines are written in blocks of about this size: big enough that a write
# carries thousands of lines, small enough to stay in the CPU's caches.
BLOCK_BYTES = 1 << 20


class Attribution(Protocol):
    """Names behind the ids in an event, kept by the data plane."""

    endpoints: Mapping[int, tuple[str, str]]  # endpoint_id -> (pod, namespace)
    policies: Mapping[int, tuple[str, str]]  # policy_id -> (policy, namespace)
    version: int  # changes whenever an entry is added


class PeerNames(Protocol):
    """The identity behind each peer id (``flowlog.cluster.peers``)."""

    version: int  # changes whenever an id is added

    def rows(self, end: str) -> list[bytes]:
        """Row i: the keys of peer id i for that end (SRC or DEST), as JSON members."""


def json_string(text: str) -> bytes:
    return orjson.dumps(text)


def _code_names(name_of) -> list[bytes]:
    return [json_string(name_of(code)) for code in range(256)]


class FlowFormatter:
    """Turns a FlowBatch into the bytes of its flow-log lines."""

    def __init__(
        self,
        node_name: str,
        attribution: Attribution | None = None,
        peers: PeerNames | None = None,
    ) -> None:
        self.attribution = attribution
        self.peers = peers
        self._native = Formatter(
            node=b',"Node":' + json_string(node_name),
            protocols=_code_names(protocol_name),
            verdicts=_code_names(verdict_name),
            directions=[json_string(DIRECTION_NAMES[i]) for i in (0, 1)],
            tiers=_code_names(tier_name),
        )
        self._names_version: int | None = None
        self._peers_version: int | None = None
        self._buffer = np.empty(0, np.uint8)

    def _refresh_tables(self) -> None:
        names = self.attribution
        if names is not None and names.version != self._names_version:
            self._names_version = names.version
            self._native.set_rows(ENDPOINTS, _id_rows(names.endpoints, b"Pod", b"Namespace"))
            self._native.set_rows(
                POLICIES, _id_rows(names.policies, b"Policy", b"Policy Namespace")
            )
        peers = self.peers
        if peers is not None and peers.version != self._peers_version:
            self._peers_version = peers.version
            self._native.set_rows(SRC_PEERS, peers.rows(SRC))
            self._native.set_rows(DEST_PEERS, peers.rows(DEST))

    def format(
        self, batch: FlowBatch, peer_ids: tuple[np.ndarray, np.ndarray] | None = None
    ) -> bytes:
        return b"".join(bytes(block) for block, _ in self.chunks(batch, peer_ids))

    def chunks(
        self, batch: FlowBatch, peer_ids: tuple[np.ndarray, np.ndarray] | None = None
    ) -> Iterator[tuple[memoryview, int]]:
        """The lines of ``batch`` in blocks of whole lines, each with its count of
        lines, each valid until the next (the buffer is reused).

        ``peer_ids`` are each event's source and destination rows in the peer
        tables (int32), from ``flowlog.cluster.peers``.
        """
        if len(batch) == 0:
            return
        self._refresh_tables()
        events = np.ascontiguousarray(batch.events, FLOW_END)
        epoch_ms = np.ascontiguousarray(batch.epoch_ms, np.int64)
        src, dest = peer_ids if peer_ids is not None else (None, None)
        out = self._output(self._native.line_bound())
        offset_ns = monotonic_to_epoch_offset_ns()
        done = 0
        while done < len(events):
            written, following = self._native.format(
                events, epoch_ms, src, dest, offset_ns, out, done
            )
            yield memoryview(out)[:written], following - done
            done = following

    def _output(self, line_bound: int) -> np.ndarray:
        # One buffer of a fixed size, reused: it stays in the CPU's caches, and
        # fresh memory for every batch would cost a page fault per 4 KiB.
        size = max(BLOCK_BYTES, line_bound)
        if len(self._buffer) < size:
            self._buffer = np.empty(size, np.uint8)
        return self._buffer


def _id_rows(names: Mapping[int, tuple[str, str]], name_key: bytes, namespace_key: bytes):
    """Row ``id`` holds the two keys for that id; row 0 and unassigned ids hold nothing."""
    rows = [b""] * (max(names, default=0) + 1)
    for ident, (name, namespace) in names.items():
        rows[ident] = b',"%s":%s,"%s":%s' % (
            name_key,
            json_string(name),
            namespace_key,
            json_string(namespace),
        )
    return rows
