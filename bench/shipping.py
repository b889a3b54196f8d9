"""Benchmark 4: the CloudWatch exporter (``flowlog ship``) sending 2,000,000 lines to
a local endpoint that checks every PutLogEvents call against the real limits
(``bench/cloudwatch_sink.py``; moto is too slow to measure a client), and
baseline (b): watchtower shipping the same lines to the same endpoint.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from bench.measure import Figure, Run, cpu_seconds, median, run_measured
from bench.workload import write_aws_v4_file
from flowlog.cloudwatch.limits import MAX_BATCH_BYTES, MAX_BATCH_EVENTS
from flowlog.demo.local_cloudwatch import DUMMY_CREDENTIALS, free_port
from tests.support.agent_process import wait_until

LINES = 2_000_000
WATCHTOWER_LINES = 200_000
RUNS = 5
STARTUP_RUNS = 3  # single-line ships per run, whose median is the fixed cost


class SinkProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.cloudwatch_sink", str(self.port)]
        )
        wait_until(self._answers, timeout=30, message="the validating endpoint")

    def _answers(self) -> bool:
        try:
            self.stats()
        except OSError:
            return False
        return True

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.endpoint}/stats", timeout=10) as response:
            return orjson.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def ship(log: Path, endpoint: str) -> Run:
    for stale in log.parent.glob("*.cloudwatch-checkpoint.json"):
        stale.unlink()
    os.environ.update(DUMMY_CREDENTIALS)
    return run_measured(
        [
            sys.executable,
            "-m",
            "flowlog",
            "ship",
            str(log),
            "--once",
            "--cloudwatch-endpoint",
            endpoint,
            "--region",
            "us-west-2",
            "--cluster-name",
            "bench",
            "--node-name",
            "bench-node",
        ]
    )


def watchtower(log: Path, endpoint: str, lines: int) -> Run:
    return run_measured(
        [sys.executable, "-m", "bench.baseline", "watchtower", str(log), endpoint, str(lines)]
    )


def sha256_seconds_per_byte() -> float:
    """What SigV4's SHA-256 of a request body costs here (hashlib, the same OpenSSL)."""
    body = os.urandom(MAX_BATCH_BYTES)
    times = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(20):
            hashlib.sha256(body).digest()
        times.append((time.process_time() - started) / 20 / len(body))
    return median(times)


def run(work: Path) -> list[Figure]:
    logs = work / "shipping"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    log = logs / "network-policy-agent.log"
    records = write_aws_v4_file(work / "shipping-records.bin", LINES)
    subprocess.run(
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
            "--log-file-max-size",
            "4096",
            "--node-name",
            "ip-192-168-12-34.us-west-2.compute.internal",
        ],
        check=True,
    )
    # Fixed costs (start-up, the client, the destination check) are measured by
    # shipping a single line, and taken off: what is left is the cost per event.
    single = logs / "single" / "network-policy-agent.log"
    single.parent.mkdir()
    with log.open("rb") as lines:
        single.write_bytes(lines.readline())

    cpu_us, rates, peaks, fills, ratios, breaches = [], [], [], [], [], []
    endpoint_us, hashing_us = [], []
    for _ in range(RUNS):
        sink = SinkProcess()
        try:
            # A start costs 0.6 to 1.0 s of CPU from one process to the next here.
            startups = [ship(single, sink.endpoint) for _ in range(STARTUP_RUNS)]
            fixed_cpu = median([startup.cpu for startup in startups])
            fixed_wall = median([startup.wall for startup in startups])
            before = len(sink.stats()["calls"])
            endpoint_before = cpu_seconds(sink.process.pid)
            full = ship(log, sink.endpoint)
            endpoint_us.append((cpu_seconds(sink.process.pid) - endpoint_before) / LINES * 1e6)
            stats = sink.stats()
        finally:
            sink.stop()
        calls = stats["calls"][before:]
        hashing_us.append(sha256_seconds_per_byte() * sum(b for _, _, b in calls) / LINES * 1e6)
        events = sum(count for count, _, _ in calls)
        if events != LINES:
            raise RuntimeError(f"the endpoint received {events} events of {LINES}")
        cpu_us.append((full.cpu - fixed_cpu) / (LINES - 1) * 1e6)
        rates.append((LINES - 1) / (full.wall - fixed_wall))
        print(
            f"  run {len(cpu_us)}: {cpu_us[-1]:.3f} us/event ({full.cpu:.2f} s of CPU, "
            f"{fixed_cpu:.2f} s of it fixed), {rates[-1]:,.0f} events/s; "
            f"the endpoint {endpoint_us[-1]:.3f} us/event",
            flush=True,
        )
        peaks.append(full.peak_rss)
        # How full each call was by whichever limit binds; the last call takes the rest.
        fills += [
            max(count / MAX_BATCH_EVENTS, size / MAX_BATCH_BYTES) for count, size, _ in calls[:-1]
        ]
        total_bytes = sum(size for _, size, _ in calls)
        minimum = max(math.ceil(LINES / MAX_BATCH_EVENTS), math.ceil(total_bytes / MAX_BATCH_BYTES))
        ratios.append(len(calls) / minimum)
        breaches += stats["breaches"]
    per_call = events / len(calls)

    sink = SinkProcess()
    try:
        watchtower_fixed = median(
            [watchtower(log, sink.endpoint, 1).cpu for _ in range(STARTUP_RUNS)]
        )
        before = len(sink.stats()["calls"])
        full = watchtower(log, sink.endpoint, WATCHTOWER_LINES)
        watchtower_stats = sink.stats()
    finally:
        sink.stop()
    watchtower_calls = watchtower_stats["calls"][before:]
    received = sum(count for count, _, _ in watchtower_calls)
    print(
        f"  watchtower: {received:,} of {WATCHTOWER_LINES:,} lines accepted, "
        f"{len(watchtower_calls)} calls, {len(watchtower_stats['breaches'])} "
        f"calls refused: {watchtower_stats['breaches'][:1]}",
        flush=True,
    )
    watchtower_us = (full.cpu - watchtower_fixed) / (WATCHTOWER_LINES - 1) * 1e6
    shutil.rmtree(logs)

    name = "shipping"
    cpu = median(cpu_us)
    worst_fill = min(fills) if fills else 1.0
    return [
        Figure(name, f"events/s ({LINES:,} lines)", median(rates), "events/s", better="higher"),
        Figure(
            name, "client CPU per event", cpu, "us", "<= 0.5 us", cpu <= 0.5, baseline=watchtower_us
        ),
        Figure(name, "of it SHA-256 of the bodies (SigV4)", median(hashing_us), "us"),
        Figure(name, "validating endpoint CPU per event (same cores)", median(endpoint_us), "us"),
        Figure(
            name,
            "fullest limit per call, worst call but the last",
            worst_fill * 100,
            "%",
            ">= 95%",
            worst_fill >= 0.95,
        ),
        Figure(
            name,
            f"calls per million events (about {per_call:,.0f} events a call)",
            len(calls) / LINES * 1e6,
            "calls",
        ),
        Figure(
            name,
            "calls over the minimum the limits allow",
            (median(ratios) - 1) * 100,
            "%",
            "<= 5%",
            median(ratios) <= 1.05,
        ),
        Figure(name, "calls breaking a limit", len(breaches), "calls", "0", not breaches),
        Figure(
            name,
            "client peak RSS",
            median(peaks) / 2**20,
            "MB",
            "< 120 MB",
            median(peaks) < 120 * 2**20,
        ),
    ]
