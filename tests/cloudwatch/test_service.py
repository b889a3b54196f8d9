"""PutLogEvents signed and sent without botocore's per-call pipeline: the same request
on the wire, and the same answers and errors, as the client method."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from flowlog.cloudwatch.request_builder import request_head
from flowlog.cloudwatch.service import CloudWatchLogs
from flowlog.config import Settings
from tests.cloudwatch.flow_lines import line, now_ms
from tests.support.cloudwatch_proxy import Call, CloudWatchProxy, Fault

pytestmark = pytest.mark.cloudwatch

DAY_MS = 86_400_000


def body_of(settings: Settings, events: list[dict[str, Any]]) -> bytes:
    head = request_head(settings.cloudwatch_log_group, settings.cloudwatch_log_stream)
    return head + orjson.dumps(events)[1:] + b"}"


async def through_the_client_method(settings: Settings, events: list[dict[str, Any]]) -> None:
    async with get_session().create_client(
        "logs", region_name=settings.region, endpoint_url=settings.cloudwatch_endpoint
    ) as logs:
        await logs.put_log_events(
            logGroupName=settings.cloudwatch_log_group,
            logStreamName=settings.cloudwatch_log_stream,
            logEvents=events,
        )


async def through_the_service(settings: Settings, body: bytes) -> dict[str, Any]:
    service = CloudWatchLogs(settings, max_connections=1)
    try:
        await service.ensure_destination()
        return await service.put_log_events(body)
    finally:
        await service.close()


def signing_scope(call: Call) -> str:
    """The credential scope of the call's SigV4 Authorization header."""
    authorization = call.headers["Authorization"]
    credential = authorization.split("Credential=", 1)[1].split(",", 1)[0]
    return credential.split("/", 1)[1]


def test_the_request_on_the_wire_is_the_client_methods(
    settings: Settings, cloudwatch_proxy: CloudWatchProxy
) -> None:
    events = [{"timestamp": now_ms(), "message": line(now_ms(), 1)}]
    answer = asyncio.run(through_the_service(settings, body_of(settings, events)))
    asyncio.run(through_the_client_method(settings, events))

    ours, theirs = cloudwatch_proxy.calls_of("PutLogEvents")
    assert ours.status == theirs.status == 200
    assert ours.body == theirs.body
    assert ours.path == theirs.path
    for header in ("Content-Type", "X-Amz-Target", "X-Amz-Security-Token"):
        assert ours.headers[header] == theirs.headers[header]
    assert ours.headers["User-Agent"].split()[:2] == theirs.headers["User-Agent"].split()[:2]
    assert signing_scope(ours) == signing_scope(theirs)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_events_cloudwatch_rejects_are_reported_in_the_answer(
    settings: Settings, cloudwatch_proxy: CloudWatchProxy
) -> None:
    old = now_ms() - 20 * DAY_MS
    events = [{"timestamp": old, "message": "too old"}, {"timestamp": now_ms(), "message": "ok"}]
    answer = asyncio.run(through_the_service(settings, body_of(settings, events)))
    assert "tooOldLogEventEndIndex" in answer["rejectedLogEventsInfo"]


def test_a_refusal_raises_the_client_methods_error(
    settings: Settings, cloudwatch_proxy: CloudWatchProxy
) -> None:
    cloudwatch_proxy.add_fault(Fault("PutLogEvents", 1))
    cloudwatch_proxy.add_fault(
        Fault("PutLogEvents", 1, error_type="AccessDeniedException", message="not allowed")
    )
    body = body_of(settings, [{"timestamp": now_ms(), "message": "x"}])
    for code in ("ThrottlingException", "AccessDeniedException"):
        with pytest.raises(ClientError) as raised:
            asyncio.run(through_the_service(settings, body))
        assert raised.value.operation_name == "PutLogEvents"
        assert raised.value.response["Error"]["Code"] == code
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
