"""What happens to every batch of events, whatever its source.

count (metrics, including the Go agent's drop counters) → keep the verdicts
the user asked for → make timestamps non-decreasing → name both ends →
format → write → tell the shipper there is more to send. Everything works on
whole batches. With ``--flow-log-aggregate``, named batches are counted into
the open window's summaries instead, written when the window closes
(``tick``) and when the pipeline closes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from flowlog import metrics
from flowlog.config import Settings
from flowlog.flows.summaries import Summaries
from flowlog.format import Attribution, FlowFormatter, PeerNames
from flowlog.logfile import LineSink
from flowlog.records import (
    DIRECTION_NAMES,
    UNKNOWN,
    VERDICT_DENY,
    VERDICT_NAMES,
    FlowBatch,
    verdict_name,
)

_CODES = np.arange(256)


class Peers(PeerNames, Protocol):
    """Who both ends of each event are (``flowlog.cluster.peers.Peers``)."""

    def resolve(self, batch: FlowBatch) -> tuple[np.ndarray, np.ndarray]: ...


def _verdict_mask(names: frozenset[str]) -> np.ndarray:
    """A lookup from verdict code to whether lines with it are written."""
    return np.array([verdict_name(code) in names for code in _CODES])


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        sink: LineSink,
        attribution: Attribution | None = None,
        on_written: Callable[[], None] | None = None,
        always_log: bool = False,
        peers: Peers | None = None,
    ) -> None:
        self.sink = sink
        self.peers = peers
        self.attribution = attribution
        self.node_name = settings.node_name
        self.formatter = FlowFormatter(settings.node_name, attribution, peers)
        self.summaries: Summaries | None = None
        # Called after lines reach the sink: the CloudWatch exporter's wake-up.
        self.on_written = on_written
        # Replay writes the flow log whatever enablePolicyEventLogs says.
        self.always_log = always_log
        self._last_ms = 0
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """Take up settings that may change while running."""
        self.logging_enabled = self.always_log or settings.enable_policy_event_logs
        self._written_verdicts = _verdict_mask(settings.flow_log_verdicts)
        aggregation = (settings.flow_log_aggregate, settings.flow_log_aggregate_by)
        current = self.summaries
        if current is None or (current.window_ms // 1000, current.level) != aggregation:
            self._write_summaries(final=True)  # what the old windows counted is kept
            self.summaries = None
            if settings.flow_log_aggregate:
                self.summaries = Summaries(
                    settings.flow_log_aggregate,
                    settings.flow_log_aggregate_by,
                    self.node_name,
                    self.peers,
                    lambda: self.attribution.policies if self.attribution else {},
                )

    def tick(self) -> None:
        """Write the summaries of a window that has ended."""
        if self.summaries is not None and self.summaries.due():
            self._write_summaries()

    def close(self) -> None:
        """Write the summaries of the window still open."""
        self._write_summaries(final=True)

    def _write_summaries(self, final: bool = False) -> None:
        if self.summaries is None:
            return
        count = len(self.summaries.open)
        lines = self.summaries.close_window(final)
        if lines and self.sink.write(lines, count) and self.on_written:
            self.on_written()

    def process(self, batch: FlowBatch) -> None:
        if len(batch) == 0:
            return
        self._count(batch)
        if not self.logging_enabled:
            metrics.EVENTS_NOT_LOGGED.labels(reason="logging_disabled").inc(len(batch))
            return
        keep = self._written_verdicts[batch.events["verdict"]]
        if not keep.all():
            metrics.EVENTS_NOT_LOGGED.labels(reason="verdict_filtered").inc(int((~keep).sum()))
            batch = batch.select(keep)
            if len(batch) == 0:
                return
        batch.epoch_ms = self._non_decreasing(batch.epoch_ms)
        peer_ids = self.peers.resolve(batch) if self.peers is not None else None
        if self.summaries is not None:
            self.summaries.add(batch, peer_ids)
            return
        written = True
        for block, lines in self.formatter.chunks(batch, peer_ids):
            written = self.sink.write(block, lines) and written
        if written:
            metrics.BATCH_LATENCY.set(max(0.0, time.time() - batch.epoch_ms[-1] / 1000))
            if self.on_written:
                self.on_written()

    def _non_decreasing(self, epoch_ms: np.ndarray) -> np.ndarray:
        """Events from different CPUs can reach the ring buffer a little out of
        order; a line is never stamped earlier than the line before it, so the
        file (and every CloudWatch batch cut from it) stays in time order."""
        ordered = np.maximum.accumulate(np.maximum(epoch_ms, self._last_ms))
        self._last_ms = int(ordered[-1])
        return ordered

    @staticmethod
    def _count(batch: FlowBatch) -> None:
        verdicts = batch.events["verdict"]
        counts = np.bincount(verdicts, minlength=256)
        known = 0
        for code, name in VERDICT_NAMES.items():
            if counts[code]:
                metrics.EVENTS.labels(verdict=name).inc(int(counts[code]))
                known += int(counts[code])
        if known < len(verdicts):
            metrics.EVENTS.labels(verdict=UNKNOWN).inc(len(verdicts) - known)
        denied = verdicts == VERDICT_DENY
        if counts[VERDICT_DENY]:
            egress = batch.events["is_egress"][denied] != 0
            sizes = batch.events["packet_size"][denied].astype(np.int64)
            for is_egress, direction in DIRECTION_NAMES.items():
                chosen = egress == bool(is_egress)
                if chosen.any():
                    metrics.DROP_COUNT.labels(direction=direction).inc(int(chosen.sum()))
                    metrics.DROP_BYTES.labels(direction=direction).inc(int(sizes[chosen].sum()))
