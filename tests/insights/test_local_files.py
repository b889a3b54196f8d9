"""--local: which files are read and how, what a line becomes, what is said about bad lines."""

from __future__ import annotations

import gzip

import orjson

from tests.insights.flow_logs import backup_stamp, generate_records, iso, timestamp_ms


def lines(records: list[dict]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def test_without_paths_the_configured_log_and_its_backups_are_read(flowlog, flow_logs, tmp_path):
    unrelated = flow_logs.live.parent / "ipamd.log"
    unrelated.write_text("not a flow log\n")
    outcome = flowlog(
        "query",
        "--local",
        "stats count(*) as n",
        "--log-file",
        flow_logs.live,
        "--output",
        "json",
    )
    assert outcome.status == 0, outcome.stderr
    assert outcome.json() == [{"n": str(len(flow_logs.records))}]
    assert outcome.stderr == ""  # ipamd.log was not read
    unrelated.unlink()


def test_no_flow_log_at_all_is_one_line(flowlog, tmp_path):
    outcome = flowlog("query", "--local", "--log-file", tmp_path / "none.log", "denied-flows")
    assert outcome.status == 2
    none = tmp_path / "none.log"
    assert outcome.stderr == (
        f"flowlog: error: --local: no flow log at {none} (name the files to read)\n"
    )
    outcome = flowlog("query", "--local", tmp_path / "gone.log", "denied-flows")
    assert outcome.status == 2
    assert outcome.stderr == f"flowlog: error: --local {tmp_path / 'gone.log'}: no such file\n"


def test_source_fields_message_stream_and_log(flowlog, tmp_path):
    record = generate_records(1)[0]
    path = tmp_path / "network-policy-agent.log"
    path.write_bytes(lines([record]))
    outcome = flowlog(
        "query",
        "--local",
        path,
        "fields @timestamp, @message, @logStream, @log, timestamp",
        "--output",
        "json",
    )
    assert outcome.status == 0, outcome.stderr
    stamp = record["timestamp"]
    assert outcome.json() == [
        {
            "@timestamp": f"{stamp[:10]} {stamp[11:23]}",
            "@message": orjson.dumps(record).decode(),
            "@logStream": "network-policy-agent.log",
            "@log": str(path),
            "timestamp": stamp,
        }
    ]


def test_gzip_is_recognised_by_content_and_crlf_is_tolerated(flowlog, tmp_path):
    records = generate_records(30)
    hidden = tmp_path / "copied-without-suffix"
    hidden.write_bytes(gzip.compress(lines(records[:10])))
    windows = tmp_path / "windows.log"
    windows.write_bytes(lines(records[10:]).replace(b"\n", b"\r\n"))
    outcome = flowlog(
        "query",
        "--local",
        hidden,
        windows,
        "stats count(*) as n, count_distinct(timestamp) as t",
        "--output",
        "json",
    )
    assert outcome.status == 0, outcome.stderr
    assert outcome.json() == [{"n": "30", "t": "30"}]


def test_lines_that_are_not_flow_log_json_are_skipped_and_counted_once(flowlog, tmp_path):
    records = generate_records(5)
    path = tmp_path / "network-policy-agent.log"
    path.write_bytes(
        lines(records[:2])
        + b"garbage\n[1, 2]\n"
        + b'{"level":"info","msg":"no timestamp"}\n'
        + b'{"level":"info","timestamp":"yesterday"}\n'
        + b"\n"
        + lines(records[2:])
        + b'{"level":"info","timestamp":"2026-11-22T0'  # a line still being written
    )
    outcome = flowlog("query", "--local", path, "stats count(*) as n", "--output", "json")
    assert outcome.status == 0
    assert outcome.json() == [{"n": "5"}]
    assert outcome.stderr == (
        "flowlog: warning: skipped 5 lines that are not flow-log JSON with a timestamp\n"
    )


def test_an_unfinished_gzip_backup_gives_what_it_has(flowlog, tmp_path):
    records = generate_records(2000)
    whole = gzip.compress(lines(records))
    stamp = backup_stamp(timestamp_ms(records[-1]) + 1)
    path = tmp_path / f"network-policy-agent-{stamp}.log.gz"
    path.write_bytes(whole[: len(whole) // 2])
    outcome = flowlog("query", "--local", path, "stats count(*) as n", "--output", "json")
    assert outcome.status == 0
    count = int(outcome.json()[0]["n"])
    assert 0 < count < 2000
    [warning] = outcome.stderr.splitlines()
    assert warning.startswith(
        f"flowlog: warning: read up to a damaged or unfinished file: {path}: "
    )


def test_nested_json_is_flattened_with_dots(flowlog, tmp_path):
    path = tmp_path / "nested.log"
    record = {"timestamp": iso(1_795_000_000_000), "k8s": {"pod": "a", "labels": ["x", "y"]}}
    path.write_bytes(lines([record]))
    outcome = flowlog(
        "query", "--local", path, "fields k8s.pod, `k8s.labels.1`", "--output", "json"
    )
    assert outcome.json() == [{"k8s.pod": "a", "k8s.labels.1": "y"}]


def test_the_query_may_come_before_or_after_the_paths(flowlog, flow_logs):
    after = flowlog("query", "--local", flow_logs.plain_backup, flow_logs.live, "stats count(*)")
    before = flowlog("query", "stats count(*)", "--local", flow_logs.plain_backup, flow_logs.live)
    assert after.status == before.status == 0
    assert after.stdout == before.stdout
    assert after.stdout.split()[-1] == str(len(flow_logs.records) * 2 // 3)


def test_time_flags(flowlog, flow_logs):
    records = flow_logs.records
    bad = flowlog("query", "--local", flow_logs.live, "stats count(*)", "--since", "yesterday")
    assert bad.status == 2
    assert bad.stderr == (
        "flowlog: error: --since: expected a duration ago (15m, 1h, 2d), a time "
        "(2026-11-22T05:00:00Z) or 'now', got 'yesterday'\n"
    )
    backwards = flowlog(
        "query",
        "--local",
        flow_logs.live,
        "stats count(*)",
        "--since",
        iso(timestamp_ms(records[-1])),
        "--until",
        iso(timestamp_ms(records[0])),
    )
    assert backwards.status == 2
    assert backwards.stderr == "flowlog: error: --until: is before --since\n"
    # A time without a zone is UTC, as in the flow log; epoch seconds work too.
    last = timestamp_ms(records[-1])
    naive = iso(last).rstrip("Z").replace("T", " ")
    for since in (naive, str(last / 1000)):
        outcome = flowlog(
            "query",
            "--local",
            flow_logs.live,
            "stats count(*) as n",
            "--since",
            since,
            "--output",
            "json",
        )
        assert outcome.json() == [{"n": "1"}], since
    # A duration counts back from now; --until bounds the other end.
    everything = flowlog(
        "query",
        "--local",
        flow_logs.live,
        "stats count(*) as n",
        "--since",
        "100000d",
        "--until",
        "2100-01-01T00:00:00Z",
        "--output",
        "json",
    )
    assert everything.json() == [{"n": str(len(records) - 4000)}]


def test_a_backup_caught_while_being_compressed_is_read_once(flowlog, tmp_path):
    """Rotation gzips a backup beside it, then removes the plain one: both may exist."""
    records = generate_records(40)
    stamp = backup_stamp(timestamp_ms(records[19]) + 1)
    plain = tmp_path / f"network-policy-agent-{stamp}.log"
    plain.write_bytes(lines(records[:20]))
    (tmp_path / f"{plain.name}.gz").write_bytes(gzip.compress(lines(records[:20]))[:30])
    live = tmp_path / "network-policy-agent.log"
    live.write_bytes(lines(records[20:]))
    outcome = flowlog(
        "query", "--local", "stats count(*) as n", "--log-file", live, "--output", "json"
    )
    assert outcome.status == 0, outcome.stderr
    assert outcome.json() == [{"n": "40"}]
    assert outcome.stderr == ""
