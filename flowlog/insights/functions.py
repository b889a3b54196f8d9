"""The functions a query may call locally: scalar ones and stats aggregations.

Names are matched without regard to case (the documentation writes both
``ispresent`` and ``isPresent``). Functions Insights has but this subset
does not are refused by name before anything runs.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass

from flowlog.insights.values import Timestamp, Value, format_value, natural_key, to_number


@dataclass(frozen=True)
class Function:
    min_args: int
    max_args: int | None  # None: any number
    apply: Callable[..., Value]
    period_args: tuple[int, ...] = ()  # argument positions that take a time period (5m)


def _text(function: Callable[..., Value]) -> Callable[..., Value]:
    """A string function: missing input gives a missing result."""

    def apply(value: Value, *args: Value) -> Value:
        if value is None:
            return None
        return function(format_value(value), *args)

    return apply


def _numeric(function: Callable[..., float]) -> Callable[..., Value]:
    def apply(*args: Value) -> Value:
        numbers = [to_number(arg) for arg in args]
        if any(number is None for number in numbers):
            return None
        try:
            return function(*numbers)
        except (ValueError, OverflowError):
            return None

    return apply


def _trim(text: str, characters: Value = None) -> str:
    return text.strip(None if characters is None else format_value(characters))


def _ltrim(text: str, characters: Value = None) -> str:
    return text.lstrip(None if characters is None else format_value(characters))


def _rtrim(text: str, characters: Value = None) -> str:
    return text.rstrip(None if characters is None else format_value(characters))


def _substr(text: str, start: Value, length: Value = None) -> Value:
    begin = to_number(start)
    if begin is None:
        return None
    begin = max(int(begin), 0)
    if length is None:
        return text[begin:]
    count = to_number(length)
    return None if count is None else text[begin : begin + max(int(count), 0)]


def _replace(text: str, search: Value, replacement: Value) -> Value:
    if search is None or replacement is None:
        return None
    return text.replace(format_value(search), format_value(replacement))


def _strcontains(value: Value, search: Value) -> int:
    if value is None or search is None:
        return 0
    return 1 if format_value(search) in format_value(value) else 0


def _concat(*values: Value) -> str:
    return "".join(format_value(value) for value in values if value is not None)


def _coalesce(*values: Value) -> Value:
    return next((value for value in values if value is not None), None)


def _ip(value: Value) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if value is None:
        return None
    try:
        return ipaddress.ip_address(format_value(value).strip())
    except ValueError:
        return None


def _valid_ip(version: int | None) -> Callable[[Value], bool]:
    def apply(value: Value) -> bool:
        address = _ip(value)
        return address is not None and version in (None, address.version)

    return apply


def _in_subnet(version: int | None) -> Callable[[Value, Value], bool]:
    def apply(value: Value, subnet: Value) -> bool:
        address = _ip(value)
        if address is None or subnet is None or version not in (None, address.version):
            return False
        try:
            network = ipaddress.ip_network(format_value(subnet).strip(), strict=False)
        except ValueError:
            return False
        return address.version == network.version and address in network

    return apply


def _from_millis(value: Value) -> Value:
    number = to_number(value)
    return None if number is None else Timestamp(int(number))


def _to_millis(value: Value) -> Value:
    number = to_number(value)
    return None if number is None else int(number)


def _extreme(pick: Callable[..., Value]) -> Callable[..., Value]:
    def apply(*values: Value) -> Value:
        numbers = [to_number(value) for value in values if value is not None]
        if not numbers or any(number is None for number in numbers):
            return None
        return pick(numbers)

    return apply


SCALAR_FUNCTIONS: dict[str, Function] = {
    # general
    "ispresent": Function(1, 1, lambda value: value is not None),
    "coalesce": Function(1, None, _coalesce),
    # strings
    "isempty": Function(1, 1, lambda value: value is None or format_value(value) == ""),
    "isblank": Function(1, 1, lambda value: value is None or format_value(value).strip() == ""),
    "concat": Function(1, None, _concat),
    "strlen": Function(1, 1, _text(len)),
    "toupper": Function(1, 1, _text(str.upper)),
    "tolower": Function(1, 1, _text(str.lower)),
    "trim": Function(1, 2, _text(_trim)),
    "ltrim": Function(1, 2, _text(_ltrim)),
    "rtrim": Function(1, 2, _text(_rtrim)),
    "substr": Function(2, 3, _text(_substr)),
    "replace": Function(3, 3, _text(_replace)),
    "strcontains": Function(2, 2, _strcontains),
    # numbers
    "abs": Function(1, 1, _numeric(abs)),
    "ceil": Function(1, 1, _numeric(math.ceil)),
    "floor": Function(1, 1, _numeric(math.floor)),
    "log": Function(1, 1, _numeric(math.log)),
    "sqrt": Function(1, 1, _numeric(math.sqrt)),
    "greatest": Function(1, None, _extreme(max)),
    "least": Function(1, None, _extreme(min)),
    # times: bin() reads @timestamp, so the evaluator supplies it
    "bin": Function(1, 1, lambda timestamp, period: period.floor(timestamp), period_args=(0,)),
    "datefloor": Function(2, 2, lambda value, period: period.floor(value), period_args=(1,)),
    "dateceil": Function(2, 2, lambda value, period: period.ceil(value), period_args=(1,)),
    "frommillis": Function(1, 1, _from_millis),
    "tomillis": Function(1, 1, _to_millis),
    # IP addresses
    "isvalidip": Function(1, 1, _valid_ip(None)),
    "isvalidipv4": Function(1, 1, _valid_ip(4)),
    "isvalidipv6": Function(1, 1, _valid_ip(6)),
    "isipinsubnet": Function(2, 2, _in_subnet(None)),
    "isipv4insubnet": Function(2, 2, _in_subnet(4)),
    "isipv6insubnet": Function(2, 2, _in_subnet(6)),
}

# --- aggregations (stats only) ----------------------------------------------------------


class Accumulator:
    def add(self, value: Value) -> None:
        raise NotImplementedError

    def result(self) -> Value:
        raise NotImplementedError


class Count(Accumulator):
    """count(*) counts events; count(field) those where the field is present."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, value: Value) -> None:
        if value is not None:
            self.count += 1

    def result(self) -> Value:
        return self.count


class CountDistinct(Accumulator):
    def __init__(self) -> None:
        self.seen: set[Value] = set()

    def add(self, value: Value) -> None:
        if value is not None:
            self.seen.add(value)

    def result(self) -> Value:
        return len(self.seen)


class Sum(Accumulator):
    """Numbers (and strings that are numbers) only; no numbers at all is missing."""

    def __init__(self) -> None:
        self.total: int | float | None = None
        self.count = 0

    def add(self, value: Value) -> None:
        number = to_number(value) if value is not None else None
        if number is not None:
            self.total = number if self.total is None else self.total + number
            self.count += 1

    def result(self) -> Value:
        return self.total


class Average(Sum):
    def result(self) -> Value:
        return None if self.total is None else self.total / self.count


class Extreme(Accumulator):
    """min/max: numerically when every value is a number, else in natural order."""

    def __init__(self, largest: bool) -> None:
        self.largest = largest
        self.best: Value = None
        self.best_key: tuple | None = None

    def add(self, value: Value) -> None:
        if value is None:
            return
        key = natural_key(value)
        if self.best_key is None or (key > self.best_key if self.largest else key < self.best_key):
            self.best, self.best_key = value, key

    def result(self) -> Value:
        return self.best


AGGREGATIONS: dict[str, Callable[[], Accumulator]] = {
    "count": Count,
    "count_distinct": CountDistinct,
    "sum": Sum,
    "avg": Average,
    "min": lambda: Extreme(largest=False),
    "max": lambda: Extreme(largest=True),
}

# Insights functions this subset refuses by name rather than calling them unknown.
INSIGHTS_ONLY_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "pct",
        "stddev",
        "earliest",
        "latest",
        "sortsFirst",
        "sortsLast",
        "jsonParse",
        "jsonStringify",
        "rate",
        "count_over_time",
        "sum_over_time",
        "histogram",
    )
)
