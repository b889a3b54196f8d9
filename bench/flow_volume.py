"""What flow logs cost in CloudWatch, and what counting flows costs the data plane.

A busy node: 50 pods, each serving TCP 8080 under a PolicyEndpoint that
isolates its ingress; short connections between random pairs at 2,000 a
second for 60 s (each sends a request and reads the echo), and a few long
flows that carry data all along. The real agent, with its programs, writes
the flow log twice over the same traffic: a line per verdict and per flow end
(the default), then summaries (``--flow-log-aggregate 60``). For each, the
bytes CloudWatch would ingest (each line plus 26 bytes, the API's count) per
hour of such traffic, and the month's cost at $0.50 per GB; per-verdict lines
are the default log without its flow ends, what flowlog wrote before flows
had ends.

The kernel's BPF statistics (``BPF_ENABLE_STATS``) give the programs' run
time per packet over the same traffic: nearly all of them packets of flows
already allowed, which conntrack counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import socket
import time
from pathlib import Path

import orjson

from bench.measure import Figure, cpu_seconds
from flowlog import bpf_syscall
from flowlog.dataplane.programs import EGRESS_PROGRAM, INGRESS_PROGRAM, PinLayout
from flowlog.demo.topology import Pod, Topology
from tests.dataplane.conftest import new_pin_dir, peer, policy_document, write_policy
from tests.support.agent_process import AgentProcess, wait_until

PODS = 50
PORT = 8080
RATE = 2000  # connections a second
SECONDS = 60.0
LONG_FLOWS = 5
REQUEST = b"x" * 200
PRICE_PER_GB = 0.50
HOURS_PER_MONTH = 730
EVENT_OVERHEAD = 26  # bytes CloudWatch counts per event besides its message
TARGET_RATIO = 20
MAX_OPEN = 2000


async def serve(listener: socket.socket) -> None:
    loop = asyncio.get_running_loop()

    async def echo(connection: socket.socket) -> None:
        with connection:
            while data := await loop.sock_recv(connection, 65536):
                await loop.sock_sendall(connection, data)

    tasks = set()
    while True:
        connection, _ = await loop.sock_accept(listener)
        connection.setblocking(False)
        task = asyncio.ensure_future(echo(connection))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def connect_once(source: Pod, target: Pod, slots: asyncio.Semaphore) -> bool:
    loop = asyncio.get_running_loop()
    async with slots:
        return await _exchange(loop, source, target)


async def _exchange(loop: asyncio.AbstractEventLoop, source: Pod, target: Pod) -> bool:
    with source.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (target.ipv4, PORT)), 2)
            await loop.sock_sendall(sock, REQUEST)
            received = 0
            while received < len(REQUEST):
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2)
                if not chunk:
                    return False
                received += len(chunk)
        except (OSError, TimeoutError):
            return False
    return True


async def long_flow(source: Pod, target: Pod, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    with source.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (target.ipv4, PORT))
        while not stop.is_set():
            await loop.sock_sendall(sock, b"y" * 4096)
            await loop.sock_recv(sock, 65536)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


async def traffic(pods: list[Pod], listeners: list[socket.socket]) -> tuple[int, int]:
    """The workload; returns (connections made, connections that failed)."""
    rng = random.Random(7)
    servers = [asyncio.ensure_future(serve(listener)) for listener in listeners]
    stop = asyncio.Event()
    longs = [
        asyncio.ensure_future(long_flow(*rng.sample(pods, 2), stop)) for _ in range(LONG_FLOWS)
    ]
    # Connections open at once, bounded: two sockets each, well inside the fd limit.
    slots = asyncio.Semaphore(MAX_OPEN)
    started = time.monotonic()
    made, failed, pending = 0, 0, set()
    while (elapsed := time.monotonic() - started) < SECONDS:
        due = int(elapsed * RATE) - made
        for _ in range(due):
            task = asyncio.ensure_future(connect_once(*rng.sample(pods, 2), slots))
            pending.add(task)
            task.add_done_callback(pending.discard)
            made += 1
        await asyncio.sleep(0.005)
    results = await asyncio.gather(*pending)
    failed += results.count(False)
    stop.set()
    await asyncio.gather(*longs, return_exceptions=True)
    for server in servers:
        server.cancel()
    await asyncio.gather(*servers, return_exceptions=True)
    return made, failed


def run_workload(node: Topology, pods: list[Pod], work: Path, *flags: str) -> dict:
    pins = PinLayout(new_pin_dir())
    log = work / "logs" / f"flows{'-'.join(flags)}.log"
    agent = AgentProcess(
        "--enable-policy-event-logs",
        "--policy-dir",
        str(work / "policies"),
        "--bpf-pin-dir",
        str(pins.root),
        "--log-file",
        str(log),
        "--log-file-max-size",
        "2000",
        "--node-name",
        "bench-node",
        *flags,
        namespace=node.node,
    )
    try:
        agent.wait_ready(timeout=120)
        listeners = []
        for pod in pods:
            listener = pod.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((pod.ipv4, PORT))
            listener.listen(1024)
            listener.setblocking(False)
            listeners.append(listener)
        stats = bpf_syscall.enable_run_time_stats()
        programs = [
            bpf_syscall.obj_get(str(pins.prog(name))) for name in (INGRESS_PROGRAM, EGRESS_PROGRAM)
        ]
        before_runs = [bpf_syscall.prog_run_stats(fd) for fd in programs]
        cpu_before = cpu_seconds(agent.process.pid)
        started = time.monotonic()
        made, failed = asyncio.run(traffic(pods, listeners))
        seconds = time.monotonic() - started
        runs = [bpf_syscall.prog_run_stats(fd) for fd in programs]
        for sock in listeners:
            sock.close()
        ns = sum(r[0] - b[0] for r, b in zip(runs, before_runs, strict=True))
        count = sum(r[1] - b[1] for r, b in zip(runs, before_runs, strict=True))
        for fd in (*programs, stats):
            os.close(fd)
        # Every connection's end is in the log once the agent has stopped.
        events = agent.metric("flowlog_events_total", verdict="ACCEPT")
        wait_until(
            lambda: (
                agent.metric("flowlog_events_total", verdict="EXPIRED/DELETED") >= events * 0.99
            ),
            timeout=60,
        )
        cpu = cpu_seconds(agent.process.pid) - cpu_before
        scans = agent.metric("flowlog_conntrack_scan_seconds_total")
        entries = agent.metric("flowlog_conntrack_entries")
        written = agent.metric("flowlog_events_total", verdict="ACCEPT") + agent.metric(
            "flowlog_events_total", verdict="EXPIRED/DELETED"
        )
        assert agent.stop(timeout=30) == 0
    finally:
        agent.close()
        pins.remove()
    lines = log.read_bytes().splitlines()
    return {
        "connections": made,
        "failed": failed,
        "seconds": seconds,
        "lines": [orjson.loads(line) for line in lines],
        "raw": lines,
        "ns_per_packet": ns / max(count, 1),
        "packets": count,
        "cpu_us_per_event": cpu / max(written, 1) * 1e6,
        "cores": cpu / seconds,
        "scan_share": scans / seconds,
        "entries": entries,
    }


def cloudwatch_bytes(lines: list[bytes]) -> int:
    return sum(len(line) + EVENT_OVERHEAD for line in lines)


def summary_bytes_per_hour(raw: list[bytes], parsed: list[dict]) -> float:
    """An hour is 60 windows: the fullest window seen, 60 times (the traffic's
    minute spans two windows, each holding nearly every key)."""
    windows: dict[str, list[bytes]] = {}
    for line, record in zip(raw, parsed, strict=True):
        windows.setdefault(record["Start Time"], []).append(line)
    return max(cloudwatch_bytes(lines) for lines in windows.values()) * 60


def run(work: Path) -> list[Figure]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    (work / "policies").mkdir(exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    with Topology() as node:
        pods = [node.add_pod(f"app-{i:02d}", f"team-{i % 5}") for i in range(PODS)]
        write_policy(
            work / "policies",
            "all.yaml",
            policy_document(
                "allow-cluster",
                [(pod.namespace, pod.name) for pod in pods],
                isolation=["Ingress"],
                ingress=[peer("10.42.0.0/16", {"port": PORT})],
                namespace="team-0",
            ),
        )
        print(
            f"flow volume: {RATE:,} connections/s between {PODS} pods for {SECONDS:.0f} s",
            flush=True,
        )
        lines = run_workload(node, pods, work)
        print(
            f"  per verdict: {lines['connections']:,} connections ({lines['failed']} failed), "
            f"{len(lines['raw']):,} lines, {lines['packets']:,} packets through the programs",
            flush=True,
        )
        summaries = run_workload(node, pods, work, "--flow-log-aggregate=60")
        print(f"  summaries: {len(summaries['raw']):,} lines", flush=True)
    per_hour = 3600 / lines["seconds"]
    verdicts = [
        raw
        for raw, line in zip(lines["raw"], lines["lines"], strict=True)
        if line["Verdict"] != "EXPIRED/DELETED"
    ]
    kinds = {
        "per-verdict lines": cloudwatch_bytes(verdicts) * per_hour,
        "with flow ends": cloudwatch_bytes(lines["raw"]) * per_hour,
        "summaries at 60 s": summary_bytes_per_hour(summaries["raw"], summaries["lines"]),
    }
    name = "flow volume"
    figures = []
    for kind, hourly in kinds.items():
        figures.append(Figure(name, f"CloudWatch bytes per hour, {kind}", hourly / 1e6, "MB/h"))
        figures.append(
            Figure(
                name,
                f"a month's ingestion, {kind}",
                hourly * HOURS_PER_MONTH / 1e9 * PRICE_PER_GB,
                "$",
            )
        )
    ratio = kinds["per-verdict lines"] / kinds["summaries at 60 s"]
    figures += [
        Figure(
            name,
            "summaries: fewer bytes than per-verdict lines",
            ratio,
            "x",
            f">= {TARGET_RATIO}x",
            ratio >= TARGET_RATIO,
            better="higher",
        ),
        Figure(name, "BPF run time per packet (conntrack counting)", lines["ns_per_packet"], "ns"),
        Figure(name, "agent CPU, fraction of a core", lines["cores"], "cores"),
        Figure(name, "agent CPU per line written", lines["cpu_us_per_event"], "us"),
        Figure(name, "of it, scanning conntrack for idle flows", lines["scan_share"], "cores"),
        Figure(name, "flows in conntrack at the last scan", lines["entries"], "flows"),
    ]
    return figures
