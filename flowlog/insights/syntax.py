"""The parsed form of a query: expressions and commands.

Every node keeps where it came from in the query text (``start``/``end``):
error messages point there, and a result column named by an expression
(``count(*)``, ``bin(5m)``) takes the text the user wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flowlog.insights.values import Period, Value


@dataclass(frozen=True)
class Node:
    start: int
    end: int


# --- expressions -------------------------------------------------------------------


@dataclass(frozen=True)
class Literal(Node):
    value: Value


@dataclass(frozen=True)
class PeriodLiteral(Node):
    period: Period


@dataclass(frozen=True)
class FieldRef(Node):
    name: str


@dataclass(frozen=True)
class Call(Node):
    name: str  # lower case
    args: tuple[Expr, ...]
    star: bool = False  # count(*)


@dataclass(frozen=True)
class Unary(Node):
    operator: str  # "-" or "not"
    operand: Expr


@dataclass(frozen=True)
class Binary(Node):
    operator: str  # arithmetic, comparison, "and", "or"
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Like(Node):
    operand: Expr
    pattern: Expr | re.Pattern[str]  # a regex literal, or an expression giving a substring
    negated: bool


@dataclass(frozen=True)
class In(Node):
    operand: Expr
    items: tuple[Expr, ...]
    negated: bool


Expr = Literal | PeriodLiteral | FieldRef | Call | Unary | Binary | Like | In


def children(expr: Expr) -> tuple[Expr, ...]:
    """The expressions directly inside ``expr``."""
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Unary):
        return (expr.operand,)
    if isinstance(expr, Binary):
        return (expr.left, expr.right)
    if isinstance(expr, Like):
        if isinstance(expr.pattern, re.Pattern):
            return (expr.operand,)
        return (expr.operand, expr.pattern)
    if isinstance(expr, In):
        return (expr.operand, *expr.items)
    return ()


@dataclass(frozen=True)
class Item:
    """``expr [as name]``: the name is the alias, the field name, or the expression's text."""

    expr: Expr
    name: str


# --- commands ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fields(Node):
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Filter(Node):
    condition: Expr


@dataclass(frozen=True)
class Stats(Node):
    aggregations: tuple[Item, ...]
    groups: tuple[Item, ...]


@dataclass(frozen=True)
class SortKey:
    expr: Expr
    descending: bool


@dataclass(frozen=True)
class Sort(Node):
    keys: tuple[SortKey, ...]


@dataclass(frozen=True)
class Limit(Node):
    count: int


@dataclass(frozen=True)
class Dedup(Node):
    names: tuple[str, ...]


@dataclass(frozen=True)
class Display(Node):
    names: tuple[str, ...]


@dataclass(frozen=True)
class Parse(Node):
    source: str  # the field parsed, @message unless named
    pattern: re.Pattern[str]  # a glob is compiled to a regex with one group per '*'
    groups: tuple[tuple[str, int], ...]  # (field name, group number) for each extracted field


Command = Fields | Filter | Stats | Sort | Limit | Dedup | Display | Parse


@dataclass(frozen=True)
class Query:
    text: str
    commands: tuple[Command, ...] = field(default_factory=tuple)
