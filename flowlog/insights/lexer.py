"""Tokens of the Logs Insights query language.

The lexer is pulled by the parser one token at a time because ``/`` means
division in ``a / b`` but starts a regular expression in ``like /deny/`` and
``parse @message /(?<x>.*)/``: only the parser knows which it expects, so it
asks for a regular expression explicitly (``Lexer.regex``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from flowlog.insights.errors import QueryError


class Kind(Enum):
    NAME = "name"  # a bare word: field, keyword, command or function name
    FIELD = "field"  # a `backticked field name`
    STRING = "string"
    NUMBER = "number"
    DURATION = "duration"  # 5m, 1h: a number glued to a unit
    REGEX = "regex"
    OP = "operator"
    EOF = "end of query"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str  # the value: unquoted string, field name, operator, regex body
    start: int
    end: int

    def is_op(self, *ops: str) -> bool:
        return self.kind is Kind.OP and self.text in ops

    def is_word(self, *words: str) -> bool:
        return self.kind is Kind.NAME and self.text.lower() in words

    def describe(self) -> str:
        if self.kind is Kind.EOF:
            return "the end of the query"
        if self.kind is Kind.STRING:
            return f'the string "{self.text}"'
        return f"'{self.text}'"


# Two-character operators first, so "<=" is not read as "<" then "=".
OPERATORS = ("!=", "<=", ">=", *"|,()[]=<>+-*/%^")
NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_@$")
NAME_CHARS = NAME_START | set("0123456789.")
STRING_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


class Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.consumed_to = 0  # where the last token taken ends
        self._peeked: Token | None = None

    def error(self, message: str, position: int) -> QueryError:
        return QueryError(message, self.text, position)

    def peek(self) -> Token:
        if self._peeked is None:
            self._peeked = self._scan()
        return self._peeked

    def next(self) -> Token:
        token = self.peek()
        self._peeked = None
        self.consumed_to = token.end
        return token

    def regex(self) -> Token:
        """The regular expression that starts at the next token, which must be '/'."""
        token = self.peek()
        if not token.is_op("/"):
            raise self.error(
                f"expected a /regular expression/, found {token.describe()}", token.start
            )
        self._peeked = None
        body = []
        pos = token.start + 1
        while pos < len(self.text):
            char = self.text[pos]
            if char == "\\" and pos + 1 < len(self.text):
                following = self.text[pos + 1]
                body.append("/" if following == "/" else char + following)
                pos += 2
                continue
            if char == "/":
                self.pos = self.consumed_to = pos + 1
                return Token(Kind.REGEX, "".join(body), token.start, self.pos)
            body.append(char)
            pos += 1
        raise self.error("regular expression is not closed with '/'", token.start)

    # --- scanning ---------------------------------------------------------

    def _skip_space_and_comments(self) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace():
                self.pos += 1
            elif char == "#":
                newline = text.find("\n", self.pos)
                self.pos = len(text) if newline < 0 else newline + 1
            else:
                return

    def _scan(self) -> Token:
        self._skip_space_and_comments()
        text, start = self.text, self.pos
        if start >= len(text):
            return Token(Kind.EOF, "", start, start)
        char = text[start]
        if char in "\"'":
            return self._string(char)
        if char == "`":
            end = text.find("`", start + 1)
            if end < 0:
                raise self.error("field name is not closed with '`'", start)
            if end == start + 1:
                raise self.error("empty field name ``", start)
            self.pos = end + 1
            return Token(Kind.FIELD, text[start + 1 : end], start, self.pos)
        if char.isdigit() or (char == "." and text[start + 1 : start + 2].isdigit()):
            return self._number()
        if char in NAME_START:
            end = start + 1
            while end < len(text) and text[end] in NAME_CHARS:
                end += 1
            self.pos = end
            return Token(Kind.NAME, text[start:end], start, end)
        for operator in OPERATORS:
            if text.startswith(operator, start):
                self.pos = start + len(operator)
                return Token(Kind.OP, operator, start, self.pos)
        raise self.error(f"unexpected character {char!r}", start)

    def _string(self, quote: str) -> Token:
        text, start = self.text, self.pos
        value = []
        pos = start + 1
        while pos < len(text):
            char = text[pos]
            if char == "\\" and pos + 1 < len(text):
                following = text[pos + 1]
                # Unknown escapes keep their backslash: glob and regex text often has them.
                value.append(STRING_ESCAPES.get(following, char + following))
                pos += 2
                continue
            if char == quote:
                self.pos = pos + 1
                return Token(Kind.STRING, "".join(value), start, self.pos)
            value.append(char)
            pos += 1
        raise self.error(f"string is not closed with {quote}", start)

    def _number(self) -> Token:
        text, start = self.text, self.pos
        end = start
        while end < len(text) and text[end].isdigit():
            end += 1
        if end < len(text) and text[end] == "." and text[end + 1 : end + 2].isdigit():
            end += 1
            while end < len(text) and text[end].isdigit():
                end += 1
        if end < len(text) and text[end].isalpha():
            unit_end = end
            while unit_end < len(text) and text[unit_end].isalpha():
                unit_end += 1
            self.pos = unit_end
            return Token(Kind.DURATION, text[start:unit_end], start, unit_end)
        self.pos = end
        return Token(Kind.NUMBER, text[start:end], start, end)
