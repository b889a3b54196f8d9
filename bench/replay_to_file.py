"""Benchmark 2: ``flowlog replay`` of 2,000,000 records to a rotating log file, as shipped.

This isolates the user-space pipeline (decode, count, name, format, write,
rotate) with the defaults: the rotated files gzipped on a background thread,
whose CPU is counted with the rest. The baseline does the same work the
per-event way (``bench/baseline.py``). Start-up (imports, lookup tables) is
measured on an empty file and taken off both.

It also says where each microsecond goes, stage by stage in one process on
the same records, and compares the compressor with zlib on the lines written:
speed and ratio, level by level.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

from isal import igzip

from bench.measure import Figure, Run, median, run_measured
from bench.workload import write_aws_v4_file
from flowlog.logfile import RotatingLogFile

RECORDS = 2_000_000
BASELINE_RECORDS = 200_000
RUNS = 3
CPU_TARGET_US = 0.6
RSS_TARGET_MB = 120


def replay(records: Path, logs: Path) -> Run:
    shutil.rmtree(logs, ignore_errors=True)
    log = logs / "network-policy-agent.log"
    flags = [
        "--log-file-max-size",
        "100",
        "--log-file-max-backups",
        "0",
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
    files = sorted(logs.iterdir())
    texts = [
        gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes() for f in files
    ]
    lines = sum(text.count(b"\n") for text in texts)
    if lines != RECORDS:
        raise RuntimeError(f"replay wrote {lines} lines of {RECORDS}")
    sample = b"".join(texts)[: 64 * 2**20]
    sample = sample[: sample.rfind(b"\n") + 1]
    shutil.rmtree(logs)

    name = "replay to file"
    cpu, peak = median(cpu_us), median(peaks)
    figures = [
        Figure(
            name,
            f"events/s ({RECORDS:,} records, {len(files) - 1} rotations)",
            median(rates),
            "events/s",
            better="higher",
        ),
        Figure(
            name,
            "CPU per event, all in (gzip included)",
            cpu,
            "us",
            f"<= {CPU_TARGET_US} us",
            cpu <= CPU_TARGET_US,
            baseline=median(baseline_us),
        ),
        Figure(
            name,
            "peak RSS",
            peak / 2**20,
            "MB",
            f"< {RSS_TARGET_MB} MB",
            peak < RSS_TARGET_MB * 2**20,
        ),
    ]
    figures += stage_costs(records)
    figures += compressors(sample)
    return figures


def per_line(work, data: bytes, repeat: int = 1) -> float:
    started = time.process_time()
    for _ in range(repeat):
        work()
    return (time.process_time() - started) / repeat / data.count(b"\n") * 1e6


def compressors(sample: bytes) -> list[Figure]:
    """ISA-L's igzip (what flowlog uses) beside zlib, on real flow-log lines."""
    figures = []
    for level in range(4):
        out = igzip.compress(sample, compresslevel=level)
        cost = per_line(lambda lvl=level: igzip.compress(sample, compresslevel=lvl), sample)
        default = ", the default" if level == 1 else ""
        label = f"igzip level {level}, per line (ratio {len(sample) / len(out):.1f}{default})"
        figures.append(Figure("compression", label, cost, "us"))
    for level in (1, 3, 6):
        out = gzip.compress(sample, compresslevel=level)
        cost = per_line(lambda lvl=level: gzip.compress(sample, compresslevel=lvl), sample)
        label = f"zlib level {level}, per line (ratio {len(sample) / len(out):.1f})"
        figures.append(Figure("compression", label, cost, "us"))
    return figures


def stage_costs(records_file: Path) -> list[Figure]:
    """Where a replayed event's CPU goes, stage by stage, in this process."""
    from flowlog.cluster.peers import Peers
    from flowlog.config import Settings
    from flowlog.pipeline import Pipeline
    from flowlog.records import LAYOUTS, decode

    layout = LAYOUTS["aws-v4"]
    raw = records_file.read_bytes()[: 8192 * 100 * layout.size]
    chunks = [raw[i : i + 8192 * layout.size] for i in range(0, len(raw), 8192 * layout.size)]
    count = len(raw) // layout.size
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        sink = RotatingLogFile(Path(directory) / "f.log", max_bytes=1 << 40, compress=False)
        pipeline = Pipeline(Settings(node_name="bench-node"), sink, peers=Peers(), always_log=True)
        batches = [decode(chunk, layout) for chunk in chunks]
        blocks: list[bytes] = []

        def timed(work) -> float:
            started = time.process_time()
            for batch in batches:
                work(batch)
            return (time.process_time() - started) / count * 1e6

        started = time.process_time()
        for chunk in chunks:
            decode(chunk, layout)
        decode_us = (time.process_time() - started) / count * 1e6
        count_us = timed(lambda b: (pipeline._count(b), pipeline._non_decreasing(b.epoch_ms)))
        name_us = timed(lambda b: pipeline.peers.resolve(b))
        format_us = timed(
            lambda b: blocks.extend(bytes(x) for x, _ in pipeline.formatter.chunks(b))
        )
        started = time.process_time()
        for block in blocks:
            sink.write(block, 1)
        write_us = (time.process_time() - started) / count * 1e6
        sink.close()
        text = b"".join(blocks)
    compress_us = per_line(lambda: igzip.compress(text, compresslevel=1), text)
    return [
        Figure("where it goes", "decode (the AWS layout to flowlog's)", decode_us, "us"),
        Figure("where it goes", "count, filter, order timestamps", count_us, "us"),
        Figure("where it goes", "name both ends", name_us, "us"),
        Figure("where it goes", "format (C)", format_us, "us"),
        Figure("where it goes", "write (the kernel's copy)", write_us, "us"),
        Figure("where it goes", "gzip (igzip level 1, its thread)", compress_us, "us"),
    ]
