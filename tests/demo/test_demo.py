"""``flowlog demo`` run as a user runs it: its verdicts against the seed's, its flow log,
what reached CloudWatch, and that nothing it created outlives it, even when interrupted."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from pyroute2 import netns

from tests.demo.seed import NAMESPACES, POLICIES, PORTS, PROBES, seed_allows, seed_outcome

pytestmark = [pytest.mark.bpf, pytest.mark.cloudwatch]

BPF_FS = Path("/sys/fs/bpf")
DEMO_SECONDS = 240
READY_SECONDS = 120
EXIT_SECONDS = 60
TARGET_BY_PORT = {port: name for name, port in PORTS.items()}


def demo_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "flowlog", "demo", *flags]


def running(pid: int | None, name: str) -> bool:
    """True if ``pid`` is still a process whose command line mentions ``name``."""
    if pid is None:
        return False
    try:
        return name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def assert_nothing_left(demo_pid: int, tmpdir: Path, *pids: tuple[int | None, str]) -> None:
    namespaces = [name for name in netns.listnetns() if name.startswith(f"flowlog-{demo_pid}-")]
    pins = list(BPF_FS.glob(f"flowlog-demo-{demo_pid}-*"))
    processes = [f"{name} {pid}" for pid, name in pids if running(pid, name)]
    temporary = list(tmpdir.iterdir())
    assert (namespaces, pins, processes, temporary) == ([], [], [], [])


@pytest.fixture
def tmpdir_for_demo(tmp_path: Path) -> Path:
    """The demo's TMPDIR: it must be empty again when the demo has exited."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    return directory


def test_every_step_matches_the_seed_and_reaches_cloudwatch(tmp_path, tmpdir_for_demo):
    kept = tmp_path / "kept"
    demo = subprocess.Popen(
        demo_command("--json", "--keep", str(kept)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmpdir_for_demo)},
    )
    try:
        stdout, stderr = demo.communicate(timeout=DEMO_SECONDS)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, stderr[-4000:]
    summary = orjson.loads(stdout)

    verdicts = {
        (step["step"], probe["from"], probe["to"]): probe["connected"]
        for step in summary["steps"]
        for probe in step["probes"]
    }
    assert verdicts == seed_outcome()
    assert summary["ok"] and summary["problems"] == []

    # One line per judged flow: a DENY for each probe the seed denies (every pod
    # is isolated from step 2 on), an ACCEPT naming a policy for each it allows.
    flow_log = (kept / "network-policy-agent.log").read_bytes()
    lines = [orjson.loads(line) for line in flow_log.splitlines()]
    judged = [(step, s, t) for step in (2, 3, 4, 5) for s, t in PROBES]
    denied = [line for line in lines if line["Verdict"] == "DENY"]
    accepted_by_policy = [
        line for line in lines if line["Verdict"] == "ACCEPT" and "Policy" in line
    ]
    assert len(denied) == sum(not seed_allows(*probe) for probe in judged)
    assert len(accepted_by_policy) == sum(seed_allows(*probe) for probe in judged)
    for line in denied + accepted_by_policy:
        target = TARGET_BY_PORT[line["Dest Port"]]
        assert line["Direction"] == "ingress"
        assert line["Pod"].startswith(f"{target}-")
        assert line["Namespace"] == line["Policy Namespace"] == NAMESPACES[target]
    assert {line["Policy"] for line in denied} == {"default-deny"}
    assert {line["Policy"] for line in accepted_by_policy} == POLICIES - {"default-deny"}
    assert len({line["Node"] for line in lines}) == 1

    # What was read back while the agent ran is the file's start; the rest is the
    # flows still open when the agent stopped (SYNs the targets dropped), ended then.
    read_back = summary["flow_log"]["lines"]
    assert read_back <= len(lines)
    assert {line["Verdict"] for line in lines[read_back:]} <= {"EXPIRED/DELETED"}
    assert summary["cloudwatch"]["events"] == read_back
    assert summary["cloudwatch"]["log_group"] == "/aws/eks/stars-demo/cluster"
    assert [query["query"] for query in summary["insights"]] == [
        "top-denied-sources",
        "deny-share-by-namespace",
    ]
    assert all(query["rows"] for query in summary["insights"])

    # The story went to stderr; the kept files are there; everything else is gone.
    assert "Step 5 of 5" in stderr and "Cleaned up" in stderr
    assert f"The flow map: {kept / 'flow-map.html'}" in stderr
    assert 'class="edge denied"' in (kept / "flow-map.html").read_text()
    assert sorted(path.name for path in (kept / "policies").iterdir()) == [
        "client-allow-ui.yaml",
        "client-default-deny.yaml",
        "stars-allow-ui.yaml",
        "stars-backend-policy.yaml",
        "stars-default-deny.yaml",
        "stars-frontend-policy.yaml",
    ]
    created = summary["created"]
    assert set(created["namespaces"]).isdisjoint(netns.listnetns())
    assert created["pin_dir"].startswith(str(BPF_FS)) and not Path(created["pin_dir"]).exists()
    assert_nothing_left(
        demo.pid,
        tmpdir_for_demo,
        (created["agent_pid"], "flowlog"),
        (created["cloudwatch_pid"], "moto"),
    )


class DemoProcess:
    """``flowlog demo`` in the background, its output read line by line as it comes."""

    def __init__(self, tmpdir: Path) -> None:
        self.process = subprocess.Popen(
            demo_command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TMPDIR": str(tmpdir)},
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r} in: {''.join(self.output)}")

    def finish(self) -> int:
        status = self.process.wait(EXIT_SECONDS)
        while not self._lines.empty():
            self.output.append(self._lines.get())
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)],
    ids=["ctrl-c", "ctrl-c-twice", "sigterm"],
)
def test_an_interrupted_demo_leaves_nothing_behind(tmpdir_for_demo, signals):
    demo = DemoProcess(tmpdir_for_demo)
    try:
        cloudwatch_pid = int(demo.wait_for(r"moto_server \(pid (\d+)\)", READY_SECONDS)[1])
        agent_pid = int(demo.wait_for(r"agent ready \(pid (\d+)\)", READY_SECONDS)[1])
        first, *more = signals
        demo.process.send_signal(first)
        if more:
            demo.wait_for("interrupted: cleaning up", EXIT_SECONDS)
            demo.process.send_signal(more[0])  # while it cleans up
        status = demo.finish()
    finally:
        demo.kill()
    assert status == 130, "".join(demo.output)
    if not more:
        assert "Cleaned up" in "".join(demo.output)
    assert_nothing_left(
        demo.process.pid,
        tmpdir_for_demo,
        (agent_pid, "flowlog"),
        (cloudwatch_pid, "moto"),
    )
