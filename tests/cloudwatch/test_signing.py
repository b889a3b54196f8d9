"""Our SigV4 for PutLogEvents is botocore's, byte for byte."""

from __future__ import annotations

import datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from flowlog.cloudwatch.signing import RequestSigner

HEADERS = {
    "X-Amz-Target": "Logs_20140328.PutLogEvents",
    "Content-Type": "application/x-amz-json-1.1",
    "User-Agent": "aiobotocore/3.10.0 botocore/1.43.117",
}
BODY = b'{"logGroupName":"/aws/eks/prod/cluster","logEvents":[]}'
MOMENT = datetime.datetime(2026, 12, 1, 23, 59, 59, 999000, tzinfo=datetime.UTC)


def botocore_headers(
    url: str, credentials: Credentials, region: str, moment: datetime.datetime, body: bytes
) -> dict[str, str]:
    request = AWSRequest("POST", url, headers=HEADERS, data=body)
    auth = SigV4Auth(credentials, "logs", region)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("botocore.auth.get_current_datetime", lambda: moment)
        auth.add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    "url",
    [
        "https://logs.us-west-2.amazonaws.com/",
        "https://logs-fips.us-gov-west-1.amazonaws.com:443/",
        "http://127.0.0.1:4566/",
        "http://LocalHost:8080/prefix/",
        "http://[::1]:5000/",
    ],
)
@pytest.mark.parametrize("token", [None, "session  token with   spaces"])
def test_signed_headers_are_botocores(url: str, token: str | None) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    signer = RequestSigner(url, HEADERS, region="us-west-2", service="logs")
    ours = signer.sign(BODY, credentials.get_frozen_credentials(), MOMENT)
    assert ours == botocore_headers(url, credentials, "us-west-2", MOMENT, BODY)


def test_the_key_kept_for_the_day_follows_date_and_secret() -> None:
    url = "https://logs.eu-central-1.amazonaws.com/"
    signer = RequestSigner(url, HEADERS, region="eu-central-1", service="logs")
    for secret, moment in [
        ("first", MOMENT),
        ("first", MOMENT + datetime.timedelta(milliseconds=1)),  # the next day
        ("rotated", MOMENT + datetime.timedelta(hours=1)),
        ("rotated", MOMENT + datetime.timedelta(hours=2)),
    ]:
        credentials = Credentials("AKID", secret, "token")
        ours = signer.sign(BODY, credentials.get_frozen_credentials(), moment)
        assert ours == botocore_headers(url, credentials, "eu-central-1", moment, BODY)
