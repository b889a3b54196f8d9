"""Measuring processes: CPU time and memory from /proc, medians, and the figures we print."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far: all its threads, and the children it
    has waited for (the loader that compiles its programs)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Figure:
    """One measured number, what it should be, and how it compares with the baseline."""

    benchmark: str
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    baseline: float | None = None  # the same figure for the baseline, if there is one
    better: str = "lower"  # or "higher"

    @property
    def ratio(self) -> float | None:
        if not self.baseline or not self.value:
            return None
        return self.baseline / self.value if self.better == "lower" else self.value / self.baseline

    def render(self) -> str:
        value = (
            f"{self.value:,.3f}".rstrip("0").rstrip(".")
            if self.value < 100
            else f"{self.value:,.0f}"
        )
        parts = [f"{self.benchmark:<18} {self.name:<44} {value:>14} {self.unit:<12}"]
        if self.target:
            verdict = "" if self.met is None else ("  met" if self.met else "  MISSED")
            parts.append(f"target {self.target}{verdict}")
        if self.ratio is not None:
            parts.append(f"{self.ratio:,.1f}x the baseline")
        return "  ".join(parts)


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # seconds, user + system
    peak_rss: int  # bytes


def run_measured(argv: list[str], poll_seconds: float = 0.05) -> Run:
    """Run a command to completion, sampling its peak RSS from /proc while it runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        with contextlib.suppress(OSError):
            peak = max(peak, peak_rss_bytes(process.pid))
        time.sleep(poll_seconds)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} ... exited with {process.returncode}")
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    return Run(wall, cpu, peak)


def cpu_times() -> tuple[int, int]:
    """Ticks of all CPUs so far: (all of them, those stolen by the VM's host)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return sum(fields[:8]), fields[7]


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time the host took from this VM between two cpu_times()."""
    total = after[0] - before[0]
    return (after[1] - before[1]) / total if total else 0.0
