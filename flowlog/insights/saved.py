"""Saved queries: one ``<name>.insights`` file per question.

A file is Insights query text under a header of comment lines::

    # description: Every flow to or from one pod IP, newest first.
    # columns: @timestamp, Verdict, Src IP, Dest IP
    # param ip: the pod's IP address, e.g. 10.0.0.5
    fields @timestamp, Verdict, `Src IP`, `Dest IP`
    | filter `Src IP` = "{{ip}}" or `Dest IP` = "{{ip}}"

``description`` (one line) and ``columns`` (the result columns, in order) are
required; each ``param`` declares a ``{{name}}`` placeholder, the syntax of
CloudWatch's own query-definition parameters. A value replaces its
placeholder quoted for where it stands: escaped inside a string, and as a
string literal (or a bare number) outside one.

The directory is the first of: ``$FLOWLOG_INSIGHTS_DIR``; the repository's
``config/insights`` next to the package; ``<prefix>/share/flowlog/insights``
of the Python installation; ``/usr/share/flowlog/insights`` (the container
image's copy).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flowlog.config import ConfigError

DIRECTORY_ENV = "FLOWLOG_INSIGHTS_DIR"
SUFFIX = ".insights"
REPOSITORY_DIR = Path(__file__).resolve().parents[2] / "config" / "insights"
SYSTEM_DIR = Path("/usr/share/flowlog/insights")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
HEADER_LINE = re.compile(r"#\s*(description|columns|param\s+([A-Za-z_][A-Za-z0-9_]*))\s*:\s*(.*)")


def candidate_directories() -> list[Path]:
    """Where saved queries are looked for, in order."""
    override = os.environ.get(DIRECTORY_ENV)
    if override:
        return [Path(override)]
    installed = Path(sys.prefix) / "share" / "flowlog" / "insights"
    return [REPOSITORY_DIR, installed, SYSTEM_DIR]


def saved_queries_directory() -> Path:
    candidates = candidate_directories()
    for directory in candidates:
        if directory.is_dir():
            return directory
    if os.environ.get(DIRECTORY_ENV):
        raise ConfigError(f"environment {DIRECTORY_ENV}: {candidates[0]} is not a directory")
    raise ConfigError(
        "no saved queries: none of " + ", ".join(str(d) for d in candidates) + " exists"
    )


@dataclass(frozen=True)
class Parameter:
    name: str
    description: str


@dataclass(frozen=True)
class SavedQuery:
    name: str
    description: str
    columns: tuple[str, ...]
    parameters: tuple[Parameter, ...]
    body: str  # the query text, placeholders intact, header removed
    path: Path | None = None

    def render(self, values: Mapping[str, str]) -> str:
        """The query text with every placeholder replaced by its value."""
        declared = {parameter.name for parameter in self.parameters}
        unknown = sorted(set(values) - declared)
        if unknown:
            has = ", ".join(sorted(declared)) or "no parameters"
            raise ConfigError(f"--param {unknown[0]}: query {self.name} has {has}")
        missing = [p for p in self.parameters if p.name not in values]
        if missing:
            needed = " ".join(f"--param {p.name}=... ({p.description})" for p in missing)
            raise ConfigError(f"query {self.name} needs {needed}")
        return substitute(self.body, values)

    def definition_text(self) -> str:
        """What CloudWatch stores as the query definition: description, then the query."""
        return f"# {self.description}\n{self.body}"


def ad_hoc_query(text: str) -> SavedQuery:
    """Query text from the command line; its placeholders, if any, are its parameters."""
    names = dict.fromkeys(PLACEHOLDER.findall(text))
    parameters = tuple(Parameter(name, "a value") for name in names)
    return SavedQuery("(command line)", "", (), parameters, text)


def load_saved_query(path: Path) -> SavedQuery:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    lines = text.splitlines()
    header: dict[str, str] = {}
    parameters: list[Parameter] = []
    body_start = 0
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            body_start = number
            break
        match = HEADER_LINE.fullmatch(stripped)
        if match and match.group(2):
            parameters.append(Parameter(match.group(2), match.group(3).strip()))
        elif match:
            header[match.group(1)] = match.group(3).strip()
    else:
        raise ConfigError(f"{path}: no query after the header")
    for key in ("description", "columns"):
        if not header.get(key):
            raise ConfigError(f"{path}: the header needs a '# {key}:' line")
    body = "\n".join(lines[body_start:]).strip() + "\n"
    placeholders = set(PLACEHOLDER.findall(body))
    declared = {parameter.name for parameter in parameters}
    if placeholders != declared:
        problem = sorted(placeholders - declared) or sorted(declared - placeholders)
        what = "is used but not declared" if placeholders - declared else "is declared but unused"
        raise ConfigError(f"{path}: parameter {problem[0]} {what}")
    columns = tuple(column.strip() for column in header["columns"].split(","))
    return SavedQuery(
        path.name.removesuffix(SUFFIX),
        header["description"],
        columns,
        tuple(parameters),
        body,
        path,
    )


def list_saved_queries(directory: Path | None = None) -> list[SavedQuery]:
    directory = directory or saved_queries_directory()
    return [load_saved_query(path) for path in sorted(directory.glob(f"*{SUFFIX}"))]


def find_saved_query(name: str) -> SavedQuery | None:
    """A saved query by name, or from a path to an ``.insights`` file."""
    if name.endswith(SUFFIX) and Path(name).is_file():
        return load_saved_query(Path(name))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        return None
    path = saved_queries_directory() / f"{name}{SUFFIX}"
    return load_saved_query(path) if path.is_file() else None


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{{name}}`` placeholders, quoting each value for where it stands.

    Inside "..." or '...' the value is escaped for that string; elsewhere it
    becomes a string literal, or a bare number if it is one. Placeholders in
    comments are left alone; inside `backticks` they are refused.
    """
    out: list[str] = []
    quote = ""  # the quote character we are inside, if any
    position = 0
    while position < len(text):
        char = text[position]
        if quote and char == "\\":
            out.append(text[position : position + 2])
            position += 2
            continue
        match = PLACEHOLDER.match(text, position) if char == "{" else None
        if match:
            value = values[match.group(1)]
            if quote == "`":
                raise ConfigError(f"--param {match.group(1)}: cannot stand inside `backticks`")
            if quote:
                out.append(_escape(value, quote))
            elif NUMBER.fullmatch(value):
                out.append(value)
            else:
                out.append('"' + _escape(value, '"') + '"')
            position = match.end()
            continue
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char == "#":
            newline = text.find("\n", position)
            end = len(text) if newline < 0 else newline
            out.append(text[position:end])
            position = end
            continue
        out.append(char)
        position += 1
    return "".join(out)


def _escape(value: str, quote: str) -> str:
    escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return escaped.replace("\n", "\\n").replace("\r", "\\r")
