"""The retry rules: what is retried, how soon, what is reported, and what is dropped."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from flowlog.cloudwatch.retry import (
    Failure,
    RetryPolicy,
    Stopping,
    classify,
    describe,
    error_code,
)

GROUP = "/aws/eks/test/cluster"


def client_error(code: str, status: int = 400, operation: str = "PutLogEvents") -> ClientError:
    response = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (client_error("ThrottlingException"), Failure.TRANSIENT),
        (client_error("ServiceUnavailableException", 503), Failure.TRANSIENT),
        (client_error("InternalFailure", 500), Failure.TRANSIENT),
        (client_error("", 502), Failure.TRANSIENT),
        (client_error("GatewayTimeout", 504), Failure.TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), Failure.TRANSIENT),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), Failure.TRANSIENT),
        (aiohttp.ClientConnectionError(), Failure.TRANSIENT),
        (ConnectionResetError(), Failure.TRANSIENT),
        (TimeoutError(), Failure.TRANSIENT),
        (client_error("ResourceNotFoundException"), Failure.MISSING),
        (client_error("AccessDeniedException"), Failure.ACCESS),
        (client_error("UnrecognizedClientException"), Failure.ACCESS),
        (client_error("InvalidClientTokenId", 403), Failure.ACCESS),
        (client_error("ExpiredTokenException"), Failure.ACCESS),
        (NoCredentialsError(), Failure.ACCESS),
        (NoRegionError(), Failure.ACCESS),
        (client_error("InvalidParameterException"), Failure.REJECTED),
        (client_error("SerializationException"), Failure.REJECTED),
    ],
)
def test_failures_are_classified(error: BaseException, failure: Failure) -> None:
    assert classify(error) is failure


def test_error_codes_name_the_service_code_or_the_exception() -> None:
    assert error_code(client_error("ThrottlingException")) == "ThrottlingException"
    assert error_code(client_error("", 502)) == "502"
    assert error_code(NoRegionError()) == "NoRegionError"


@pytest.mark.parametrize(
    "operation", ["PutLogEvents", "DescribeLogGroups", "CreateLogGroup", "CreateLogStream"]
)
def test_a_refusal_names_the_iam_action(operation: str) -> None:
    text = describe(client_error("AccessDeniedException", operation=operation), GROUP)
    assert f"logs:{operation}" in text
    assert GROUP in text and "AccessDeniedException" in text


def test_missing_region_and_credentials_say_what_to_set() -> None:
    assert "AWS_REGION" in describe(NoRegionError(), GROUP)
    assert "credentials" in describe(NoCredentialsError(), GROUP)


def _delays(policy: RetryPolicy, error: BaseException, attempts: int) -> list[float]:
    class State:
        def __init__(self, number: int) -> None:
            self.attempt_number = number
            self.outcome = type("Outcome", (), {"exception": lambda _: error})()

    return [policy.delay(State(n)) for n in range(1, attempts + 1)]  # type: ignore[arg-type]


def test_transient_failures_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    policy = RetryPolicy(first_backoff=0.5, max_backoff=30.0)
    delays = _delays(policy, client_error("ThrottlingException"), 12)
    for attempt, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(30.0, 0.5 * 2 ** (attempt - 1))
    assert len(set(delays)) > 1  # jittered, not in lockstep


def test_access_problems_are_retried_slowly() -> None:
    policy = RetryPolicy(access_retry=60.0)
    assert _delays(policy, client_error("AccessDeniedException"), 3) == [60.0] * 3


def _attempts(policy: RetryPolicy, errors: list[BaseException]) -> tuple[int, list[float]]:
    """Run a call that fails with ``errors`` in turn, then succeeds; attempts and sleeps."""
    slept: list[float] = []
    calls = 0

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> None:
        nonlocal calls
        async for attempt in policy.retrying(sleep):
            with attempt:
                calls += 1
                if errors:
                    raise errors.pop(0)

    asyncio.run(scenario())
    return calls, slept


def test_a_call_is_repeated_until_it_succeeds() -> None:
    policy = RetryPolicy(first_backoff=0.01, access_retry=7.0)
    errors = [
        client_error("ThrottlingException"),
        client_error("InternalFailure", 500),
        client_error("AccessDeniedException"),
        EndpointConnectionError(endpoint_url="http://x"),
    ]
    calls, slept = _attempts(policy, errors)
    assert calls == 5
    assert slept[2] == 7.0 and len(slept) == 4


def test_a_rejected_call_is_not_repeated() -> None:
    with pytest.raises(ClientError):
        _attempts(RetryPolicy(), [client_error("InvalidParameterException")])


def test_stopping_ends_a_backoff() -> None:
    async def sleep(_: float) -> None:
        raise Stopping

    async def scenario() -> None:
        async for attempt in RetryPolicy().retrying(sleep):
            with attempt:
                raise client_error("ThrottlingException")

    with pytest.raises(Stopping):
        asyncio.run(scenario())
