"""Fixtures for the CloudWatch exporter tests: a limit-checking proxy, settings, read-back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from flowlog.cloudwatch.exporter import CloudWatchExporter
from flowlog.cloudwatch.limits import check_put_log_events
from flowlog.cloudwatch.retry import RetryPolicy
from flowlog.config import Settings
from flowlog.demo.local_cloudwatch import LocalCloudWatch
from tests.support.cloudwatch_proxy import AMZ_JSON, Call, CloudWatchProxy

# Quick retries, so outages in tests last as long as the test wants, not minutes.
FAST_RETRIES = RetryPolicy(first_backoff=0.02, max_backoff=0.2, access_retry=0.2)


@dataclass
class LimitChecks:
    """Every PutLogEvents call through the proxy, checked against the real limits."""

    breaches: list[list[str]] = field(default_factory=list)

    def __call__(self, call: Call) -> web.Response | None:
        if call.operation != "PutLogEvents":
            return None
        problems = check_put_log_events(call.body)
        if not problems:
            return None
        self.breaches.append(problems)
        error = {"__type": "InvalidParameterException", "message": "; ".join(problems)}
        return web.Response(status=400, body=orjson.dumps(error), content_type=AMZ_JSON)


@pytest.fixture
def limit_checks(cloudwatch_proxy: CloudWatchProxy) -> LimitChecks:
    """The proxy refuses (and records) any call in breach of a PutLogEvents limit."""
    checks = LimitChecks()
    cloudwatch_proxy.inspect = checks
    return checks


def settings_for(endpoint: str, region: str, **changes: object) -> Settings:
    return Settings(
        cloudwatch_endpoint=endpoint,
        region=region,
        cluster_name="test",
        node_name="ip-10-0-0-1",
        cloudwatch_flush_interval=0.2,
        **changes,
    )


@pytest.fixture
def settings(cloudwatch_proxy: CloudWatchProxy, cloudwatch: LocalCloudWatch) -> Settings:
    """Settings sending through the proxy to a fresh local CloudWatch."""
    return settings_for(cloudwatch_proxy.endpoint, cloudwatch.region)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "network-policy-agent.log"


@contextlib.asynccontextmanager
async def running(exporter: CloudWatchExporter) -> AsyncIterator[CloudWatchExporter]:
    """The exporter running as a task; stopped (and its task awaited) on the way out."""
    task = asyncio.create_task(exporter.run())
    try:
        yield exporter
    finally:
        await exporter.stop()
        await task


def logs_client(endpoint: str, region: str) -> Any:
    return boto3.client("logs", endpoint_url=endpoint, region_name=region)


def stored_messages(endpoint: str, region: str, settings: Settings) -> list[str]:
    """Every message in the settings' stream, oldest first (empty if there is no stream)."""
    return [event["message"] for event in stored_events(endpoint, region, settings)]


def stored_events(endpoint: str, region: str, settings: Settings) -> list[dict]:
    client = logs_client(endpoint, region)
    events: list[dict] = []
    token = None
    while True:
        request = {
            "logGroupName": settings.cloudwatch_log_group,
            "logStreamName": settings.cloudwatch_log_stream,
            "startFromHead": True,
        }
        if token:
            request["nextToken"] = token
        try:
            page = client.get_log_events(**request)
        except client.exceptions.ResourceNotFoundException:
            return events
        events.extend(page["events"])
        if page["nextForwardToken"] == token:
            return events
        token = page["nextForwardToken"]


def sample(name: str, **labels: str) -> float:
    """The current value of a metric sample (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def metric_delta(name: str, **labels: str) -> Callable[[], float]:
    """How much a metric has grown since this was called."""
    before = sample(name, **labels)
    return lambda: sample(name, **labels) - before
