"""What to do when a CloudWatch Logs call fails: the retry rules, in one place.

* Throttling, service unavailable, HTTP 500/502/503/504 and connection
  errors are *transient*: the same request is sent again after an exponential
  backoff with full jitter (tenacity), capped, so a long outage costs a call
  every half minute or so per batch in flight, not a storm.
* A missing log group or stream is recreated, then the same request is sent.
* Missing permissions, rejected or missing credentials and an unknown or
  missing region are *access* problems: retrying soon does not help, but
  someone may fix the role at any time. They are reported once, naming the
  IAM action that was refused, and retried slowly (every minute by default).
* Anything else the service refuses (an invalid parameter, say) is
  *rejected*: resending the same request would fail the same way, so its
  events are counted and dropped.

Batches are resent exactly as they were built, so batch boundaries (and with
them every limit) hold on every attempt.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    TokenRetrievalError,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_never
from tenacity.wait import wait_random_exponential


class Failure(enum.Enum):
    TRANSIENT = "transient"
    MISSING = "missing"
    ACCESS = "access"
    REJECTED = "rejected"


TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
# Refused permissions, and credentials the service does not accept (unknown,
# expired, or signed with a clock too far off).
ACCESS_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnauthorizedOperation",
        "NotAuthorized",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "RequestExpired",
    }
)
MISSING_CODES = frozenset({"ResourceNotFoundException"})
# Raised by botocore before any request is made.
ACCESS_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    TokenRetrievalError,
    NoRegionError,
)


def error_code(error: BaseException) -> str:
    """The service's error code, or the exception's name for client-side failures."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code")
        return code or str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return type(error).__name__


def classify(error: BaseException) -> Failure:
    if isinstance(error, ClientError):
        code = error_code(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ACCESS_CODES:
            return Failure.ACCESS
        if code in MISSING_CODES:
            return Failure.MISSING
        if code in TRANSIENT_CODES or status in TRANSIENT_STATUS:
            return Failure.TRANSIENT
        return Failure.REJECTED
    if isinstance(error, ACCESS_ERRORS):
        return Failure.ACCESS
    # Connection errors and timeouts (botocore's, aiohttp's, the OS's), and any
    # trouble not foreseen here, are backed off like an outage: shipping never stops.
    return Failure.TRANSIENT


def iam_action(operation: str) -> str:
    return f"logs:{operation}"


def describe(error: BaseException, log_group: str) -> str:
    """One line for a person: what failed, and for refusals which IAM action."""
    if isinstance(error, NoRegionError):
        return "no AWS region is configured: set --region, AWS_REGION or AWS_DEFAULT_REGION"
    if isinstance(error, ACCESS_ERRORS):
        return f"no usable AWS credentials: {error}"
    if isinstance(error, ClientError):
        action = iam_action(error.operation_name)
        message = error.response.get("Error", {}).get("Message", "")
        code = error_code(error)
        if code in ACCESS_CODES:
            return (
                f"CloudWatch Logs refused {action} on log group {log_group} "
                f"({code}: {message}); grant it (see config/iam-policy.json) or fix the "
                "credentials"
            )
        return f"{action} on log group {log_group} failed: {code}: {message}"
    return f"CloudWatch Logs cannot be reached: {type(error).__name__}: {error}"


class Stopping(Exception):
    """Raised out of a backoff when the exporter stops: the batch is left for next time."""


@dataclass(frozen=True)
class RetryPolicy:
    first_backoff: float = 0.5  # seconds; the ceiling of the first jittered wait
    max_backoff: float = 30.0
    access_retry: float = 60.0  # while permissions or credentials are refused

    def delay(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if error is not None and classify(error) is Failure.ACCESS:
            return self.access_retry
        backoff = wait_random_exponential(multiplier=self.first_backoff, max=self.max_backoff)
        return backoff(retry_state)

    def retrying(
        self,
        sleep: Callable[[float], Awaitable[None]],
        before_sleep: Callable[[RetryCallState], None] | None = None,
    ) -> AsyncRetrying:
        """Attempts of one call, retried (forever) while the failure is not a rejection."""
        return AsyncRetrying(
            retry=retry_if_exception(lambda error: classify(error) is not Failure.REJECTED),
            wait=self.delay,
            stop=stop_never,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
