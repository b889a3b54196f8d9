"""A recording, fault-injecting HTTP proxy in front of the local CloudWatch.

Clients talk to ``proxy.endpoint`` exactly as they would to CloudWatch; every
request is forwarded to moto over real HTTP and recorded (operation, decoded
JSON body, path and headers, HTTP status). Faults answer chosen calls the way CloudWatch does
(for example a throttle: HTTP 400 with ``__type`` ThrottlingException),
which botocore and aiobotocore treat as the real thing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from flowlog.demo.local_cloudwatch import free_port

AMZ_JSON = "application/x-amz-json-1.1"


@dataclass
class Call:
    operation: str  # e.g. "PutLogEvents"
    body: dict[str, Any]
    status: int = 0
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    response: dict[str, Any] | None = None


@dataclass
class Fault:
    """Answer the next ``count`` calls of ``operation`` with ``status`` and an error body."""

    operation: str
    count: int
    status: int = 400
    error_type: str = "ThrottlingException"
    message: str = "Rate exceeded"

    def response(self) -> web.Response:
        body = orjson.dumps({"__type": self.error_type, "message": self.message})
        return web.Response(status=self.status, body=body, content_type=AMZ_JSON)


@dataclass
class CloudWatchProxy:
    upstream: str
    port: int = field(default_factory=free_port)
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # Called with each forwarded call before it is sent upstream; may return a
    # web.Response to answer instead (for checks such as the API limits).
    inspect: Callable[[Call], web.Response | None] | None = None
    # Seconds each call of an operation waits before it is forwarded (a slow service).
    latency: dict[str, float] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def calls_of(self, operation: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.operation == operation]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        call = Call(
            target.rpartition(".")[2],
            orjson.loads(raw) if raw else {},
            path=request.path_qs,
            headers=dict(request.headers),
        )
        with self._lock:
            self.calls.append(call)
            fault = next(
                (f for f in self.faults if f.operation == call.operation and f.count), None
            )
            if fault:
                fault.count -= 1
        if fault:
            call.status = fault.status
            return fault.response()
        if self.inspect and (answer := self.inspect(call)) is not None:
            call.status = answer.status
            return answer
        if delay := self.latency.get(call.operation):
            await asyncio.sleep(delay)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=raw, headers=headers
        ) as upstream:
            body = await upstream.read()
            call.status = upstream.status
            # moto labels some JSON answers (StartQuery, GetQueryResults) text/html.
            if body and body.lstrip()[:1] == b"{":
                call.response = orjson.loads(body)
            return web.Response(
                status=upstream.status, body=body, content_type=upstream.content_type
            )

    async def _serve(self, ready: threading.Event) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        ready.set()

    def start(self) -> CloudWatchProxy:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        if not ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        if not self._loop:
            return

        async def shutdown() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> CloudWatchProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
