"""Benchmark 5: ``flowlog map`` of 1,000,000 flow-log lines.

Two inputs. A busy cluster's flow log (``tests/support/cluster_flows.py``:
184 pods in 12 namespaces, 8 nodes, outside networks), spread over four
gzipped backups, a plain one and the live file, as a node keeps them. And the
worst case for memory: every line from a new outside address, as the clients
of a public service would be, which the tally must merge into networks as it
reads. The figures are the wall time of the whole command (start-up
included), its peak RSS, and the size of the page it writes.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench.measure import Figure, Run, median, run_measured
from tests.support.cluster_flows import START_SECONDS, flow_lines, make_cluster, write_rotated

LINES = 1_000_000
FILES = 6
GZIPPED = 4
RUNS = 3
TARGET_SECONDS = 15.0
TARGET_PAGE_BYTES = 5 * 2**20


def public_clients(count: int, seed: int = 3) -> Iterator[dict]:
    """Lines of a public frontend reached by ``count`` random outside addresses."""
    rng = random.Random(seed)
    for index in range(count):
        seconds, millis = divmod(START_SECONDS * 1000 + index, 1000)
        octets = (
            rng.randint(1, 223),
            rng.randint(0, 255),
            rng.randint(0, 255),
            rng.randint(1, 254),
        )
        yield {
            "level": "info",
            "timestamp": f"2026-11-18T00:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{millis:03d}Z",
            "logger": "ebpf-client",
            "msg": "Flow Info: ",
            "Src IP": ".".join(map(str, octets)),
            "Src Port": rng.randint(32768, 60999),
            "Dest IP": "10.1.0.10",
            "Dest Port": 443,
            "Proto": "TCP",
            "Verdict": "DENY" if index % 9 == 0 else "ACCEPT",
            "Direction": "ingress",
            "Tier": "NETWORK_POLICY",
            "Packet Size": 74,
            "Node": "ip-10-0-0-10",
            "Pod": "frontend-7d9f8b6c4-x2x9k",
            "Namespace": "web",
            "Policy": "allow-public",
            "Policy Namespace": "web",
            "Dest Pod": "frontend-7d9f8b6c4-x2x9k",
            "Dest Namespace": "web",
            "Dest Workload": "deployment/frontend",
        }


def map_files(files: list[Path], page: Path) -> list[Run]:
    command = [sys.executable, "-m", "flowlog", "map", *map(str, files), "--output", str(page)]
    return [run_measured(command) for _ in range(RUNS)]


def figures(name: str, what: str, runs: list[Run], page: Path) -> list[Figure]:
    seconds = median([run.wall for run in runs])
    page_bytes = page.stat().st_size
    return [
        Figure(
            name,
            f"seconds for {LINES:,} lines, {what}",
            seconds,
            "s",
            f"< {TARGET_SECONDS:g} s",
            seconds < TARGET_SECONDS,
        ),
        Figure(name, "peak RSS", max(run.peak_rss for run in runs) / 2**20, "MB"),
        Figure(
            name,
            "page size",
            page_bytes / 2**20,
            "MB",
            f"< {TARGET_PAGE_BYTES / 2**20:g} MB",
            page_bytes < TARGET_PAGE_BYTES,
        ),
    ]


def run(work: Path) -> list[Figure]:
    logs = work / "flowmap-logs"
    per_file = -(-LINES // FILES)
    files = write_rotated(logs, flow_lines(make_cluster(), LINES), per_file, GZIPPED)
    page = work / "flow-map.html"
    results = figures(
        "map", f"a cluster ({GZIPPED} of {len(files)} files gzipped)", map_files(files, page), page
    )
    shutil.rmtree(logs)

    clients = work / "public-clients.log"
    with clients.open("wb") as file:
        for line in public_clients(LINES):
            file.write(orjson.dumps(line) + b"\n")
    results += figures("map", "each from a new address", map_files([clients], page), page)
    clients.unlink()
    return results
