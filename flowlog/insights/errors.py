"""The one error a query can raise before it runs: malformed or outside our subset."""

from __future__ import annotations

from flowlog.config import ConfigError


class QueryError(ConfigError):
    """A malformed query, or one using what ``--local`` does not support.

    A subclass of ConfigError, so the command line prints it as one line and
    exits with status 2, like any other bad argument. ``position`` is the
    offset in the query text, rendered as line and column.
    """

    def __init__(self, message: str, text: str = "", position: int | None = None) -> None:
        if position is not None:
            line = text.count("\n", 0, position) + 1
            column = position - (text.rfind("\n", 0, position) + 1) + 1
            message = f"query line {line}, column {column}: {message}"
        else:
            message = f"query: {message}"
        super().__init__(message)
        self.position = position
