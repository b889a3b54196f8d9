"""PutLogEvents request bodies built from whole blocks of flow-log lines.

No Python code runs per event on the common path, and botocore never
serialises the events (about 5 µs per event): a block of lines becomes a
*segment* in bulk (arrays per event), a full batch is cut from segments, and
its request body is written in one pass.

* Line boundaries come from one C scan for newlines (``_framing.line_ends``).
* Every flow-log line carries its timestamp at the same offset, 24 characters
  long, so the timestamps of a whole block are checked and turned into epoch
  milliseconds in one C call (``_framing.line_times``). Lines in another format
  fall back to orjson one by one (and, without a readable time, to the time
  they were read).
* One C call (``_framing.frame_events``) writes the request body: the head,
  each event's line escaped for JSON in its ``{"timestamp":…,"message":…}``,
  and the closing.

Each message is exactly the line without its newline, so Logs Insights
discovers every JSON field. Batches keep every limit of ``limits``: at most
10,000 events and 1,048,576 bytes counting 26 per event, chronological order
(a batch ends where timestamps go backwards), at most 24 hours spanned. Lines
CloudWatch would refuse (too old, too far ahead, empty) are counted and left
out; a line over the event size limit is cut short with a marker and counted.
"""

from __future__ import annotations

import datetime
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import orjson

from flowlog.cloudwatch import metrics
from flowlog.cloudwatch._framing import frame_events, line_ends, line_times
from flowlog.cloudwatch.limits import (
    EVENT_OVERHEAD_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_BATCH_SPAN_MS,
    MAX_EVENT_AGE_MS,
    MAX_EVENT_LEAD_MS,
    MAX_MESSAGE_BYTES,
)
from flowlog.cloudwatch.tail import Block, LogFile, Position
from flowlog.format import HEAD as LINE_HEAD

TRUNCATION_MARKER = " [truncated by flowlog]"

# --- timestamps -----------------------------------------------------------------


def parse_timestamps(
    buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Epoch milliseconds of the flow-log lines at ``starts``, and which ones parsed.

    A line parses when it starts like every flow-log line does, with a valid
    ``YYYY-MM-DDTHH:MM:SS.mmmZ`` timestamp; for the others the time is 0.
    """
    starts = np.ascontiguousarray(starts, np.int64)
    times = np.empty(len(starts), np.int64)
    parsed = np.empty(len(starts), bool)
    line_times(buffer, LINE_HEAD, starts, np.ascontiguousarray(lengths, np.int64), times, parsed)
    return times, parsed


def timestamp_of_line(line: bytes) -> int | None:
    """The epoch milliseconds of one JSON line in another format, if it has a time at all.

    Accepts ``timestamp`` or ``ts``, as RFC 3339 text or as epoch seconds.
    """
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    value = document.get("timestamp", document.get("ts"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1000)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return round(moment.timestamp() * 1000)
    return None


# --- segments: blocks prepared for cutting into batches --------------------------


@dataclass
class Segment:
    """The sendable events of one block, measured (arrays per event)."""

    file: LogFile
    end: int  # file offset after the block
    messages: bytes  # the block's lines as sent (invalid UTF-8 replaced, long lines cut)
    starts: np.ndarray  # where each event's message starts in ``messages``
    lengths: np.ndarray  # its UTF-8 bytes
    timestamps: np.ndarray  # epoch ms
    cumulative_bytes: np.ndarray  # len + 1: bytes of events [i, j) = c[j] - c[i], 26 each included
    positions: np.ndarray  # file offset after each event's line
    breaks: np.ndarray  # indexes where the time goes backwards
    read_at: float  # time.monotonic() when prepared
    cursor: int = 0  # first event not yet cut into a batch

    @property
    def count(self) -> int:
        return len(self.timestamps)

    def cut_end(self, start: int, events_left: int, bytes_left: int, first_ms: int) -> int:
        """The end of the longest run from ``start`` that keeps every limit."""
        by_count = start + events_left
        by_bytes = (
            int(
                np.searchsorted(
                    self.cumulative_bytes, self.cumulative_bytes[start] + bytes_left, side="right"
                )
            )
            - 1
        )
        next_break = int(np.searchsorted(self.breaks, start, side="right"))
        by_order = int(self.breaks[next_break]) if next_break < len(self.breaks) else self.count
        by_span = start + int(
            np.searchsorted(
                self.timestamps[start:by_order], first_ms + MAX_BATCH_SPAN_MS, side="right"
            )
        )
        return min(by_count, by_bytes, by_order, by_span)


def _truncate_oversized(
    messages: bytes, starts: np.ndarray, lengths: np.ndarray, oversized: np.ndarray
) -> tuple[bytes, np.ndarray]:
    """The block with each line over the event size limit cut short (at a character
    boundary) and marked; and the new line lengths."""
    marker = TRUNCATION_MARKER.encode()
    room = MAX_MESSAGE_BYTES - len(marker)
    pieces = []
    sizes = lengths.copy()
    done = 0
    for index in np.flatnonzero(oversized).tolist():
        start = int(starts[index])
        kept = messages[start : start + room].decode(errors="ignore").encode() + marker
        pieces += [messages[done:start], kept]
        sizes[index] = len(kept)
        done = start + int(lengths[index])
    pieces.append(messages[done:])
    return b"".join(pieces), sizes


def _line_starts(ends: np.ndarray) -> np.ndarray:
    starts = np.empty(len(ends), np.int64)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts


def _newlines(data: bytes) -> np.ndarray:
    return np.frombuffer(line_ends(data), np.int64)


def prepare(block: Block, at_ms: int) -> Segment:
    """Turn a block of complete lines into a segment of sendable events, counting the rest."""
    raw = block.data
    newlines = _newlines(raw)
    positions = block.start + newlines + 1
    positions[-1] = block.end
    messages = raw
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError:
            # Invalid UTF-8 becomes U+FFFD, as CloudWatch needs; newlines stay put.
            messages = raw.decode(errors="replace").encode()
            newlines = _newlines(messages)
    starts = _line_starts(newlines)
    lengths = newlines - starts

    timestamps, parsed = parse_timestamps(np.frombuffer(messages, np.uint8), starts, lengths)
    if not parsed.all():
        _timestamp_slowly(messages, starts, lengths, timestamps, parsed, at_ms)

    keep = lengths > 0
    too_old = timestamps < at_ms - MAX_EVENT_AGE_MS
    too_new = timestamps > at_ms + MAX_EVENT_LEAD_MS
    for reason, mask in (
        ("empty", ~keep),
        ("too_old", too_old & keep),
        ("too_new", too_new & keep),
    ):
        if skipped := int(np.count_nonzero(mask)):
            metrics.EVENTS_SKIPPED.labels(reason=reason).inc(skipped)
    keep &= ~too_old & ~too_new

    oversized = lengths > MAX_MESSAGE_BYTES
    if oversized.any():
        messages, lengths = _truncate_oversized(messages, starts, lengths, oversized)
        starts = _line_starts(np.cumsum(lengths + 1) - 1)
        if truncated := int(np.count_nonzero(oversized & keep)):
            metrics.EVENTS_TRUNCATED.inc(truncated)

    kept = np.flatnonzero(keep)
    kept_timestamps = timestamps[kept]
    kept_lengths = lengths[kept]
    cumulative = np.zeros(len(kept) + 1, np.int64)
    np.cumsum(kept_lengths + EVENT_OVERHEAD_BYTES, out=cumulative[1:])
    return Segment(
        file=block.file,
        end=block.end,
        messages=messages,
        starts=starts[kept],
        lengths=kept_lengths,
        timestamps=kept_timestamps,
        cumulative_bytes=cumulative,
        positions=positions[kept],
        breaks=np.flatnonzero(kept_timestamps[1:] < kept_timestamps[:-1]) + 1,
        read_at=time.monotonic(),
    )


def _timestamp_slowly(
    messages: bytes,
    starts: np.ndarray,
    lengths: np.ndarray,
    timestamps: np.ndarray,
    parsed: np.ndarray,
    at_ms: int,
) -> None:
    untimed = 0
    for index in np.flatnonzero(~parsed & (lengths > 0)).tolist():
        start = int(starts[index])
        value = timestamp_of_line(messages[start : start + int(lengths[index])])
        if value is None:
            untimed += 1
            value = at_ms
        timestamps[index] = value
    if untimed:
        metrics.EVENTS_UNTIMED.inc(untimed)


# --- batches -------------------------------------------------------------------


@dataclass
class Batch:
    """One PutLogEvents call, or none (``body`` None) when only skipped lines were covered."""

    body: bytes | None
    events: int
    message_bytes: int  # UTF-8 message bytes, without the 26 per event
    first_ms: int  # the oldest event's time (events are in time order)
    position: Position  # acknowledging the batch acknowledges everything before this
    seq: int = 0  # order of cutting, set by the exporter


def request_head(log_group: str, log_stream: str) -> bytes:
    return (
        b'{"logGroupName":'
        + orjson.dumps(log_group)
        + b',"logStreamName":'
        + orjson.dumps(log_stream)
        + b',"logEvents":['
    )


class RequestBuilder:
    """Pending segments, cut into batches that keep every PutLogEvents limit."""

    def __init__(self, log_group: str, log_stream: str) -> None:
        self.head = request_head(log_group, log_stream)
        self._segments: deque[Segment] = deque()

    def add(self, block: Block, at_ms: int | None = None) -> None:
        at_ms = time.time_ns() // 1_000_000 if at_ms is None else at_ms
        self._segments.append(prepare(block, at_ms))

    @property
    def pending_events(self) -> int:
        return sum(segment.count - segment.cursor for segment in self._segments)

    @property
    def pending_bytes(self) -> int:
        """Pending message bytes, 26 per event included (as the limits count them)."""
        return sum(
            int(s.cumulative_bytes[s.count] - s.cumulative_bytes[s.cursor]) for s in self._segments
        )

    @property
    def oldest_pending(self) -> tuple[float, int] | None:
        """When the oldest pending event was read (monotonic) and its time (epoch ms)."""
        for segment in self._segments:
            if segment.cursor < segment.count:
                return segment.read_at, int(segment.timestamps[segment.cursor])
        return None

    @property
    def has_pending(self) -> bool:
        return bool(self._segments)

    def complete_batch(self) -> Batch | None:
        """A batch that a limit or a break in time order has ended; None if the pending
        events could still grow into a fuller one."""
        return self._cut(complete_only=True)

    def next_batch(self) -> Batch | None:
        """A batch of whatever is pending (up to the limits), for a flush."""
        return self._cut(complete_only=False)

    def _cut(self, complete_only: bool) -> Batch | None:
        parts: list[tuple[Segment, int, int]] = []
        events = byte_count = 0
        first_ms = last_ms = 0
        position: Position | None = None
        ended = False
        for segment in self._segments:
            start = segment.cursor
            if start < segment.count:
                if events and segment.timestamps[start] < last_ms:
                    ended = True
                    break
                if not events:
                    first_ms = int(segment.timestamps[start])
                end = segment.cut_end(
                    start, MAX_BATCH_EVENTS - events, MAX_BATCH_BYTES - byte_count, first_ms
                )
                if end > start:
                    parts.append((segment, start, end))
                    events += end - start
                    byte_count += int(
                        segment.cumulative_bytes[end] - segment.cumulative_bytes[start]
                    )
                    last_ms = int(segment.timestamps[end - 1])
                if end < segment.count:
                    if end > start:
                        position = Position(segment.file, int(segment.positions[end - 1]))
                    ended = True
                    break
            position = Position(segment.file, segment.end)
        if position is None or (complete_only and events and not ended):
            return None
        for segment, _, end in parts:
            segment.cursor = end
        # Cursors only move forward, so exhausted segments are the ones ``position`` covers.
        while self._segments and self._segments[0].cursor == self._segments[0].count:
            self._segments.popleft()
        if not events:
            return Batch(None, 0, 0, 0, position)
        return Batch(
            self._body(parts),
            events,
            byte_count - events * EVENT_OVERHEAD_BYTES,
            first_ms,
            position,
        )

    def _body(self, parts: list[tuple[Segment, int, int]]) -> bytes:
        return frame_events(
            self.head,
            [(s.messages, s.starts[a:b], s.lengths[a:b], s.timestamps[a:b]) for s, a, b in parts],
        )
