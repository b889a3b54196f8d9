"""What is printed: the table, JSON rows, and the progress line on a terminal."""

from __future__ import annotations

import io

import orjson

from flowlog.insights.output import Progress, render_json, render_table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_table_pads_columns_and_right_aligns_numbers():
    rows = [
        {"Src IP": "10.0.0.5", "denied": "120", "Pod": "frontend"},
        {"Src IP": "192.168.100.200", "denied": "7"},
    ]
    assert render_table(["Src IP", "denied", "Pod"], rows).splitlines() == [
        "Src IP           denied  Pod",
        "---------------  ------  --------",
        "10.0.0.5            120  frontend",
        "192.168.100.200       7",
    ]


def test_json_rows_keep_column_order_and_leave_out_missing_fields():
    rows = [{"b": "2", "a": "1"}, {"a": "3"}]
    assert orjson.loads(render_json(["a", "b"], rows)) == [{"a": "1", "b": "2"}, {"a": "3"}]
    assert render_json(["a", "b"], rows).index('"a"') < render_json(["a", "b"], rows).index('"b"')


def test_progress_on_a_terminal_is_one_line_rewritten_then_cleared():
    terminal = Terminal()
    progress = Progress(terminal)
    progress.start("running query q-1 on /aws/eks/prod/cluster")
    progress.update("Running", {"recordsScanned": 12345.0, "recordsMatched": 17.0})
    progress.update("Running", {"recordsScanned": 99999.0, "recordsMatched": 20.0})
    progress.finish()
    text = terminal.getvalue()
    assert "\n" not in text
    updates = text.split("\r\x1b[K")
    assert updates[0] == ""
    assert "running query q-1 on /aws/eks/prod/cluster: running" in updates[1]
    assert updates[1].endswith("12,345 records scanned, 17 matched")
    assert updates[2].endswith("99,999 records scanned, 20 matched")
    assert updates[-1] == ""  # the line is cleared for the table


def test_progress_elsewhere_is_a_single_line():
    stream = io.StringIO()
    progress = Progress(stream)
    progress.start("running query q-1 on /aws/eks/prod/cluster")
    progress.update("Running", {"recordsScanned": 1.0})
    progress.finish()
    assert stream.getvalue() == "flowlog: running query q-1 on /aws/eks/prod/cluster\n"
