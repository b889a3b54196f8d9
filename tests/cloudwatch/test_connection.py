"""PutLogEvents on connections of our own: kept alive, replaced when the server closed
them, answers read however they are framed, TLS verified, proxies respected."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, SSLError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flowlog.cloudwatch.retry import Failure, classify
from flowlog.cloudwatch.service import CloudWatchLogs
from flowlog.config import Settings
from flowlog.demo.local_cloudwatch import DUMMY_CREDENTIALS

BODY = b'{"logGroupName":"g","logStreamName":"s","logEvents":[]}'
OK = b'{"nextSequenceToken":"1"}'


def keep_alive(answer: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)


def chunked(answer: bytes) -> bytes:
    half = len(answer) // 2
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n%x;name=value\r\n%s\r\n0\r\n\r\n"
        % (half, answer[:half], len(answer) - half, answer[half:])
    )


@dataclass
class ScriptedServer:
    """Answers each request with the next of ``answers``; ``close_after`` closes the
    connection after that answer, without saying so."""

    answers: list[bytes]
    close_after: Callable[[int], bool] = lambda _: False
    tls: ssl.SSLContext | None = None
    request_lines: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.request_lines.append(head.split(b"\r\n", 1)[0])
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                number = len(self.request_lines)
                writer.write(self.answers[number - 1])
                await writer.drain()
                if self.close_after(number):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def settings_for(endpoint: str) -> Settings:
    return Settings(cloudwatch_endpoint=endpoint, region="us-west-2", cluster_name="test")


async def put_all(settings: Settings, calls: int) -> list[dict]:
    service = CloudWatchLogs(settings, max_connections=2)
    try:
        return [await service.put_log_events(BODY) for _ in range(calls)]
    finally:
        await service.close()


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_calls_share_a_kept_alive_connection() -> None:
    async def scenario() -> tuple[list[dict], int]:
        async with ScriptedServer([keep_alive(OK)] * 3) as server:
            answers = await put_all(settings_for(f"http://127.0.0.1:{server.port}"), 3)
            return answers, server.connections

    answers, connections = asyncio.run(scenario())
    assert [a["nextSequenceToken"] for a in answers] == ["1"] * 3
    assert connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_failure() -> None:
    async def scenario() -> tuple[list[dict], int]:
        async with ScriptedServer([keep_alive(OK)] * 3, close_after=lambda _: True) as server:
            service = CloudWatchLogs(
                settings_for(f"http://127.0.0.1:{server.port}"), max_connections=2
            )
            try:
                # The second and third calls find their connection closed under them.
                answers = [await service.put_log_events(BODY) for _ in range(3)]
                return answers, server.connections
            finally:
                await service.close()

    answers, connections = asyncio.run(scenario())
    assert len(answers) == 3
    assert connections == 3


def test_chunked_and_close_delimited_answers_are_read_whole() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OK
    http_10 = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK), OK)

    async def scenario() -> tuple[list[dict], int]:
        answers = [chunked(OK), closing, http_10, keep_alive(OK)]
        async with ScriptedServer(answers, close_after=lambda n: n in (2, 3)) as server:
            answers = await put_all(settings_for(f"http://127.0.0.1:{server.port}"), 4)
            return answers, server.connections

    answers, connections = asyncio.run(scenario())
    assert [a["nextSequenceToken"] for a in answers] == ["1"] * 4
    assert connections == 3  # a new one after each answer that ended its connection


def test_an_error_answer_raises_the_client_methods_error() -> None:
    error = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(error), error)

    async def scenario() -> None:
        async with ScriptedServer([answer]) as server:
            await put_all(settings_for(f"http://127.0.0.1:{server.port}"), 1)

    with pytest.raises(ClientError) as raised:
        asyncio.run(scenario())
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert classify(raised.value) is Failure.TRANSIENT


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_is_verified_against_the_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    async def scenario() -> list[dict]:
        async with ScriptedServer([keep_alive(OK)] * 2, tls=tls) as server:
            return await put_all(settings_for(f"https://localhost:{server.port}"), 2)

    # A certificate no CA in the bundle vouches for is refused.
    with pytest.raises(SSLError) as refused:
        asyncio.run(scenario())
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)

    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    answers = asyncio.run(scenario())
    assert [a["nextSequenceToken"] for a in answers] == ["1", "1"]


def test_a_proxy_in_the_environment_carries_the_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> list[bytes]:
        async with ScriptedServer([keep_alive(OK)]) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            await put_all(settings_for("http://logs.us-west-2.example:8080"), 1)
            return proxy.request_lines

    # The proxy is asked for the endpoint's URL, as HTTP proxies are.
    assert asyncio.run(scenario()) == [b"POST http://logs.us-west-2.example:8080/ HTTP/1.1"]
