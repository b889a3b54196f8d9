"""Query text to a ``Query``: a recursive-descent parser for our Insights subset.

Grammar (keywords and names of commands and functions ignore case)::

    query      := command ("|" command)*
    command    := "fields" item ("," item)*
                | "filter" expr
                | "stats" item ("," item)* ["by" item ("," item)*]
                | "sort" expr ["asc" | "desc"] ("," expr ["asc" | "desc"])*
                | "limit" INTEGER
                | "dedup" field ("," field)*
                | "display" field ("," field)*
                | "parse" [field] (STRING "as" field ("," field)* | REGEX)
    item       := expr ["as" field]
    expr       := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("=" | "!=" | "<" | "<=" | ">" | ">=") sum
                      | ["not"] "like" (REGEX | sum)
                      | ["not"] "in" "[" [sum ("," sum)*] "]"]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/" | "%") unary)*
    unary      := "-" unary | power
    power      := primary ["^" unary]
    primary    := NUMBER | STRING | PERIOD | field | name "(" [args] ")" | "(" expr ")"

Everything outside the subset is refused here, before any file is read.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

from flowlog.insights.errors import QueryError
from flowlog.insights.functions import AGGREGATIONS, INSIGHTS_ONLY_FUNCTIONS, SCALAR_FUNCTIONS
from flowlog.insights.lexer import Kind, Lexer, Token
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
    Item,
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
from flowlog.insights.values import parse_period

SUPPORTED_COMMANDS = ("fields", "filter", "stats", "sort", "limit", "dedup", "display", "parse")
# Insights commands outside our subset: refused by name, never half-run.
INSIGHTS_ONLY_COMMANDS = frozenset(
    (
        "pattern",
        "diff",
        "unmask",
        "filterindex",
        "fieldindex",
        "lookup",
        "unnest",
        "anomaly",
        "join",
        "source",
    )
)
KEYWORDS = frozenset(("and", "or", "not", "like", "in", "as", "by", "asc", "desc"))
COMPARISON_OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
MAX_STATS_COMMANDS = 2  # Insights' limit: a second stats aggregates the first one's rows
# "sort x" without a direction sorts descending: the default moto models for Insights.
DEFAULT_DESCENDING = True


def parse_query(text: str) -> Query:
    return Parser(text).parse()


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lexer = Lexer(text)
        self._aggregations_allowed = False
        self._inside_aggregation = False

    def error(self, message: str, position: int) -> QueryError:
        return QueryError(message, self.text, position)

    def source(self, start: int, end: int) -> str:
        """The text the user wrote, spaces collapsed: the column name of an expression."""
        return " ".join(self.text[start:end].split())

    # --- commands --------------------------------------------------------------

    def parse(self) -> Query:
        if self.lexer.peek().kind is Kind.EOF:
            raise QueryError("the query is empty")
        commands: list[Command] = []
        while True:
            commands.append(self.command())
            token = self.lexer.next()
            if token.kind is Kind.EOF:
                break
            if not token.is_op("|"):
                raise self.error(
                    f"expected '|' or the end of the query, found {token.describe()}", token.start
                )
        for command, following in itertools.pairwise(commands):
            if isinstance(command, Dedup) and not isinstance(following, Limit):
                raise self.error("only limit may follow dedup", following.start)
        stats = [command for command in commands if isinstance(command, Stats)]
        if len(stats) > MAX_STATS_COMMANDS:
            raise self.error("a query can have at most two stats commands", stats[2].start)
        return Query(self.text, tuple(commands))

    def command(self) -> Command:
        token = self.lexer.next()
        if token.kind is not Kind.NAME:
            raise self.error(f"expected a command, found {token.describe()}", token.start)
        name = token.text.lower()
        if name in INSIGHTS_ONLY_COMMANDS:
            raise self.error(
                f"unsupported command '{token.text}' "
                f"(runs locally: {', '.join(SUPPORTED_COMMANDS)})",
                token.start,
            )
        handler = getattr(self, f"_{name}", None) if name in SUPPORTED_COMMANDS else None
        if handler is None:
            raise self.error(f"unknown command '{token.text}'", token.start)
        return handler(token)

    def _fields(self, keyword: Token) -> Fields:
        items = self.items()
        return Fields(keyword.start, self.lexer.consumed_to, tuple(items))

    def _filter(self, keyword: Token) -> Filter:
        condition = self.expression()
        return Filter(keyword.start, condition.end, condition)

    def _stats(self, keyword: Token) -> Stats:
        self._aggregations_allowed = True
        try:
            aggregations = self.items()
        finally:
            self._aggregations_allowed = False
        groups: list[Item] = []
        if self.lexer.peek().is_word("by"):
            self.lexer.next()
            groups = self.items()
        self._check_stats_items(aggregations, groups)
        return Stats(keyword.start, self.lexer.consumed_to, tuple(aggregations), tuple(groups))

    def _sort(self, keyword: Token) -> Sort:
        keys = []
        while True:
            expr = self.expression()
            descending = DEFAULT_DESCENDING
            if self.lexer.peek().is_word("asc", "desc"):
                descending = self.lexer.next().text.lower() == "desc"
            keys.append(SortKey(expr, descending))
            if not self._comma():
                break
        return Sort(keyword.start, self.lexer.consumed_to, tuple(keys))

    def _limit(self, keyword: Token) -> Limit:
        token = self.lexer.next()
        if token.kind is not Kind.NUMBER or not token.text.isdigit() or int(token.text) < 1:
            raise self.error(
                f"limit needs a whole number above 0, found {token.describe()}", token.start
            )
        return Limit(keyword.start, token.end, int(token.text))

    def _dedup(self, keyword: Token) -> Dedup:
        names = tuple(self.field_names())
        return Dedup(keyword.start, self.lexer.consumed_to, names)

    def _display(self, keyword: Token) -> Display:
        names = tuple(self.field_names())
        return Display(keyword.start, self.lexer.consumed_to, names)

    def _parse(self, keyword: Token) -> Parse:
        source = "@message"
        if self.lexer.peek().kind in (Kind.NAME, Kind.FIELD):
            source = self.field_name()
        token = self.lexer.peek()
        if token.kind is Kind.STRING:
            self.lexer.next()
            if not self.lexer.peek().is_word("as"):
                raise self.error("parse with a glob pattern needs 'as' and field names", token.end)
            self.lexer.next()
            names = self.field_names()
            pattern = compile_glob(token.text)
            if pattern.groups != len(names):
                raise self.error(
                    f"the pattern has {pattern.groups} '*' but {len(names)} names follow 'as'",
                    token.start,
                )
            groups = tuple((name, number) for number, name in enumerate(names, start=1))
            return Parse(keyword.start, self.lexer.consumed_to, source, pattern, groups)
        if token.is_op("/"):
            regex = self.lexer.regex()
            pattern = self.compile_regex(regex, named_groups=True)
            groups = tuple(sorted(pattern.groupindex.items(), key=lambda item: item[1]))
            return Parse(keyword.start, regex.end, source, pattern, groups)
        raise self.error(
            f'parse needs a "glob * pattern" or a /regex/, found {token.describe()}', token.start
        )

    # --- pieces of commands -------------------------------------------------------

    def _comma(self) -> bool:
        if self.lexer.peek().is_op(","):
            self.lexer.next()
            return True
        return False

    def items(self) -> list[Item]:
        items = []
        while True:
            expr = self.expression()
            if self.lexer.peek().is_word("as"):
                self.lexer.next()
                name = self.field_name()
            elif isinstance(expr, FieldRef):
                name = expr.name
            else:
                name = self.source(expr.start, expr.end)
            items.append(Item(expr, name))
            if not self._comma():
                return items

    def field_name(self) -> str:
        token = self.lexer.next()
        if token.kind is Kind.FIELD:
            return token.text
        if token.kind is Kind.NAME and token.text.lower() not in KEYWORDS:
            return token.text
        raise self.error(f"expected a field name, found {token.describe()}", token.start)

    def field_names(self) -> list[str]:
        names = [self.field_name()]
        while self._comma():
            names.append(self.field_name())
        return names

    def compile_regex(self, token: Token, named_groups: bool = False) -> re.Pattern[str]:
        # Insights writes named groups as (?<name>...), Python as (?P<name>...).
        body = re.sub(r"\(\?<(?![=!])", "(?P<", token.text)
        try:
            pattern = re.compile(body)
        except re.error as error:
            raise self.error(f"bad regular expression: {error.msg}", token.start) from None
        if named_groups and not pattern.groupindex:
            raise self.error("parse with a /regex/ needs named groups: (?<name>...)", token.start)
        return pattern

    def _check_stats_items(self, aggregations: list[Item], groups: list[Item]) -> None:
        """Each stats item aggregates, or combines earlier items by their aliases."""
        known = {item.name for item in groups}
        for item in aggregations:
            refs = list(_fields_outside_aggregations(item.expr))
            aggregates = any(
                isinstance(node, Call) and node.name in AGGREGATIONS for node in _walk(item.expr)
            )
            if not aggregates and not refs:
                raise self.error("stats needs an aggregation such as count(*)", item.expr.start)
            for ref in refs:
                if ref.name not in known:
                    raise self.error(
                        f"'{ref.name}' in stats is neither inside an aggregation such as "
                        f"count(*) nor an earlier alias",
                        ref.start,
                    )
            known.add(item.name)

    def _check_periods(self, expr: Expr) -> None:
        """A period (5m) is only an argument of bin(), datefloor() and dateceil()."""
        if isinstance(expr, PeriodLiteral):
            raise self.error(
                "a time period such as 5m only goes inside bin(), datefloor() or dateceil()",
                expr.start,
            )
        for child in children(expr):
            if not (isinstance(child, PeriodLiteral) and isinstance(expr, Call)):
                self._check_periods(child)

    # --- expressions -----------------------------------------------------------------

    def expression(self) -> Expr:
        expr = self._or()
        self._check_periods(expr)
        return expr

    def _or(self) -> Expr:
        left = self._and()
        while self.lexer.peek().is_word("or"):
            self.lexer.next()
            right = self._and()
            left = Binary(left.start, right.end, "or", left, right)
        return left

    def _and(self) -> Expr:
        left = self._not()
        while self.lexer.peek().is_word("and"):
            self.lexer.next()
            right = self._not()
            left = Binary(left.start, right.end, "and", left, right)
        return left

    def _not(self) -> Expr:
        token = self.lexer.peek()
        if token.is_word("not"):
            self.lexer.next()
            operand = self._not()
            return Unary(token.start, operand.end, "not", operand)
        return self._comparison()

    def _comparison(self) -> Expr:
        left = self._sum()
        token = self.lexer.peek()
        if token.kind is Kind.OP and token.text in COMPARISON_OPERATORS:
            self.lexer.next()
            right = self._sum()
            return Binary(left.start, right.end, token.text, left, right)
        negated = False
        if token.is_word("not"):
            self.lexer.next()
            negated = True
            token = self.lexer.peek()
            if not token.is_word("like", "in"):
                raise self.error(
                    f"expected 'like' or 'in' after 'not', found {token.describe()}", token.start
                )
        if token.is_word("like"):
            self.lexer.next()
            if self.lexer.peek().is_op("/"):
                regex = self.lexer.regex()
                return Like(left.start, regex.end, left, self.compile_regex(regex), negated)
            pattern = self._sum()
            return Like(left.start, pattern.end, left, pattern, negated)
        if token.is_word("in"):
            self.lexer.next()
            opening = self.lexer.next()
            if not opening.is_op("["):
                raise self.error(
                    f"expected '[' after 'in', found {opening.describe()}", opening.start
                )
            items: list[Expr] = []
            if not self.lexer.peek().is_op("]"):
                items.append(self._sum())
                while self._comma():
                    items.append(self._sum())
            closing = self.lexer.next()
            if not closing.is_op("]"):
                raise self.error(f"expected ',' or ']', found {closing.describe()}", closing.start)
            return In(left.start, closing.end, left, tuple(items), negated)
        return left

    def _sum(self) -> Expr:
        left = self._product()
        while self.lexer.peek().is_op("+", "-"):
            operator = self.lexer.next().text
            right = self._product()
            left = Binary(left.start, right.end, operator, left, right)
        return left

    def _product(self) -> Expr:
        left = self._unary()
        while self.lexer.peek().is_op("*", "/", "%"):
            operator = self.lexer.next().text
            right = self._unary()
            left = Binary(left.start, right.end, operator, left, right)
        return left

    def _unary(self) -> Expr:
        token = self.lexer.peek()
        if token.is_op("-"):
            self.lexer.next()
            operand = self._unary()
            if isinstance(operand, Literal) and isinstance(operand.value, int | float):
                return Literal(token.start, operand.end, -operand.value)
            return Unary(token.start, operand.end, "-", operand)
        return self._power()

    def _power(self) -> Expr:
        base = self._primary()
        if self.lexer.peek().is_op("^"):
            self.lexer.next()
            exponent = self._unary()
            return Binary(base.start, exponent.end, "^", base, exponent)
        return base

    def _primary(self) -> Expr:
        token = self.lexer.next()
        if token.kind is Kind.NUMBER:
            value = float(token.text) if "." in token.text else int(token.text)
            return Literal(token.start, token.end, value)
        if token.kind is Kind.STRING:
            return Literal(token.start, token.end, token.text)
        if token.kind is Kind.DURATION:
            try:
                return PeriodLiteral(token.start, token.end, parse_period(token.text))
            except ValueError as error:
                raise self.error(str(error), token.start) from None
        if token.kind is Kind.FIELD:
            return FieldRef(token.start, token.end, token.text)
        if token.kind is Kind.NAME and token.text.lower() not in KEYWORDS:
            if self.lexer.peek().is_op("("):
                return self._call(token)
            return FieldRef(token.start, token.end, token.text)
        if token.is_op("("):
            expr = self._or()
            closing = self.lexer.next()
            if not closing.is_op(")"):
                raise self.error(f"expected ')', found {closing.describe()}", closing.start)
            return expr
        if token.is_op("/"):
            raise self.error("a /regex/ can only follow like or parse", token.start)
        raise self.error(
            f"expected a field, value or function, found {token.describe()}", token.start
        )

    def _call(self, name_token: Token) -> Call:
        name = name_token.text.lower()
        is_aggregation = name in AGGREGATIONS
        if is_aggregation:
            if not self._aggregations_allowed:
                raise self.error(
                    f"{name_token.text}() aggregates: it only works in stats", name_token.start
                )
            if self._inside_aggregation:
                raise self.error(
                    f"{name_token.text}() cannot be inside another aggregation", name_token.start
                )
        elif name not in SCALAR_FUNCTIONS:
            kind = "unsupported" if name in INSIGHTS_ONLY_FUNCTIONS else "unknown"
            raise self.error(f"{kind} function '{name_token.text}'", name_token.start)
        self.lexer.next()  # "("
        args: list[Expr] = []
        star = False
        outer = self._inside_aggregation
        self._inside_aggregation = outer or is_aggregation
        try:
            if name == "count" and self.lexer.peek().is_op("*"):
                self.lexer.next()
                star = True
            elif not self.lexer.peek().is_op(")"):
                args.append(self._or())
                while self._comma():
                    args.append(self._or())
        finally:
            self._inside_aggregation = outer
        closing = self.lexer.next()
        if not closing.is_op(")"):
            raise self.error(f"expected ',' or ')', found {closing.describe()}", closing.start)
        call = Call(name_token.start, closing.end, name, tuple(args), star)
        self._check_arguments(call, name_token.text)
        return call

    def _check_arguments(self, call: Call, written: str) -> None:
        if call.name in AGGREGATIONS:
            allowed = (0, 1) if call.name == "count" else (1,)
            if len(call.args) + call.star not in allowed:
                raise self.error(f"{written}() takes one argument", call.start)
            return
        function = SCALAR_FUNCTIONS[call.name]
        count = len(call.args)
        too_many = function.max_args is not None and count > function.max_args
        if count < function.min_args or too_many:
            expected = (
                f"{function.min_args}"
                if function.min_args == function.max_args
                else f"{function.min_args} or more"
                if function.max_args is None
                else f"{function.min_args} to {function.max_args}"
            )
            raise self.error(f"{written}() takes {expected} arguments, got {count}", call.start)
        for position, arg in enumerate(call.args):
            if (position in function.period_args) != isinstance(arg, PeriodLiteral):
                wanted = "a value"
                if position in function.period_args:
                    wanted = "a time period such as 5m"
                raise self.error(
                    f"argument {position + 1} of {written}() must be {wanted}", arg.start
                )


def _walk(expr: Expr) -> Iterator[Expr]:
    yield expr
    for child in children(expr):
        yield from _walk(child)


def _fields_outside_aggregations(expr: Expr) -> Iterator[FieldRef]:
    if isinstance(expr, FieldRef):
        yield expr
    elif not (isinstance(expr, Call) and expr.name in AGGREGATIONS):
        for child in children(expr):
            yield from _fields_outside_aggregations(child)


def compile_glob(glob: str) -> re.Pattern[str]:
    """``user=*, method:*`` to a regex: each '*' a lazy group, a trailing '*' takes the rest."""
    pieces = glob.split("*")
    regex = re.escape(pieces[0])
    last = len(pieces) - 2
    for index, piece in enumerate(pieces[1:]):
        regex += "(.*)" if index == last and piece == "" else "(.*?)"
        regex += re.escape(piece)
    return re.compile(regex, re.DOTALL)
