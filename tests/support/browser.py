"""Headless Debian chromium driven over the DevTools protocol, through a pipe.

``--remote-debugging-pipe`` makes chromium read commands from its fd 3 and
write answers and events to its fd 4, as NUL-terminated JSON: no port, no
WebSocket library, nothing listening. The browser starts with every network
path closed (a proxy that refuses, a resolver that resolves nothing, no
background networking), and each page is put offline before it loads; the
requests a page makes are recorded, so a test can show there were none.
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

CHROMIUM = "chromium"
ANSWER_SECONDS = 30.0
LOAD_SECONDS = 30.0
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
    # Nowhere to go: a proxy port nothing listens on, and no name resolves.
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
# Chromium's ends of the pipe: commands in, answers and events out.
COMMANDS_FD, EVENTS_FD = 3, 4
# Where the child first moves its ends, clear of 3 and 4 whatever they were.
SPARE_FDS = (100, 101)


def chromium_missing() -> str | None:
    if shutil.which(CHROMIUM) is None:
        return "needs Debian's chromium (make test installs it: scripts/setup-browser)"
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One chromium process; ``open()`` gives pages in it."""

    def __init__(self, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        commands_read, self._commands = os.pipe()
        self._events, events_write = os.pipe()

        def wire_pipe() -> None:  # in the child, before exec
            os.dup2(commands_read, SPARE_FDS[0])
            os.dup2(events_write, SPARE_FDS[1])
            os.dup2(SPARE_FDS[0], COMMANDS_FD)
            os.dup2(SPARE_FDS[1], EVENTS_FD)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(COMMANDS_FD, EVENTS_FD),
            preexec_fn=wire_pipe,
        )
        os.close(commands_read)
        os.close(events_write)
        self._ids = itertools.count(1)
        self._answers: dict[int, dict] = {}
        self.events: list[dict] = []
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pending = b""
        while chunk := os.read(self._events, 1 << 16):
            pending += chunk
            *messages, pending = pending.split(b"\0")
            with self._arrived:
                for message in messages:
                    decoded = orjson.loads(message)
                    if "id" in decoded:
                        self._answers[decoded["id"]] = decoded
                    else:
                        self.events.append(decoded)
                self._arrived.notify_all()

    def send(self, method: str, session: str | None = None, **params: Any) -> dict:
        """Send one command and wait for its answer's result."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, orjson.dumps(message) + b"\0")
        deadline = time.monotonic() + ANSWER_SECONDS
        with self._arrived:
            while message_id not in self._answers:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    raise BrowserError(f"no answer to {method}")
                self._arrived.wait(remaining)
            answer = self._answers.pop(message_id)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def wait_for_event(self, method: str, session: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for event in self.events:
                    if event.get("method") == method and event.get("sessionId") == session:
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrowserError(f"no {method} within {timeout:g}s")
                self._arrived.wait(remaining)

    def open(self, url: str, width: int = 1400, height: int = 900) -> Page:
        """A new tab, offline, ``width`` x ``height``, with ``url`` loaded."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable", session)
        self.send(
            "Network.emulateNetworkConditions",
            session,
            offline=True,
            latency=0,
            downloadThroughput=-1,
            uploadThroughput=-1,
        )
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", session, url=url)
        self.wait_for_event("Page.loadEventFired", session, LOAD_SECONDS)
        return Page(self, session, url)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("Browser.close")
                self.process.wait(10)
            except (BrowserError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        os.close(self._commands)
        self._reader.join(10)
        os.close(self._events)


class Page:
    def __init__(self, browser: Browser, session: str, url: str) -> None:
        self.browser = browser
        self.session = session
        self.url = url

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a JSON-able one)."""
        result = self.browser.send(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        data = self.browser.send("Page.captureScreenshot", self.session, format="png")["data"]
        return base64.b64decode(data)

    def _events(self, method: str) -> list[dict]:
        return [
            event["params"]
            for event in list(self.browser.events)
            if event.get("method") == method and event.get("sessionId") == self.session
        ]

    @property
    def requested_urls(self) -> list[str]:
        return [event["request"]["url"] for event in self._events("Network.requestWillBeSent")]

    @property
    def errors(self) -> list[str]:
        """Uncaught exceptions and console errors."""
        thrown = [
            event["exceptionDetails"].get("text", "")
            for event in self._events("Runtime.exceptionThrown")
        ]
        logged = [
            event["entry"]["text"]
            for event in self._events("Log.entryAdded")
            if event["entry"]["level"] == "error"
        ]
        consoled = [
            str(event.get("args"))
            for event in self._events("Runtime.consoleAPICalled")
            if event.get("type") == "error"
        ]
        return thrown + logged + consoled


@contextmanager
def running_browser(profile: Path) -> Iterator[Browser]:
    browser = Browser(profile)
    try:
        yield browser
    finally:
        browser.close()
