"""Run ``flowlog`` as a real child process and talk to it over its HTTP endpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from flowlog.demo.local_cloudwatch import free_port
from flowlog.demo.topology import Namespace


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class AgentProcess:
    """``flowlog agent ...`` with its probes on free loopback ports."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        namespace: Namespace | None = None,
        command: str = "agent",
    ) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        argv = [sys.executable, "-m", "flowlog", command, *args]
        if command == "agent":
            argv += [
                "--metrics-bind-addr",
                f"127.0.0.1:{self.metrics_port}",
                "--health-probe-bind-addr",
                f"127.0.0.1:{self.health_port}",
            ]
        # Inside a network namespace its probes listen there too, so they are
        # fetched from a thread that has entered it.
        self.namespace = namespace
        if namespace:
            argv = namespace.command(argv)
        self.stderr_path = (
            Path(os.environ.get("TMPDIR", "/tmp"))
            / f"flowlog-agent-{os.getpid()}-{self.health_port}.err"
        )
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._stderr, env={**os.environ, **(env or {})}
        )

    def get(self, port: int, path: str) -> tuple[int, bytes]:
        if self.namespace:
            namespace, self.namespace = self.namespace, None
            try:
                return namespace.call(lambda: self.get(port, path))
            finally:
                self.namespace = namespace
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def ready(self) -> dict | None:
        if self.process.poll() is not None:
            raise AssertionError(f"agent exited with {self.process.returncode}: {self.stderr()}")
        try:
            status, body = self.get(self.health_port, "/readyz")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return orjson.loads(body) if status == 200 else None

    def wait_ready(self, timeout: float = 60.0) -> dict:
        return wait_until(self.ready, timeout, message="the agent to be ready")

    def metric(self, name: str, **labels: str) -> float:
        """A sample from /metrics (0 when absent)."""
        _, body = self.get(self.metrics_port, "/metrics")
        wanted = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
        )
        for line in body.decode().splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == wanted:
                return float(value)
        return 0.0

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, and the exit status (killed and failed if it takes longer than ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"agent did not exit within {timeout}s of SIGTERM") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.kill()
        if self.process.stdout:
            self.process.stdout.close()
        self._stderr.close()
        self.stderr_path.unlink(missing_ok=True)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
