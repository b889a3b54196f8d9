"""Flow-log files on this machine, streamed line by line into a tally.

Plain, rotated and gzipped files are read as ``flowlog query --local`` reads
them (``flowlog.insights.local_logs``), never whole. A line that is not JSON,
or lacks a key every line has, is counted and skipped; the report names the
first one by file and line number.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from flowlog.config import ConfigError
from flowlog.flowmap.tally import FlowTally
from flowlog.insights.local_logs import (
    CLOCK_SLACK_MS,
    LINE_PREFIX,
    TIMESTAMP_SLICE,
    backup_closed_at,
    iso_milliseconds,
    open_flow_log,
)


@dataclass
class ReadReport:
    lines_read: int = 0
    out_of_range: int = 0  # before --since or after --until
    bad_lines: int = 0
    first_bad_line: str = ""  # "path:number"
    damaged_files: list[str] = field(default_factory=list)


def check_readable(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: no such file")
        if not path.is_file():
            raise ConfigError(f"{path}: not a file")
        try:
            path.open("rb").close()
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def without_half_compressed(paths: Sequence[Path]) -> list[Path]:
    """While a backup is gzipped both files exist, and a glob names both: read the plain one."""
    named = set(paths)
    return [p for p in paths if not (p.suffix == ".gz" and p.with_suffix("") in named)]


def read_flow_logs(
    paths: Sequence[Path],
    tally: FlowTally,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> ReadReport:
    """Count every line of ``paths`` (within the time range, inclusive) into ``tally``."""
    report = ReadReport()
    low = iso_milliseconds(since_ms) if since_ms is not None else None
    high = iso_milliseconds(until_ms) if until_ms is not None else None
    for path in without_half_compressed(paths):
        closed_at = backup_closed_at(path)
        if low is not None and closed_at is not None and closed_at < since_ms - CLOCK_SLACK_MS:
            continue  # rotated before the range starts
        try:
            with open_flow_log(path) as handle:
                _read(path, handle, tally, report, low, high)
        except (EOFError, gzip.BadGzipFile, OSError) as error:
            # An unfinished or damaged backup: keep what was read, say so.
            report.damaged_files.append(f"{path}: {error}")
    return report


def _read(
    path: Path,
    handle: BinaryIO,
    tally: FlowTally,
    report: ReadReport,
    low: bytes | None,
    high: bytes | None,
) -> None:
    loads, add = orjson.loads, tally.add_line
    bounded = low is not None or high is not None
    number = 0
    try:
        for number, raw in enumerate(handle, 1):
            if bounded and raw.startswith(LINE_PREFIX):
                # Every flow-log line has its timestamp at the same place: compare it unparsed.
                stamp = raw[TIMESTAMP_SLICE]
                if (low is not None and stamp < low) or (high is not None and stamp > high):
                    report.out_of_range += 1
                    continue
            try:
                counted = add(loads(raw))
            except orjson.JSONDecodeError:
                counted = not raw.strip()  # a blank line is nothing to report
            if not counted:
                if not report.bad_lines:
                    report.first_bad_line = f"{path}:{number}"
                report.bad_lines += 1
    finally:
        report.lines_read += number
