"""flowlog replay: captured records through the agent's own pipeline and sinks."""

import gzip
import subprocess
import sys

import orjson

from tests.core.test_records import aws_v4_record, aws_v6_record


def replay(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowlog", "replay", *map(str, argv)],
        capture_output=True,
        timeout=120,
        **kwargs,
    )


def records_v4(count: int) -> bytes:
    return b"".join(
        aws_v4_record(
            f"10.0.{i // 250 % 250}.{i % 250}",
            1024 + i % 60000,
            "10.1.0.7",
            80 + i % 3,
            (6, 17, 1)[i % 3],
            i % 3,
            60 + i % 1400,
            i % 2,
            2,
        )
        for i in range(count)
    )


def test_every_record_becomes_a_line(tmp_path):
    capture = tmp_path / "events.bin"
    capture.write_bytes(records_v4(1000))
    log = tmp_path / "network-policy-agent.log"
    result = replay(capture, "--layout", "aws-v4", "--log-file", log, "--node-name", "n1")
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert len(lines) == 1000
    assert lines[7]["Src IP"] == "10.0.0.7" and lines[7]["Src Port"] == 1031
    assert [line["Verdict"] for line in lines[:3]] == ["DENY", "ACCEPT", "EXPIRED/DELETED"]
    assert [line["Proto"] for line in lines[:3]] == ["TCP", "UDP", "ICMP"]
    assert {line["Node"] for line in lines} == {"n1"}


def test_replay_writes_the_log_even_with_policy_event_logs_off(tmp_path):
    capture = tmp_path / "events.bin"
    capture.write_bytes(records_v4(3))
    log = tmp_path / "flows.log"
    result = replay(
        capture, "--layout", "aws-v4", "--log-file", log, "--enable-policy-event-logs=false"
    )
    assert result.returncode == 0 and len(log.read_bytes().splitlines()) == 3


def test_verdict_selection_applies(tmp_path):
    capture = tmp_path / "events.bin"
    capture.write_bytes(records_v4(300))
    log = tmp_path / "flows.log"
    assert (
        replay(
            capture, "--layout", "aws-v4", "--log-file", log, "--flow-log-verdicts", "DENY"
        ).returncode
        == 0
    )
    verdicts = {orjson.loads(line)["Verdict"] for line in log.read_bytes().splitlines()}
    assert verdicts == {"DENY"} and len(log.read_bytes().splitlines()) == 100


def test_a_partial_record_at_the_end(tmp_path):
    capture = tmp_path / "events.bin"
    capture.write_bytes(
        aws_v6_record("2001:db8::1", 1, "2001:db8::2", 2, 6, 0, 60, 0, 2) * 3 + b"xyz"
    )
    log = tmp_path / "flows.log"
    result = replay(capture, "--layout", "aws-v6", "--log-file", log)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"flowlog: {capture}: partial record at byte offset 168 (3 of 56 bytes)"
    ]
    assert len(log.read_bytes().splitlines()) == 3


def test_to_stdout(tmp_path):
    capture = tmp_path / "events.bin"
    capture.write_bytes(records_v4(5))
    result = replay(capture, "--layout", "aws-v4", "--log-file", "stdout")
    assert result.returncode == 0
    assert [orjson.loads(line)["Src Port"] for line in result.stdout.splitlines()] == [
        1024,
        1025,
        1026,
        1027,
        1028,
    ]


def test_with_rotation_and_compression_nothing_is_lost_or_split(tmp_path):
    capture = tmp_path / "events.bin"
    capture.write_bytes(records_v4(20_000))
    logs = tmp_path / "logs"
    result = replay(
        capture,
        "--layout",
        "aws-v4",
        "--log-file",
        logs / "network-policy-agent.log",
        "--log-file-max-size",
        "1",
        "--log-file-max-backups",
        "0",
    )
    assert result.returncode == 0, result.stderr
    lines = []
    for path in sorted(logs.iterdir()):  # backups sort by time, the live file last
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        assert data.endswith(b"\n") and len(data) <= 1024 * 1024
        lines += data.splitlines()
    assert len(lines) == 20_000
    assert [orjson.loads(line)["Src Port"] for line in lines[:3]] == [1024, 1025, 1026]
    assert len(list(logs.iterdir())) >= 6
