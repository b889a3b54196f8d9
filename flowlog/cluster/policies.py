"""PolicyEndpoints from the API, as a policy source of the data plane.

Every PolicyEndpoint in the cluster is watched (the network policy
controller writes one or more per NetworkPolicy); the data plane is handed
those that select pods on this node, each cut down to this node's pods, so
the rules compiled stay proportional to the node, not the cluster. A
version the data plane cannot enforce is rejected with one line naming
``namespace/name`` and the field, and a Kubernetes Event on the object;
the rules in force stay in force.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from flowlog.cluster import metrics
from flowlog.cluster.events import EventRecorder
from flowlog.dataplane.sources import Content

Key = tuple[str, str]
REJECTED_REASON = "PolicyEndpointRejected"


def document_name(key: Key) -> str:
    namespace, name = key
    return f"{namespace}/{name}"


class ApiPolicies:
    """The informer's handler for PolicyEndpoints, and the data plane's policy source."""

    description = "the Kubernetes API (policyendpoints.networking.k8s.aws)"
    strict_at_start = False

    def __init__(
        self,
        events: EventRecorder | None = None,
        local_pods: Callable[[], set[Key]] | None = None,
    ) -> None:
        self.events = events
        # The pods on this node, or None to keep every pod (no pod informer).
        self.local_pods = local_pods
        self.objects: dict[Key, bytes] = {}
        self._changed = asyncio.Event()
        self._by_name: dict[str, Key] = {}

    # --- the informer's side ------------------------------------------------------

    def reduce(self, obj: dict[str, Any]) -> bytes:
        """What can change what is enforced (spec), and what names the object."""
        metadata = obj.get("metadata") or {}
        kept = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "metadata": {
                key: metadata.get(key) for key in ("name", "namespace", "uid", "resourceVersion")
            },
            "spec": obj.get("spec"),
        }
        return orjson.dumps(kept)

    def changed(self, key: Key, old: bytes | None, new: bytes | None) -> None:
        if new is None:
            self.objects.pop(key, None)
        else:
            self.objects[key] = new
        self._changed.set()

    def local_pods_changed(self) -> None:
        self._changed.set()

    # --- the data plane's side ------------------------------------------------------

    def check(self) -> None:
        """Nothing to check before the informer has listed."""

    def snapshot(self) -> dict[str, Content]:
        local = self.local_pods() if self.local_pods is not None else None
        documents: dict[str, Content] = {}
        self._by_name = {}
        for key, raw in self.objects.items():
            document = orjson.loads(raw)
            # Versions that differ only in metadata enforce the same thing.
            document["metadata"].pop("resourceVersion", None)
            if local is not None:
                spec = document.get("spec")
                endpoints = spec.get("podSelectorEndpoints") if isinstance(spec, dict) else None
                if isinstance(endpoints, list):
                    here = [
                        e
                        for e in endpoints
                        if isinstance(e, dict) and (e.get("namespace"), e.get("name")) in local
                    ]
                    if not here:
                        continue  # selects no pod on this node
                    spec["podSelectorEndpoints"] = here
            name = document_name(key)
            documents[name] = document
            self._by_name[name] = key
        return documents

    async def changes(self) -> AsyncIterator[object]:
        while True:
            await self._changed.wait()
            self._changed.clear()
            yield None

    def rejected(self, name: str, error: str) -> None:
        metrics.POLICIES_REJECTED.inc()
        key = self._by_name.get(name)
        if self.events is None or key is None or key not in self.objects:
            return
        involved = orjson.loads(self.objects[key])
        self.events.warn(involved, REJECTED_REASON, f"not enforced on this node: {error}")
