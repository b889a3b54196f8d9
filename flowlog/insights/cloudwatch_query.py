"""Running a query in CloudWatch Logs Insights: StartQuery, then GetQueryResults.

Results are polled until the query completes, with backoff; a query still
running at the deadline (or when the user presses Ctrl-C) is stopped with
StopQuery so it does not keep scanning, and billing, on its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from flowlog.config import ConfigError, Settings
from flowlog.insights.output import Progress

FIRST_POLL_SECONDS = 0.25
LONGEST_POLL_SECONDS = 2.0
POLL_BACKOFF = 1.5
HIDDEN_FIELDS = frozenset({"@ptr"})  # a pointer for GetLogRecord, not something to read
FAILED_STATUSES = frozenset({"Failed", "Cancelled", "Timeout", "Unknown"})
CLIENT_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=10,
    read_timeout=30,
)


class CloudWatchQueryError(Exception):
    """The query could not run or did not finish; the message is one line."""


@dataclass(frozen=True)
class QueryResults:
    query_id: str
    columns: list[str]
    rows: list[dict[str, str]]
    statistics: Mapping[str, float]


def logs_client(settings: Settings) -> Any:
    try:
        return boto3.client(
            "logs",
            region_name=settings.region or None,
            endpoint_url=settings.cloudwatch_endpoint or None,
            config=CLIENT_CONFIG,
        )
    except botocore.exceptions.NoRegionError:
        raise ConfigError(
            "--region: needed (or AWS_REGION) to know which CloudWatch Logs to ask"
        ) from None
    except ValueError as error:  # a malformed endpoint URL
        raise ConfigError(f"--cloudwatch-endpoint: {error}") from None


def describe_client_error(error: Exception, log_group: str) -> str:
    """One line for a failed AWS call."""
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        if code == "ResourceNotFoundException":
            return f"log group {log_group} does not exist (or is not visible to these credentials)"
        return f"{code or 'error'}: {' '.join(message.split())}"
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials found (environment, profile or instance role)"
    if isinstance(error, botocore.exceptions.EndpointConnectionError):
        return f"cannot reach CloudWatch Logs: {error}"
    return " ".join(str(error).split())


def run_query(
    client: Any,
    log_group: str,
    query_text: str,
    start_time: int,
    end_time: int,
    timeout: float,
    progress: Progress,
) -> QueryResults:
    """Run the query over [start_time, end_time] (epoch seconds) and return its rows."""
    try:
        started = client.start_query(
            logGroupName=log_group,
            startTime=start_time,
            endTime=end_time,
            queryString=query_text,
        )
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") == "MalformedQueryException":
            message = error.response["Error"].get("Message", "")
            raise ConfigError(
                f"query: CloudWatch refused it: {' '.join(message.split())}"
            ) from None
        raise CloudWatchQueryError(describe_client_error(error, log_group)) from None
    except botocore.exceptions.BotoCoreError as error:
        raise CloudWatchQueryError(describe_client_error(error, log_group)) from None
    query_id = started["queryId"]
    progress.start(f"running query {query_id} on {log_group}")
    deadline = time.monotonic() + timeout
    delay = FIRST_POLL_SECONDS
    try:
        while True:
            response = client.get_query_results(queryId=query_id)
            status = response.get("status", "Unknown")
            progress.update(status, response.get("statistics"))
            if status == "Complete":
                break
            if status in FAILED_STATUSES:
                raise CloudWatchQueryError(f"query {query_id} ended with status {status}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = _stop(client, query_id)
                raise CloudWatchQueryError(
                    f"query {query_id} did not complete within {timeout:g}s; {stopped} "
                    f"(--timeout sets how long to wait)"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * POLL_BACKOFF, LONGEST_POLL_SECONDS)
        results = list(response.get("results", []))
        while response.get("nextToken"):
            response = client.get_query_results(queryId=query_id, nextToken=response["nextToken"])
            results.extend(response.get("results", []))
    except KeyboardInterrupt:
        _stop(client, query_id)
        raise
    except botocore.exceptions.ClientError as error:
        raise CloudWatchQueryError(describe_client_error(error, log_group)) from None
    except botocore.exceptions.BotoCoreError as error:
        raise CloudWatchQueryError(describe_client_error(error, log_group)) from None
    finally:
        progress.finish()
    columns, rows = _rows(results)
    return QueryResults(query_id, columns, rows, response.get("statistics", {}))


def _stop(client: Any, query_id: str) -> str:
    try:
        client.stop_query(queryId=query_id)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        return f"stopping it failed: {describe_client_error(error, '')}"
    return "stopped it"


def _rows(results: list[list[dict[str, str]]]) -> tuple[list[str], list[dict[str, str]]]:
    """Columns in the order the query gives them (first seen), and each row by column."""
    columns: dict[str, None] = {}
    rows = []
    for result in results:
        row = {}
        for cell in result:
            name = cell.get("field", "")
            if name in HIDDEN_FIELDS:
                continue
            columns.setdefault(name)
            row[name] = cell.get("value", "")
        rows.append(row)
    return list(columns), rows
