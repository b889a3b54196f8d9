"""Shared test fixtures and the rule that integration tests never skip in CI.

Tests marked ``bpf`` need root, the bpf() syscall and network namespaces;
tests marked ``cloudwatch`` start a local moto_server; tests marked ``image``
run the image ``make image`` builds. Under ``CI=true`` a skipped test with any
of these marks is reported as a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from flowlog.demo.local_cloudwatch import LocalCloudWatch
from tests.support.cloudwatch_proxy import CloudWatchProxy

INTEGRATION_MARKS = ("bpf", "cloudwatch", "root", "browser", "image")
IN_CI = os.environ.get("CI", "").lower() == "true"


def bpf_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "needs Debian's python3-bpfcc (make setup)"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and any(item.get_closest_marker(m) for m in INTEGRATION_MARKS):
        report.outcome = "failed"
        report.longrepr = f"integration test skipped under CI=true: {report.longrepr}"


@pytest.fixture(autouse=True)
def _require_bpf(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("bpf"):
        reason = bpf_unavailable_reason()
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def local_cloudwatch() -> Iterator[LocalCloudWatch]:
    """One moto_server for the session; use ``local_cloudwatch.reset()`` between tests."""
    with LocalCloudWatch() as endpoint:
        yield endpoint


@pytest.fixture
def cloudwatch(
    local_cloudwatch: LocalCloudWatch, monkeypatch: pytest.MonkeyPatch
) -> LocalCloudWatch:
    """A fresh, empty local CloudWatch, with this process's AWS environment pointed at it."""
    local_cloudwatch.reset()
    for name, value in local_cloudwatch.client_environment().items():
        monkeypatch.setenv(name, value)
    return local_cloudwatch


@pytest.fixture
def cloudwatch_proxy(cloudwatch: LocalCloudWatch) -> Iterator[CloudWatchProxy]:
    """A recording, fault-injecting proxy in front of a fresh local CloudWatch."""
    with CloudWatchProxy(cloudwatch.endpoint) as proxy:
        yield proxy
