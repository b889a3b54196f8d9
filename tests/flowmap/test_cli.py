"""``flowlog map`` as a user runs it: what it writes, what it says, and how it refuses."""

from __future__ import annotations

import gzip

import pytest

from flowlog.cli import SUBCOMMANDS
from tests.flowmap.conftest import STARS_LOG
from tests.flowmap.lines import CLIENT, FRONTEND, verdict, write_lines


def test_is_a_subcommand():
    assert SUBCOMMANDS["map"] == "flowlog.flowmap.cli"


def test_help_has_worked_examples(flowlog):
    outcome = flowlog("map", "--help")
    assert outcome.status == 0
    assert "examples:" in outcome.stdout
    assert "flowlog map --cloudwatch --cluster-name prod --since 1h --output prod.html" in (
        outcome.stdout
    )


def test_maps_a_flow_log_into_one_page(flowlog, tmp_path):
    output = tmp_path / "stars.html"
    outcome = flowlog("map", STARS_LOG, "--output", output)
    assert outcome.status == 0, outcome.stderr
    assert outcome.stdout == ""
    assert outcome.stderr.splitlines() == [
        f"flowlog: wrote {output} ({output.stat().st_size / 1024:,.0f} KiB): 3 pods in 2 "
        "namespaces · 1 outside network · 9 edges: 4 denied, 5 partly denied"
    ]
    page = output.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert [path.name for path in tmp_path.iterdir()] == ["stars.html"]  # no temporary left


def test_bad_lines_are_one_warning_line_and_the_rest_is_mapped(flowlog, tmp_path):
    path = tmp_path / "network-policy-agent.log"
    write_lines(path, [verdict(CLIENT, FRONTEND, 80)])
    with path.open("ab") as file:
        file.write(b"garbage\n{}\n")
    outcome = flowlog("map", path, "--output", tmp_path / "map.html")
    assert outcome.status == 0
    first, last = outcome.stderr.splitlines()
    assert first == (
        f"flowlog: warning: skipped 2 lines that are not flow-log lines (the first: {path}:2)"
    )
    assert "1 edge" in last


def test_reads_the_log_file_and_its_backups_by_default(flowlog, tmp_path):
    live = write_lines(tmp_path / "network-policy-agent.log", [verdict(CLIENT, FRONTEND, 80)])
    backup = tmp_path / "network-policy-agent-2026-11-22T04-00-00.000.log.gz"
    backup.write_bytes(gzip.compress(live.read_bytes()))
    output = tmp_path / "map.html"
    outcome = flowlog("map", "--log-file", live, "--output", output)
    assert outcome.status == 0, outcome.stderr
    assert "2 lines read" in output.read_text()


def test_a_time_range(flowlog, tmp_path):
    lines = [
        verdict(CLIENT, FRONTEND, 80, stamp="2026-11-22T05:00:00.000Z"),
        verdict(CLIENT, FRONTEND, 443, stamp="2026-11-22T06:00:00.000Z"),
    ]
    path = write_lines(tmp_path / "network-policy-agent.log", lines)
    output = tmp_path / "map.html"
    outcome = flowlog(
        "map",
        path,
        "--since",
        "2026-11-22T05:30:00Z",
        "--until",
        "2026-11-22T07:00:00Z",
        "--output",
        output,
    )
    assert outcome.status == 0, outcome.stderr
    page = output.read_text()
    assert 'data-service="443/TCP"' in page and 'data-service="80/TCP"' not in page
    assert "from 2026-11-22T05:30:00Z to 2026-11-22T07:00:00Z" in page


def test_a_page_that_cannot_be_written_is_one_line(flowlog, tmp_path):
    taken = tmp_path / "map.html"
    taken.mkdir()  # a directory where the page should go
    outcome = flowlog("map", STARS_LOG, "--output", taken)
    assert outcome.status == 1
    assert outcome.stderr.splitlines() == [f"flowlog: error: --output {taken}: Is a directory"]
    assert [path.name for path in tmp_path.iterdir()] == ["map.html"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.log"], "flowlog: error: missing.log: no such file"),
        (
            ["--cidr-prefix", "33", "{log}"],
            "flowlog: error: --cidr-prefix: expected 0 to 32, got 33",
        ),
        (
            ["--cidr6-prefix", "-1", "{log}"],
            "flowlog: error: --cidr6-prefix: expected 0 to 128, got -1",
        ),
        (["--max-nodes", "0", "{log}"], "flowlog: error: --max-nodes: expected 1 or more, got 0"),
        (
            ["--output", "{tmp}/no/map.html", "{log}"],
            "flowlog: error: --output {tmp}/no/map.html: no directory {tmp}/no",
        ),
        (
            ["--cloudwatch", "{log}"],
            "flowlog: error: --cloudwatch: reads the log group, not SOURCE files; give one",
        ),
        (
            ["--since", "yesterday", "{log}"],
            "flowlog: error: --since: expected a duration ago (15m, 1h, 2d), a time "
            "(2026-11-22T05:00:00Z) or 'now', got 'yesterday'",
        ),
        (
            ["--by", "cluster", "{log}"],
            "flowlog map: error: argument --by: invalid choice: 'cluster' "
            "(choose from 'pod', 'workload', 'namespace')",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(flowlog, tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    log = write_lines(tmp_path / "network-policy-agent.log", [verdict(CLIENT, FRONTEND, 80)])
    filled = [a.format(tmp=tmp_path, log=log) for a in arguments]
    outcome = flowlog("map", *filled)
    assert outcome.status == 2
    assert outcome.stderr.splitlines() == [message.format(tmp=tmp_path)]
    assert not (tmp_path / "flow-map.html").exists()
