"""Fixtures for the flow-map tests: the command line in this process, and the stars run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowlog.cli import main
from flowlog.flowmap import KnownPod

# A real run of `flowlog demo --keep`: the agent's flow log of the guide's five steps.
STARS_LOG = Path(__file__).with_name("stars-demo.log")
# The demo's pods and their addresses in that run (its lines name only the local pod).
STARS_PODS = {
    "10.42.0.10": KnownPod("management-ui", "management-ui-qrb2g"),
    "10.42.0.11": KnownPod("client", "client-xlffc"),
    "10.42.0.12": KnownPod("stars", "frontend-cscnf"),
    "10.42.0.13": KnownPod("stars", "backend-sz87q"),
}


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str


@pytest.fixture
def flowlog(capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """Run ``flowlog ARGS...`` in this process; its exit status and output."""

    def run(*args: str | Path) -> Outcome:
        capsys.readouterr()
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit_:  # argparse's own usage errors and --help
            status = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(status, captured.out, captured.err)

    return run
