"""The query language run locally: each command, operator and documented default,
and the refusals (unsupported or malformed: one line, exit status 2)."""

from __future__ import annotations

import calendar

import pytest

from flowlog.insights.evaluator import run
from flowlog.insights.parser import parse_query
from flowlog.insights.values import Timestamp

T0 = calendar.timegm((2023, 5, 30, 16, 5, 32)) * 1000 + 573  # 2023-05-30 16:05:32.573


def flows() -> list[dict]:
    """Six events a minute apart, oldest first; one without Pod, one without Policy."""
    rows = [
        {"Src IP": "10.0.0.5", "Dest Port": 80, "Proto": "TCP", "Verdict": "DENY",
         "Pod": "frontend-1", "Namespace": "stars", "Policy": "default-deny", "Bytes": 60},
        {"Src IP": "10.0.0.12", "Dest Port": 443, "Proto": "TCP", "Verdict": "ACCEPT",
         "Pod": "frontend-1", "Namespace": "stars", "Policy": "allow-web", "Bytes": 1500},
        {"Src IP": "10.0.0.5", "Dest Port": 53, "Proto": "UDP", "Verdict": "ACCEPT",
         "Pod": "backend-2", "Namespace": "stars", "Policy": "allow-dns", "Bytes": 80},
        {"Src IP": "192.168.1.9", "Dest Port": 22, "Proto": "TCP", "Verdict": "DENY",
         "Namespace": "client", "Policy": "default-deny", "Bytes": 40},
        {"Src IP": "10.0.0.7", "Dest Port": 80, "Proto": "TCP", "Verdict": "DENY",
         "Pod": "client-3", "Namespace": "client", "Bytes": 60},
        {"Src IP": "10.0.0.5", "Dest Port": 8080, "Proto": "SCTP", "Verdict": "EXPIRED/DELETED",
         "Pod": "backend-2", "Namespace": "stars", "Policy": "allow-dns", "Bytes": 100},
    ]  # fmt: skip
    for index, row in enumerate(rows):
        row["@timestamp"] = Timestamp(T0 + index * 60_000)
        row["@message"] = f"flow {index} from {row['Src IP']}"
    return rows


def results(text: str, rows: list[dict] | None = None) -> list[dict[str, str]]:
    return run(parse_query(text), flows() if rows is None else rows).rows


def column(text: str, name: str, rows: list[dict] | None = None) -> list[str | None]:
    return [row.get(name) for row in results(text, rows)]


def columns(text: str) -> list[str]:
    return run(parse_query(text), flows()).columns


# --- documented defaults ---------------------------------------------------------------


def test_default_columns_and_timestamp_format():
    result = run(parse_query("filter Verdict = 'ACCEPT'"), flows())
    assert result.columns == ["@timestamp", "@message"]
    assert result.rows == [
        {"@timestamp": "2023-05-30 16:07:32.573", "@message": "flow 2 from 10.0.0.5"},
        {"@timestamp": "2023-05-30 16:06:32.573", "@message": "flow 1 from 10.0.0.12"},
    ]


def test_without_sort_rows_are_newest_first_also_before_limit_and_dedup():
    assert column("fields Bytes | limit 2", "@timestamp") == [None, None]
    assert column("fields @timestamp | limit 2", "@timestamp") == [
        "2023-05-30 16:10:32.573",
        "2023-05-30 16:09:32.573",
    ]
    # The newest event per source is kept.
    assert column("fields `Src IP`, Bytes | dedup `Src IP`", "Bytes") == ["100", "60", "40", "1500"]


def test_default_limit_is_10000_rows():
    many = [{"@timestamp": Timestamp(T0 + i), "n": i} for i in range(10_050)]
    rows = results("fields n", many)
    assert len(rows) == 10_000
    assert rows[0] == {"n": "10049"}
    assert len(results("fields n | limit 10050", many)) == 10_050


def test_bin_labels_are_the_start_of_each_bucket():
    assert results("stats count(*) by bin(5m)") == [
        {"bin(5m)": "2023-05-30 16:05:00.000", "count(*)": "5"},
        {"bin(5m)": "2023-05-30 16:10:00.000", "count(*)": "1"},
    ]
    assert column("stats count(*) as n by bin(1h) as hour", "hour") == ["2023-05-30 16:00:00.000"]
    assert column("stats count(*) by bin(30s)", "bin(30s)")[0] == "2023-05-30 16:05:30.000"
    assert column("stats count(*) by bin(1d)", "bin(1d)") == ["2023-05-30 00:00:00.000"]
    assert column("stats count(*) by bin(1mo)", "bin(1mo)") == ["2023-05-01 00:00:00.000"]
    assert column("stats count(*) by bin(1q)", "bin(1q)") == ["2023-04-01 00:00:00.000"]
    assert column("stats count(*) by bin(2hrs)", "bin(2hrs)") == ["2023-05-30 16:00:00.000"]


# --- fields and display -------------------------------------------------------------------


def test_fields_with_aliases_expressions_and_missing_values():
    text = "fields Pod as pod, Bytes * 8 as bits, concat(Proto, '/', `Dest Port`) as port"
    assert columns(text) == ["pod", "bits", "port"]
    rows = results(text + " | sort @timestamp asc | limit 4")
    assert rows[0] == {"pod": "frontend-1", "bits": "480", "port": "TCP/80"}
    assert rows[3] == {"bits": "320", "port": "TCP/22"}  # no Pod: no cell


def test_fields_commands_add_columns_and_display_chooses():
    assert columns("fields Pod | fields Proto, Pod") == ["Pod", "Proto"]
    assert columns("fields Pod, Proto | display Proto, Verdict") == ["Proto", "Verdict"]
    assert columns("display Pod | display Bytes") == ["Bytes"]
    assert results("display Proto | limit 1") == [{"Proto": "SCTP"}]


def test_expression_columns_are_named_by_their_text():
    assert columns("fields Bytes   *  2, strlen(Pod)") == ["Bytes * 2", "strlen(Pod)"]


# --- filter: comparison, like, in, boolean logic --------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("`Dest Port` = 80", [80, 80]),
        ("`Dest Port` != 80", [8080, 22, 53, 443]),
        ("`Dest Port` < 80", [22, 53]),
        ("`Dest Port` <= 80", [80, 22, 53, 80]),
        ("`Dest Port` > 80", [8080, 443]),
        ("`Dest Port` >= 443", [8080, 443]),
        ('`Dest Port` = "80"', [80, 80]),  # a string that is a number compares as a number
        ("`Dest Port` > 1000 - 600", [8080, 443]),
        ('Proto > "TCP"', [53]),  # text compares as text
        ('Proto like "CT"', [8080]),
        ("Proto like /^T/", [80, 22, 443, 80]),
        ("Pod like /(?i)FRONT/", [443, 80]),
        ('Proto not like "T"', [53]),
        ("Proto not like /CP/", [8080, 53]),
        ('Proto in ["UDP", "SCTP"]', [8080, 53]),
        ('Proto not in ["UDP", "TCP"]', [8080]),
        ("`Dest Port` in [22, 53]", [22, 53]),
        ('Verdict = "DENY" and Proto = "TCP" and Bytes < 50', [22]),
        ('Proto = "UDP" or Proto = "SCTP"', [8080, 53]),
        ('not Verdict = "DENY"', [8080, 53, 443]),
        ('Verdict = "DENY" and (Bytes > 50 or Proto = "UDP")', [80, 80]),
        ('Verdict = "DENY" and Bytes > 50 or Proto = "UDP"', [80, 53, 80]),  # and binds tighter
        ("ispresent(Pod) and isempty(Policy)", [80]),
        ("not ispresent(Pod)", [22]),
        ("isPresent(Policy) AND Bytes >= 100", [8080, 443]),
        ("strcontains(Verdict, 'DENY')", [80, 22, 80]),
        ("isIpInSubnet(`Src IP`, '10.0.0.0/28')", [8080, 80, 53, 443, 80]),
        ("`Src IP` = '10.0.0.5' and `Dest Port` % 2 = 1", [53]),
    ],
)
def test_filter(condition, expected):
    ports = column(f"fields `Dest Port` | filter {condition}", "Dest Port")
    assert ports == [str(port) for port in expected]


def test_a_missing_field_fails_a_comparison_and_passes_its_negation():
    no_pod = "fields Bytes | filter "
    assert column(no_pod + 'Pod = "x"', "Bytes") == []
    assert column(no_pod + 'Pod != "frontend-1" and Verdict = "DENY"', "Bytes") == ["60", "40"]
    assert column(no_pod + 'Pod not like "front" and Proto = "TCP"', "Bytes") == ["60", "40"]
    assert column(no_pod + 'Pod not in ["client-3"] and Verdict = "DENY"', "Bytes") == ["40", "60"]
    assert column(no_pod + "Missing > 0 or Missing <= 0", "Bytes") == []


def test_arithmetic():
    rows = [{"@timestamp": Timestamp(T0), "a": 7, "b": 2, "s": "3", "t": "x"}]
    text = (
        "fields a + b as add, a - b as sub, a * b as mul, a / b as div, a % b as mod, "
        "a ^ b as pow, a / 0 as zero, s * 2 as numeric_text, t * 2 as text, -a as neg, "
        "a + missing as gone"
    )
    assert results(text, rows) == [
        {"add": "9", "sub": "5", "mul": "14", "div": "3.5", "mod": "1", "pow": "49",
         "numeric_text": "6", "neg": "-7"}
    ]  # fmt: skip


def test_functions():
    text = (
        "fields toupper(Pod) as up, strlen(Pod) as len, substr(Pod, 0, 5) as head, "
        "replace(Pod, '-', '_') as under, coalesce(Policy, 'none') as policy, "
        "trim('  x  ') as trimmed, isblank('  ') as blank, datefloor(@timestamp, 1h) as hour, "
        "fromMillis(0) as epoch, toMillis(@timestamp) as ms, abs(-3) as abs, "
        "greatest(1, Bytes, 70) as most, isValidIpV4(`Src IP`) as v4 | sort @timestamp asc "
        "| limit 1"
    )
    assert results(text) == [
        {"up": "FRONTEND-1", "len": "10", "head": "front", "under": "frontend_1",
         "policy": "default-deny", "trimmed": "x", "blank": "1",
         "hour": "2023-05-30 16:00:00.000", "epoch": "1970-01-01 00:00:00.000",
         "ms": str(T0), "abs": "3", "most": "70", "v4": "1"}
    ]  # fmt: skip


# --- stats ------------------------------------------------------------------------------------


def test_stats_aggregations():
    text = (
        "stats count(*) as events, count(Pod) as with_pod, count_distinct(`Src IP`) as sources, "
        "sum(Bytes) as bytes, avg(Bytes) as mean, min(Bytes) as least, max(`Src IP`) as last_ip, "
        "min(@timestamp) as first"
    )
    assert results(text) == [
        {"events": "6", "with_pod": "5", "sources": "4", "bytes": "1840",
         "mean": "306.6666666666667", "least": "40", "last_ip": "192.168.1.9",
         "first": "2023-05-30 16:05:32.573"}
    ]  # fmt: skip


def test_stats_by_fields_orders_groups_and_names_columns():
    text = "stats count(*), sum(Bytes) as bytes by Namespace, Proto"
    assert columns(text) == ["Namespace", "Proto", "count(*)", "bytes"]
    assert results(text) == [
        {"Namespace": "client", "Proto": "TCP", "count(*)": "2", "bytes": "100"},
        {"Namespace": "stars", "Proto": "SCTP", "count(*)": "1", "bytes": "100"},
        {"Namespace": "stars", "Proto": "TCP", "count(*)": "2", "bytes": "1560"},
        {"Namespace": "stars", "Proto": "UDP", "count(*)": "1", "bytes": "80"},
    ]


def test_stats_combines_earlier_aggregations_by_alias():
    text = (
        "stats count(*) as flows, sum(strcontains(Verdict, 'DENY')) as denied, "
        "denied * 100 / flows as pct by Namespace"
    )
    assert results(text) == [
        {"Namespace": "client", "flows": "2", "denied": "2", "pct": "100"},
        {"Namespace": "stars", "flows": "4", "denied": "1", "pct": "25"},
    ]


def test_stats_missing_group_values_form_their_own_group_and_sort_last():
    assert results("stats count(*) as n by Pod") == [
        {"Pod": "backend-2", "n": "2"},
        {"Pod": "client-3", "n": "1"},
        {"Pod": "frontend-1", "n": "2"},
        {"n": "1"},
    ]


def test_stats_without_by_always_gives_one_row():
    assert results("filter Proto = 'GRE' | stats count(*) as n, sum(Bytes) as b") == [{"n": "0"}]


def test_a_second_stats_aggregates_the_first():
    text = "stats count(*) as n by Proto | stats max(n) as busiest, count(*) as protocols"
    assert results(text) == [{"busiest": "4", "protocols": "3"}]


def test_commands_after_stats_work_on_its_rows():
    text = "stats count(*) as n by Proto | filter n > 1 | sort n asc | fields n * 10 as tens"
    assert columns(text) == ["Proto", "n", "tens"]
    assert results(text) == [{"Proto": "TCP", "n": "4", "tens": "40"}]


# --- sort, limit, dedup ------------------------------------------------------------------------


def test_sort_is_insights_natural_order():
    """The ascending order given in the sort command's documentation."""
    documented = ["!:", "#", "*%04", "0#", "5A", "111A", "2345_", "@", "@_", "A", "A9876fghj",
                  "a12345hfh", "0", "01", "1", "2", "3"]  # fmt: skip
    shuffled = documented[::3] + documented[1::3] + documented[2::3]
    rows = [{"@timestamp": Timestamp(T0), "v": value} for value in shuffled]
    assert column("fields v | sort v asc", "v", rows) == documented
    assert column("fields v | sort v desc", "v", rows) == documented[::-1]


def test_sort_numbers_numerically_and_missing_values_last_either_way():
    assert column("fields Bytes | sort Bytes asc", "Bytes") == ["40", "60", "60", "80", "100",
                                                                "1500"]  # fmt: skip
    assert column("fields Pod | sort Pod asc", "Pod")[-1] is None
    assert column("fields Pod | sort Pod desc", "Pod")[-1] is None


def test_sort_without_a_direction_is_descending():
    assert column("fields Bytes | sort Bytes", "Bytes")[0] == "1500"


def test_sort_by_several_keys_in_mixed_directions():
    text = "fields Namespace, Bytes | sort Namespace asc, Bytes desc"
    assert [(r["Namespace"], r["Bytes"]) for r in results(text)] == [
        ("client", "60"), ("client", "40"), ("stars", "1500"), ("stars", "100"),
        ("stars", "80"), ("stars", "60"),
    ]  # fmt: skip


def test_sort_is_stable_and_limit_keeps_the_first_rows():
    text = "fields Bytes, @timestamp | sort Bytes asc | limit 3"
    assert [r["@timestamp"][11:16] for r in results(text)] == ["16:08", "16:05", "16:09"]


def test_dedup_keeps_the_first_of_each_and_rows_missing_the_field():
    text = "fields Pod, Bytes | sort Bytes desc | dedup Pod"
    assert [(r.get("Pod"), r["Bytes"]) for r in results(text)] == [
        ("frontend-1", "1500"), ("backend-2", "100"), ("client-3", "60"), (None, "40"),
    ]  # fmt: skip
    assert len(results("fields Pod | dedup Pod, Namespace | limit 2")) == 2


# --- parse -----------------------------------------------------------------------------------


def test_parse_glob_and_regex():
    assert column("parse 'flow * from *' as n, ip | fields ip | limit 1", "ip") == ["10.0.0.5"]
    text = "parse @message 'flow * from *' as n, ip | stats count(*) as c by ip | sort c desc"
    assert results(text)[0] == {"ip": "10.0.0.5", "c": "3"}
    text = r"parse @message /from (?<net>\d+)\.(?<host>[\d.]+)/ | display net, host | limit 1"
    assert results(text) == [{"net": "10", "host": "0.0.5"}]
    text = "parse Pod '*-*' as app, replica | filter replica > 1 | display app, replica"
    assert results(text) == [
        {"app": "backend", "replica": "2"},
        {"app": "client", "replica": "3"},
        {"app": "backend", "replica": "2"},
    ]


def test_parse_that_does_not_match_leaves_the_fields_missing():
    rows = results("parse 'nothing like * here' as x | fields x, Bytes | limit 1")
    assert rows == [{"Bytes": "100"}]


def test_comments_case_and_quotes():
    text = """
        # which ports were denied
        FILTER Verdict = "DENY" AND Pod LIKE 'c#' # not a comment inside quotes
        | Fields `Dest Port`  # the port
    """
    assert results(text) == []
    text = 'filter @message = "flow 0 from 10.0.0.5" | fields "a\\"b" as q'
    assert results(text) == [{"q": 'a"b'}]


# --- refusals ----------------------------------------------------------------------------------

UNSUPPORTED_COMMANDS = ["pattern", "diff", "unmask", "filterIndex", "lookup", "unnest", "anomaly",
                        "join", "SOURCE"]  # fmt: skip
UNSUPPORTED_FUNCTIONS = ["pct", "stddev", "earliest", "latest", "sortsFirst", "sortsLast",
                         "jsonParse"]  # fmt: skip


@pytest.mark.parametrize("command", UNSUPPORTED_COMMANDS)
def test_unsupported_commands_are_refused_by_name(flowlog, tmp_path, command):
    missing_file = tmp_path / "never-read.log"
    outcome = flowlog("query", "--local", missing_file, f"filter Verdict = 'DENY' | {command} x")
    assert outcome.status == 2
    assert outcome.stdout == ""
    assert outcome.stderr.count("\n") == 1
    assert outcome.stderr.startswith(
        f"flowlog: error: query line 1, column 27: unsupported command '{command}'"
    )


@pytest.mark.parametrize("function", UNSUPPORTED_FUNCTIONS)
def test_unsupported_functions_are_refused_by_name(flowlog, flow_logs, function):
    outcome = flowlog("query", "--local", flow_logs.live, f"stats {function}(Bytes, 50)")
    assert outcome.status == 2
    assert outcome.stderr == (
        f"flowlog: error: query line 1, column 7: unsupported function '{function}'\n"
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "filter Verdict = ",
            "line 1, column 18: expected a field, value or function, found the end of the query",
        ),
        (
            "fields a,\n  | limit 2",
            "line 2, column 3: expected a field, value or function, found '|'",
        ),
        ("fields `Src IP", "line 1, column 8: field name is not closed with '`'"),
        ("filter Proto = 'TCP", "line 1, column 16: string is not closed with '"),
        (
            "filter x like /a(/",
            "line 1, column 15: bad regular expression: missing ), unterminated subpattern",
        ),
        ("filter x like /abc", "line 1, column 15: regular expression is not closed with '/'"),
        ("fitler x = 1", "line 1, column 1: unknown command 'fitler'"),
        ("fields frobnicate(x)", "line 1, column 8: unknown function 'frobnicate'"),
        ("limit 0", "line 1, column 7: limit needs a whole number above 0, found '0'"),
        ("sort x | dedup x | sort y", "line 1, column 20: only limit may follow dedup"),
        ("fields count(*)", "line 1, column 8: count() aggregates: it only works in stats"),
        ("stats sum(count(*))", "line 1, column 11: count() cannot be inside another aggregation"),
        (
            "stats Bytes by Proto",
            "line 1, column 7: 'Bytes' in stats is neither inside an "
            "aggregation such as count(*) nor an earlier alias",
        ),
        ("stats count(*) by bin(5x)", "line 1, column 23: unknown time unit 'x' in '5x'"),
        (
            "fields 5m",
            "line 1, column 8: a time period such as 5m only goes inside bin(), "
            "datefloor() or dateceil()",
        ),
        (
            "fields bin(Bytes)",
            "line 1, column 12: argument 1 of bin() must be a time period such as 5m",
        ),
        ("fields strlen()", "line 1, column 8: strlen() takes 1 arguments, got 0"),
        (
            "parse @message 'a * b *' as x",
            "line 1, column 16: the pattern has 2 '*' but 1 names follow 'as'",
        ),
        (
            "parse @message /(\\d+)/",
            "line 1, column 16: parse with a /regex/ needs named groups: (?<name>...)",
        ),
        ("filter a not b", "line 1, column 14: expected 'like' or 'in' after 'not', found 'b'"),
        ("filter a in (1, 2)", "line 1, column 13: expected '[' after 'in', found '('"),
        ("fields a b", "line 1, column 10: expected '|' or the end of the query, found 'b'"),
        ("filter a = 1 ~ 2", "line 1, column 14: unexpected character '~'"),
        (
            "stats count(*) as n by Proto | stats sum(n) as s | stats count(*)",
            "line 1, column 52: a query can have at most two stats commands",
        ),
        ("   # only a comment", "the query is empty"),
    ],
)
def test_malformed_queries_are_one_line_with_the_position(flowlog, flow_logs, query, message):
    outcome = flowlog("query", "--local", flow_logs.live, query)
    assert outcome.status == 2
    prefix = "flowlog: error: query " if message[0] == "l" else "flowlog: error: query: "
    assert outcome.stderr == f"{prefix}{message}\n"
    assert outcome.stdout == ""
