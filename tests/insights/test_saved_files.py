"""Saved-query files: their format, where they are found, and parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowlog.config import ConfigError
from flowlog.insights import saved
from flowlog.insights.saved import (
    DIRECTORY_ENV,
    REPOSITORY_DIR,
    SYSTEM_DIR,
    candidate_directories,
    load_saved_query,
    saved_queries_directory,
    substitute,
)

REPOSITORY = Path(__file__).resolve().parents[2]

PORT_QUERY = """\
# description: Flows to one port.
# columns: @timestamp, Dest Port
# param port: a destination port, e.g. 443
fields @timestamp, `Dest Port` | filter `Dest Port` = {{port}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.insights"
    path.write_text(text)
    return path


def test_the_header_gives_description_columns_and_parameters(tmp_path):
    query = load_saved_query(write(tmp_path, "port-flows", PORT_QUERY))
    assert query.name == "port-flows"
    assert query.description == "Flows to one port."
    assert query.columns == ("@timestamp", "Dest Port")
    assert [(p.name, p.description) for p in query.parameters] == [
        ("port", "a destination port, e.g. 443")
    ]
    assert query.body == "fields @timestamp, `Dest Port` | filter `Dest Port` = {{port}}\n"
    assert query.definition_text() == "# Flows to one port.\n" + query.body


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# columns: a\nfields a\n", "the header needs a '# description:' line"),
        ("# description: d\nfields a\n", "the header needs a '# columns:' line"),
        ("# description: d\n# columns: a\n", "no query after the header"),
        (
            "# description: d\n# columns: a\nfilter a = {{b}}\n",
            "parameter b is used but not declared",
        ),
        (
            "# description: d\n# columns: a\n# param b: x\nfields a\n",
            "parameter b is declared but unused",
        ),
    ],
)
def test_a_bad_file_is_named_with_its_problem(tmp_path, text, problem):
    path = write(tmp_path, "bad", text)
    with pytest.raises(ConfigError) as raised:
        load_saved_query(path)
    assert str(raised.value) == f"{path}: {problem}"


def test_the_repository_directory_is_found_first_without_the_variable(monkeypatch):
    monkeypatch.delenv(DIRECTORY_ENV, raising=False)
    assert REPOSITORY_DIR == REPOSITORY / "config" / "insights"
    assert candidate_directories()[0] == REPOSITORY_DIR
    assert candidate_directories()[-1] == SYSTEM_DIR == Path("/usr/share/flowlog/insights")
    assert saved_queries_directory() == REPOSITORY_DIR


def test_an_installed_copy_is_used_when_there_is_no_repository(monkeypatch, tmp_path):
    monkeypatch.delenv(DIRECTORY_ENV, raising=False)
    monkeypatch.setattr(saved, "REPOSITORY_DIR", tmp_path / "not-a-checkout")
    monkeypatch.setattr(saved, "SYSTEM_DIR", tmp_path)
    assert saved_queries_directory() == tmp_path


def test_the_variable_overrides(flowlog, monkeypatch, tmp_path):
    write(tmp_path, "port-flows", PORT_QUERY)
    monkeypatch.setenv(DIRECTORY_ENV, str(tmp_path))
    outcome = flowlog("query", "--list")
    assert outcome.status == 0
    assert outcome.stdout.splitlines()[0] == f"saved queries in {tmp_path}:"
    assert outcome.stdout.splitlines()[-1].split() == [
        "port-flows", "--param", "port=...", "Flows", "to", "one", "port."
    ]  # fmt: skip
    monkeypatch.setenv(DIRECTORY_ENV, str(tmp_path / "missing"))
    outcome = flowlog("query", "--list")
    assert outcome.status == 2
    assert outcome.stderr == (
        f"flowlog: error: environment {DIRECTORY_ENV}: {tmp_path / 'missing'} is not a directory\n"
    )


def test_list_shows_every_saved_query(flowlog, monkeypatch):
    monkeypatch.delenv(DIRECTORY_ENV, raising=False)
    outcome = flowlog("query", "--list", "--output", "json")
    assert outcome.status == 0
    listed = {entry["name"]: entry for entry in outcome.json()}
    assert len(listed) == len(list(REPOSITORY_DIR.glob("*.insights")))
    assert listed["pod-flows"]["parameters"] == [
        {"name": "ip", "description": "the pod's IP address, e.g. 10.0.0.5"}
    ]
    assert all(entry["description"] and entry["columns"] for entry in listed.values())


# --- parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ('x = "{{v}}"', "10.0.0.5", 'x = "10.0.0.5"'),
        ('x = "{{v}}"', 'a"b\\c', 'x = "a\\"b\\\\c"'),
        ("x = '{{ v }}'", "it's", "x = 'it\\'s'"),
        ("x = {{v}}", "443", "x = 443"),
        ("x = {{v}}", "-1.5", "x = -1.5"),
        ("x = {{v}}", 'web" or "1"="1', 'x = "web\\" or \\"1\\"=\\"1"'),
        ("x = {{v}} # {{v}} stays in a comment", "a", 'x = "a" # {{v}} stays in a comment'),
        ('x like "pre{{v}}post" and y = {{v}}', "1", 'x like "pre1post" and y = 1'),
    ],
)
def test_values_are_quoted_for_where_they_stand(text, value, expected):
    assert substitute(text, {"v": value}) == expected


def test_a_placeholder_inside_backticks_is_refused():
    with pytest.raises(ConfigError, match="cannot stand inside `backticks`"):
        substitute("fields `{{v}}`", {"v": "Src IP"})


def test_a_quoted_value_matches_only_itself(flowlog, flow_logs):
    """A value that tries to close its string finds nothing instead of everything."""
    query = "pod-flows"
    honest = flowlog("query", "--local", flow_logs.live, query, "--param", "ip=10.0.1.10")
    sneaky = flowlog(
        "query",
        "--local",
        flow_logs.live,
        query,
        "--param",
        'ip=10.0.1.10" or "1"="1',
        "--output",
        "json",
    )
    assert honest.status == sneaky.status == 0
    assert len(honest.stdout.splitlines()) > 10
    assert sneaky.json() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pod-flows"],
            "query pod-flows needs --param ip=... (the pod's IP address, e.g. 10.0.0.5)",
        ),
        (
            ["pod-flows", "--param", "ip=1", "--param", "port=2"],
            "--param port: query pod-flows has ip",
        ),
        (["denied-flows", "--param", "ip=1"], "--param ip: query denied-flows has no parameters"),
        (["pod-flows", "--param", "ip"], "--param ip: expected NAME=VALUE"),
        (
            ["no-such-query"],
            "no saved query named 'no-such-query' in {directory} (flowlog query --list)",
        ),
        (["fields {{x}}"], "query (command line) needs --param x=... (a value)"),
    ],
)
def test_parameter_and_name_mistakes_are_one_line(flowlog, flow_logs, monkeypatch, args, message):
    monkeypatch.delenv(DIRECTORY_ENV, raising=False)
    outcome = flowlog("query", "--local", flow_logs.live, *args)
    assert outcome.status == 2
    assert outcome.stderr == f"flowlog: error: {message.format(directory=REPOSITORY_DIR)}\n"


def test_ad_hoc_parameters_and_a_query_file_by_path(flowlog, flow_logs, tmp_path):
    ad_hoc = flowlog(
        "query",
        "--local",
        flow_logs.live,
        "filter `Dest Port` = {{port}} | stats count(*) as n",
        "--param",
        "port=53",
        "--output",
        "json",
    )
    path = write(tmp_path, "port-flows", PORT_QUERY)
    by_path = flowlog(
        "query", "--local", flow_logs.live, path, "--param", "port=53", "--output", "json"
    )
    assert ad_hoc.status == by_path.status == 0
    expected = sum(1 for r in flow_logs.records[4000:] if r["Dest Port"] == 53)
    assert ad_hoc.json() == [{"n": str(expected)}]
    assert len(by_path.json()) == expected
