"""A local CloudWatch Logs endpoint that checks every PutLogEvents call against the
real limits and answers as CloudWatch does; fast enough to measure a client.

    python -m bench.cloudwatch_sink PORT

``GET /stats`` returns what it received: calls,
events, bytes (counting 26 bytes per event, as the limit does) and request body
bytes per call, and every limit breach found.

It shares two cores with the client it measures, so it must cost less per event
than the client, or the client spends its time waiting on it (and, on this VM,
more CPU per event for the waiting). So HTTP is served straight off an asyncio
protocol, each body received into one buffer of its announced size (aiohttp's
server cost 0.3 µs per event to read them, this 0.1), and ``limits`` checks the
decoded body without a Python loop per event. What remains is orjson decoding
the body, 0.4 to 0.7 µs per event.
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from flowlog.cloudwatch.limits import measure_put_log_events

AMZ_JSON = b"application/x-amz-json-1.1"
HEADERS_LIMIT = 64 << 10
BODY_LIMIT = 8 << 20
REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required"}


class Sink:
    """CloudWatch Logs' answers: one group and stream namespace, every call recorded."""

    def __init__(self) -> None:
        self.groups: set[str] = set()
        self.streams: set[tuple[str, str]] = set()
        self.calls: list[tuple[int, int, int]] = []  # (events, bytes with overhead, body bytes)
        self.breaches: list[str] = []

    def answer(self, operation: str, raw: bytes | bytearray) -> tuple[int, dict]:
        """The status and JSON document CloudWatch Logs answers ``operation`` with."""
        body = orjson.loads(raw or b"{}")
        if operation == "DescribeLogGroups":
            prefix = body.get("logGroupNamePrefix", "")
            groups = [{"logGroupName": g} for g in sorted(self.groups) if g.startswith(prefix)]
            return 200, {"logGroups": groups}
        if operation == "CreateLogGroup":
            if body["logGroupName"] in self.groups:
                return _error(
                    "ResourceAlreadyExistsException", "The specified log group already exists"
                )
            self.groups.add(body["logGroupName"])
            return 200, {}
        if operation == "CreateLogStream":
            key = (body["logGroupName"], body["logStreamName"])
            if key in self.streams:
                return _error(
                    "ResourceAlreadyExistsException", "The specified log stream already exists"
                )
            self.streams.add(key)
            return 200, {}
        if operation == "PutLogEvents":
            if (body.get("logGroupName"), body.get("logStreamName")) not in self.streams:
                return _error(
                    "ResourceNotFoundException", "The specified log stream does not exist."
                )
            problems, size = measure_put_log_events(body)
            if problems:
                self.breaches += problems
                return _error("InvalidParameterException", "; ".join(problems))
            self.calls.append((len(body["logEvents"]), size, len(raw)))
            return 200, {"nextSequenceToken": str(len(self.calls))}
        return _error("UnknownOperationException", operation)

    def stats(self) -> dict:
        return {"calls": self.calls, "breaches": self.breaches}


def _error(kind: str, message: str) -> tuple[int, dict]:
    return 400, {"__type": kind, "message": message}


class HttpConnection(asyncio.BufferedProtocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies (what botocore and aiohttp
    send): headers gathered in a scratch buffer, each body received in place."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.scratch = bytearray(HEADERS_LIMIT)
        self.head = bytearray()  # bytes received of the next request's head
        self.request: tuple[str, dict[str, str]] | None = None  # its line and headers
        self.body = bytearray()
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self.request is not None:
            return memoryview(self.body)[self.received :]
        return self.scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self.request is not None:
            self.received += nbytes
        else:
            self.head += memoryview(self.scratch)[:nbytes]
        self._proceed()

    def _proceed(self) -> None:
        while True:
            if self.request is None and not self._start_request():
                return
            if self.received < len(self.body):
                return
            self._respond()

    def _start_request(self) -> bool:
        """Parse a complete head, if there is one, and move what follows it into the body."""
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > HEADERS_LIMIT:
                self._fail(400)
            return False
        line, *fields = self.head[:end].decode("latin-1").split("\r\n")
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
        rest = self.head[end + 4 :]
        if "chunked" in headers.get("transfer-encoding", ""):
            self._fail(411)
            return False
        size = int(headers.get("content-length", "0"))
        if size > BODY_LIMIT:
            self._fail(400)
            return False
        self.request = (line, headers)
        self.body = bytearray(size)
        self.received = min(size, len(rest))
        self.body[: self.received] = rest[: self.received]
        self.head = rest[self.received :]
        return True

    def _respond(self) -> None:
        assert self.request is not None and self.transport is not None
        line, headers = self.request
        body, self.body, self.received, self.request = self.body, bytearray(), 0, None
        method, _, rest = line.partition(" ")
        if method == "GET" and rest.startswith("/stats"):
            status, document = 200, self.sink.stats()
        elif method == "POST":
            operation = headers.get("x-amz-target", "").rpartition(".")[2]
            status, document = self.sink.answer(operation, body)
        else:
            status, document = 404, {"message": line}
        answer = orjson.dumps(document)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (status, REASONS[status], AMZ_JSON, len(answer), answer)
        )
        if headers.get("connection", "").lower() == "close":
            self.transport.close()

    def _fail(self, status: int) -> None:
        assert self.transport is not None
        head = b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n" % (status, REASONS[status])
        self.transport.write(head)
        self.transport.close()
        self.head = bytearray()


async def serve(port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(sink), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
