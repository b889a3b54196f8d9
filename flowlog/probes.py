"""The agent's HTTP endpoints: Prometheus metrics, and /healthz and /readyz probes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from flowlog.config import parse_bind_addr


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


class ProbeServer:
    """Serves metrics on one address and health on another (the same one is fine too)."""

    def __init__(
        self,
        metrics_addr: str,
        health_addr: str,
        readiness: Callable[[], tuple[bool, dict[str, Any]]],
    ) -> None:
        self.metrics_addr = parse_bind_addr(metrics_addr)
        self.health_addr = parse_bind_addr(health_addr)
        self.readiness = readiness
        self._runners: list[web.AppRunner] = []

    async def _healthz(self, _: web.Request) -> web.Response:
        # Answering at all shows the event loop is alive, which is what liveness means here.
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, detail = self.readiness()
        body = orjson.dumps({"ready": ready, **detail}, option=orjson.OPT_INDENT_2)
        return web.Response(
            status=200 if ready else 503, body=body, content_type="application/json"
        )

    async def start(self) -> None:
        routes = {
            self.metrics_addr: [web.get("/metrics", _metrics)],
        }
        routes.setdefault(self.health_addr, []).extend(
            [web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)]
        )
        for (host, port), handlers in routes.items():
            app = web.Application()
            app.add_routes(handlers)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, host or None, port, reuse_address=True).start()
            self._runners.append(runner)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
