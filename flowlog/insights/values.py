"""What values are and how they compare, sort, add up and print, as Insights does it.

A value is ``None`` (the field is missing), a ``str``, an ``int`` or ``float``
(JSON numbers, arithmetic), a ``bool`` (comparisons; printed and counted as
1 and 0) or a ``Timestamp`` (milliseconds since the epoch, printed as
``2023-05-30 16:05:32.573``).

Typing follows the documented behaviour and fills the gaps consistently:

* arithmetic takes numbers, and strings that are numbers; anything else, or
  division by zero, gives a missing value;
* a comparison is numeric when both sides are numbers (or strings that are
  numbers), otherwise it compares the text;
* a comparison with a missing value is false, and its negation (``!=``,
  ``not like``, ``not in``, ``not (...)``) true;
* sorting is Insights' natural order: all non-number values before numbers,
  non-numbers compared in chunks (runs of digits by length then value, the
  rest by Unicode); descending is the reverse; missing values always last.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Value = Any  # None | str | int | float | bool | Timestamp

_NUMBER = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*")
_INTEGER = re.compile(r"\s*[-+]?\d+\s*")
_CHUNKS = re.compile(r"\d+|[^\W\d_]+|.", re.DOTALL)


class Timestamp(int):
    """Milliseconds since the epoch, UTC; an int that prints as Insights prints times."""

    __slots__ = ()

    def __str__(self) -> str:
        return format_timestamp(self)

    __repr__ = __str__


def format_timestamp(milliseconds: int) -> str:
    seconds, millis = divmod(int(milliseconds), 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}"


_epoch_seconds_cache: dict[str, int] = {}


def parse_timestamp(text: str) -> Timestamp | None:
    """``2026-11-22T05:00:00.123Z`` (the flow log's form, fast) or any ISO 8601 time."""
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text[20:23].isdigit():
        second = text[:19]
        seconds = _epoch_seconds_cache.get(second)
        if seconds is None:
            try:
                seconds = calendar.timegm(time.strptime(second, "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                return None
            if len(_epoch_seconds_cache) > 100_000:
                _epoch_seconds_cache.clear()
            _epoch_seconds_cache[second] = seconds
        return Timestamp(seconds * 1000 + int(text[20:23]))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Timestamp(round(moment.timestamp() * 1000))


def to_number(value: Value) -> int | float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return int(value) if _INTEGER.fullmatch(value) else float(value)
    return None


def format_value(value: Value) -> str:
    """The text Insights shows for a value (GetQueryResults returns only strings)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Timestamp):
        return format_timestamp(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


# --- comparison ------------------------------------------------------------------


def equals(left: Value, right: Value) -> bool:
    if left is None or right is None:
        return False
    left_number, right_number = to_number(left), to_number(right)
    if left_number is not None and right_number is not None:
        return left_number == right_number
    return format_value(left) == format_value(right)


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Value, Value], bool]:
    def compare(left: Value, right: Value) -> bool:
        if left is None or right is None:
            return False
        left_number, right_number = to_number(left), to_number(right)
        if left_number is not None and right_number is not None:
            return test(left_number, right_number)
        return test(format_value(left), format_value(right))

    return compare


COMPARISONS: dict[str, Callable[[Value, Value], bool]] = {
    "=": equals,
    "!=": lambda left, right: not equals(left, right),
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
}


def is_true(value: Value) -> bool:
    """Whether ``filter`` keeps a row with this value."""
    if value is None:
        return False
    if isinstance(value, str):
        return value != ""
    return bool(value)


# --- arithmetic ------------------------------------------------------------------


def _divide(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def _remainder(a: float, b: float) -> float | None:
    if b == 0:
        return None
    result = math.fmod(a, b)  # the sign of the dividend, as in Java and Insights
    return int(result) if isinstance(a, int) and isinstance(b, int) else result


def _power(a: float, b: float) -> float | None:
    try:
        result = a**b
    except (OverflowError, ZeroDivisionError):
        return None
    return None if isinstance(result, complex) else result


ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "%": _remainder,
    "^": _power,
}


def arithmetic(operator: str, left: Value, right: Value) -> int | float | None:
    left_number, right_number = to_number(left), to_number(right)
    if left_number is None or right_number is None:
        return None
    result = ARITHMETIC[operator](left_number, right_number)
    if isinstance(result, float) and not math.isfinite(result):
        return None
    return result


# --- sorting ---------------------------------------------------------------------


def natural_key(value: Value) -> tuple:
    """Sort key of a present value in Insights' ascending natural order."""
    number = to_number(value)
    if number is not None:
        return (1, number, format_value(value))  # "01" before "1": a total order
    chunks = tuple(
        ("0", len(chunk), int(chunk)) if chunk[0].isdigit() else (chunk, 0, 0)
        for chunk in _CHUNKS.findall(format_value(value))
    )
    return (0, chunks)


# --- time periods: bin(5m), datefloor(@timestamp, 1h) -----------------------------

_MILLISECONDS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_MILLISECONDS["w"] = 7 * _MILLISECONDS["d"]
_MONTHS = {"mo": 1, "q": 3, "y": 12}
UNIT_NAMES = {
    "ms": ("millisecond", "ms", "msec"),
    "s": ("second", "s", "sec"),
    "m": ("minute", "m", "min"),
    "h": ("hour", "h", "hr"),
    "d": ("day", "d"),
    "w": ("week", "w"),
    "mo": ("month", "mo", "mon"),
    "q": ("quarter", "q", "qtr"),
    "y": ("year", "y", "yr"),
}
# Every spelling with more than one letter may also take an "s" (hrs, mins).
_UNITS = {
    spelling: unit
    for unit, spellings in UNIT_NAMES.items()
    for name in spellings
    for spelling in ((name, name + "s") if len(name) > 1 else (name,))
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([A-Za-z]+)")


@dataclass(frozen=True)
class Period:
    """A bin width: a fixed number of milliseconds, or whole calendar months."""

    text: str
    milliseconds: int = 0
    months: int = 0

    def floor(self, timestamp: int) -> Timestamp:
        if self.milliseconds:
            return Timestamp(timestamp - timestamp % self.milliseconds)
        moment = time.gmtime(timestamp // 1000)
        index = (moment.tm_year * 12 + moment.tm_mon - 1) // self.months * self.months
        year, month = divmod(index, 12)
        return Timestamp(calendar.timegm((year, month + 1, 1, 0, 0, 0)) * 1000)

    def ceil(self, timestamp: int) -> Timestamp:
        floor = self.floor(timestamp)
        if floor == timestamp:
            return floor
        if self.milliseconds:
            return Timestamp(floor + self.milliseconds)
        return self.floor(self._next_period_start(floor))

    def _next_period_start(self, floor: int) -> int:
        moment = time.gmtime(floor // 1000)
        index = moment.tm_year * 12 + moment.tm_mon - 1 + self.months
        year, month = divmod(index, 12)
        return calendar.timegm((year, month + 1, 1, 0, 0, 0)) * 1000


def parse_period(text: str) -> Period:
    """``5m``, ``1h``, ``30sec``, ``1mo``; raises ValueError naming the problem."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"expected a time period such as 5m or 1h, got {text!r}")
    amount, unit_text = match.groups()
    unit = _UNITS.get(unit_text.lower())
    if unit is None:
        raise ValueError(f"unknown time unit {unit_text!r} in {text!r}")
    if unit in _MONTHS:
        if "." in amount or int(amount) == 0:
            raise ValueError(f"calendar periods need a whole, positive count, got {text!r}")
        return Period(text, months=int(amount) * _MONTHS[unit])
    milliseconds = round(float(amount) * _MILLISECONDS[unit])
    if milliseconds <= 0:
        raise ValueError(f"time period must be at least 1ms, got {text!r}")
    return Period(text, milliseconds=milliseconds)
