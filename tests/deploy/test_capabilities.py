"""The DaemonSet's capabilities are the ones the agent needs: all of them, and no more.

The agent runs as it would in the pod: UID 0, every capability dropped but the
manifest's list. With the list it loads its programs and becomes ready;
without any one of them it cannot start, and says in one line which one it lacks.
"""

import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowlog.demo.local_cloudwatch import free_port
from tests.deploy.manifests import AGENT_MANIFEST, load_documents, only, the_container
from tests.support.agent_process import wait_until

pytestmark = pytest.mark.bpf


def manifest_capabilities() -> list[str]:
    container = the_container(only(load_documents(AGENT_MANIFEST), "DaemonSet"))
    return container["securityContext"]["capabilities"]["add"]


MANIFEST_CAPABILITIES = manifest_capabilities()


class ConfinedAgent:
    """``flowlog agent`` loading its own programs, as UID 0 holding only ``capabilities``."""

    def __init__(self, capabilities: list[str], workdir: Path) -> None:
        self.health_port = free_port()
        self.pin_dir = Path(f"/sys/fs/bpf/flowlog-deploy-{uuid.uuid4().hex[:8]}")
        policies = workdir / "policies"
        policies.mkdir()
        bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
        # Root's capabilities after exec are its bounding set: only these.
        confine = ["setpriv", "--inh-caps=-all", f"--bounding-set={bounding}"]
        agent = ["agent", "--enable-policy-event-logs", "--bpf-pin-dir", str(self.pin_dir)]
        agent += ["--policy-dir", str(policies), "--log-file", str(workdir / "flows.log")]
        agent += ["--metrics-bind-addr", f"127.0.0.1:{free_port()}"]
        agent += ["--health-probe-bind-addr", f"127.0.0.1:{self.health_port}"]
        self.stderr_path = workdir / "agent.err"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [*confine, sys.executable, "-m", "flowlog", *agent],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.health_port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def exited(self) -> bool:
        return self.process.poll() is not None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if not self.exited():
            self.process.kill()
            self.process.wait()
        # A start that failed half-way may leave pins behind.
        shutil.rmtree(self.pin_dir, ignore_errors=True)


@pytest.fixture
def confined(tmp_path) -> Iterator:
    agents: list[ConfinedAgent] = []

    def start(capabilities: list[str]) -> ConfinedAgent:
        agents.append(ConfinedAgent(capabilities, tmp_path))
        return agents[-1]

    yield start
    for agent in agents:
        agent.close()


def test_the_manifests_capabilities_are_enough(confined):
    agent = confined(MANIFEST_CAPABILITIES)
    wait_until(lambda: agent.ready() or agent.exited(), 60, message="the agent to start")
    assert agent.ready(), agent.stderr()
    agent.process.terminate()
    assert agent.process.wait(20) == 0, agent.stderr()


@pytest.mark.parametrize("missing", MANIFEST_CAPABILITIES)
def test_without_any_one_of_them_the_agent_cannot_start(confined, missing):
    agent = confined([c for c in MANIFEST_CAPABILITIES if c != missing])
    wait_until(lambda: agent.ready() or agent.exited(), 60, message="the agent to give up")
    assert agent.exited() and agent.process.returncode == 1, agent.stderr()
    # One error line, naming the capability: not a traceback, not bcc's
    # "Operation not permitted" or the verifier's complaint.
    stderr = agent.stderr()
    (error,) = [line for line in stderr.splitlines() if " ERROR " in line]
    assert f"missing capability CAP_{missing} " in error, stderr
    assert "Traceback" not in stderr
