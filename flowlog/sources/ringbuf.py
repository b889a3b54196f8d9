"""Verdict events from a BPF ring buffer, read in bulk on the asyncio event loop.

The ring buffer is mapped into this process (the consumer page read-write at
offset 0; the producer page and the data read-only at offset one page), so
records are read where the kernel wrote them. Every record is
``[8-byte header][event][padding to 8]``; ours and the AWS agent's are all of
one size, so a whole run of them is one strided numpy view, decoded with a
single copy. The event loop wakes on the map's file descriptor, drains
everything committed so far, then waits a few milliseconds before looking
again so that under load each wake-up handles thousands of events.

The kernel lets the data be mapped twice in a row, so that a record crossing
the end is contiguous; we map it once, because every page mapped counts
towards the agent's RSS, and the double mapping would count the whole ring
buffer twice. A run is read up to the end, and the one record that crosses it
is copied out in two pieces.

Ordering: the producer position is read before the headers and the consumer
position written after the data has been copied; on x86-64, whose loads and
stores are not reordered that way, plain loads and stores are enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
from collections.abc import AsyncIterator

import numpy as np

from flowlog import metrics
from flowlog.records import FlowBatch, Layout, decode_records

log = logging.getLogger(__name__)

HEADER_SIZE = 8
BUSY_BIT = 1 << 31  # record reserved, not yet committed
DISCARD_BIT = 1 << 30  # record committed as discarded: skip it
# Records per batch: big enough to amortise the per-batch work, small enough
# that the batch's working set stays in cache.
MAX_BATCH_RECORDS = 8192
# How long to let events accumulate after a wake-up: the ceiling on the
# latency this adds, and the floor on how rarely a busy agent wakes.
COALESCE_SECONDS = 0.05


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


class RingBuffer:
    """A mapped BPF_MAP_TYPE_RINGBUF whose records are all ``layout`` events."""

    def __init__(self, map_fd: int, data_size: int, layout: Layout) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"ring buffer size must be a power of two, got {data_size}")
        self.fd = map_fd
        self.layout = layout
        self.data_size = data_size
        self._stride = _round_up(HEADER_SIZE + layout.size, 8)
        page = mmap.PAGESIZE
        self._consumer_map = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        self._producer_map = mmap.mmap(
            map_fd, page + data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._consumer_pos = np.frombuffer(self._consumer_map, np.uint64, 1)
        self._producer_pos = np.frombuffer(self._producer_map, np.uint64, 1)
        self._data = np.frombuffer(self._producer_map, np.uint8, data_size, page)
        self._warned_sizes: set[int] = set()
        self._read_up_to: int | None = None
        # Set when a read stopped at the end of the data area with more waiting.
        self.more_waiting = False

    def read(self, max_records: int = MAX_BATCH_RECORDS) -> FlowBatch | None:
        """The committed records at the head, up to ``max_records``, until ``release()``."""
        self.release()
        self.more_waiting = False
        consumer = int(self._consumer_pos[0])
        available = int(self._producer_pos[0]) - consumer
        count = min(available // self._stride, max_records)
        if count == 0:
            if available:  # a record of another size: walk past it
                return self._read_irregular(consumer, available, max_records)
            return None
        start = consumer & (self.data_size - 1)
        before_end = (self.data_size - start) // self._stride
        if count > before_end:
            self.more_waiting = True
            if before_end == 0:  # the record at the head crosses the end
                return self._read_irregular(consumer, available, 1)
            count = before_end
        block = self._data[start : start + count * self._stride].reshape(count, self._stride)
        headers = block[:, :4].copy().view("<u4").ravel()
        busy = headers & BUSY_BIT
        if busy.any():
            count = int(np.argmax(busy != 0))
            if count == 0:
                return None
            headers = headers[:count]
        if (headers != self.layout.size).any():
            return self._read_irregular(consumer, available, max_records)
        records = np.ndarray(
            (count,),
            self.layout.dtype,
            buffer=self._data,
            offset=start + HEADER_SIZE,
            strides=(self._stride,),
        )
        self._read_up_to = consumer + count * self._stride
        return decode_records(records, self.layout)

    def _read_irregular(self, consumer: int, available: int, max_records: int) -> FlowBatch | None:
        """Record by record, for runs holding discarded or foreign-sized records."""
        records = []
        position = consumer
        while position - consumer < available and len(records) < max_records:
            # Headers are 8-byte aligned, so a header never crosses the end.
            offset = position & (self.data_size - 1)
            header = int(self._data[offset : offset + 4].view("<u4")[0])
            if header & BUSY_BIT:
                break
            length = header & ~(BUSY_BIT | DISCARD_BIT)
            if not header & DISCARD_BIT:
                if length == self.layout.size:
                    records.append(self._copy_out(position + HEADER_SIZE, length))
                else:
                    metrics.RECORDS_REJECTED.labels(reason="unexpected_size").inc()
                    if length not in self._warned_sizes:
                        self._warned_sizes.add(length)
                        log.warning(
                            "ring buffer record of %d bytes skipped: the %s layout has %d; "
                            "counted in flowlog_records_rejected_total",
                            length,
                            self.layout.name,
                            self.layout.size,
                        )
            position += _round_up(HEADER_SIZE + length, 8)
        if position == consumer:
            return None
        self._read_up_to = position
        if not records:
            return FlowBatch.empty()
        raw = np.concatenate(records)
        return decode_records(np.frombuffer(raw, self.layout.dtype), self.layout)

    def _copy_out(self, position: int, length: int) -> np.ndarray:
        """``length`` bytes at ``position``, in two pieces if they cross the end."""
        start = position & (self.data_size - 1)
        first = min(length, self.data_size - start)
        piece = self._data[start : start + first]
        if first == length:
            return piece.copy()
        return np.concatenate((piece, self._data[: length - first]))

    def release(self) -> None:
        """Give the records of the last ``read()`` back to the kernel for reuse.

        Until then the batch ``read()`` returned may point into the ring buffer
        itself, so it must be done with first.
        """
        if self._read_up_to is not None:
            self._consumer_pos[0] = self._read_up_to
            self._read_up_to = None

    def close(self) -> None:
        # The numpy views must go before the maps they look into.
        del self._consumer_pos, self._producer_pos, self._data
        self._consumer_map.close()
        self._producer_map.close()


class RingBufferSource:
    """Batches from a ring buffer as an async iterator, until stopped, then drained."""

    def __init__(self, ring: RingBuffer, coalesce_seconds: float = COALESCE_SECONDS) -> None:
        self.ring = ring
        self.coalesce_seconds = coalesce_seconds
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Finish: what is in the ring buffer now is still delivered, then iteration ends."""
        self._stopping.set()

    async def batches(self) -> AsyncIterator[FlowBatch]:
        while True:
            batch = self.ring.read()
            if batch:
                yield batch  # processed by the time the loop resumes
            self.ring.release()
            if batch is not None and (len(batch) == MAX_BATCH_RECORDS or self.ring.more_waiting):
                # More is waiting; the probes and the exporter get their turn
                # between batches, so a backlog does not keep them waiting.
                await asyncio.sleep(0)
                continue
            if self._stopping.is_set():
                if batch is None:
                    return
                continue  # drain what is left
            # Caught up. Reading again at once would make batches of whatever
            # arrived meanwhile, a few hundred events each under load; waiting
            # a little lets each batch carry thousands.
            await self._wait_readable()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.coalesce_seconds)

    async def _wait_readable(self) -> None:
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(self.ring.fd, lambda: readable.done() or readable.set_result(None))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([readable, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(self.ring.fd)
            stopping.cancel()
