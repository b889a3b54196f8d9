"""Verdict events from a BPF ring buffer, read in bulk on the asyncio event loop.

The ring buffer is mapped into this process (the consumer page read-write at
offset 0; the producer page and the data read-only at offset one page). Each
read copies every committed record, up to a batch, into a reused array of the
layout's dtype in one C pass (``_ringbuf.drain``: records of several lengths,
one crossing the end of the data area, records of a foreign length skipped
and counted), and gives the space back to the kernel at once. The event loop
wakes on the map's file descriptor, drains everything committed so far, then
waits a few milliseconds before looking again so that under load each wake-up
handles thousands of events.

The kernel lets the data be mapped twice in a row, so that a record crossing
the end is contiguous; we map it once, because every page mapped counts
towards the agent's RSS, and the double mapping would count the whole ring
buffer twice.
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
from flowlog.sources._ringbuf import drain

log = logging.getLogger(__name__)

# Records per batch: big enough to amortise the per-batch work, small enough
# that the batch's working set stays in cache.
MAX_BATCH_RECORDS = 8192
# How long to let events accumulate after a wake-up: the ceiling on the
# latency this adds, and the floor on how rarely a busy agent wakes.
COALESCE_SECONDS = 0.05


class RingBuffer:
    """A mapped BPF_MAP_TYPE_RINGBUF whose records are ``layout`` events."""

    def __init__(self, map_fd: int, data_size: int, layout: Layout) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"ring buffer size must be a power of two, got {data_size}")
        self.fd = map_fd
        self.layout = layout
        self.data_size = data_size
        page = mmap.PAGESIZE
        self._consumer_map = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        self._producer_map = mmap.mmap(
            map_fd, page + data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._consumer_pos = np.frombuffer(self._consumer_map, np.uint64, 1)
        self._producer_pos = np.frombuffer(self._producer_map, np.uint64, 1)
        self._data = memoryview(self._producer_map)[page:]
        self._batch = np.zeros(MAX_BATCH_RECORDS, layout.dtype)
        self._warned_sizes: set[int] = set()
        # Set when the last read stopped with a full batch and more waiting.
        self.more_waiting = False

    def read(self, max_records: int = MAX_BATCH_RECORDS) -> FlowBatch | None:
        """The committed records at the head, up to ``max_records``; None if there are none.

        The batch lives in an array reused by the next read.
        """
        consumer = int(self._consumer_pos[0])
        producer = int(self._producer_pos[0])
        if producer == consumer:
            self.more_waiting = False
            return None
        out = self._batch[: min(max_records, MAX_BATCH_RECORDS)]
        copied, position, skipped, skipped_size = drain(
            self._data, consumer, producer, out, self.layout.sizes
        )
        self._consumer_pos[0] = position  # the records are copied: the kernel may reuse the space
        self.more_waiting = copied == len(out) and position < producer
        if skipped:
            self._count_skipped(skipped, skipped_size)
        if position == consumer:
            return None  # the record at the head is still being written
        return decode_records(out[:copied], self.layout)

    def unread(self) -> int:
        """Records committed and not yet read."""
        consumer = int(self._consumer_pos[0])
        copied, *_ = drain(
            self._data, consumer, int(self._producer_pos[0]), None, self.layout.sizes
        )
        return copied

    def _count_skipped(self, count: int, size: int) -> None:
        metrics.RECORDS_REJECTED.labels(reason="unexpected_size").inc(count)
        if size not in self._warned_sizes:
            self._warned_sizes.add(size)
            log.warning(
                "ring buffer record of %d bytes skipped: the %s layout has %s; "
                "counted in flowlog_records_rejected_total",
                size,
                self.layout.name,
                " or ".join(map(str, self.layout.sizes)),
            )

    def close(self) -> None:
        # The views must go before the maps they look into.
        self._data.release()
        del self._consumer_pos, self._producer_pos
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
            if self.ring.more_waiting:
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
