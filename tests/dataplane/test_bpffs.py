"""No BPF filesystem under --bpf-pin-dir: the agent mounts one if it may, else says how.

Each agent runs in a private mount namespace (``unshare --mount --propagation
private``) and in a test node's network namespace, so what it mounts, and the
tmpfs that hides the host's bpffs from it, never reach the host.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowlog.demo.topology import Topology
from tests.dataplane.conftest import new_pin_dir
from tests.deploy.test_capabilities import MANIFEST_CAPABILITIES
from tests.support.agent_process import wait_until

pytestmark = [pytest.mark.root, pytest.mark.bpf]

HEALTH_PORT = 8163  # the default: the node namespace is the test's own


class PrivateMountAgent:
    """``flowlog agent`` in a mount namespace of its own, where ``/sys/fs/bpf`` is a tmpfs.

    ``capabilities``, when given, is all the agent holds (as in the pod);
    otherwise it holds root's, CAP_SYS_ADMIN among them.
    """

    def __init__(
        self, node: Topology, pin_dir: Path, workdir: Path, capabilities: list[str] | None = None
    ) -> None:
        self.node = node
        confine: list[str] = []
        if capabilities is not None:
            bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
            confine = ["setpriv", "--inh-caps=-all", f"--bounding-set={bounding}"]
        agent = [sys.executable, "-m", "flowlog", "agent", "--bpf-pin-dir", str(pin_dir)]
        agent += ["--log-file", str(workdir / "flows.log"), "--enable-policy-event-logs"]
        # Every step execs the next, so the process started here is the agent.
        inside = [*node.node.command([*confine, *agent])]
        script = f"mount -t tmpfs flowlog-test /sys/fs/bpf && exec {shlex.join(inside)}"
        self.stderr_path = workdir / "agent.err"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def ready(self) -> bool:
        def fetch() -> bool:
            url = f"http://127.0.0.1:{HEALTH_PORT}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        return self.node.node.call(fetch)

    def exited(self) -> bool:
        return self.process.poll() is not None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def bpf_mounts(self) -> list[str]:
        """Mount points of BPF filesystems in the agent's mount namespace."""
        mounts = Path(f"/proc/{self.process.pid}/mounts").read_text().splitlines()
        return [line.split()[1] for line in mounts if line.split()[2] == "bpf"]

    def close(self) -> None:
        if not self.exited():
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator:
    agents: list[PrivateMountAgent] = []
    with Topology() as topology:

        def start(pin_dir: Path, capabilities: list[str] | None = None) -> PrivateMountAgent:
            agents.append(PrivateMountAgent(topology, pin_dir, tmp_path, capabilities))
            return agents[-1]

        try:
            yield start
        finally:
            for agent in agents:
                agent.close()


def host_bpf_mounts() -> list[str]:
    return [line.split()[1] for line in open("/proc/self/mounts") if line.split()[2] == "bpf"]


@pytest.mark.parametrize("under_sys_fs_bpf", [True, False], ids=["sys-fs-bpf", "elsewhere"])
def test_holding_cap_sys_admin_it_mounts_one_and_says_so(start_agent, tmp_path, under_sys_fs_bpf):
    pin_dir = new_pin_dir() if under_sys_fs_bpf else tmp_path / "pins"
    expected_mount = "/sys/fs/bpf" if under_sys_fs_bpf else str(pin_dir)
    host_before = host_bpf_mounts()
    agent = start_agent(pin_dir)
    wait_until(lambda: agent.ready() or agent.exited(), 60, message="the agent to start")
    assert agent.ready(), agent.stderr()
    assert expected_mount in agent.bpf_mounts()
    (said,) = [line for line in agent.stderr().splitlines() if "mounted a BPF filesystem" in line]
    assert f"on {expected_mount}: --bpf-pin-dir {pin_dir} was not on one" in said
    # Its programs are pinned in its own bpffs, not in the host's.
    assert not pin_dir.exists() or not any(pin_dir.iterdir())
    agent.process.send_signal(signal.SIGTERM)
    assert agent.process.wait(20) == 0, agent.stderr()
    assert host_bpf_mounts() == host_before


def test_without_cap_sys_admin_it_says_how_to_mount_one(start_agent):
    pin_dir = new_pin_dir()
    agent = start_agent(pin_dir, capabilities=MANIFEST_CAPABILITIES)
    wait_until(agent.exited, 60, message="the agent to give up")
    assert agent.process.returncode == 2, agent.stderr()
    assert agent.stderr().splitlines()[-1] == (
        f"flowlog: error: --bpf-pin-dir {pin_dir}: not on a BPF filesystem "
        "(mount one with: mount -t bpf bpffs /sys/fs/bpf)"
    )
