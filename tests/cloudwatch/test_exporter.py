"""The exporter against moto_server over real HTTP, through a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from flowlog.cloudwatch.checkpoint import checkpoint_path_for, read_checkpoint
from flowlog.cloudwatch.exporter import CloudWatchExporter
from flowlog.cloudwatch.limits import EVENT_OVERHEAD_BYTES, MAX_BATCH_BYTES, MAX_BATCH_EVENTS
from flowlog.config import Settings
from flowlog.demo.local_cloudwatch import LocalCloudWatch
from flowlog.logfile import RotatingLogFile, backup_name
from tests.cloudwatch.conftest import (
    FAST_RETRIES,
    LimitChecks,
    logs_client,
    metric_delta,
    running,
    sample,
    settings_for,
    stored_events,
    stored_messages,
)
from tests.cloudwatch.flow_lines import lines, now_ms, text
from tests.support.cloudwatch_proxy import CloudWatchProxy, Fault

pytestmark = pytest.mark.cloudwatch

HOUR_MS = 3_600_000


async def eventually(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll ``condition`` on the event loop until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.02)


def append(path: Path, items: list[str]) -> None:
    with path.open("ab") as live:
        live.write(text(items))


def exporter_for(settings: Settings, log_path: Path, **options: object) -> CloudWatchExporter:
    return CloudWatchExporter(settings, log_path, retry_policy=FAST_RETRIES, **options)


def test_every_line_of_many_batches_arrives_once_in_full_calls_within_the_limits(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
    limit_checks: LimitChecks,
) -> None:
    start = now_ms() - HOUR_MS
    items = lines(50_000, start_ms=start, aws_every=7)
    log_path.write_bytes(text(items))
    sent = metric_delta("flowlog_cloudwatch_events_sent_total")

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            assert await exporter.wait_acknowledged(60)

    asyncio.run(scenario())
    events = stored_events(cloudwatch.endpoint, cloudwatch.region, settings)
    assert Counter(e["message"] for e in events) == Counter(items)
    flow_time = {item: start + index for index, item in enumerate(items)}
    assert all(e["timestamp"] == flow_time[e["message"]] for e in events)
    assert limit_checks.breaches == []
    assert sent() == len(items)
    calls = cloudwatch_proxy.calls_of("PutLogEvents")
    assert all(call.status == 200 for call in calls)
    fullness = sorted(
        max(
            len(call.body["logEvents"]) / MAX_BATCH_EVENTS,
            sum(len(e["message"].encode()) + EVENT_OVERHEAD_BYTES for e in call.body["logEvents"])
            / MAX_BATCH_BYTES,
        )
        for call in calls
    )
    assert fullness[1] >= 0.95  # every call full by the binding limit but the last one
    # The calls that start together look the destination up once.
    assert len(cloudwatch_proxy.calls_of("DescribeLogGroups")) == 1
    assert len(cloudwatch_proxy.calls_of("CreateLogStream")) == 1
    checkpoint = read_checkpoint(checkpoint_path_for(log_path))
    assert checkpoint is not None and checkpoint.offset == log_path.stat().st_size


def test_calls_made_together_share_one_client_and_one_credential_fetch(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Credentials from the EKS Pod Identity agent's endpoint, as on a node; fetching them
    # suspends client creation, so the calls that start together all ask for a client.
    # Each client would hold about 9 MB of botocore's endpoint and service data.
    fetches: list[str] = []

    async def pod_identity(request: web.Request) -> web.Response:
        fetches.append(request.headers.get("Authorization", ""))
        expiration = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        return web.json_response(
            {
                "AccessKeyId": "testing",
                "SecretAccessKey": "testing",
                "Token": "testing",
                "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(log_path.parent / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(log_path.parent / "no-credentials"))
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-identity-token")
    items = lines(40_000, start_ms=now_ms() - HOUR_MS)
    log_path.write_bytes(text(items))

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/v1/credentials", pod_identity)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        monkeypatch.setenv(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/v1/credentials"
        )
        try:
            async with running(exporter_for(settings, log_path)) as exporter:
                assert await exporter.wait_acknowledged(60)
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
    assert fetches == ["pod-identity-token"]
    for name, value in cloudwatch.client_environment().items():
        monkeypatch.setenv(name, value)
    assert Counter(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)) == Counter(
        items
    )


def test_request_bodies_are_released_once_their_calls_are_done(
    log_path: Path, cloudwatch: LocalCloudWatch
) -> None:
    # Straight to moto: the proxy, in this process, keeps request bodies of its own.
    settings = settings_for(cloudwatch.endpoint, cloudwatch.region)
    log_path.write_bytes(text(lines(20_000)))

    def bodies_alive() -> int:
        # Bytes objects are not tracked by the collector: look inside what is.
        reachable = gc.get_referents(*gc.get_objects())
        return sum(
            isinstance(o, bytes) and len(o) > 100_000 and o.startswith(b'{"logGroupName"')
            for o in reachable
        )

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            assert await exporter.wait_acknowledged(60)
            assert bodies_alive() == 0

    gc.disable()  # what is alive must be alive without waiting for a collection
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()


def test_throttling_and_server_errors_are_retried_with_the_same_batches(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
    limit_checks: LimitChecks,
) -> None:
    faults = [
        Fault("PutLogEvents", 3),
        Fault("PutLogEvents", 2, 503, "ServiceUnavailableException", "Service unavailable"),
        Fault("PutLogEvents", 2, 500, "InternalFailure", "Internal failure"),
        Fault("PutLogEvents", 1, 502, "BadGateway", "Bad gateway"),
        Fault("PutLogEvents", 1, 504, "GatewayTimeout", "Gateway timeout"),
    ]
    for fault in faults:
        cloudwatch_proxy.add_fault(fault)
    throttled = metric_delta("flowlog_cloudwatch_errors_total", code="ThrottlingException")
    items = lines(20_000)
    log_path.write_bytes(text(items))

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            assert await exporter.wait_acknowledged(60)
            assert exporter.problem is None

    asyncio.run(scenario())
    assert Counter(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)) == Counter(
        items
    )
    assert throttled() == 3
    calls = cloudwatch_proxy.calls_of("PutLogEvents")
    failed = [call for call in calls if call.status != 200]
    succeeded = [call for call in calls if call.status == 200]
    # Every failed call was answered by a fault (no storm of extra calls) ...
    assert len(failed) == 9 and all(fault.count == 0 for fault in faults)
    # ... and resent exactly as it was, batch boundaries and all.
    assert all(any(call.body == ok.body for ok in succeeded) for call in failed)
    assert limit_checks.breaches == []


def test_a_batch_that_failed_once_is_resent_after_a_backoff(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cloudwatch_proxy.add_fault(Fault("PutLogEvents", 1))
    items = lines(100)
    log_path.write_bytes(text(items))

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            assert await exporter.wait_acknowledged(60)

    with caplog.at_level(logging.DEBUG, logger="flowlog.cloudwatch.exporter"):
        asyncio.run(scenario())
    backoffs = [r.getMessage() for r in caplog.records if "retrying a PutLogEvents" in r.message]
    assert len(backoffs) == 1
    assert [call.status for call in cloudwatch_proxy.calls_of("PutLogEvents")] == [400, 200]
    assert stored_messages(cloudwatch.endpoint, cloudwatch.region, settings) == items


def test_until_cloudwatch_takes_a_call_one_batch_at_a_time_is_sent(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
) -> None:
    # Batches queued behind a call that cannot succeed would only hold memory.
    cloudwatch_proxy.add_fault(
        Fault("PutLogEvents", 3, 503, "ServiceUnavailableException", "Service unavailable")
    )
    items = lines(40_000)
    log_path.write_bytes(text(items))

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            assert await exporter.wait_acknowledged(60)

    asyncio.run(scenario())
    calls = cloudwatch_proxy.calls_of("PutLogEvents")
    first_accepted = next(index for index, call in enumerate(calls) if call.status == 200)
    assert first_accepted == 3
    assert all(call.body == calls[first_accepted].body for call in calls[:first_accepted])
    batches = len(calls) - 3
    assert batches >= 4
    assert Counter(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)) == Counter(
        items
    )


def test_events_written_while_cloudwatch_is_down_arrive_after_it_is_back(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = LocalCloudWatch()
    for name, value in endpoint.client_environment().items():
        monkeypatch.setenv(name, value)
    settings = settings_for(endpoint.endpoint, endpoint.region)
    start = now_ms() - HOUR_MS
    before = lines(1000, start_ms=start)
    during = lines(3000, start_ms=start + 10_000, first_number=1000)

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            append(log_path, before)
            exporter.wake()
            assert await exporter.wait_acknowledged(30)
            endpoint.stop()
            append(log_path, during)
            exporter.wake()
            await eventually(lambda: exporter.problem is not None)
            assert "cannot be reached" in (exporter.problem or "")
            assert not await exporter.wait_acknowledged(0.5)
            assert log_path.read_bytes() == text(before + during)
            await asyncio.to_thread(endpoint.start)  # same port; moto starts empty
            assert await exporter.wait_acknowledged(60)
            assert exporter.problem is None

    try:
        endpoint.start()
        asyncio.run(scenario())
        stored = Counter(stored_messages(endpoint.endpoint, endpoint.region, settings))
    finally:
        endpoint.stop()
    assert stored - Counter(during) <= Counter(before)  # at most what was in flight, again
    assert Counter(during) <= stored


@pytest.mark.parametrize("deleted", ["stream", "group"])
def test_a_deleted_stream_or_group_is_recreated_and_the_batch_resent(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
    deleted: str,
) -> None:
    start = now_ms() - HOUR_MS
    first = lines(100, start_ms=start)
    second = lines(100, start_ms=start + 1000, first_number=100)

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            append(log_path, first)
            exporter.wake()
            assert await exporter.wait_acknowledged(30)
            client = logs_client(cloudwatch.endpoint, cloudwatch.region)
            if deleted == "stream":
                client.delete_log_stream(
                    logGroupName=settings.cloudwatch_log_group,
                    logStreamName=settings.cloudwatch_log_stream,
                )
            else:
                client.delete_log_group(logGroupName=settings.cloudwatch_log_group)
            append(log_path, second)
            exporter.wake()
            assert await exporter.wait_acknowledged(30)

    asyncio.run(scenario())
    assert stored_messages(cloudwatch.endpoint, cloudwatch.region, settings) == second
    calls = cloudwatch_proxy.calls_of("PutLogEvents")
    not_found = [c for c in calls if c.response and "ResourceNotFound" in str(c.response)]
    assert len(not_found) == 1
    assert calls[-1].body == not_found[0].body and calls[-1].status == 200


@pytest.mark.parametrize(
    ("operation", "code"),
    [
        ("PutLogEvents", "AccessDeniedException"),
        ("DescribeLogGroups", "AccessDeniedException"),
        ("CreateLogStream", "AccessDeniedException"),
        ("PutLogEvents", "UnrecognizedClientException"),
    ],
)
def test_refused_access_is_reported_once_and_shipping_recovers(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
    caplog: pytest.LogCaptureFixture,
    operation: str,
    code: str,
) -> None:
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/node/i-0abc is not authorized to "
        f"perform: logs:{operation}"
    )
    fault = Fault(operation, 1_000_000, 400, code, message)
    cloudwatch_proxy.add_fault(fault)
    items = lines(500)
    log_path.write_bytes(text(items))
    gauge = {"log_file": str(log_path)}

    async def scenario() -> None:
        exporter = exporter_for(settings, log_path)
        task = asyncio.create_task(exporter.run())
        try:
            await eventually(lambda: len(cloudwatch_proxy.calls_of(operation)) >= 4)
            assert not task.done()
            assert f"logs:{operation}" in (exporter.problem or "")
            assert sample("flowlog_cloudwatch_access_problem", **gauge) == 1
            fault.count = 0
            assert await exporter.wait_acknowledged(30)
            assert exporter.problem is None
            assert sample("flowlog_cloudwatch_access_problem", **gauge) == 0
        finally:
            await exporter.stop()
            await task

    asyncio.run(scenario())
    reports = [r for r in caplog.records if f"logs:{operation}" in r.getMessage()]
    assert len(reports) == 1
    assert log_path.read_bytes() == text(items)
    assert Counter(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)) == Counter(
        items
    )


def test_clock_skewed_events_are_counted_and_not_sent(
    settings: Settings, log_path: Path, cloudwatch: LocalCloudWatch, limit_checks: LimitChecks
) -> None:
    now = now_ms()
    good = lines(10, start_ms=now - 60_000)
    too_old = lines(5, start_ms=now - 15 * 24 * HOUR_MS, first_number=100)
    too_new = lines(5, start_ms=now + 3 * HOUR_MS, first_number=200)
    log_path.write_bytes(text(good[:5] + too_old + good[5:] + too_new))
    old = metric_delta("flowlog_cloudwatch_events_skipped_total", reason="too_old")
    new = metric_delta("flowlog_cloudwatch_events_skipped_total", reason="too_new")

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            assert await exporter.wait_acknowledged(30)

    asyncio.run(scenario())
    assert stored_messages(cloudwatch.endpoint, cloudwatch.region, settings) == good
    assert (old(), new()) == (5, 5)
    assert limit_checks.breaches == []


def test_rotation_and_compression_while_shipping_lose_nothing(
    settings: Settings, log_path: Path, cloudwatch: LocalCloudWatch, limit_checks: LimitChecks
) -> None:
    start = now_ms() - HOUR_MS
    written: list[str] = []

    async def scenario() -> None:
        exporter = exporter_for(settings, log_path)
        writer = RotatingLogFile(
            log_path, max_bytes=1 << 20, max_backups=0, max_age_days=0, compress=True
        )
        try:
            async with running(exporter):
                for chunk in range(30):
                    items = lines(1000, start_ms=start + chunk * 1000, first_number=chunk * 1000)
                    writer.write(text(items), len(items))
                    written.extend(items)
                    exporter.wake()
                    await asyncio.sleep(0)  # let the exporter read between writes
                await asyncio.to_thread(writer.wait_housekeeping)
                assert await exporter.wait_acknowledged(60)
        finally:
            writer.close()

    asyncio.run(scenario())
    assert len(list(log_path.parent.glob("*.log.gz"))) >= 8
    stored = stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)
    assert Counter(stored) == Counter(written)
    assert limit_checks.breaches == []


def test_lines_deleted_by_retention_before_they_were_sent_are_counted_as_lost(
    settings: Settings, log_path: Path, cloudwatch: LocalCloudWatch
) -> None:
    start = now_ms() - HOUR_MS
    oldest, older, live = (
        lines(100, start_ms=start),
        lines(200, start_ms=start + 1000, first_number=100),
        lines(50, start_ms=start + 2000, first_number=300),
    )
    first = log_path.parent / backup_name(log_path, start + 500)
    second = log_path.parent / backup_name(log_path, start + 1500)
    first.write_bytes(text(oldest))
    second.write_bytes(text(older))
    log_path.write_bytes(text(live))
    lost = metric_delta("flowlog_cloudwatch_events_lost_total")

    async def scenario() -> None:
        exporter = exporter_for(settings, log_path)
        exporter.before_delete(first)
        first.unlink()
        assert lost() == 100
        async with running(exporter):
            assert await exporter.wait_acknowledged(30)
            exporter.before_delete(second)  # already sent: nothing lost
        assert lost() == 100

    asyncio.run(scenario())
    assert Counter(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)) == Counter(
        older + live
    )


def test_retention_during_an_outage_counts_every_line_it_deletes(
    settings: Settings,
    log_path: Path,
    cloudwatch: LocalCloudWatch,
    cloudwatch_proxy: CloudWatchProxy,
) -> None:
    fault = Fault("PutLogEvents", 1_000_000, 400, "AccessDeniedException", "not authorized")
    cloudwatch_proxy.add_fault(fault)
    start = now_ms() - HOUR_MS
    written: list[str] = []
    lost = metric_delta("flowlog_cloudwatch_events_lost_total")

    async def scenario() -> None:
        exporter = exporter_for(settings, log_path)
        writer = RotatingLogFile(
            log_path,
            max_bytes=256 << 10,
            max_backups=2,
            max_age_days=0,
            compress=True,
            before_delete=exporter.before_delete,
        )
        try:
            async with running(exporter):
                for chunk in range(20):
                    items = lines(500, start_ms=start + chunk * 1000, first_number=chunk * 500)
                    writer.write(text(items), len(items))
                    written.extend(items)
                    exporter.wake()
                await asyncio.to_thread(writer.wait_housekeeping)
                fault.count = 0
                assert await exporter.wait_acknowledged(60)
        finally:
            writer.close()

    asyncio.run(scenario())
    stored = Counter(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings))
    assert max(stored.values()) == 1
    assert set(stored) <= set(written)
    assert lost() > 0
    assert sum(stored.values()) + lost() == len(written)


def test_a_restart_continues_after_the_checkpoint(
    settings: Settings, log_path: Path, cloudwatch: LocalCloudWatch
) -> None:
    start = now_ms() - HOUR_MS
    first = lines(3000, start_ms=start)
    second = lines(2000, start_ms=start + 5000, first_number=3000)

    async def ship_all() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            assert await exporter.wait_acknowledged(30)

    log_path.write_bytes(text(first))
    asyncio.run(ship_all())
    append(log_path, second)
    asyncio.run(ship_all())
    assert Counter(stored_messages(cloudwatch.endpoint, cloudwatch.region, settings)) == Counter(
        first + second
    )


def test_a_trickle_is_sent_within_the_flush_interval(
    settings: Settings, log_path: Path, cloudwatch: LocalCloudWatch
) -> None:
    items = lines(3)

    async def scenario() -> None:
        async with running(exporter_for(settings, log_path)) as exporter:
            log_path.write_bytes(text(items[:1]))
            exporter.wake()
            await eventually(
                lambda: (
                    stored_messages(cloudwatch.endpoint, cloudwatch.region, settings) == items[:1]
                )
            )
            append(log_path, items[1:])  # found by polling, without a wake-up
            await eventually(
                lambda: stored_messages(cloudwatch.endpoint, cloudwatch.region, settings) == items
            )

    asyncio.run(scenario())
