"""Informers: a kind of object kept in step with the API server, as client-go keeps them.

List (in pages), then watch from the list's resourceVersion with bookmarks,
so that nothing between the two is missed. A watch that ends (servers end
them on purpose), drops or fails is started again from the last
resourceVersion seen, after a backoff with jitter while the server is
unreachable; a resourceVersion the server has compacted away (410 Gone)
means a new list, reconciled with what was held: objects added, changed and
deleted in between are all told to the handler as if watched.

The store keeps only what the handler's ``reduce`` keeps of each object, not
the objects: a cluster's pods are large and the agent needs a few of their
fields.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Hashable
from typing import Any, Protocol

import orjson
from tenacity import AsyncRetrying, retry_if_exception

from flowlog.cluster import metrics
from flowlog.cluster.client import WATCH_SECONDS, ApiError, KubeClient, Resource, backoff

log = logging.getLogger(__name__)

LIST_PAGE = 500
GONE = 410
Key = tuple[str, str]  # (namespace, name)


class Expired(Exception):
    """The resourceVersion is older than the server's history: list again."""


class Handler(Protocol):
    def reduce(self, obj: dict[str, Any]) -> Hashable:
        """What is kept of an object; a change to anything else is no change."""

    def changed(self, key: Key, old: Hashable | None, new: Hashable | None) -> None:
        """An object appeared (old None), changed, or went away (new None)."""


def _key(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return (metadata.get("namespace") or "", metadata.get("name") or "")


def _transient(error: BaseException) -> bool:
    """Worth trying again: the network, the server's 5xx and 429, and 401 (a token
    about to be rotated) alike; the informer never gives up."""
    return not isinstance(error, Expired | asyncio.CancelledError)


class Informer:
    """One kind's objects, listed and watched; the handler told of every change."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        handler: Handler,
        field_selector: str = "",
    ) -> None:
        self.client = client
        self.resource = resource
        self.handler = handler
        self.field_selector = field_selector
        self.store: dict[Key, Hashable] = {}
        self.synced = asyncio.Event()
        self.watching = False
        self.resource_version = ""
        self.last_error = ""
        self._labels = {"kind": resource.plural}

    async def run(self) -> None:
        while True:
            await self._retrying(self._list)
            try:
                while True:
                    await self._retrying(self._watch)
            except Expired:
                metrics.RELISTS.labels(**self._labels).inc()
                log.info("%s: resourceVersion expired; listing again", self.resource.plural)

    async def _retrying(self, attempt: Callable) -> None:
        """``attempt`` until it returns, with backoff; Expired passes through."""
        async for trying in AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=backoff(),
            before_sleep=self._failed,
            reraise=True,
        ):
            with trying:
                await attempt()

    def _failed(self, state: Any) -> None:
        error = state.outcome.exception()
        text = f"{type(error).__name__}: {error}".strip()
        metrics.WATCH_RESTARTS.labels(**self._labels).inc()
        self.watching = False
        if text != self.last_error:  # a server that stays down is logged once
            log.warning(
                "%s: %s; trying again (flowlog_kube_watch_restarts_total)",
                self.resource.plural,
                text,
            )
        self.last_error = text

    def _params(self) -> dict[str, Any]:
        return {"fieldSelector": self.field_selector} if self.field_selector else {}

    async def _list(self) -> None:
        """Every object now, reconciled with the store."""
        fresh: dict[Key, Hashable] = {}
        params = {**self._params(), "limit": LIST_PAGE}
        while True:
            page = await self.client.request("GET", self.resource, params=params)
            for item in page.get("items") or []:
                fresh[_key(item)] = self.handler.reduce(item)
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            params["continue"] = metadata["continue"]
        old, self.store = self.store, fresh
        for key in old.keys() - fresh.keys():
            self.handler.changed(key, old[key], None)
        for key, value in fresh.items():
            if old.get(key) != value:
                self.handler.changed(key, old.get(key), value)
        self.resource_version = metadata.get("resourceVersion", "")
        self.last_error = ""
        metrics.OBJECTS.labels(**self._labels).set(len(self.store))
        self.synced.set()

    async def _watch(self) -> None:
        """One watch from the last resourceVersion, until the server ends it."""
        params = {
            **self._params(),
            "watch": "true",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            # Spread over time, so that agents do not all reconnect at once.
            "timeoutSeconds": random.randint(WATCH_SECONDS // 2, WATCH_SECONDS),
        }
        async with self.client.stream(self.resource, params) as lines:
            self.watching = True
            async for line in lines:
                if line:
                    self._event(orjson.loads(line))
        self.watching = False

    def _event(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == GONE:
                raise Expired(obj.get("message", ""))
            raise ApiError(obj.get("code", 0), obj.get("reason", ""), obj.get("message", ""))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            key, value = _key(obj), self.handler.reduce(obj)
            old = self.store.get(key)
            self.store[key] = value
            if old != value:
                self.handler.changed(key, old, value)
        elif kind == "DELETED":
            key = _key(obj)
            if key in self.store:
                self.handler.changed(key, self.store.pop(key), None)
        if version:
            self.resource_version = version
        self.last_error = ""
        metrics.OBJECTS.labels(**self._labels).set(len(self.store))

    def status(self) -> dict[str, Any]:
        return {
            "synced": self.synced.is_set(),
            "watching": self.watching,
            "objects": len(self.store),
            "resourceVersion": self.resource_version,
            "error": self.last_error or None,
        }
