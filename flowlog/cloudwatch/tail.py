"""The flow log as a durable queue: the live file and its rotated backups, read in order.

Files are read oldest first (backups by name, then the live file), complete
lines only, in blocks of bounded size, so memory stays bounded whatever the
backlog. A file is known by the fingerprint of its first line, which survives
rotation (a rename) and compression (a new file with the same content). Its
place in the order of writing comes from its name, which lumberjack makes
from the rotation time: a backup's time, or for the live file "after the
newest backup there is". That place never changes once given (the live file
keeps it after its rotation), and however late a file is first seen, it lands
where it belongs; a position (place, offset) orders lines across files. Two
files with the same first line would be taken for one; flow-log lines carry a
millisecond timestamp and the flow's addresses, so in practice they differ.

The live file is read through an open descriptor: when rotation renames it,
what was written before the rename is still read to the end before moving on
to the new live file. A line longer than a block is sent cut short (the
builder truncates it) and the rest of it skipped.

All methods take one lock: the exporter reads on its event loop while the
log writer's housekeeping thread calls ``before_delete``.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from flowlog.cloudwatch import metrics
from flowlog.cloudwatch.checkpoint import Checkpoint
from flowlog.cloudwatch.limits import MAX_MESSAGE_BYTES
from flowlog.logfile import COMPRESSED_SUFFIX, list_backups

log = logging.getLogger(__name__)

# About one call's worth. 4 MB blocks cost 0.05 us less per event shipped, but
# an agent shipping 100,000 events/s held 8 MB more with them (150 MB in all).
BLOCK_BYTES = 1 << 20
FINGERPRINT_BYTES = 4096
SCAN_BYTES = 1 << 20
GZIP_SIZE_TRAILER = 4  # ISIZE: the uncompressed size modulo 2**32
# Listings to try when rotation moves files between listing and opening.
OPEN_ATTEMPTS = 3


# A file's place in the order of writing: (backup time in ms, 0) for a backup,
# (newest backup's time, 1) for a live file, which comes after it.
Order = tuple[int, int]
BEFORE_ALL: Order = (-1, 0)


@dataclass(frozen=True)
class LogFile:
    path: Path  # where it was when listed; rotation may have moved it since
    fingerprint: str
    order: Order


@dataclass(frozen=True)
class Position:
    """Everything before ``offset`` in ``file``, and all older files."""

    file: LogFile
    offset: int

    def reached(self, target: Position) -> bool:
        return (self.file.order, self.offset) >= (target.file.order, target.offset)


@dataclass(frozen=True)
class Block:
    file: LogFile
    start: int  # offset of data[0] in the file's (uncompressed) content
    data: bytes  # complete lines, each ending in b"\n"
    end: int  # offset after the last line: start + len(data) unless a line was cut short


def _open_reader(path: Path) -> _PlainReader | _GzipReader:
    if path.name.endswith(COMPRESSED_SUFFIX):
        return _GzipReader(path)
    return _PlainReader(path)


def fingerprint_of(path: Path) -> str | None:
    """A hash of the file's first line; None while it has no complete first line."""
    try:
        reader = _open_reader(path)
    except OSError:
        return None
    try:
        return _fingerprint(reader.read(0, FINGERPRINT_BYTES))
    except (OSError, EOFError, zlib.error):
        return None
    finally:
        reader.close()


def _fingerprint(head: bytes) -> str | None:
    newline = head.find(b"\n")
    if newline < 0 and len(head) < FINGERPRINT_BYTES:
        return None
    first_line = head[: newline + 1] if newline >= 0 else head
    return hashlib.blake2b(first_line, digest_size=8).hexdigest()


def count_lines(path: Path) -> int:
    """Lines in a flow-log file (a last line without its newline counts too)."""
    reader = _open_reader(path)
    lines, offset, last = 0, 0, b"\n"
    try:
        while chunk := reader.read(offset, SCAN_BYTES):
            lines += chunk.count(b"\n")
            offset += len(chunk)
            last = chunk[-1:]
    except (OSError, EOFError, zlib.error) as error:
        log.warning("could not read %s to the end: %s", path, error)
    finally:
        reader.close()
    return lines + (last != b"\n")


class _PlainReader:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def is_file_at(self, path: Path) -> bool:
        try:
            there = os.stat(path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self.fd)
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def close(self) -> None:
        os.close(self.fd)


class _GzipReader:
    """Sequential reads of a gzipped backup, with the little re-reading the tail does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._restart()

    def _restart(self) -> None:
        self._raw.seek(0)
        self._file = gzip.GzipFile(fileobj=self._raw, mode="rb")
        self._start = 0  # offset of _buffer[0]
        self._buffer = b""

    def read(self, offset: int, size: int) -> bytes:
        if offset < self._start:
            self._restart()
        buffered_end = self._start + len(self._buffer)
        if offset >= buffered_end:
            self._file.seek(offset)  # decompresses and discards the gap
            self._buffer = b""
        else:
            self._buffer = self._buffer[offset - self._start :]
        self._start = offset
        if len(self._buffer) < size:
            self._buffer += self._file.read(size - len(self._buffer))
        return self._buffer[:size]

    def size(self) -> int:
        # pread leaves the position the decompressor reads from alone.
        fd = self._raw.fileno()
        trailer = os.pread(fd, GZIP_SIZE_TRAILER, os.fstat(fd).st_size - GZIP_SIZE_TRAILER)
        return int.from_bytes(trailer, "little")

    def is_file_at(self, path: Path) -> bool:
        return False  # a compressed file is never the live one

    def close(self) -> None:
        self._file.close()
        self._raw.close()


@dataclass
class _OpenFile:
    file: LogFile
    reader: _PlainReader | _GzipReader
    offset: int
    live: bool  # opened at the live path and not yet seen rotated away


class FlowLogTail:
    """Blocks of complete lines from ``log_path`` and its backups, resuming at ``checkpoint``."""

    def __init__(
        self, log_path: Path, checkpoint: Checkpoint | None, block_bytes: int = BLOCK_BYTES
    ) -> None:
        self.log_path = Path(log_path)
        self.block_bytes = block_bytes
        self._checkpoint = checkpoint
        self._lock = threading.Lock()
        self._resumed = False
        self._orders: dict[str, Order] = {}  # by fingerprint, given once
        self._deleted: set[str] = set()  # announced by before_delete, not to be opened
        self._current: _OpenFile | None = None
        self._read_through = BEFORE_ALL  # files up to this place are read to the end
        self._resume_at: tuple[str, int] | None = None
        self._failed_reads: set[str] = set()
        self.start: Position | None = None  # what the checkpoint says is acknowledged

    # --- listing ------------------------------------------------------------

    def _list(self) -> list[LogFile]:
        # The live file first: if it is rotated before the backups are listed, it is
        # among them, named, instead of a newer live file placed before its own backup.
        live = fingerprint_of(self.log_path)
        backups = list_backups(self.log_path)
        files = []
        for backup in backups:
            path, fingerprint = backup.path, fingerprint_of(backup.path)
            compressed = path.with_name(path.name + COMPRESSED_SUFFIX)
            if fingerprint is None and compressed.exists():
                # Compressed since it was listed: the same file under its new name.
                path, fingerprint = compressed, fingerprint_of(compressed)
            if fingerprint is not None:
                order = self._orders.setdefault(fingerprint, (backup.time_ms, 0))
                files.append(LogFile(path, fingerprint, order))
        listed = {file.fingerprint for file in files}
        if live is not None and live not in listed:
            newest = max((backup.time_ms for backup in backups), default=BEFORE_ALL[0])
            files.append(LogFile(self.log_path, live, self._orders.setdefault(live, (newest, 1))))
            listed.add(live)
        files.sort(key=lambda file: file.order)
        self._deleted &= listed
        # Forget files read and deleted (retention deletes the oldest first), so a long
        # run does not accumulate them.
        oldest = files[0].order if files else self._read_through
        for fingerprint in [
            f
            for f, order in self._orders.items()
            if f not in listed and order <= self._read_through and order < oldest
        ]:
            del self._orders[fingerprint]
        return files

    def _ensure_resumed(self) -> None:
        if self._resumed:
            return
        self._resumed = True
        files = self._list()
        checkpoint = self._checkpoint
        if checkpoint is None:
            return
        matches = [file for file in files if file.fingerprint == checkpoint.fingerprint]
        chosen = next((f for f in matches if f.path.name == checkpoint.file), None)
        chosen = chosen or (matches[0] if matches else None)
        if chosen is not None:
            self._read_through = max(
                (file.order for file in files if file.order < chosen.order), default=BEFORE_ALL
            )
            self._resume_at = (chosen.fingerprint, checkpoint.offset)
            self.start = Position(chosen, checkpoint.offset)
            return
        metrics.FILES_LOST.inc()
        # Backup names sort by time: those up to the checkpointed one were sent.
        if checkpoint.file != self.log_path.name:
            sent_name = checkpoint.file.removesuffix(COMPRESSED_SUFFIX)
            for file in files:
                if file.path.name.removesuffix(COMPRESSED_SUFFIX) <= sent_name:
                    self._read_through = file.order
        log.warning(
            "the flow log %s, acknowledged by CloudWatch up to byte %d, is gone (deleted "
            "by retention before it was completely sent?); its unsent lines are lost; "
            "continuing with the next file",
            checkpoint.file,
            checkpoint.offset,
        )

    # --- reading ------------------------------------------------------------

    def read_block(self) -> Block | None:
        """The next block of complete lines, or None when there is nothing new yet."""
        with self._lock:
            self._ensure_resumed()
            while True:
                if self._current is None and not self._open_next():
                    return None
                block = self._read_current()
                if block is not None:
                    return block
                if not self._advance():
                    return None

    def _open_next(self) -> bool:
        """Open the oldest file not read yet; False when there is none (yet)."""
        for _ in range(OPEN_ATTEMPTS):
            opened = self._try_open_next()
            if opened is not None:
                return opened
        return False

    def _try_open_next(self) -> bool | None:
        """None when the files changed between listing and opening: list them again."""
        for file in self._list():
            if file.order <= self._read_through or file.fingerprint in self._deleted:
                continue
            reader = self._open_listed(file)
            if reader is None:
                if file.path == self.log_path:
                    return None  # rotated since listing: now a backup
                metrics.FILES_LOST.inc()
                log.warning("%s was deleted before it could be sent; its lines are lost", file.path)
                continue
            try:
                same = _fingerprint(reader.read(0, FINGERPRINT_BYTES)) == file.fingerprint
            except (OSError, EOFError, zlib.error):
                same = False
            if not same:
                reader.close()
                return None
            offset = 0
            if self._resume_at and self._resume_at[0] == file.fingerprint:
                offset = self._resume_at[1]
                self._resume_at = None
                if offset > reader.size():
                    log.warning(
                        "%s is shorter than its checkpoint says (%d bytes); sending it from "
                        "the start",
                        file.path,
                        offset,
                    )
                    offset = 0
            live = file.path == self.log_path
            self._current = _OpenFile(file, reader, offset, live)
            return True
        return False

    def _open_listed(self, file: LogFile) -> _PlainReader | _GzipReader | None:
        """The listed file, or its compressed self if it was compressed since; None if gone."""
        paths = [file.path]
        if file.path != self.log_path and not file.path.name.endswith(COMPRESSED_SUFFIX):
            paths.append(file.path.with_name(file.path.name + COMPRESSED_SUFFIX))
        for path in paths:
            try:
                return _open_reader(path)
            except FileNotFoundError:
                continue
        return None

    def _read_current(self) -> Block | None:
        current = self._current
        assert current is not None
        try:
            data = current.reader.read(current.offset, self.block_bytes)
        except (OSError, EOFError, zlib.error) as error:
            self._report_read_failure(current.file, error)
            current.live = False
            current.offset = -1  # nothing more will be read from it
            return None
        cut = data.rfind(b"\n") + 1
        if cut:
            block = Block(current.file, current.offset, data[:cut], current.offset + cut)
            current.offset += cut
            return block
        if len(data) == self.block_bytes:
            return self._cut_long_line(current, data)
        if data and not current.live:
            # The last line of a file that will not grow: send it without its newline.
            block = Block(current.file, current.offset, data + b"\n", current.offset + len(data))
            current.offset += len(data)
            return block
        return None

    def _cut_long_line(self, current: _OpenFile, head: bytes) -> Block | None:
        """A line longer than a block: its head (enough to be truncated), the rest skipped."""
        scan = current.offset + len(head)
        while True:
            chunk = current.reader.read(scan, SCAN_BYTES)
            newline = chunk.find(b"\n")
            if newline >= 0:
                end = scan + newline + 1
                break
            if not chunk:
                if current.live:
                    return None  # the line is not finished yet
                end = scan
                break
            scan += len(chunk)
        block = Block(current.file, current.offset, head[: MAX_MESSAGE_BYTES + 1] + b"\n", end)
        current.offset = end
        return block

    def _advance(self) -> bool:
        """At the end of the current file: move on if it is finished; False to wait for more."""
        current = self._current
        assert current is not None
        if current.live:
            if current.reader.is_file_at(self.log_path):
                return False
            current.live = False  # rotated: read what it still holds, then move on
            return True
        current.reader.close()
        self._read_through = current.file.order
        self._current = None
        return True

    def _report_read_failure(self, file: LogFile, error: BaseException) -> None:
        if file.fingerprint not in self._failed_reads:
            self._failed_reads.add(file.fingerprint)
            log.error("cannot read %s (%s); skipping the rest of it", file.path, error)

    # --- what the writer and the exporter ask ------------------------------------

    def before_delete(self, path: Path) -> int:
        """Retention is about to delete ``path``: the number of its lines never to be sent."""
        with self._lock:
            self._ensure_resumed()
            fingerprint = fingerprint_of(Path(path))
            if fingerprint is None:
                return 0
            if self._current and self._current.file.fingerprint == fingerprint:
                return 0  # being read through an open descriptor: it is finished regardless
            order = self._orders.get(fingerprint)
            if order is not None and order <= self._read_through:
                return 0  # read already: sent or in memory
            self._deleted.add(fingerprint)
            return count_lines(Path(path))

    def end_position(self) -> Position | None:
        """Where the complete lines present now end; None when there are none."""
        with self._lock:
            self._ensure_resumed()
            files = self._list()
            if not files:
                return None
            last = files[-1]
            try:
                reader = _open_reader(last.path)
            except FileNotFoundError:
                return Position(last, 0)
            try:
                if last.path != self.log_path:
                    return Position(last, reader.size())
                return Position(last, _complete_lines_end(reader))
            finally:
                reader.close()

    def unread_bytes(self) -> int:
        """Bytes in the files not read yet (compressed backups by their content size)."""
        with self._lock:
            self._ensure_resumed()
            unread = 0
            current = self._current
            if current is not None and current.offset >= 0:
                unread += max(0, current.reader.size() - current.offset)
            for file in self._list():
                if file.order <= self._read_through or (
                    current and file.order <= current.file.order
                ):
                    continue
                try:
                    reader = _open_reader(file.path)
                except FileNotFoundError:
                    continue
                unread += reader.size()
                reader.close()
            return unread

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current.reader.close()
                self._current = None


def _complete_lines_end(reader: _PlainReader) -> int:
    """The offset after the last newline of a file that may end in a partial line."""
    end = reader.size()
    while end > 0:
        start = max(0, end - SCAN_BYTES)
        newline = reader.read(start, end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
