"""Signature Version 4 for the one request the exporter makes over and over.

botocore's ``SigV4Auth`` signs any request, through email-style header
objects, URL parsing and the signer's event hooks: about 600 Python calls per
PutLogEvents, 0.1 µs per event. Every PutLogEvents request of a client has
the same method, URL and headers but for its date, token and body, so the
parts that never change are worked out once and each call only hashes, joins
a few strings and computes one HMAC (the signing key is kept for the day).
The result is byte for byte what ``SigV4Auth`` produces, which the tests
check against botocore itself.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.utils import normalize_url_path

ALGORITHM = "AWS4-HMAC-SHA256"


class RequestSigner:
    """Signs POSTs of varying bodies to ``url`` with fixed ``headers``."""

    def __init__(self, url: str, headers: Mapping[str, str], region: str, service: str) -> None:
        self.url = url
        self.region = region
        self.service = service
        self._headers = dict(headers)
        self._path = quote(normalize_url_path(urlsplit(url).path), safe="/~")
        # botocore chooses the signed headers (and the host's canonical form).
        fixed = SigV4Auth(None, service, region).headers_to_sign(
            AWSRequest("POST", url, headers=headers)
        )
        self._fixed_signed = {name: " ".join(fixed[name].split()) for name in set(fixed)}
        self._key_for: tuple[str, str, bytes] | None = None  # (secret, date, key)

    def sign(
        self, body: bytes, credentials: ReadOnlyCredentials, now: datetime.datetime
    ) -> dict[str, str]:
        """The request's headers, Authorization included."""
        timestamp = now.strftime(SIGV4_TIMESTAMP)
        date = timestamp[:8]
        headers = dict(self._headers)
        headers["X-Amz-Date"] = timestamp
        if credentials.token:
            headers["X-Amz-Security-Token"] = credentials.token
        signed = dict(self._fixed_signed)
        signed["x-amz-date"] = timestamp
        if credentials.token:
            signed["x-amz-security-token"] = " ".join(credentials.token.split())
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical_request = "\n".join(
            [
                "POST",
                self._path,
                "",
                "".join(f"{name}:{signed[name]}\n" for name in names),
                signed_names,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        string_to_sign = "\n".join(
            [
                ALGORITHM,
                timestamp,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        signature = hmac.new(
            self._signing_key(credentials.secret_key, date), string_to_sign.encode(), "sha256"
        ).hexdigest()
        headers["Authorization"] = (
            f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return headers

    def _signing_key(self, secret: str, date: str) -> bytes:
        if self._key_for is None or self._key_for[:2] != (secret, date):
            key = f"AWS4{secret}".encode()
            for part in (date, self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), "sha256").digest()
            self._key_for = (secret, date, key)
        return self._key_for[2]
