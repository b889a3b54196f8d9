"""What ``flowlog query`` prints: a table or JSON rows on stdout, progress on stderr."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

import orjson

from flowlog.insights.values import to_number

COLUMN_GAP = "  "
SPINNER = "|/-\\"


def render_table(columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> str:
    """Columns in query order, padded; columns holding only numbers are right-aligned."""
    widths = [max([len(column), *(len(row.get(column, "")) for row in rows)]) for column in columns]
    numeric = [
        any(column in row for row in rows)
        and all(to_number(row[column]) is not None for row in rows if column in row)
        for column in columns
    ]

    def line(cells: Sequence[str], align: Sequence[bool]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, align, strict=True)
        )
        return COLUMN_GAP.join(padded).rstrip()

    lines = [
        line(columns, numeric),
        line(["-" * width for width in widths], [False] * len(columns)),
    ]
    lines.extend(line([row.get(column, "") for column in columns], numeric) for row in rows)
    return "\n".join(lines) + "\n"


def render_json(columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> str:
    """One JSON array of objects, keys in column order, missing fields left out."""
    ordered = [{column: row[column] for column in columns if column in row} for row in rows]
    return orjson.dumps(ordered, option=orjson.OPT_INDENT_2).decode() + "\n"


class Progress:
    """A live status line while a query runs on a terminal; one line otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.started = time.monotonic()
        self._spinner = itertools.cycle(SPINNER)
        self._shown = False
        self.description = ""

    def start(self, description: str) -> None:
        self.started = time.monotonic()
        self.description = description
        if not self.live:
            self.stream.write(f"flowlog: {description}\n")
            self.stream.flush()

    def update(self, status: str, statistics: Mapping[str, float] | None = None) -> None:
        if not self.live:
            return
        elapsed = time.monotonic() - self.started
        text = f"{next(self._spinner)} {self.description}: {status.lower()} {elapsed:.0f}s"
        if statistics:
            scanned = int(statistics.get("recordsScanned", 0))
            matched = int(statistics.get("recordsMatched", 0))
            text += f", {scanned:,} records scanned, {matched:,} matched"
        self.stream.write(f"\r\x1b[K{text}")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
