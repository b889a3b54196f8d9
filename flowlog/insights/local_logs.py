"""Flow-log files on this node as Insights events: plain, rotated and gzipped.

Files are read line by line, never whole. Each JSON line becomes a row of
its keys (nested objects flattened to ``a.b``, as Insights does) plus
``@timestamp`` (its ``timestamp`` key), and, only when the query uses them,
``@message`` (the line), ``@logStream`` (the file's name) and ``@log`` (its
path). Lines outside the time range are dropped before they are decoded:
the timestamp sits at a fixed offset in every flow-log line. Rotated backups
whose name says they were closed before the range starts are not opened.
"""

from __future__ import annotations

import calendar
import gzip
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from flowlog.config import ConfigError
from flowlog.insights.values import parse_timestamp
from flowlog.logfile import BACKUP_TIME_FORMAT, list_backups

GZIP_MAGIC = b"\x1f\x8b"
# Every flow-log line starts so, and its 24-character timestamp follows at offset 30.
LINE_PREFIX = b'{"level":"info","timestamp":"'
TIMESTAMP_SLICE = slice(len(LINE_PREFIX), len(LINE_PREFIX) + 24)
# lumberjack's backup names: <stem>-2006-01-02T15-04-05.000<ext>[.gz], the time in UTC.
BACKUP_TIME = re.compile(r"-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})\.(\d{3})(\.[^.]+)?(\.gz)?$")
# A backup's lines are older than its name says, but event times come from another
# clock than the rotation time: only skip backups closed well before the range.
CLOCK_SLACK_MS = 60_000


def backup_closed_at(path: Path) -> int | None:
    """When a rotated backup was closed, in ms since the epoch, from its name."""
    match = BACKUP_TIME.search(path.name)
    if not match:
        return None
    seconds = calendar.timegm(time.strptime(match.group(1), BACKUP_TIME_FORMAT))
    return seconds * 1000 + int(match.group(2))


def live_log_and_backups(live: Path) -> list[Path]:
    """The live flow log and its rotated backups, oldest first, each backup once."""
    backups = [backup.path for backup in list_backups(live)]
    return [*backups, live] if live.exists() else backups


def iso_milliseconds(milliseconds: int) -> bytes:
    """A time as the flow log writes it, for comparing raw timestamps as bytes."""
    seconds, millis = divmod(milliseconds, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{millis:03d}Z".encode()


@dataclass
class LocalFlowLogs:
    """Rows from local flow-log files, newest file last; counts what it could not read."""

    paths: Sequence[Path]
    since: int | None = None  # ms since the epoch, inclusive
    until: int | None = None  # ms since the epoch, inclusive
    source_fields: frozenset[str] = frozenset()  # of @message, @logStream, @log
    skipped_lines: int = 0
    damaged_files: list[str] = field(default_factory=list)

    def check_readable(self) -> None:
        for path in self.paths:
            if not path.is_file():
                raise ConfigError(f"--local {path}: no such file")
            try:
                path.open("rb").close()
            except OSError as error:
                raise ConfigError(f"--local {path}: cannot read: {error.strerror}") from None

    def rows(self) -> Iterator[dict]:
        for path in self.paths:
            closed_at = backup_closed_at(path)
            too_old = closed_at is not None and closed_at < (self.since or 0) - CLOCK_SLACK_MS
            if self.since is not None and too_old:
                continue
            with open_flow_log(path) as handle:
                try:
                    yield from self._rows_of(path, handle)
                except (EOFError, gzip.BadGzipFile, OSError) as error:
                    # An unfinished or damaged backup: keep what was read, say so once.
                    self.damaged_files.append(f"{path}: {error}")

    def _rows_of(self, path: Path, handle: BinaryIO) -> Iterator[dict]:
        since, until = self.since, self.until
        low = iso_milliseconds(since) if since is not None else None
        high = iso_milliseconds(until) if until is not None else None
        want_message = "@message" in self.source_fields
        stream_name = path.name if "@logStream" in self.source_fields else None
        group_name = str(path) if "@log" in self.source_fields else None
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            if (low or high) and line.startswith(LINE_PREFIX):
                stamp = line[TIMESTAMP_SLICE]
                well_formed = stamp[19:20] == b"." and stamp[23:24] == b"Z"
                if well_formed and ((low and stamp < low) or (high and stamp > high)):
                    continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.skipped_lines += 1
                continue
            stamp_text = event.get("timestamp") if isinstance(event, dict) else None
            timestamp = parse_timestamp(stamp_text) if isinstance(stamp_text, str) else None
            if timestamp is None:
                self.skipped_lines += 1
                continue
            if (since is not None and timestamp < since) or (
                until is not None and timestamp > until
            ):
                continue
            if any(isinstance(value, dict | list) for value in event.values()):
                event = _flatten(event)
            event["@timestamp"] = timestamp
            if want_message:
                event["@message"] = line.decode("utf-8", "replace")
            if stream_name is not None:
                event["@logStream"] = stream_name
            if group_name is not None:
                event["@log"] = group_name
            yield event


def open_flow_log(path: Path) -> BinaryIO:
    """A flow-log file for reading bytes, gunzipped if it is gzipped (whatever its name)."""
    handle = path.open("rb")
    if handle.read(2) == GZIP_MAGIC:
        handle.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def _flatten(event: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in event.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat.update(_flatten({str(i): item for i, item in enumerate(value)}, f"{name}."))
        else:
            flat[name] = value
    return flat
