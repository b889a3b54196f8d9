"""The CloudWatch Logs client: aiobotocore, sending request bodies built elsewhere.

``put_log_events`` passes botocore a one-event placeholder and swaps in the
pre-built body in a ``before-call.cloudwatch-logs.PutLogEvents`` handler,
which botocore emits after serialising the parameters and before signing. So
botocore still signs, sends, parses errors and ``rejectedLogEventsInfo``, but
never serialises the events themselves (about 5 µs per event). Its own
retries are off (``total_max_attempts=1``): ``retry`` decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from flowlog.cloudwatch import metrics
from flowlog.config import Settings

CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 30.0
PUT_LOG_EVENTS_HOOK = "before-call.cloudwatch-logs.PutLogEvents"
_PLACEHOLDER_EVENTS = [{"timestamp": 0, "message": "-"}]
# The body for the PutLogEvents call being made in the current task. It is
# held in a list emptied after the call: asyncio copies the context into the
# callbacks it schedules meanwhile, and those copies must not keep a
# megabyte-sized body alive after the call.
_prebuilt_body: contextvars.ContextVar[list[bytes]] = contextvars.ContextVar(
    "flowlog_prebuilt_body"
)


def _use_prebuilt_body(params: dict[str, Any], **_: Any) -> None:
    holder = _prebuilt_body.get(None)
    if holder:
        params["body"] = holder[0]


class CloudWatchLogs:
    """One log group and stream, on a client made at first use (so a missing region or
    credentials is a failure to retry, not a crash at start)."""

    def __init__(self, settings: Settings, max_connections: int) -> None:
        self.log_group = settings.cloudwatch_log_group
        self.log_stream = settings.cloudwatch_log_stream
        self._region = settings.region or None
        self._endpoint = settings.cloudwatch_endpoint or None
        self._config = AioConfig(
            retries={"total_max_attempts": 1},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            max_pool_connections=max_connections,
        )
        self._exit_stack = contextlib.AsyncExitStack()
        self._client: Any = None
        # Calls in flight ask for the client together; one makes it (a client
        # holds about 9 MB of botocore's endpoint and service data).
        self._client_made = asyncio.Lock()

    async def _logs(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._client_made:
            if self._client is not None:
                return self._client
            client = await self._exit_stack.enter_async_context(
                get_session().create_client(
                    "logs",
                    region_name=self._region,
                    endpoint_url=self._endpoint,
                    config=self._config,
                )
            )
            client.meta.events.register(PUT_LOG_EVENTS_HOOK, _use_prebuilt_body)
            self._client = client
            return client

    async def put_log_events(self, body: bytes) -> dict[str, Any]:
        """Send a body from ``request_builder``; the parsed response."""
        logs = await self._logs()
        metrics.CALLS.labels(operation="PutLogEvents").inc()
        holder = [body]
        token = _prebuilt_body.set(holder)
        try:
            return await logs.put_log_events(
                logGroupName=self.log_group,
                logStreamName=self.log_stream,
                logEvents=_PLACEHOLDER_EVENTS,
            )
        finally:
            holder.clear()
            _prebuilt_body.reset(token)

    async def ensure_destination(self) -> None:
        """Create the log group (looked up by name prefix) and the stream, if missing."""
        logs = await self._logs()
        metrics.CALLS.labels(operation="DescribeLogGroups").inc()
        found = await logs.describe_log_groups(logGroupNamePrefix=self.log_group, limit=5)
        names = {group["logGroupName"] for group in found.get("logGroups", [])}
        if self.log_group not in names:
            metrics.CALLS.labels(operation="CreateLogGroup").inc()
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                await logs.create_log_group(logGroupName=self.log_group)
        metrics.CALLS.labels(operation="CreateLogStream").inc()
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            await logs.create_log_stream(logGroupName=self.log_group, logStreamName=self.log_stream)

    async def close(self) -> None:
        await self._exit_stack.aclose()
        self._client = None
