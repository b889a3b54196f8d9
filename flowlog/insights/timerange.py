"""``--since``/``--until``: how long ago (``1h``, ``30m``, ``2d``), a time, or ``now``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from flowlog.config import ConfigError
from flowlog.insights.values import parse_period

EPOCH_SECONDS = re.compile(r"\d{9,11}(?:\.\d+)?")
AGO = re.compile(r"\d+(?:\.\d+)?[A-Za-z]+")


def parse_when(text: str, now: float, flag: str) -> float:
    """Epoch seconds for ``now``, ``<n><unit>`` (ago), epoch seconds or an ISO 8601 time."""
    value = text.strip()
    if value.lower() == "now":
        return now
    if EPOCH_SECONDS.fullmatch(value):
        return float(value)
    if AGO.fullmatch(value):
        try:
            period = parse_period(value)
        except ValueError as error:
            raise ConfigError(f"{flag}: {error}") from None
        if not period.milliseconds:
            raise ConfigError(f"{flag}: use days or weeks rather than months or years: {text!r}")
        return now - period.milliseconds / 1000
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{flag}: expected a duration ago (15m, 1h, 2d), a time "
            f"(2026-11-22T05:00:00Z) or 'now', got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # times without a zone are UTC, as in the log
    return moment.timestamp()


@dataclass(frozen=True)
class TimeRange:
    start: float | None  # epoch seconds
    end: float | None

    def cloudwatch_seconds(self) -> tuple[int, int]:
        """StartQuery's whole seconds, widened so the range is fully covered."""
        assert self.start is not None and self.end is not None
        return math.floor(self.start), math.ceil(self.end)

    def milliseconds(self) -> tuple[int | None, int | None]:
        start = None if self.start is None else math.floor(self.start * 1000)
        end = None if self.end is None else math.ceil(self.end * 1000)
        return start, end


def time_range(
    since: str | None, until: str | None, now: float, default_since: str | None
) -> TimeRange:
    since = since or default_since
    start = parse_when(since, now, "--since") if since else None
    end = parse_when(until, now, "--until") if until else (now if start is not None else None)
    if start is not None and end is not None and end < start:
        raise ConfigError("--until: is before --since")
    return TimeRange(start, end)
