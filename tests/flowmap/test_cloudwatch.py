"""``flowlog map --cloudwatch``: the edge query, and the map of its rows.

moto's Insights cannot run a stats query, so the query's meaning is checked by
running its text on the local Insights engine (which runs what Insights runs)
over the same lines the files give: both ways must draw the same graph. The
conversation with CloudWatch is checked through the recording proxy, which
answers the query with those rows.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from flowlog.flowmap.cloudwatch import EDGE_QUERY, MAX_ROWS, count_rows
from flowlog.flowmap.graph import FlowGraph, MapOptions, build_graph
from flowlog.flowmap.local_files import read_flow_logs
from flowlog.flowmap.tally import FlowTally
from flowlog.insights.evaluator import execute, plan
from flowlog.insights.local_logs import LocalFlowLogs
from flowlog.insights.parser import parse_query
from tests.flowmap.conftest import STARS_LOG
from tests.flowmap.lines import (
    BACKEND,
    CLIENT,
    FRONTEND,
    NODE_ADDRESS,
    NODE_NAME,
    aws_verdict,
    expired,
    summary,
    verdict,
    write_lines,
)
from tests.support.cloudwatch_proxy import AMZ_JSON, Call


def insights_rows(path: Path) -> list[dict[str, str]]:
    query_plan = plan(parse_query(EDGE_QUERY))
    rows = LocalFlowLogs([path], source_fields=query_plan.source_fields).rows()
    return execute(query_plan, rows).rows


def graph_from_rows(rows: list[dict[str, str]]) -> FlowGraph:
    tally = FlowTally(MapOptions().outside_networks())
    count_rows(rows, tally)
    return build_graph(tally, MapOptions())


def graph_from_file(path: Path) -> FlowGraph:
    tally = FlowTally(MapOptions().outside_networks())
    read_flow_logs([path], tally)
    return build_graph(tally, MapOptions())


def shape(graph: FlowGraph) -> set:
    return {
        (
            e.source,
            e.target,
            e.service,
            e.flows,
            e.denied,
            e.size("bytes_sent"),
            e.size("bytes_received"),
            tuple(sorted(e.policies.items())),
            e.last_seen[:19],  # Insights shows times to the millisecond, without the Z
        )
        for e in graph.edges
    }


@pytest.fixture
def mixed_log(tmp_path: Path) -> Path:
    """Every form of line: this version's, a flow's end, summaries, a node, the AWS agent's."""
    return write_lines(
        tmp_path / "network-policy-agent.log",
        [
            verdict(CLIENT, FRONTEND, 80, "ACCEPT", "egress"),
            verdict(CLIENT, FRONTEND, 80, "DENY", "ingress", policy=("stars", "default-deny")),
            verdict(FRONTEND, BACKEND, 6379, "ACCEPT", policy=("stars", "backend-policy")),
            expired(FRONTEND, BACKEND, 6379, sent=900, received=12000),
            summary(CLIENT, BACKEND, 6379, "DENY", 4, policy=("stars", "default-deny")),
            summary(CLIENT, FRONTEND, 80, "ACCEPT", 9, aggregation="workload"),
            verdict(NODE_ADDRESS, FRONTEND, 8080) | {"Src Node": NODE_NAME},
            aws_verdict("10.0.0.5", "198.51.100.7", 443, "ACCEPT"),
        ],
    )


@pytest.mark.parametrize("log", ["stars", "mixed"])
def test_the_query_draws_what_the_files_draw(log, mixed_log):
    path = STARS_LOG if log == "stars" else mixed_log
    rows = insights_rows(path)
    assert shape(graph_from_rows(rows)) == shape(graph_from_file(path))


def test_a_full_result_is_said_to_be_cut_short():
    row = {"msg": "Flow Info: ", "Verdict": "ACCEPT", "Proto": "TCP", "Dest Port": "80",
           "Src IP": "10.0.0.5", "Dest IP": "10.0.1.7", "lines": "1"}  # fmt: skip
    tally = FlowTally(MapOptions().outside_networks())
    result = count_rows([row] * MAX_ROWS, tally)
    assert result.truncated.startswith("CloudWatch returned 10,000 rows, the most it returns")
    assert count_rows([row], tally).truncated == ""


def test_rows_with_numbers_that_are_not_are_counted_not_fatal():
    rows = [{"msg": "Flow Info: ", "Verdict": "ACCEPT", "Dest Port": "eighty", "lines": "1"}]
    result = count_rows(rows, FlowTally(MapOptions().outside_networks()))
    assert (result.rows, result.bad_rows) == (1, 1)


def answer(body: dict) -> web.Response:
    return web.Response(status=200, body=orjson.dumps(body), content_type=AMZ_JSON)


@pytest.mark.cloudwatch
def test_maps_the_cluster_log_group_from_one_stats_query(flowlog, cloudwatch_proxy, tmp_path):
    rows = insights_rows(STARS_LOG)
    results = [[{"field": name, "value": value} for name, value in row.items()] for row in rows]

    def insights(call: Call) -> web.Response | None:
        if call.operation == "StartQuery":
            return answer({"queryId": "edges-1"})
        if call.operation == "GetQueryResults":
            return answer({"status": "Complete", "results": results, "statistics": {}})
        return None

    cloudwatch_proxy.inspect = insights
    output = tmp_path / "prod.html"
    started = int(time.time())
    outcome = flowlog(
        "map", "--cloudwatch", "--cluster-name", "prod", "--since", "1h", "--output", output,
        "--cloudwatch-endpoint", cloudwatch_proxy.endpoint, "--region", "us-west-2",
    )  # fmt: skip
    assert outcome.status == 0, outcome.stderr
    [start] = cloudwatch_proxy.calls_of("StartQuery")
    assert start.body["logGroupName"] == "/aws/eks/prod/cluster"
    assert start.body["queryString"] == EDGE_QUERY
    assert start.body["endTime"] - start.body["startTime"] in (3600, 3601)
    assert abs(start.body["endTime"] - started) <= 5
    assert [poll.body for poll in cloudwatch_proxy.calls_of("GetQueryResults")] == [
        {"queryId": "edges-1"}
    ]
    assert outcome.stderr.splitlines()[-1].startswith(f"flowlog: wrote {output} (")
    page = output.read_text()
    assert "CloudWatch Logs /aws/eks/prod/cluster, 60 lines read" in page
    assert page.count('class="edge ') == 9


@pytest.mark.cloudwatch
def test_a_failed_query_is_one_line_and_no_page(flowlog, cloudwatch_proxy, tmp_path):
    def failing(call: Call) -> web.Response | None:
        if call.operation == "StartQuery":
            return answer({"queryId": "edges-2"})
        if call.operation == "GetQueryResults":
            return answer({"status": "Failed", "results": []})
        return None

    cloudwatch_proxy.inspect = failing
    output = tmp_path / "prod.html"
    outcome = flowlog(
        "map", "--cloudwatch", "--cluster-name", "prod", "--output", output,
        "--cloudwatch-endpoint", cloudwatch_proxy.endpoint, "--region", "us-west-2",
    )  # fmt: skip
    assert outcome.status == 1
    assert outcome.stderr.splitlines()[-1] == (
        "flowlog: error: query edges-2 ended with status Failed"
    )
    assert not output.exists()
