"""Fixtures for the Insights tests: a generated flow log and the command line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from flowlog.cli import main
from tests.insights.flow_logs import (
    FlowLogFiles,
    generate_records,
    generate_summaries,
    write_flow_logs,
)


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str

    def json(self) -> list[dict]:
        return orjson.loads(self.stdout)


@pytest.fixture(scope="module")
def flow_logs(tmp_path_factory: pytest.TempPathFactory) -> FlowLogFiles:
    return write_flow_logs(tmp_path_factory.mktemp("flow-logs"), generate_records())


@pytest.fixture(scope="module")
def summary_logs(tmp_path_factory: pytest.TempPathFactory) -> FlowLogFiles:
    """What a node writes with --flow-log-aggregate: summary lines only."""
    return write_flow_logs(tmp_path_factory.mktemp("summaries"), generate_summaries())


@pytest.fixture
def flowlog(capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """Run ``flowlog ARGS...`` in this process; its exit status and output."""

    def run(*args: str | Path) -> Outcome:
        capsys.readouterr()
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit_:  # argparse's own usage errors
            status = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(status, captured.out, captured.err)

    return run
