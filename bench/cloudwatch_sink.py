"""A local CloudWatch Logs endpoint that checks every PutLogEvents call against the
real limits and answers as CloudWatch does; fast enough to measure a client.

    python -m bench.cloudwatch_sink PORT

``GET /stats`` returns what it received: calls,
events, bytes (counting 26 bytes per event, as the limit does) and request body
bytes per call, and every limit breach found.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web

from flowlog.cloudwatch.limits import measure_put_log_events

AMZ_JSON = "application/x-amz-json-1.1"


class Sink:
    def __init__(self) -> None:
        self.groups: set[str] = set()
        self.streams: set[tuple[str, str]] = set()
        self.calls: list[tuple[int, int, int]] = []  # (events, bytes with overhead, body bytes)
        self.breaches: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        raw = await request.read()
        body = orjson.loads(raw or b"{}")
        if operation == "DescribeLogGroups":
            prefix = body.get("logGroupNamePrefix", "")
            groups = [{"logGroupName": g} for g in sorted(self.groups) if g.startswith(prefix)]
            return _answer({"logGroups": groups})
        if operation == "CreateLogGroup":
            if body["logGroupName"] in self.groups:
                return _error(
                    "ResourceAlreadyExistsException", "The specified log group already exists"
                )
            self.groups.add(body["logGroupName"])
            return _answer({})
        if operation == "CreateLogStream":
            key = (body["logGroupName"], body["logStreamName"])
            if key in self.streams:
                return _error(
                    "ResourceAlreadyExistsException", "The specified log stream already exists"
                )
            self.streams.add(key)
            return _answer({})
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
            return _answer({"nextSequenceToken": str(len(self.calls))})
        return _error("UnknownOperationException", operation)

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response({"calls": self.calls, "breaches": self.breaches})


def _answer(document: dict) -> web.Response:
    return web.Response(body=orjson.dumps(document), content_type=AMZ_JSON)


def _error(kind: str, message: str) -> web.Response:
    return web.Response(
        status=400, body=orjson.dumps({"__type": kind, "message": message}), content_type=AMZ_JSON
    )


def main() -> None:
    sink = Sink()
    app = web.Application(client_max_size=8 << 20)
    app.router.add_get("/stats", sink.stats)
    app.router.add_post("/", sink.handle)

    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
