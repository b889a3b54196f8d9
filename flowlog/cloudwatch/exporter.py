"""The CloudWatch Logs exporter: the flow log, shipped in full batches, at least once.

The local flow log is the durable queue. The event loop reads it (``tail``),
cuts it into request bodies (``request_builder``) and keeps a few calls in
flight (``service``), retried by the rules of ``retry``: one until CloudWatch
takes a call, and again after a call fails. Reading and cutting
take about a millisecond per 1 MB block; on a thread of their own they cost
more CPU in handing the GIL back and forth (0.4 µs per event) than they saved,
so a worker thread only writes the checkpoint.

Batches are acknowledged in the order they were cut, and the checkpoint only
ever moves over the contiguous acknowledged prefix. It is saved at most every
CHECKPOINT_SECONDS (a file write costs about 160 µs, as much as escaping a
thousand events), so after a crash at most the batches in flight and those
acknowledged in that last fraction of a second are sent again.

Lifecycle: ``run()`` until ``stop()`` (which lets in-flight calls finish,
writes the checkpoint and returns). While running, ``wake()`` says the log
grew, ``before_delete(path)`` that retention is about to delete a file, and
``wait_acknowledged(timeout)`` waits until everything in the files when it was
called is in CloudWatch. ``problem`` is a line for ``/readyz`` while
CloudWatch is refusing us or cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tenacity import RetryCallState

from flowlog.cloudwatch import metrics
from flowlog.cloudwatch.checkpoint import (
    Checkpoint,
    checkpoint_path_for,
    read_checkpoint,
    write_checkpoint,
)
from flowlog.cloudwatch.request_builder import Batch, RequestBuilder
from flowlog.cloudwatch.retry import (
    Failure,
    RetryPolicy,
    Stopping,
    classify,
    describe,
    error_code,
)
from flowlog.cloudwatch.service import CloudWatchLogs
from flowlog.cloudwatch.tail import BLOCK_BYTES, FlowLogTail, Position
from flowlog.config import Settings

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4
# Without wake(), new lines are noticed within this long.
POLL_SECONDS = 1.0
GAUGE_SECONDS = 1.0
CHECKPOINT_SECONDS = 0.2
# Consecutive transient failures before they are reported as a problem.
TRANSIENT_FAILURES_REPORTED = 3


class CloudWatchExporter:
    """Ships ``log_path`` (and its rotated backups) to the settings' log group and stream."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        checkpoint_path: Path | None = None,
        retry_policy: RetryPolicy | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        self.log_path = Path(log_path)
        self.log_group = settings.cloudwatch_log_group
        self.log_stream = settings.cloudwatch_log_stream
        self.flush_interval = settings.cloudwatch_flush_interval
        self.checkpoint_path = checkpoint_path or checkpoint_path_for(self.log_path)
        self.max_in_flight = max_in_flight
        self._policy = retry_policy or RetryPolicy()
        checkpoint = read_checkpoint(self.checkpoint_path)
        if checkpoint and (checkpoint.log_group, checkpoint.log_stream) != (
            self.log_group,
            self.log_stream,
        ):
            log.warning(
                "%s was shipped to %s / %s; continuing after that checkpoint into %s / %s",
                self.log_path,
                checkpoint.log_group,
                checkpoint.log_stream,
                self.log_group,
                self.log_stream,
            )
        self._tail = FlowLogTail(self.log_path, checkpoint, block_bytes)
        self._builder = RequestBuilder(self.log_group, self.log_stream)
        self._service = CloudWatchLogs(settings, max_connections=max_in_flight + 1)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="flowlog-cloudwatch")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._acknowledged = asyncio.Event()  # set and replaced whenever the checkpoint moves
        self._unacknowledged: deque[Batch] = deque()  # in flight, in cut order
        self._done: set[int] = set()  # seqs of batches finished out of order
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._next_seq = 0
        self._acked: Position | None = None
        self._written: Position | None = None
        self._checkpoint_scheduled = False
        self._checkpoint_at = 0.0  # time.monotonic() of the last write
        self._checkpoint_failing = False
        self._flush_waiters = 0
        self._destination_ready = False
        self._destination_checked = asyncio.Lock()
        self._accepting = False  # CloudWatch took the last call that finished
        self._problem: str | None = None
        self._problem_key: tuple[str, str] | None = None
        self._transient_failures = 0
        self._reported_rejections: set[str] = set()
        self._reported_loss = False
        self._bytes_per_event = 0.0
        self._gauges_at = 0.0
        self._gauge_labels = {"log_file": str(self.log_path)}

    # --- the public interface ------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why nothing reaches CloudWatch right now, or None."""
        return self._problem

    def wake(self) -> None:
        """The flow log has new lines (callable from any thread)."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    def before_delete(self, path: Path) -> None:
        """Log retention is about to delete ``path``: count what it held that was never sent."""
        lost = self._tail.before_delete(Path(path))
        if not lost:
            return
        metrics.EVENTS_LOST.inc(lost)
        if not self._reported_loss:
            self._reported_loss = True
            log.error(
                "log retention deletes %s before it was sent to CloudWatch Logs: %d lines "
                "lost (counting further losses in flowlog_cloudwatch_events_lost_total)",
                path,
                lost,
            )

    async def wait_acknowledged(self, timeout: float) -> bool:
        """True once everything in the flow log when called is in CloudWatch (or was
        deliberately skipped); False if ``timeout`` seconds pass first."""
        loop = asyncio.get_running_loop()
        if self._stopping.is_set():
            return False
        target = await loop.run_in_executor(self._worker, self._tail.end_position)
        if target is None:
            return True
        deadline = loop.time() + timeout
        self._flush_waiters += 1
        try:
            while not self._reached(target):
                if self._stopping.is_set():
                    return False
                self.wake()
                acknowledged = self._acknowledged
                try:
                    await asyncio.wait_for(acknowledged.wait(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    return self._reached(target)
            return True
        finally:
            self._flush_waiters -= 1

    async def run(self) -> None:
        """Ship until ``stop()``."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            await self._main_loop()
            await self._drain()
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            await self._service.close()
            self._tail.close()
            self._worker.shutdown(wait=False)
            for gauge in metrics.PER_FILE_GAUGES:
                gauge.remove(*self._gauge_labels.values())
            self._stopped.set()

    async def stop(self) -> None:
        """Finish the calls in flight, write the checkpoint, and let ``run()`` return."""
        self._stopping.set()
        self._wakeup.set()
        self._acknowledged.set()
        if self._loop is not None:
            await self._stopped.wait()

    # --- the loop -----------------------------------------------------------

    async def _main_loop(self) -> None:
        while not self._stopping.is_set():
            next_flush: float | None = None
            # One batch at a time until CloudWatch takes a call, and again after a
            # call fails: batches queued behind a call that cannot succeed only
            # hold memory (a body of up to 1.3 MB each, and the lines it came
            # from), and while CloudWatch refuses us one batch probes it.
            capacity = self.max_in_flight if self._accepting else 1
            if len(self._tasks) < capacity:
                batch, next_flush = self._produce()
                if batch is not None:
                    self._launch(batch)
                    continue
            self._update_gauges()
            timeout = POLL_SECONDS
            if next_flush is not None:
                timeout = min(timeout, max(0.0, next_flush - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            self._wakeup.clear()

    def _produce(self) -> tuple[Batch | None, float | None]:
        """The next batch to send, or None and when to flush."""
        while True:
            batch = self._builder.complete_batch()
            if batch is not None:
                return batch, None
            block = self._tail.read_block()
            if block is None:
                break
            self._builder.add(block)
        oldest = self._builder.oldest_pending
        if not self._builder.has_pending:
            return None, None
        flush_at = oldest[0] + self.flush_interval if oldest else time.monotonic()
        if self._flush_waiters or flush_at <= time.monotonic():
            return self._builder.next_batch(), None
        return None, flush_at

    def _launch(self, batch: Batch) -> None:
        batch.seq = self._next_seq
        self._next_seq += 1
        if batch.events:
            self._bytes_per_event = (batch.message_bytes + batch.events) / batch.events
        self._unacknowledged.append(batch)
        task = asyncio.create_task(self._deliver(batch), name=f"cloudwatch-batch-{batch.seq}")
        self._tasks[batch.seq] = task
        task.add_done_callback(lambda _: self._wakeup.set())

    async def _deliver(self, batch: Batch) -> None:
        try:
            if batch.body is not None:
                await self._send_until_done(batch)
        except Stopping:
            return  # not acknowledged: sent again after the next start
        finally:
            del self._tasks[batch.seq]
        self._acknowledge(batch)

    async def _send_until_done(self, batch: Batch) -> None:
        """Send the batch, retried by the policy until it is taken or rejected."""
        try:
            await self._send(batch)
            return
        except Exception as error:
            first_failure: Exception | None = error
        # tenacity's loop costs about 30 us a call, so it only starts after a
        # failure: its first attempt is the one that just failed.
        retrying = self._policy.retrying(self._backoff, self._before_retry)
        async for attempt in retrying:
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                await self._send(batch)

    async def _send(self, batch: Batch) -> None:
        assert batch.body is not None
        try:
            if not self._destination_ready:
                await self._ensure_destination()
            response = await self._service.put_log_events(batch.body)
        except Exception as error:
            failure = classify(error)
            metrics.ERRORS.labels(code=error_code(error)).inc()
            if failure is not Failure.REJECTED:
                self._accepting = False
            if failure is Failure.MISSING:
                self._destination_ready = False  # recreated before the same batch is resent
            elif failure is Failure.REJECTED:
                self._reject(batch, error)
                return
            self._report(failure, error)
            raise
        self._accepting = True
        self._clear_problem()
        self._count_accepted(batch, response)

    async def _ensure_destination(self) -> None:
        # The calls in flight wait for one of them to look the group and stream up.
        async with self._destination_checked:
            if not self._destination_ready:
                await self._service.ensure_destination()
                self._destination_ready = True

    async def _backoff(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise Stopping

    def _before_retry(self, retry_state: RetryCallState) -> None:
        if retry_state.next_action:
            log.debug("retrying a PutLogEvents call in %.1fs", retry_state.next_action.sleep)

    def _acknowledge(self, batch: Batch) -> None:
        self._done.add(batch.seq)
        moved = False
        while self._unacknowledged and self._unacknowledged[0].seq in self._done:
            finished = self._unacknowledged.popleft()
            self._done.discard(finished.seq)
            self._acked = finished.position
            moved = True
        if moved:
            self._acknowledged.set()
            self._acknowledged = asyncio.Event()
            self._schedule_checkpoint()

    def _reached(self, target: Position) -> bool:
        acked = self._acked or self._tail.start
        return acked is not None and acked.reached(target)

    async def _drain(self) -> None:
        """Let the calls in flight finish (backoffs end at once), then save the checkpoint."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._write_checkpoint)

    # --- accounting -------------------------------------------------------------

    def _count_accepted(self, batch: Batch, response: dict[str, Any]) -> None:
        rejected = response.get("rejectedLogEventsInfo") or {}
        too_new = batch.events - rejected.get("tooNewLogEventStartIndex", batch.events)
        too_old = rejected.get("tooOldLogEventEndIndex", 0)
        expired = max(0, rejected.get("expiredLogEventEndIndex", 0) - too_old)
        for reason, count in (("too_new", too_new), ("too_old", too_old), ("expired", expired)):
            if count > 0:
                metrics.EVENTS_REJECTED.labels(reason=reason).inc(count)
                self._report_rejection_once(
                    reason, f"CloudWatch Logs rejected {count} events as {reason}"
                )
        metrics.EVENTS_SENT.inc(max(0, batch.events - too_new - too_old - expired))
        metrics.BYTES_SENT.inc(batch.message_bytes)
        metrics.BATCHES.inc()
        metrics.EVENTS_PER_BATCH.observe(batch.events)

    def _reject(self, batch: Batch, error: BaseException) -> None:
        code = error_code(error)
        metrics.EVENTS_REJECTED.labels(reason=code).inc(batch.events)
        self._report_rejection_once(
            code,
            f"{describe(error, self.log_group)}; its {batch.events} events are dropped, not resent",
        )

    def _report_rejection_once(self, key: str, message: str) -> None:
        if key not in self._reported_rejections:
            self._reported_rejections.add(key)
            log.error(
                "%s (counting further ones in flowlog_cloudwatch_events_rejected_total)", message
            )

    def _report(self, failure: Failure, error: BaseException) -> None:
        if failure is Failure.ACCESS:
            key = (error_code(error), getattr(error, "operation_name", ""))
            text = describe(error, self.log_group)
            retry = f"{self._policy.access_retry:g}s"
            if key != self._problem_key:
                log.error(
                    "%s; the flow log is kept locally and shipping retried every %s", text, retry
                )
            self._set_problem(key, text, access=True)
            return
        if failure is Failure.TRANSIENT:
            self._transient_failures += 1
            if self._transient_failures >= TRANSIENT_FAILURES_REPORTED and self._problem is None:
                text = describe(error, self.log_group)
                log.warning("%s; retrying with backoff, the flow log is kept locally", text)
                self._set_problem((error_code(error), ""), text, access=False)

    def _set_problem(self, key: tuple[str, str], text: str, access: bool) -> None:
        self._problem_key = key
        self._problem = text
        metrics.ACCESS_PROBLEM.labels(**self._gauge_labels).set(1 if access else 0)

    def _clear_problem(self) -> None:
        self._transient_failures = 0
        if self._problem is not None:
            log.info(
                "CloudWatch Logs accepts events again (%s / %s)", self.log_group, self.log_stream
            )
            self._problem = None
            self._problem_key = None
            metrics.ACCESS_PROBLEM.labels(**self._gauge_labels).set(0)

    def _update_gauges(self) -> None:
        now = time.monotonic()
        if now - self._gauges_at < GAUGE_SECONDS:
            return
        self._gauges_at = now
        pending_events, pending_bytes, unread_bytes, oldest = self._measure_backlog()
        batches = [b for b in self._unacknowledged if b.events]
        events = pending_events + sum(b.events for b in batches)
        read_bytes = pending_bytes + sum(b.message_bytes + b.events for b in batches)
        estimated = unread_bytes / self._bytes_per_event if self._bytes_per_event else 0
        metrics.BACKLOG_EVENTS.labels(**self._gauge_labels).set(events + round(estimated))
        metrics.BACKLOG_BYTES.labels(**self._gauge_labels).set(read_bytes + unread_bytes)
        first_ms = [b.first_ms for b in batches[:1]] + ([oldest] if oldest is not None else [])
        lag = max(0.0, time.time() - min(first_ms) / 1000) if first_ms else 0.0
        metrics.LAG_SECONDS.labels(**self._gauge_labels).set(lag)

    def _measure_backlog(self) -> tuple[int, int, int, int | None]:
        oldest = self._builder.oldest_pending
        events = self._builder.pending_events
        return (
            events,
            self._builder.pending_bytes,
            self._tail.unread_bytes(),
            oldest[1] if oldest else None,
        )

    # --- the checkpoint ---------------------------------------------------------

    def _schedule_checkpoint(self) -> None:
        if self._checkpoint_scheduled or self._stopped.is_set():
            return
        self._checkpoint_scheduled = True
        delay = self._checkpoint_at + CHECKPOINT_SECONDS - time.monotonic()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._submit_checkpoint)
        else:
            self._submit_checkpoint()

    def _submit_checkpoint(self) -> None:
        if not self._stopped.is_set():
            self._worker.submit(self._write_checkpoint)

    def _write_checkpoint(self) -> None:
        """On the worker thread: save the acknowledged position if it moved."""
        self._checkpoint_scheduled = False
        self._checkpoint_at = time.monotonic()
        position = self._acked
        if position is None or position == self._written:
            return
        checkpoint = Checkpoint(
            file=position.file.path.name,
            fingerprint=position.file.fingerprint,
            offset=position.offset,
            log_group=self.log_group,
            log_stream=self.log_stream,
        )
        try:
            write_checkpoint(self.checkpoint_path, checkpoint)
        except OSError as error:
            if not self._checkpoint_failing:
                self._checkpoint_failing = True
                log.error(
                    "cannot write the CloudWatch checkpoint %s (%s): a restart would send "
                    "again what was sent since the last one written",
                    self.checkpoint_path,
                    error,
                )
            return
        if self._checkpoint_failing:
            self._checkpoint_failing = False
            log.info("the CloudWatch checkpoint %s is written again", self.checkpoint_path)
        self._written = position
