"""``flowlog ship``: one-off uploads, following, signals, and a SIGKILL mid-shipping."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from flowlog.cli import main
from flowlog.cloudwatch.checkpoint import checkpoint_path_for, read_checkpoint
from flowlog.cloudwatch.cli import _live_files
from flowlog.cloudwatch.exporter import MAX_IN_FLIGHT
from flowlog.cloudwatch.limits import MAX_BATCH_EVENTS
from flowlog.config import Settings
from flowlog.demo.local_cloudwatch import LocalCloudWatch
from flowlog.logfile import backup_name
from tests.cloudwatch.conftest import stored_messages
from tests.cloudwatch.flow_lines import lines, now_ms, text
from tests.support.agent_process import wait_until
from tests.support.cloudwatch_proxy import CloudWatchProxy

HOUR_MS = 3_600_000


def ship_arguments(settings: Settings, log_path: Path, *extra: str) -> list[str]:
    return [
        "ship",
        str(log_path),
        "--cloudwatch-endpoint",
        settings.cloudwatch_endpoint,
        "--region",
        settings.region,
        "--cluster-name",
        settings.cluster_name,
        "--node-name",
        settings.node_name,
        "--cloudwatch-flush-interval",
        "0.2",
        *extra,
    ]


def start_ship(settings: Settings, log_path: Path, *extra: str) -> subprocess.Popen:
    """``flowlog ship`` in a child process, its messages appended to ``ship.err`` beside
    the log (a file, so a chatty child can never block on a full pipe)."""
    with (log_path.parent / "ship.err").open("a") as messages:
        return subprocess.Popen(
            [sys.executable, "-m", "flowlog", *ship_arguments(settings, log_path, *extra)],
            stdout=subprocess.DEVNULL,
            stderr=messages,
        )


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)


@pytest.mark.cloudwatch
def test_once_sends_backups_and_live_file_then_a_second_run_sends_nothing(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
) -> None:
    start = now_ms() - HOUR_MS
    old, newer, live = (
        lines(300, start_ms=start, aws_every=2),
        lines(300, start_ms=start + 1000, first_number=300, aws_every=2),
        lines(300, start_ms=start + 2000, first_number=600, aws_every=2),
    )
    compressed = log_path.parent / (backup_name(log_path, start + 500) + ".gz")
    compressed.write_bytes(gzip.compress(text(old)))
    (log_path.parent / backup_name(log_path, start + 1500)).write_bytes(text(newer))
    log_path.write_bytes(text(live))

    assert main(ship_arguments(settings, log_path, "--once")) == 0
    stored = stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)
    assert Counter(stored) == Counter(old + newer + live)
    calls = len(cloudwatch_proxy.calls_of("PutLogEvents"))
    checkpoint = read_checkpoint(checkpoint_path_for(log_path))
    assert checkpoint is not None and checkpoint.offset == log_path.stat().st_size

    assert main(ship_arguments(settings, log_path, "--once")) == 0
    assert len(cloudwatch_proxy.calls_of("PutLogEvents")) == calls


@pytest.mark.cloudwatch
def test_killed_mid_shipping_and_restarted_delivers_everything(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
) -> None:
    items = lines(40_000, start_ms=now_ms() - HOUR_MS)
    log_path.write_bytes(text(items))
    cloudwatch_proxy.latency["PutLogEvents"] = 0.5  # slow enough to be caught mid-way
    process = start_ship(settings, log_path, "--once")
    try:
        wait_until(
            lambda: read_checkpoint(checkpoint_path_for(log_path)),
            message="a first checkpoint",
        )
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        stop_process(process)
    checkpoint = read_checkpoint(checkpoint_path_for(log_path))
    assert checkpoint is not None and 0 < checkpoint.offset < log_path.stat().st_size

    cloudwatch_proxy.latency.clear()
    process = start_ship(settings, log_path, "--once")
    try:
        assert process.wait(120) == 0, (log_path.parent / "ship.err").read_text()
    finally:
        stop_process(process)
    stored = Counter(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings))
    assert set(stored) == set(items)
    duplicates = sum(stored.values()) - len(items)
    assert duplicates <= MAX_IN_FLIGHT * MAX_BATCH_EVENTS


@pytest.mark.cloudwatch
def test_following_ships_new_lines_and_sigterm_drains_and_checkpoints(
    settings: Settings, log_path: Path, cloudwatch: LocalCloudWatch
) -> None:
    start = now_ms() - HOUR_MS
    first = lines(500, start_ms=start)
    later = lines(20, start_ms=start + 5000, first_number=500)
    log_path.write_bytes(text(first))
    process = start_ship(settings, log_path)
    try:
        wait_until(
            lambda: stored_messages(cloudwatch.endpoint, cloudwatch.region, settings) == first,
            message="the first lines in CloudWatch",
        )
        with log_path.open("ab") as live:
            live.write(text(later))
        wait_until(
            lambda: len(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)) == 520,
            message="lines appended while following",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        stop_process(process)
    checkpoint = read_checkpoint(checkpoint_path_for(log_path))
    assert checkpoint is not None and checkpoint.offset == log_path.stat().st_size


def test_a_missing_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ship", str(tmp_path / "absent" / "network-policy-agent.log")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("flowlog: error: ") and error.count("\n") == 1


def test_backups_named_beside_their_live_file_are_not_shipped_twice(log_path: Path) -> None:
    log_path.write_bytes(b"")
    backup = log_path.parent / backup_name(log_path, now_ms())
    backup.write_bytes(b"")
    other = log_path.parent / "other.log"
    assert _live_files([backup, log_path, other, log_path]) == [log_path, other]


def test_help_has_worked_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowlog", "ship", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
        check=True,
    )
    assert "examples:" in result.stdout and "--once" in result.stdout
