"""Keep-alive HTTP/1.1 connections for the one request the exporter makes over and over.

Sending a PutLogEvents body through aiobotocore's HTTP session and aiohttp
cost 0.08 µs per event shipped more than this module does (interleaved
benchmark runs, 1.03 against 0.95 µs): request and response objects, header
multidicts, proxy lookups, timers and a copy of each body, per call.
This module does only what one POST of a ready body needs: write the head and
the body, read the status line, headers and a Content-Length or chunked
answer, and keep the connection for the next call.

What it leaves to botocore and aiobotocore: the endpoint, credentials,
signing inputs, proxies (a call that must go through a proxy takes
aiobotocore's path instead), the CA bundle (``AWS_CA_BUNDLE`` or
``ca_bundle``), parsing the answer and every rare call. Failures are raised as
botocore's exceptions for them, so ``retry`` classifies and describes them
the same way whichever path a call took.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    SSLError as BotocoreSSLError,
)

# Longer heads than this are not an HTTP answer we understand.
MAX_HEAD_BYTES = 64 << 10


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class Connections:
    """Up to ``limit`` idle keep-alive connections to the endpoint of ``url``."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float,
        limit: int,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ssl_context = ssl_context if self.https else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.limit = limit
        self._host_header = parts.netloc.rpartition("@")[2]
        self._idle: list[_Connection] = []

    async def post(self, headers: dict[str, str], body: bytes) -> Answer:
        """POST ``body`` with ``headers`` (Host and Content-Length are added)."""
        # No compressed answers: the parser takes the body as it comes (aiobotocore
        # asks the same).
        lines = [
            f"POST {self.target} HTTP/1.1",
            f"Host: {self._host_header}",
            "Accept-Encoding: identity",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "\r\n".join(lines).encode("latin-1")
        while self._idle:
            connection = self._idle.pop()
            if not connection.usable:
                connection.close()
                continue
            try:
                return await self._exchange(connection, head, body)
            except _Unanswered:
                # The server closed it while it was idle: it never saw this request.
                continue
        connection = await self._connect()
        try:
            return await self._exchange(connection, head, body)
        except _Unanswered as unanswered:
            raise ConnectionClosedError(endpoint_url=self.url) from unanswered.__cause__

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError, ssl.SSLError):
                await connection.writer.wait_closed()

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                    limit=MAX_HEAD_BYTES,
                )
        except TimeoutError as error:
            raise ConnectTimeoutError(endpoint_url=self.url, error=error) from error
        except ssl.SSLError as error:
            raise BotocoreSSLError(endpoint_url=self.url, error=error) from error
        except OSError as error:
            raise EndpointConnectionError(endpoint_url=self.url, error=error) from error
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, head: bytes, body: bytes) -> Answer:
        answered = False
        try:
            async with asyncio.timeout(self.read_timeout):
                connection.writer.write(head)
                connection.writer.write(body)
                await connection.writer.drain()
                status_line = await connection.reader.readuntil(b"\r\n")
                answered = True
                answer, keep = await _read_answer(connection.reader, status_line)
        except BaseException as error:
            connection.close()
            if isinstance(error, TimeoutError):
                raise ReadTimeoutError(endpoint_url=self.url, error=error) from error
            if isinstance(error, ssl.SSLError):
                raise BotocoreSSLError(endpoint_url=self.url, error=error) from error
            if isinstance(error, OSError | asyncio.IncompleteReadError | asyncio.LimitOverrunError):
                if not answered:
                    raise _Unanswered() from error
                raise ConnectionClosedError(endpoint_url=self.url) from error
            raise
        if keep and len(self._idle) < self.limit:
            self._idle.append(connection)
        else:
            connection.close()
        return answer


class _Unanswered(Exception):
    """The connection failed before the first byte of an answer."""


async def _read_answer(reader: asyncio.StreamReader, status_line: bytes) -> tuple[Answer, bool]:
    """The answer whose status line was read, and whether the connection can be reused."""
    version, _, rest = status_line.decode("latin-1").partition(" ")
    status = int(rest.split(" ", 1)[0])
    headers = {}
    while (field := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = field.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunks(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body, keep = await reader.read(), False
    return Answer(status, headers, body), keep


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await _skip_trailers(reader)
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass
