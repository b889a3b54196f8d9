"""Kubernetes Events about the objects the agent could not use, posted best effort.

``kubectl describe policyendpoint …`` then shows why this node does not
enforce a version of it. An Event is posted once per version of an object,
from a task of its own, so a slow or refusing API server never holds up the
data plane; a failure is counted and logged once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from flowlog.cluster import metrics
from flowlog.cluster.client import EVENTS, KubeClient

log = logging.getLogger(__name__)

COMPONENT = "flowlog"
MESSAGE_LIMIT = 1024  # the API refuses longer Event messages


class EventRecorder:
    def __init__(self, client: KubeClient, node_name: str) -> None:
        self.client = client
        self.node_name = node_name
        self._posted: set[tuple[str, str]] = set()  # (uid, resourceVersion)
        self._tasks: set[asyncio.Task] = set()
        self._failing = False

    def warn(self, involved: dict[str, Any], reason: str, message: str) -> None:
        """A Warning Event on ``involved`` (an object's apiVersion, kind and metadata)."""
        metadata = involved.get("metadata") or {}
        version = (metadata.get("uid", ""), metadata.get("resourceVersion", ""))
        if version in self._posted:
            return
        self._posted.add(version)
        task = asyncio.get_running_loop().create_task(self._post(involved, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, involved: dict[str, Any], reason: str, message: str) -> None:
        metadata = involved.get("metadata") or {}
        namespace = metadata.get("namespace") or "default"
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata.get('name', 'object')}.",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", ""),
                "kind": involved.get("kind", ""),
                "name": metadata.get("name", ""),
                "namespace": namespace,
                "uid": metadata.get("uid", ""),
                "resourceVersion": metadata.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message[:MESSAGE_LIMIT],
            "type": "Warning",
            "source": {"component": COMPONENT, "host": self.node_name},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node_name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.client.request("POST", EVENTS, namespace=namespace, body=event)
        except Exception as error:  # best effort: the log line and metric stay the record
            metrics.EVENTS_POSTED.labels(result="failed").inc()
            if not self._failing:
                log.warning("cannot post a Kubernetes Event (%s); go on without", error)
            self._failing = True
            return
        metrics.EVENTS_POSTED.labels(result="posted").inc()
        self._failing = False
