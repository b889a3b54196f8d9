"""Every saved query, run with --local on a generated flow log, against answers
computed here in plain Python from the records that were written."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, defaultdict

import pytest

from flowlog.insights.saved import list_saved_queries, load_saved_query
from tests.insights.flow_logs import iso, timestamp_ms

FIVE_MINUTES_MS = 300_000


def shown_time(milliseconds: int) -> str:
    """Insights' way of printing a time: 2023-05-30 16:05:32.573."""
    seconds, millis = divmod(milliseconds, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}"


def shown_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def row_of(record: dict, columns: list[str]) -> dict[str, str]:
    """A record as a result row: the columns it has, as text."""
    row = {}
    for column in columns:
        if column == "@timestamp":
            row[column] = shown_time(timestamp_ms(record))
        elif column in record:
            row[column] = str(record[column])
    return row


def newest_first(records: list[dict], limit: int) -> list[dict]:
    return sorted(records, key=timestamp_ms, reverse=True)[:limit]


def ip_order(address: str) -> ipaddress.IPv4Address:
    return ipaddress.ip_address(address)


def saved(name: str):
    return next(query for query in list_saved_queries() if query.name == name)


def run_saved(flowlog, flow_logs, name: str, *extra: str) -> tuple[list[str], list[dict]]:
    outcome = flowlog("query", "--local", *flow_logs.paths, name, "--output", "json", *extra)
    assert outcome.status == 0, outcome.stderr
    rows = outcome.json()
    declared = list(saved(name).columns)
    for row in rows:
        assert set(row) <= set(declared)
        assert list(row) == [column for column in declared if column in row]  # column order
    return declared, rows


def test_every_saved_query_is_covered_here():
    tested = {
        "denied-flows",
        "top-denied-sources",
        "denies-by-port",
        "pod-flows",
        "verdicts-over-time",
        "policy-flows",
        "deny-share-by-namespace",
        "workload-flows",
        "denied-workload-pairs",
        "top-talkers",
        "denied-pairs",
        "namespace-egress",
    }
    assert {query.name for query in list_saved_queries()} == tested


def test_denied_flows(flowlog, flow_logs):
    columns, rows = run_saved(flowlog, flow_logs, "denied-flows")
    denied = [r for r in flow_logs.records if r["Verdict"] == "DENY"]
    assert len(denied) > 1000  # the limit matters
    assert rows == [row_of(r, columns) for r in newest_first(denied, 1000)]


def test_top_denied_sources(flowlog, flow_logs):
    _, rows = run_saved(flowlog, flow_logs, "top-denied-sources")
    counts: Counter[str] = Counter()
    destinations: defaultdict[str, set] = defaultdict(set)
    ports: defaultdict[str, set] = defaultdict(set)
    for record in flow_logs.records:
        if record["Verdict"] == "DENY":
            source = record["Src IP"]
            counts[source] += 1
            destinations[source].add(record["Dest IP"])
            ports[source].add(record["Dest Port"])
    ranked = sorted(counts, key=lambda ip: (-counts[ip], ip_order(ip)))[:25]
    expected = [
        {
            "Src IP": ip,
            "denied": str(counts[ip]),
            "destinations": str(len(destinations[ip])),
            "ports": str(len(ports[ip])),
        }
        for ip in ranked
    ]
    assert rows == expected


def test_denies_by_port(flowlog, flow_logs):
    _, rows = run_saved(flowlog, flow_logs, "denies-by-port")
    counts: Counter[tuple[int, str]] = Counter()
    sources: defaultdict[tuple[int, str], set] = defaultdict(set)
    for record in flow_logs.records:
        if record["Verdict"] == "DENY":
            key = (record["Dest Port"], record["Proto"])
            counts[key] += 1
            sources[key].add(record["Src IP"])
    ranked = sorted(counts, key=lambda key: (-counts[key], key[0], key[1]))[:100]
    expected = [
        {
            "Dest Port": str(port),
            "Proto": proto,
            "denied": str(counts[(port, proto)]),
            "sources": str(len(sources[(port, proto)])),
        }
        for port, proto in ranked
    ]
    assert len(counts) > 10
    assert rows == expected


@pytest.mark.parametrize("ip", ["10.0.1.10", "10.0.9.17"])
def test_pod_flows(flowlog, flow_logs, ip):
    columns, rows = run_saved(flowlog, flow_logs, "pod-flows", "--param", f"ip={ip}")
    matching = [r for r in flow_logs.records if ip in (r["Src IP"], r["Dest IP"])]
    assert matching
    assert rows == [row_of(r, columns) for r in newest_first(matching, 1000)]


def test_verdicts_over_time(flowlog, flow_logs):
    _, rows = run_saved(flowlog, flow_logs, "verdicts-over-time")
    buckets: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for record in flow_logs.records:
        if record["Verdict"] in ("ACCEPT", "DENY"):
            start = timestamp_ms(record) // FIVE_MINUTES_MS * FIVE_MINUTES_MS
            buckets[start][record["Verdict"]] += 1
    expected = [
        {
            "period": shown_time(start),
            "accepted": str(buckets[start]["ACCEPT"]),
            "denied": str(buckets[start]["DENY"]),
        }
        for start in sorted(buckets)
    ]
    assert len(expected) > 30  # three hours of five-minute bins
    assert rows[0]["period"].endswith(":00:00.000")  # bins start on the 5-minute mark
    assert rows == expected


@pytest.mark.parametrize("policy", ["default-deny", "allow-ui"])
def test_policy_flows(flowlog, flow_logs, policy):
    """default-deny exists in two namespaces: both are its flows, told apart by a column."""
    columns, rows = run_saved(flowlog, flow_logs, "policy-flows", "--param", f"policy={policy}")
    matching = [r for r in flow_logs.records if r.get("Policy") == policy]
    assert rows == [row_of(r, columns) for r in newest_first(matching, 1000)]
    if policy == "default-deny":
        assert {row["Policy Namespace"] for row in rows} == {"stars", "client"}


def test_deny_share_by_namespace(flowlog, flow_logs):
    _, rows = run_saved(flowlog, flow_logs, "deny-share-by-namespace")
    flows: Counter[str] = Counter()
    denied: Counter[str] = Counter()
    for record in flow_logs.records:
        if "Namespace" in record and record["Verdict"] in ("ACCEPT", "DENY"):
            flows[record["Namespace"]] += 1
            denied[record["Namespace"]] += record["Verdict"] == "DENY"
    share = {ns: denied[ns] * 100 / flows[ns] for ns in flows}
    ranked = sorted(flows, key=lambda ns: (-share[ns], ns))
    expected = [
        {
            "Namespace": ns,
            "flows": str(flows[ns]),
            "denied": str(denied[ns]),
            "denyPercent": shown_number(share[ns]),
        }
        for ns in ranked
    ]
    assert rows == expected


@pytest.mark.parametrize("workload", ["deployment/backend", "statefulset/web"])
def test_workload_flows(flowlog, flow_logs, workload):
    columns, rows = run_saved(
        flowlog, flow_logs, "workload-flows", "--param", f"workload={workload}"
    )
    matching = [
        r for r in flow_logs.records if workload in (r.get("Src Workload"), r.get("Dest Workload"))
    ]
    assert matching
    assert rows == [row_of(r, columns) for r in newest_first(matching, 1000)]


def test_denied_workload_pairs(flowlog, flow_logs):
    _, rows = run_saved(flowlog, flow_logs, "denied-workload-pairs")
    keys = ("Src Namespace", "Src Workload", "Dest Namespace", "Dest Workload", "Dest Port")
    counts: Counter[tuple] = Counter(
        tuple(r[k] for k in keys)
        for r in flow_logs.records
        if r["Verdict"] == "DENY" and "Src Workload" in r and "Dest Workload" in r
    )
    ranked = sorted(counts, key=lambda k: (-counts[k], k[1], k[3], k[4]))[:100]
    expected = [
        {**{k: str(v) for k, v in zip(keys, key, strict=True)}, "denied": str(counts[key])}
        for key in ranked
    ]
    assert len(counts) > 20
    assert rows == expected


def test_time_range_applies_to_every_file(flowlog, flow_logs):
    """--since/--until select by each line's timestamp, across backups and the live file."""
    records = flow_logs.records
    since, until = timestamp_ms(records[1500]), timestamp_ms(records[4500])
    outcome = flowlog(
        "query",
        "--local",
        *flow_logs.paths,
        "stats count(*) as flows, min(@timestamp) as first, max(@timestamp) as last",
        "--since",
        iso(since),
        "--until",
        iso(until),
        "--output",
        "json",
    )
    assert outcome.status == 0, outcome.stderr
    assert outcome.json() == [
        {"flows": "3001", "first": shown_time(since), "last": shown_time(until)}
    ]


def test_backups_closed_before_the_range_are_not_needed(flowlog, flow_logs, tmp_path):
    """A range after the gzipped backup was rotated gives the same rows without it."""
    since = iso(timestamp_ms(flow_logs.records[-100]))
    query = "fields @timestamp, `Src IP` | sort @timestamp asc"
    everything = flowlog("query", "--local", *flow_logs.paths, query, "--since", since)
    newest = flowlog("query", "--local", flow_logs.live, query, "--since", since)
    assert everything.status == newest.status == 0
    assert everything.stdout == newest.stdout
    assert len(everything.stdout.splitlines()) == 2 + 100


def test_saved_files_load_from_the_repository():
    for query in list_saved_queries():
        assert load_saved_query(query.path) == query


def end_name(record: dict, end: str) -> str | None:
    """What the summary queries call an end: its workload, else its node, else its address."""
    for key in (f"{end} Workload", f"{end} Node", f"{end} IP"):
        if key in record:
            return record[key]
    return None


def summary_rows(records, keep, group, sums, order, limit) -> list[dict]:
    """The rows a stats-by query gives: ``group(record)`` -> a dict of by-columns."""
    totals: dict[tuple, dict[str, int]] = {}
    columns: dict[tuple, dict[str, str]] = {}
    for record in records:
        if not keep(record):
            continue
        by = group(record)
        key = tuple(by.items())
        columns[key] = {name: str(value) for name, value in by.items() if value is not None}
        for name, value in sums(record).items():
            totals.setdefault(key, {}).setdefault(name, 0)
            totals[key][name] += value
    ranked = sorted(totals, key=lambda key: order(dict(key), totals[key]))[:limit]
    return [{**columns[key], **{k: str(v) for k, v in totals[key].items()}} for key in ranked]


def first(value):
    """Missing values sort last in either direction."""
    return (value is None, value or "")


def test_top_talkers(flowlog, summary_logs):
    _, rows = run_saved(flowlog, summary_logs, "top-talkers")

    def group(r):
        return {
            "Src Namespace": r.get("Src Namespace"),
            "source": end_name(r, "Src"),
            "Dest Namespace": r.get("Dest Namespace"),
            "destination": end_name(r, "Dest"),
            "Dest Port": r["Dest Port"],
        }

    expected = summary_rows(
        summary_logs.records,
        lambda r: r["Verdict"] == "ACCEPT",
        group,
        lambda r: {"bytes": r["Bytes Sent"] + r["Bytes Received"], "flows": r["Flows Started"]},
        lambda by, t: (-t["bytes"], first(by["source"]), first(by["destination"]), by["Dest Port"]),
        25,
    )
    assert rows == expected


def test_denied_pairs(flowlog, summary_logs):
    _, rows = run_saved(flowlog, summary_logs, "denied-pairs")

    def group(r):
        return {
            "Src Namespace": r.get("Src Namespace"),
            "source": end_name(r, "Src"),
            "Dest Namespace": r.get("Dest Namespace"),
            "destination": end_name(r, "Dest"),
            "Dest Port": r["Dest Port"],
            "Policy": r.get("Policy"),
        }

    expected = summary_rows(
        summary_logs.records,
        lambda r: r["Verdict"] == "DENY",
        group,
        lambda r: {"attempts": r["Flows Started"], "packets": r["Packets Sent"]},
        lambda by, t: (
            -t["attempts"],
            first(by["source"]),
            first(by["destination"]),
            by["Dest Port"],
        ),
        50,
    )
    assert len(expected) > 20
    assert rows == expected


def test_namespace_egress(flowlog, summary_logs):
    _, rows = run_saved(flowlog, summary_logs, "namespace-egress", "--param", "namespace=stars")

    def group(r):
        return {
            "Dest Namespace": r.get("Dest Namespace"),
            "destination": end_name(r, "Dest"),
            "Dest Port": r["Dest Port"],
            "Verdict": r["Verdict"],
        }

    expected = summary_rows(
        summary_logs.records,
        lambda r: r["Direction"] == "egress" and r.get("Src Namespace") == "stars",
        group,
        lambda r: {
            "bytes_out": r["Bytes Sent"],
            "bytes_in": r["Bytes Received"],
            "flows": r["Flows Started"],
        },
        lambda by, t: (-t["bytes_out"], first(by["destination"]), by["Dest Port"]),
        50,
    )
    assert expected
    assert rows == expected
