"""`flowlog query` against CloudWatch Logs (moto_server behind the recording proxy).

moto's Insights only understands fields, sort and limit and cannot tell a
right answer from a wrong one, so these tests check the conversation: the
query text sent, the log group, the time range, the polling, and what is
printed from the results CloudWatch returns.
"""

from __future__ import annotations

import time

import boto3
import orjson
import pytest
from aiohttp import web

from flowlog.insights.saved import list_saved_queries
from tests.insights.flow_logs import generate_records, iso
from tests.support.cloudwatch_proxy import AMZ_JSON, Call

pytestmark = pytest.mark.cloudwatch

GROUP = "/aws/eks/prod/cluster"
STREAM = "aws-network-policy-agent-audit-ip-10-0-0-1"


def answer(body: dict) -> web.Response:
    return web.Response(status=200, body=orjson.dumps(body), content_type=AMZ_JSON)


@pytest.fixture
def events(cloudwatch, monkeypatch) -> list[dict]:
    """Twenty flow-log lines in the group, one a minute up to a minute ago."""
    monkeypatch.delenv("CLUSTER_NAME", raising=False)
    client = boto3.client("logs", endpoint_url=cloudwatch.endpoint, region_name=cloudwatch.region)
    client.create_log_group(logGroupName=GROUP)
    client.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
    now_ms = int(time.time()) * 1000
    events = []
    for index, record in enumerate(generate_records(20)):
        stamp = now_ms - (20 - index) * 60_000
        record["timestamp"] = iso(stamp)
        events.append({"timestamp": stamp, "message": orjson.dumps(record).decode()})
    client.put_log_events(logGroupName=GROUP, logStreamName=STREAM, logEvents=events)
    return events


def printed_query_id(outcome) -> str:
    """The query id from the line saying what runs (the proxy keeps moto's text/html
    answers unparsed, so the id is not in the recorded StartQuery response)."""
    first = outcome.stderr.splitlines()[0]
    assert first.startswith("flowlog: running query ")
    return first.split()[3]


def cloudwatch_flags(proxy) -> list[str]:
    return ["--cloudwatch-endpoint", proxy.endpoint, "--region", "us-west-2"]


def test_saved_query_is_sent_with_its_parameter_group_and_time_range(
    flowlog, events, cloudwatch_proxy
):
    start_s = int(time.time()) - 7200
    end_s = start_s + 7260
    since, until = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in (start_s, end_s))
    outcome = flowlog(
        "query",
        "pod-flows",
        "--param",
        "ip=10.0.1.10",
        "--cluster",
        "prod",
        "--since",
        since,
        "--until",
        until,
        *cloudwatch_flags(cloudwatch_proxy),
    )
    assert outcome.status == 0, outcome.stderr
    [start] = cloudwatch_proxy.calls_of("StartQuery")
    query_id = printed_query_id(outcome)
    saved = next(q for q in list_saved_queries() if q.name == "pod-flows")
    assert "{{ip}}" in saved.body
    assert start.body["queryString"] == saved.body.replace("{{ip}}", "10.0.1.10")
    assert start.body["logGroupName"] == GROUP
    assert (start.body["startTime"], start.body["endTime"]) == (start_s, end_s)
    # moto completes at once: one poll, answered Complete, and the rows are printed.
    polls = cloudwatch_proxy.calls_of("GetQueryResults")
    assert [poll.body for poll in polls] == [{"queryId": query_id}]
    assert outcome.stdout.split()[0] == "@timestamp"
    # Not on a terminal: one line says what runs, and nothing else.
    assert outcome.stderr.splitlines() == [f"flowlog: running query {query_id} on {GROUP}"]


def test_table_of_a_fields_sort_limit_query(flowlog, events, cloudwatch_proxy):
    query = "fields @timestamp, @message | sort @timestamp desc | limit 3"
    outcome = flowlog("query", query, "--cluster", "prod", *cloudwatch_flags(cloudwatch_proxy))
    assert outcome.status == 0, outcome.stderr
    [start] = cloudwatch_proxy.calls_of("StartQuery")
    assert start.body["queryString"] == query
    # moto returns @timestamp as epoch milliseconds; the table shows what CloudWatch returns.
    newest = sorted(events, key=lambda e: e["timestamp"], reverse=True)[:3]
    stamps = [str(e["timestamp"]) for e in newest]
    width = max(len(e["message"]) for e in newest)
    expected = [
        "@timestamp".rjust(13) + "  " + "@message",
        "-" * 13 + "  " + "-" * width,
        *(f"{stamp}  {e['message']}" for stamp, e in zip(stamps, newest, strict=True)),
    ]
    assert outcome.stdout.splitlines() == expected
    assert "@ptr" not in outcome.stdout


def test_json_rows(flowlog, events, cloudwatch_proxy):
    outcome = flowlog(
        "query",
        "fields @message | limit 2",
        "--cluster",
        "prod",
        "--output",
        "json",
        *cloudwatch_flags(cloudwatch_proxy),
    )
    assert outcome.status == 0, outcome.stderr
    rows = outcome.json()
    assert len(rows) == 2
    assert all(list(row) == ["@message"] for row in rows)
    assert {row["@message"] for row in rows} <= {e["message"] for e in events}


def test_results_are_polled_until_complete(flowlog, events, cloudwatch_proxy):
    running = {"left": 2}

    def still_running(call: Call) -> web.Response | None:
        if call.operation == "GetQueryResults" and running["left"]:
            running["left"] -= 1
            return answer({"status": "Running", "results": [], "statistics": {}})
        return None

    cloudwatch_proxy.inspect = still_running
    outcome = flowlog(
        "query",
        "fields @message | limit 1",
        "--cluster",
        "prod",
        "--output",
        "json",
        *cloudwatch_flags(cloudwatch_proxy),
    )
    assert outcome.status == 0, outcome.stderr
    polls = cloudwatch_proxy.calls_of("GetQueryResults")
    assert len(polls) == 3  # two answered Running, then moto's Complete
    assert len(outcome.json()) == 1


def test_a_query_still_running_at_the_timeout_is_stopped(flowlog, events, cloudwatch_proxy):
    def never_done(call: Call) -> web.Response | None:
        if call.operation == "GetQueryResults":
            return answer({"status": "Running", "results": [], "statistics": {}})
        if call.operation == "StopQuery":  # moto 5.2.5 has no StopQuery
            return answer({"success": True})
        return None

    cloudwatch_proxy.inspect = never_done
    outcome = flowlog(
        "query",
        "fields @message",
        "--cluster",
        "prod",
        "--timeout",
        "1",
        *cloudwatch_flags(cloudwatch_proxy),
    )
    assert outcome.status == 1
    query_id = printed_query_id(outcome)
    [stop] = cloudwatch_proxy.calls_of("StopQuery")
    assert stop.body == {"queryId": query_id}
    assert len(cloudwatch_proxy.calls_of("GetQueryResults")) >= 2
    last = outcome.stderr.splitlines()[-1]
    assert last == (
        f"flowlog: error: query {query_id} did not complete within 1s; stopped it "
        f"(--timeout sets how long to wait)"
    )
    assert outcome.stdout == ""


@pytest.mark.parametrize("status", ["Failed", "Cancelled", "Timeout"])
def test_a_failed_query_is_one_line_and_a_failure(flowlog, events, cloudwatch_proxy, status):
    def failing(call: Call) -> web.Response | None:
        if call.operation == "GetQueryResults":
            return answer({"status": status, "results": []})
        return None

    cloudwatch_proxy.inspect = failing
    outcome = flowlog(
        "query", "fields @message", "--cluster", "prod", *cloudwatch_flags(cloudwatch_proxy)
    )
    assert outcome.status == 1
    assert outcome.stderr.splitlines()[-1] == (
        f"flowlog: error: query {printed_query_id(outcome)} ended with status {status}"
    )


def test_group_without_a_cluster_and_with_log_group(
    flowlog, cloudwatch, cloudwatch_proxy, monkeypatch
):
    monkeypatch.delenv("CLUSTER_NAME", raising=False)
    client = boto3.client("logs", endpoint_url=cloudwatch.endpoint, region_name=cloudwatch.region)
    for group in ("/aws/k8s-cluster/cluster", "/custom/flows"):
        client.create_log_group(logGroupName=group)
    assert flowlog("query", "fields @message", *cloudwatch_flags(cloudwatch_proxy)).status == 0
    assert (
        flowlog(
            "query",
            "fields @message",
            "--log-group",
            "/custom/flows",
            "--cluster",
            "x",
            *cloudwatch_flags(cloudwatch_proxy),
        ).status
        == 0
    )
    groups = [call.body["logGroupName"] for call in cloudwatch_proxy.calls_of("StartQuery")]
    assert groups == ["/aws/k8s-cluster/cluster", "/custom/flows"]


def test_missing_group_is_one_line(flowlog, cloudwatch, cloudwatch_proxy, monkeypatch):
    monkeypatch.delenv("CLUSTER_NAME", raising=False)
    outcome = flowlog(
        "query", "fields @message", "--cluster", "nowhere", *cloudwatch_flags(cloudwatch_proxy)
    )
    assert outcome.status == 1
    assert outcome.stderr.splitlines() == [
        "flowlog: error: log group /aws/eks/nowhere/cluster does not exist "
        "(or is not visible to these credentials)"
    ]


def test_relative_since_ends_now(flowlog, events, cloudwatch_proxy):
    before = time.time()
    outcome = flowlog(
        "query",
        "fields @message",
        "--cluster",
        "prod",
        "--since",
        "1h",
        *cloudwatch_flags(cloudwatch_proxy),
    )
    after = time.time()
    assert outcome.status == 0, outcome.stderr
    [start] = cloudwatch_proxy.calls_of("StartQuery")
    assert int(before) <= start.body["endTime"] <= int(after) + 1
    assert start.body["endTime"] - start.body["startTime"] in (3600, 3601)
