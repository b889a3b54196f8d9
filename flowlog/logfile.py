"""The flow log on disk, rotated with lumberjack's semantics, or standard output.

Users' tooling already knows the Go agent's files, so rotation behaves like
lumberjack (gopkg.in/natefinch/lumberjack.v2): the live file is rotated when
the next write would take it past the maximum size; the rotated file is
renamed to ``<stem>-<UTC 2006-01-02T15-04-05.000><ext>`` beside it and later
gzipped to ``….log.gz``; the newest ``max_backups`` backups are kept and any
older than ``max_age_days`` deleted (0 means no limit, for both). A restart
appends to the live file. Unlike lumberjack, a write never splits a line
across files: blocks are cut at line boundaries.

Writes are whole blocks of complete lines made by one writer, so lines never
interleave. A failed write (a full disk, say) is undone back to the last
complete line, counted and logged once; the writer keeps going.
"""

from __future__ import annotations

import calendar
import errno
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from isal import igzip

from flowlog import metrics

log = logging.getLogger(__name__)

BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"  # then ".mmm", as Go's 2006-01-02T15-04-05.000
COMPRESSED_SUFFIX = ".gz"
COPY_CHUNK = 1 << 20


class LineSink(Protocol):
    """Where formatted flow-log lines go."""

    def write(self, block: bytes | memoryview, lines: int) -> bool:
        """Write whole lines; False if they could not be written (already counted)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Backup:
    path: Path
    time_ms: int  # from its name
    compressed: bool


def backup_name(live: Path, time_ms: int) -> str:
    seconds, millis = divmod(time_ms, 1000)
    stamp = time.strftime(BACKUP_TIME_FORMAT, time.gmtime(seconds)) + f".{millis:03d}"
    return f"{live.stem}-{stamp}{live.suffix}"


def list_backups(live: Path) -> list[Backup]:
    """Rotated files of ``live``, oldest first; a backup both plain and gzipped counts once."""
    pattern = re.compile(
        re.escape(live.stem)
        + r"-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d)\.(\d{3})"
        + re.escape(live.suffix)
        + r"(\.gz)?$"
    )
    found: dict[int, Backup] = {}
    try:
        names = os.listdir(live.parent)
    except FileNotFoundError:
        return []
    for name in names:
        match = pattern.match(name)
        if not match:
            continue
        stamp, millis, gz = match.groups()
        time_ms = calendar.timegm(time.strptime(stamp, BACKUP_TIME_FORMAT)) * 1000 + int(millis)
        backup = Backup(live.parent / name, time_ms, compressed=bool(gz))
        # While a backup is being compressed both files exist; the plain one is whole.
        if time_ms not in found or not backup.compressed:
            found[time_ms] = backup
    return [found[key] for key in sorted(found)]


class StdoutSink:
    """Lines to standard output (``--log-file stdout``), for container log collection."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = sys.stdout.fileno() if fd is None else fd
        self._failing = False

    def write(self, block: bytes | memoryview, lines: int) -> bool:
        try:
            _write_all(self.fd, block)
        except OSError as error:
            _count_failed_write(lines, error, already_failing=self._failing)
            self._failing = True
            return False
        self._failing = False
        metrics.LINES_WRITTEN.inc(lines)
        metrics.BYTES_WRITTEN.inc(len(block))
        return True

    def close(self) -> None:
        pass


class RotatingLogFile:
    """The flow-log file with lumberjack's rotation and retention."""

    def __init__(
        self,
        path: str | Path,
        max_bytes: int,
        max_backups: int = 8,
        max_age_days: int = 30,
        compress: bool = True,
        before_delete: Callable[[Path], None] | None = None,
        after_rotate: Callable[[Path], None] | None = None,
        compress_level: int = 1,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_backups = max_backups
        self.max_age_days = max_age_days
        self.compress = compress
        self.compress_level = compress_level
        # Called (on the housekeeping thread) before a backup is deleted, so a
        # shipper can count what it had not sent yet.
        self.before_delete = before_delete
        self.after_rotate = after_rotate
        self._housekeeping = ThreadPoolExecutor(1, thread_name_prefix="flowlog-rotate")
        self._pending: list[Future] = []
        self._failing = False
        self._last_backup_ms = 0
        self.fd = -1
        self.size = 0
        self._open()

    # --- writing -------------------------------------------------------------

    def write(self, block: bytes | memoryview, lines: int) -> bool:
        """Append complete lines, rotating first whenever a line would not fit."""
        if not block:
            return True
        try:
            if self.fd < 0:
                self._open()
            view = memoryview(block)
            while view:
                room = self.max_bytes - self.size
                if len(view) <= room:
                    self._append(view)
                    break
                cut = bytes(view[:room]).rfind(b"\n") + 1 if room > 0 else 0
                if cut == 0 and self.size == 0:
                    # A single line larger than the whole file limit: it still
                    # gets a file of its own rather than being dropped.
                    cut = bytes(view).find(b"\n") + 1 or len(view)
                if cut:
                    self._append(view[:cut])
                    view = view[cut:]
                self.rotate()
        except OSError as error:
            _count_failed_write(lines, error, already_failing=self._failing)
            self._failing = True
            return False
        if self._failing:
            log.info("flow log %s is writable again", self.path)
        self._failing = False
        metrics.LINES_WRITTEN.inc(lines)
        metrics.BYTES_WRITTEN.inc(len(block))
        return True

    def _append(self, data: memoryview) -> None:
        try:
            _write_all(self.fd, data)
        except OSError:
            # Undo a partial write so the file still ends with a whole line.
            os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.size = os.fstat(self.fd).st_size

    # --- rotation and retention ---------------------------------------------

    def rotate(self) -> Path:
        """Move the live file to a timestamped backup and start a new one."""
        now_ms = max(time.time_ns() // 1_000_000, self._last_backup_ms + 1)
        backup = self.path.parent / backup_name(self.path, now_ms)
        while backup.exists():
            now_ms += 1
            backup = self.path.parent / backup_name(self.path, now_ms)
        self._last_backup_ms = now_ms
        os.close(self.fd)
        self.fd = -1
        os.rename(self.path, backup)
        self._open()
        metrics.ROTATIONS.inc()
        if self.after_rotate:
            self.after_rotate(backup)
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._housekeeping.submit(self.tidy_backups))
        return backup

    def tidy_backups(self) -> None:
        """Delete backups past the count or age limits, then gzip the rest (lumberjack's mill)."""
        backups = list_backups(self.path)
        doomed: list[Backup] = []
        if self.max_backups > 0 and len(backups) > self.max_backups:
            doomed, backups = backups[: -self.max_backups], backups[-self.max_backups :]
        if self.max_age_days > 0:
            cutoff_ms = (time.time() - self.max_age_days * 86400) * 1000
            doomed += [b for b in backups if b.time_ms < cutoff_ms]
            backups = [b for b in backups if b.time_ms >= cutoff_ms]
        for backup in doomed:
            self._delete(backup)
        if self.compress:
            for backup in backups:
                if not backup.compressed:
                    self._compress(backup.path)

    def _delete(self, backup: Backup) -> None:
        if self.before_delete:
            self.before_delete(backup.path)
        plain = Path(str(backup.path).removesuffix(COMPRESSED_SUFFIX))
        plain.unlink(missing_ok=True)
        Path(f"{plain}{COMPRESSED_SUFFIX}").unlink(missing_ok=True)

    def _compress(self, path: Path) -> None:
        target = Path(f"{path}{COMPRESSED_SUFFIX}")
        partial = Path(f"{target}.tmp")  # matches neither *.log nor *.log.gz
        try:
            # ISA-L's igzip writes standard gzip (gzip, zcat and Fluent Bit read
            # it) at several times zlib's speed: this thread's CPU is the node's.
            level = self.compress_level
            with open(path, "rb") as source, igzip.open(partial, "wb", compresslevel=level) as sink:
                shutil.copyfileobj(source, sink, COPY_CHUNK)
            os.chmod(partial, 0o644)
            os.rename(partial, target)
            path.unlink()
        except OSError as error:
            partial.unlink(missing_ok=True)
            log.warning("could not compress %s: %s", path, error)

    def wait_housekeeping(self, timeout: float = 30.0) -> None:
        """Block until rotations so far have been tidied (compressed, pruned)."""
        for future in self._pending:
            future.result(timeout)
        self._pending.clear()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._housekeeping.shutdown(wait=True)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _count_failed_write(lines: int, error: OSError, already_failing: bool) -> None:
    reason = errno.errorcode.get(error.errno or 0, "EIO")
    metrics.LINES_DROPPED.labels(reason=reason).inc(lines)
    if not already_failing:
        log.error(
            "cannot write the flow log (%s); counting dropped lines in "
            "flowlog_lines_dropped_total until writes succeed again",
            error,
        )
