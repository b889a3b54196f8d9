"""Benchmark 2: ``flowlog replay`` of 2,000,000 records to a rotating log file.

This isolates the user-space pipeline (decode, format, write, rotate). The
baseline does the same work the per-event way (``bench/baseline.py``).
Start-up (imports, lookup tables) is measured on an empty file and taken off
both. Compression is left off and measured on its own: gzip runs on a
background thread and would otherwise be most of the figure.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import time
from pathlib import Path

from bench.measure import Figure, Run, median, run_measured
from bench.workload import write_aws_v4_file

RECORDS = 2_000_000
BASELINE_RECORDS = 200_000
RUNS = 3


def replay(records: Path, logs: Path) -> Run:
    shutil.rmtree(logs, ignore_errors=True)
    log = logs / "network-policy-agent.log"
    flags = [
        "--log-file-max-size",
        "100",
        "--log-file-max-backups",
        "0",
        "--log-file-compress=false",
        "--node-name",
        "bench-node",
    ]
    return run_measured(
        [
            sys.executable,
            "-m",
            "flowlog",
            "replay",
            str(records),
            "--layout",
            "aws-v4",
            "--log-file",
            str(log),
            *flags,
        ]
    )


def baseline(records: Path, output: Path) -> Run:
    return run_measured(
        [sys.executable, "-m", "bench.baseline", "replay", str(records), str(output)]
    )


def run(work: Path) -> list[Figure]:
    records = write_aws_v4_file(work / "records.bin", RECORDS)
    baseline_records = write_aws_v4_file(work / "baseline-records.bin", BASELINE_RECORDS)
    empty = work / "empty.bin"
    empty.write_bytes(b"")
    logs = work / "replay-logs"
    cpu_us, rates, peaks, baseline_us = [], [], [], []
    for _ in range(RUNS):
        startup, full = replay(empty, logs), replay(records, logs)
        cpu_us.append((full.cpu - startup.cpu) / RECORDS * 1e6)
        rates.append(RECORDS / (full.wall - startup.wall))
        peaks.append(full.peak_rss)
        startup, full = baseline(empty, work / "b.log"), baseline(baseline_records, work / "b.log")
        baseline_us.append((full.cpu - startup.cpu) / BASELINE_RECORDS * 1e6)
    files = list(logs.iterdir())
    lines = sum(path.read_bytes().count(b"\n") for path in files)
    if lines != RECORDS:
        raise RuntimeError(f"replay wrote {lines} lines of {RECORDS}")

    sample = files[0].read_bytes()[: 64 * 2**20]
    started = time.process_time()
    gzip.compress(sample, compresslevel=6)
    gzip_us = (time.process_time() - started) / sample.count(b"\n") * 1e6
    shutil.rmtree(logs)

    name = "replay to file"
    cpu, peak = median(cpu_us), median(peaks)
    return [
        Figure(
            name,
            f"events/s ({RECORDS:,} records, {len(files) - 1} rotations)",
            median(rates),
            "events/s",
            better="higher",
        ),
        Figure(
            name, "CPU per event", cpu, "us", "<= 1 us", cpu <= 1.0, baseline=median(baseline_us)
        ),
        Figure(name, "peak RSS", peak / 2**20, "MB", "< 150 MB", peak < 150 * 2**20),
        Figure(name, "gzip of a rotated file, per event", gzip_us, "us", "background thread"),
    ]
