"""Running a parsed query over events, as Logs Insights does.

Expressions are compiled once into closures over a row (a dict of field
values); commands become stages of a lazy pipeline, so ``filter`` and
``stats`` queries stream through files of any size. Only sorting holds rows,
and a sort followed by a limit (the default limit included) keeps just the
top rows in a heap.

Documented defaults applied here:

* without ``sort`` or ``stats``, rows come newest first (``@timestamp``
  descending), also before ``dedup`` and ``limit``;
* at most 10,000 rows unless the query has its own ``limit``;
* without ``fields``, ``display`` or ``stats`` the columns are ``@timestamp``
  and ``@message``; ``fields`` adds columns, ``stats`` replaces them with its
  ``by`` items then its aggregations, the last ``display`` decides.

``stats`` rows come out in ascending order of their ``by`` values (time
buckets oldest first) unless sorted; a missing ``by`` value makes its own
group; without ``by`` there is always exactly one row.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from flowlog.insights.functions import AGGREGATIONS, SCALAR_FUNCTIONS, Accumulator
from flowlog.insights.syntax import (
    Binary,
    Call,
    Command,
    Dedup,
    Display,
    Expr,
    FieldRef,
    Fields,
    Filter,
    In,
    Like,
    Limit,
    Literal,
    Parse,
    PeriodLiteral,
    Query,
    Sort,
    SortKey,
    Stats,
    Unary,
    children,
)
from flowlog.insights.values import (
    COMPARISONS,
    Value,
    arithmetic,
    equals,
    format_value,
    is_true,
    natural_key,
    to_number,
)

Row = dict[str, Value]
Stage = Callable[[Iterable[Row]], Iterable[Row]]
Evaluate = Callable[[Row], Value]

DEFAULT_LIMIT = 10_000
DEFAULT_COLUMNS = ("@timestamp", "@message")
DEFAULT_ORDER = Sort(0, 0, (SortKey(FieldRef(0, 0, "@timestamp"), descending=True),))
SOURCE_FIELDS = ("@message", "@logStream", "@log")  # made by the reader only when asked for


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[dict[str, str]]  # column -> text as Insights prints it; missing fields absent


# --- expressions -------------------------------------------------------------------


def compile_expr(expr: Expr, aggregate_slots: dict[int, str] | None = None) -> Evaluate:
    """A function of a row; ``aggregate_slots`` maps aggregation calls to result fields."""
    slots = aggregate_slots or {}
    recurse = functools.partial(compile_expr, aggregate_slots=aggregate_slots)
    if isinstance(expr, Literal):
        value = expr.value
        return lambda row: value
    if isinstance(expr, FieldRef):
        name = expr.name
        return lambda row: row.get(name)
    if isinstance(expr, Call):
        if id(expr) in slots:
            slot = slots[id(expr)]
            return lambda row: row.get(slot)
        return _compile_call(expr, recurse)
    if isinstance(expr, Unary):
        operand = recurse(expr.operand)
        if expr.operator == "not":
            return lambda row: not is_true(operand(row))
        return lambda row: arithmetic("*", operand(row), -1)
    if isinstance(expr, Binary):
        return _compile_binary(expr, recurse)
    if isinstance(expr, Like):
        return _compile_like(expr, recurse)
    if isinstance(expr, In):
        operand = recurse(expr.operand)
        items = [recurse(item) for item in expr.items]
        negated = expr.negated

        def member(row: Row) -> bool:
            value = operand(row)
            found = value is not None and any(equals(value, item(row)) for item in items)
            return found != negated

        return member
    raise AssertionError(f"cannot evaluate {expr!r}")  # the parser makes no other nodes


def _compile_call(call: Call, recurse: Callable[[Expr], Evaluate]) -> Evaluate:
    function = SCALAR_FUNCTIONS[call.name]
    if function.period_args:
        # bin(5m) floors @timestamp; datefloor(x, 1h) and dateceil(x, 1h) take theirs.
        period = next(arg.period for arg in call.args if isinstance(arg, PeriodLiteral))
        value_args = [arg for arg in call.args if not isinstance(arg, PeriodLiteral)]
        source = recurse(value_args[0] if value_args else FieldRef(0, 0, "@timestamp"))
        apply = function.apply

        def timed(row: Row) -> Value:
            number = to_number(source(row))
            return None if number is None else apply(int(number), period)

        return timed
    args = [recurse(arg) for arg in call.args]
    apply = function.apply
    if len(args) == 1:
        only = args[0]
        return lambda row: apply(only(row))
    return lambda row: apply(*[arg(row) for arg in args])


def _compile_binary(expr: Binary, recurse: Callable[[Expr], Evaluate]) -> Evaluate:
    left, right = recurse(expr.left), recurse(expr.right)
    operator = expr.operator
    if operator == "and":
        return lambda row: is_true(left(row)) and is_true(right(row))
    if operator == "or":
        return lambda row: is_true(left(row)) or is_true(right(row))
    if operator in COMPARISONS:
        compare = COMPARISONS[operator]
        return lambda row: compare(left(row), right(row))
    return lambda row: arithmetic(operator, left(row), right(row))


def _compile_like(expr: Like, recurse: Callable[[Expr], Evaluate]) -> Evaluate:
    operand = recurse(expr.operand)
    negated = expr.negated
    if isinstance(expr.pattern, re.Pattern):
        search = expr.pattern.search

        def matches(row: Row) -> bool:
            value = operand(row)
            found = value is not None and search(format_value(value)) is not None
            return found != negated

        return matches
    substring = recurse(expr.pattern)

    def contains(row: Row) -> bool:
        value, part = operand(row), substring(row)
        found = value is not None and part is not None
        found = found and format_value(part) in format_value(value)
        return found != negated

    return contains


# --- sorting -----------------------------------------------------------------------------


def _sort_rows(rows: Iterable[Row], keys: tuple[SortKey, ...], limit: int | None) -> list[Row]:
    """Stable sort in natural order, missing values last; the first ``limit`` rows only."""
    evaluators = [compile_expr(key.expr) for key in keys]
    directions = {key.descending for key in keys}
    if len(directions) == 1:
        descending = directions.pop()
        # Missing values rank after present ones whichever way the sort goes.
        present, missing = (1, 0) if descending else (0, 1)

        def key_of(row: Row) -> tuple:
            return tuple(
                (missing, ()) if (value := evaluate(row)) is None else (present, natural_key(value))
                for evaluate in evaluators
            )

        if limit is None:
            return sorted(rows, key=key_of, reverse=descending)
        if descending:
            return heapq.nlargest(limit, rows, key=key_of)
        return heapq.nsmallest(limit, rows, key=key_of)

    descendings = [key.descending for key in keys]

    def compare(first: list, second: list) -> int:
        for a, b, descending in zip(first, second, descendings, strict=True):
            if a is None or b is None:
                if a is None and b is None:
                    continue
                return 1 if a is None else -1
            if a == b:
                continue
            earlier = (a > b) if descending else (a < b)
            return -1 if earlier else 1
        return 0

    decorated = (
        ([None if (v := e(row)) is None else natural_key(v) for e in evaluators], row)
        for row in rows
    )
    order = functools.cmp_to_key(lambda x, y: compare(x[0], y[0]))
    if limit is None:
        chosen = sorted(decorated, key=order)
    else:
        chosen = heapq.nsmallest(limit, decorated, key=order)
    return [row for _, row in chosen]


# --- commands ---------------------------------------------------------------------------


def _fields_stage(command: Fields) -> Stage:
    compiled = [(item.name, compile_expr(item.expr)) for item in command.items]

    def stage(rows: Iterable[Row]) -> Iterator[Row]:
        for row in rows:
            for name, evaluate in compiled:
                value = evaluate(row)
                if value is None:
                    row.pop(name, None)
                else:
                    row[name] = value
            yield row

    return stage


def _filter_stage(command: Filter) -> Stage:
    condition = compile_expr(command.condition)
    return lambda rows: (row for row in rows if is_true(condition(row)))


def _parse_stage(command: Parse) -> Stage:
    source, search, groups = command.source, command.pattern.search, command.groups

    def stage(rows: Iterable[Row]) -> Iterator[Row]:
        for row in rows:
            value = row.get(source)
            match = search(format_value(value)) if value is not None else None
            if match:
                for name, number in groups:
                    extracted = match.group(number)
                    if extracted is not None:
                        row[name] = extracted
            yield row

    return stage


def _dedup_stage(command: Dedup) -> Stage:
    names = command.names

    def stage(rows: Iterable[Row]) -> Iterator[Row]:
        seen: set[tuple] = set()
        for row in rows:
            values = tuple(row.get(name) for name in names)
            if any(value is None for value in values):
                yield row  # rows missing a dedup field are never duplicates
                continue
            if values not in seen:
                seen.add(values)
                yield row

    return stage


def _stats_stage(command: Stats) -> Stage:
    group_names = [item.name for item in command.groups]
    group_keys = [compile_expr(item.expr) for item in command.groups]
    calls = [node for item in command.aggregations for node in _walk_aggregations(item.expr)]
    slots = {id(call): f"\0aggregate{index}" for index, call in enumerate(calls)}
    inputs: list[Evaluate | None] = [
        None if call.star or not call.args else compile_expr(call.args[0]) for call in calls
    ]
    factories = [AGGREGATIONS[call.name] for call in calls]
    outputs = [(item.name, compile_expr(item.expr, slots)) for item in command.aggregations]

    def stage(rows: Iterable[Row]) -> list[Row]:
        groups: dict[tuple, list[Accumulator]] = {}
        if not group_keys:
            groups[()] = [factory() for factory in factories]
        for row in rows:
            key = tuple(evaluate(row) for evaluate in group_keys)
            accumulators = groups.get(key)
            if accumulators is None:
                accumulators = groups[key] = [factory() for factory in factories]
            for accumulator, evaluate in zip(accumulators, inputs, strict=True):
                accumulator.add(True if evaluate is None else evaluate(row))
        ordered = sorted(
            groups.items(),
            key=lambda item: tuple((1, ()) if v is None else (0, natural_key(v)) for v in item[0]),
        )
        results = []
        for key, accumulators in ordered:
            row: Row = {name: value for name, value in zip(group_names, key, strict=True)}
            for call, accumulator in zip(calls, accumulators, strict=True):
                row[slots[id(call)]] = accumulator.result()
            for name, evaluate in outputs:
                value = evaluate(row)
                if value is not None:
                    row[name] = value
            for slot in slots.values():
                del row[slot]
            results.append({name: value for name, value in row.items() if value is not None})
        return results

    return stage


def _walk_aggregations(expr: Expr) -> Iterator[Call]:
    if isinstance(expr, Call) and expr.name in AGGREGATIONS:
        yield expr
        return
    for child in children(expr):
        yield from _walk_aggregations(child)


# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]
    columns: tuple[str, ...]
    source_fields: frozenset[str]  # of SOURCE_FIELDS, those the reader must provide


def plan(query: Query) -> Plan:
    commands: list[Command] = []
    ordered = False
    has_limit = False
    for command in query.commands:
        if isinstance(command, Limit | Dedup) and not ordered:
            commands.append(DEFAULT_ORDER)
            ordered = True
        ordered = ordered or isinstance(command, Sort | Stats)
        has_limit = has_limit or isinstance(command, Limit)
        commands.append(command)
    if not ordered:
        commands.append(DEFAULT_ORDER)
    if not has_limit:
        commands.append(Limit(0, 0, DEFAULT_LIMIT))
    stages: list[Stage] = []
    index = 0
    while index < len(commands):
        command = commands[index]
        following = commands[index + 1] if index + 1 < len(commands) else None
        if isinstance(command, Sort):
            limit = following.count if isinstance(following, Limit) else None
            stages.append(functools.partial(_sort_rows, keys=command.keys, limit=limit))
            index += 2 if limit is not None else 1
            continue
        if isinstance(command, Limit):
            count = command.count
            stages.append(lambda rows, count=count: itertools.islice(rows, count))
        elif isinstance(command, Fields):
            stages.append(_fields_stage(command))
        elif isinstance(command, Filter):
            stages.append(_filter_stage(command))
        elif isinstance(command, Parse):
            stages.append(_parse_stage(command))
        elif isinstance(command, Dedup):
            stages.append(_dedup_stage(command))
        elif isinstance(command, Stats):
            stages.append(_stats_stage(command))
        index += 1
    columns = _columns(query)
    referenced = _referenced_names(query) | set(columns)
    return Plan(
        tuple(stages),
        tuple(columns),
        frozenset(name for name in SOURCE_FIELDS if name in referenced),
    )


def _columns(query: Query) -> list[str]:
    columns: list[str] | None = None
    display: tuple[str, ...] | None = None
    for command in query.commands:
        if isinstance(command, Fields):
            columns = columns or []
            columns.extend(item.name for item in command.items if item.name not in columns)
        elif isinstance(command, Stats):
            columns = [item.name for item in (*command.groups, *command.aggregations)]
            display = None
        elif isinstance(command, Display):
            display = command.names
    if display is not None:
        return list(dict.fromkeys(display))
    return columns if columns is not None else list(DEFAULT_COLUMNS)


def _referenced_names(query: Query) -> set[str]:
    names: set[str] = set()

    def visit(value: object) -> None:
        if isinstance(value, FieldRef):
            names.add(value.name)
        elif isinstance(value, tuple | list):
            for item in value:
                visit(item)
        elif hasattr(value, "__dataclass_fields__"):
            for field_name in value.__dataclass_fields__:
                visit(getattr(value, field_name))

    for command in query.commands:
        visit(command)
        if isinstance(command, Parse):
            names.add(command.source)
        elif isinstance(command, Dedup | Display):
            names.update(command.names)
    return names


def run(query: Query, rows: Iterable[Row]) -> Result:
    """Every row the query returns, rendered as GetQueryResults would render it."""
    query_plan = plan(query)
    return execute(query_plan, rows)


def execute(query_plan: Plan, rows: Iterable[Row]) -> Result:
    stream: Iterable[Row] = rows
    for stage in query_plan.stages:
        stream = stage(stream)
    columns = list(query_plan.columns)
    rendered = [
        {column: format_value(row[column]) for column in columns if row.get(column) is not None}
        for row in stream
    ]
    return Result(columns, rendered)
