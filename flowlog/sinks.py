"""The sinks a pipeline writes to: the flow-log file (or stdout) and, reading
that file as its durable queue, the CloudWatch exporter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from flowlog.config import Settings
from flowlog.logfile import LineSink, RotatingLogFile, StdoutSink

log = logging.getLogger(__name__)

EXPORTER_STOP_SECONDS = 5.0


def open_sink(settings: Settings, before_delete: Callable[[Path], None] | None = None) -> LineSink:
    if settings.log_to_stdout:
        return StdoutSink()
    return RotatingLogFile(
        settings.log_file,
        max_bytes=settings.log_file_max_bytes,
        max_backups=settings.log_file_max_backups,
        max_age_days=settings.log_file_max_age,
        compress=settings.log_file_compress,
        compress_level=settings.log_file_compress_level,
        before_delete=before_delete,
    )


class Shipper:
    """The CloudWatch exporter, running as a task beside the writer."""

    def __init__(self, settings: Settings) -> None:
        from flowlog.cloudwatch.exporter import CloudWatchExporter

        self.exporter = CloudWatchExporter(settings, Path(settings.log_file))
        self._task = asyncio.create_task(self.exporter.run(), name="cloudwatch-exporter")

    def wake(self) -> None:
        self.exporter.wake()

    def before_delete(self, path: Path) -> None:
        self.exporter.before_delete(path)

    @property
    def problem(self) -> str | None:
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            return f"exporter stopped: {self._task.exception()}"
        return self.exporter.problem

    async def wait_acknowledged(self, timeout: float) -> bool:
        return await self.exporter.wait_acknowledged(timeout)

    async def stop(self, timeout: float = EXPORTER_STOP_SECONDS) -> None:
        """Let in-flight calls finish and the checkpoint be written, within ``timeout``."""
        try:
            await asyncio.wait_for(self.exporter.stop(), timeout)
        except TimeoutError:
            log.warning(
                "CloudWatch exporter did not stop within %.0fs; events not yet "
                "acknowledged will be sent after the next start",
                timeout,
            )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
