"""The CloudWatch Logs client: aiobotocore, sending request bodies built elsewhere.

PutLogEvents is the call made over and over, each time with a megabyte body
that ``request_builder`` has already written. Through the client's method,
botocore's per-call pipeline (parameter events, endpoint rules, serialising,
the user agent, hooks, the retry handler, the general signer) costs about
1 ms a call before a byte is sent, 0.35 µs per event. So botocore's own parts
work the request out once per client (its endpoint rules give the URL and
signing region, its serialiser the headers), and each call only

1. signs it (``signing``: SigV4 exactly as botocore signs it) with the
   session's credentials, which botocore refreshes as they expire,
2. sends it on a keep-alive connection of its own (``connection``: TLS
   verified against botocore's CA bundle, botocore's timeouts, botocore's
   errors for connection failures), or through the client's aiobotocore
   HTTP session when a proxy is configured for the endpoint, and
3. parses the reply with aiobotocore's parser for the PutLogEvents output,
   raising the same ``ClientError`` the client method would.

The rare calls (looking up and creating the group and stream) use the client's
methods. botocore's own retries are off (``total_max_attempts=1``): ``retry``
decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.endpoint import convert_to_response_dict
from aiobotocore.parsers import create_parser
from aiobotocore.session import AioSession, get_session
from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import NoCredentialsError
from botocore.httpsession import ProxyConfiguration, get_cert_path
from botocore.utils import get_environ_proxies

from flowlog.cloudwatch import metrics
from flowlog.cloudwatch.connection import Connections
from flowlog.cloudwatch.signing import RequestSigner
from flowlog.config import Settings

CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 30.0
PUT_LOG_EVENTS = "PutLogEvents"
# Serialised once to work out the request; every call sends its own body instead.
_PLACEHOLDER_EVENTS = [{"timestamp": 0, "message": "-"}]


async def _put_log_events_signer(client: Any, log_group: str, log_stream: str) -> RequestSigner:
    """Run the first half of botocore's ``_make_api_call`` once: endpoint rules,
    serialiser and user agent, as the client method would for these names."""
    model = client.meta.service_model.operation_model(PUT_LOG_EVENTS)
    params = {
        "logGroupName": log_group,
        "logStreamName": log_stream,
        "logEvents": _PLACEHOLDER_EVENTS,
    }
    context = {
        "client_region": client.meta.region_name,
        "client_config": client.meta.config,
        "has_streaming_input": model.has_streaming_input,
        "auth_type": model.resolved_auth_type,
        "unsigned_payload": model.unsigned_payload,
        "auth_options": client.meta.service_model.metadata.get("auth"),
    }
    url, headers, properties = await client._resolve_endpoint_ruleset(model, params, context)
    if properties:
        context["endpoint_properties"] = properties
    request = await client._convert_to_request_dict(
        api_params=params,
        operation_model=model,
        endpoint_url=url,
        context=context,
        headers=headers,
    )
    signing = context.get("signing", {})
    return RequestSigner(
        request["url"],
        request["headers"],
        region=signing.get("region") or client.meta.region_name,
        service=signing.get("signing_name") or client.meta.service_model.signing_name,
    )


async def _direct_connections(
    session: AioSession, client: Any, url: str, limit: int
) -> Connections | None:
    """Connections of our own to the endpoint, unless a call must go through a proxy."""
    config = client.meta.config
    proxies = config.proxies if config.proxies is not None else get_environ_proxies(url)
    if ProxyConfiguration(proxies=proxies).proxy_url_for(url):
        return None
    context = None
    if url.startswith("https:"):
        # As botocore verifies: its CA bundle unless AWS_CA_BUNDLE or ca_bundle names one.
        bundle = get_cert_path(session.get_config_variable("ca_bundle") or True)
        context = await asyncio.to_thread(ssl.create_default_context, cafile=bundle)
    return Connections(
        url,
        ssl_context=context,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        limit=limit,
    )


class CloudWatchLogs:
    """One log group and stream, on a client made at first use (so a missing region or
    credentials is a failure to retry, not a crash at start)."""

    def __init__(self, settings: Settings, max_connections: int) -> None:
        self._max_connections = max_connections
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
        self._session: AioSession | None = None
        self._client: Any = None
        self._signer: RequestSigner | None = None
        self._connections: Connections | None = None  # None: through aiobotocore (a proxy)
        self._output_model: Any = None
        self._parser = create_parser("json")
        # Calls in flight ask for the client together; one makes it (a client
        # holds about 9 MB of botocore's endpoint and service data).
        self._client_made = asyncio.Lock()

    async def _logs(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._client_made:
            if self._client is not None:
                return self._client
            session = get_session()
            client = await self._exit_stack.enter_async_context(
                session.create_client(
                    "logs",
                    region_name=self._region,
                    endpoint_url=self._endpoint,
                    config=self._config,
                )
            )
            self._signer = await _put_log_events_signer(client, self.log_group, self.log_stream)
            self._connections = await _direct_connections(
                session, client, self._signer.url, self._max_connections
            )
            self._output_model = client.meta.service_model.operation_model(PUT_LOG_EVENTS)
            self._session = session
            self._client = client
            return client

    async def put_log_events(self, body: bytes) -> dict[str, Any]:
        """Send a body from ``request_builder``; the parsed response."""
        logs = await self._logs()
        assert self._session is not None and self._signer is not None
        # The session's credentials are the ones the client was made with (or,
        # while there are none, looked for again).
        credentials = await self._session.get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        frozen = await credentials.get_frozen_credentials()
        metrics.CALLS.labels(operation=PUT_LOG_EVENTS).inc()
        headers = self._signer.sign(body, frozen, datetime.datetime.now(datetime.UTC))
        model = self._output_model
        if self._connections is not None:
            answer = await self._connections.post(headers, body)
            response = {
                "headers": answer.headers,
                "status_code": answer.status,
                "body": answer.body,
                "context": {"operation_name": PUT_LOG_EVENTS},
            }
        else:
            request = AWSPreparedRequest(
                "POST", self._signer.url, headers, body, stream_output=False
            )
            http = await logs._endpoint.http_session.send(request)
            response = await convert_to_response_dict(http, model)
        parsed = await self._parser.parse(response, model.output_shape)
        if response["status_code"] >= 300:
            code = parsed.get("Error", {}).get("Code")
            raise logs.exceptions.from_code(code)(parsed, PUT_LOG_EVENTS)
        return parsed

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
        if self._connections is not None:
            await self._connections.close()
            self._connections = None
        await self._exit_stack.aclose()
        self._client = None
        self._session = None
        self._signer = None
