"""The agent's view of its cluster: who held each address, and the policies to enforce.

``ClusterView`` is the one way in. It names both ends of every flow
(``peers``: pods cluster-wide and their nodes from the Kubernetes API, this
node's pods from the VPC CNI checkpoint, the pods of the PolicyEndpoints in
force) for every source of events, and, when the agent enforces policies
without ``--policy-dir``, hands the data plane the PolicyEndpoints that
select this node's pods (``policies``). Without API access it still names
what the checkpoint and the policies know.

The API is reached with kr8s (``client``), watched by informers
(``informer``): list, watch from the list's resourceVersion with
bookmarks, relist on 410, backoff while the server is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception

from flowlog.cluster import metrics
from flowlog.cluster.client import PODS, POLICY_ENDPOINTS, KubeClient, backoff, where
from flowlog.cluster.events import EventRecorder
from flowlog.cluster.informer import Informer
from flowlog.cluster.ipam import CheckpointNames
from flowlog.cluster.peers import POD, POLICY, Identity, Peers, address_bytes
from flowlog.cluster.pods import PodIdentities
from flowlog.cluster.policies import ApiPolicies

log = logging.getLogger(__name__)

EXPIRE_SECONDS = 60.0

__all__ = ["ClusterView"]


class ClusterView:
    def __init__(self, settings: Any, enforce_from_api: bool = False) -> None:
        self.settings = settings
        self.peers = Peers()
        self.checkpoint = CheckpointNames(settings.ipam_checkpoint, self.peers)
        self.api = where(settings)
        self.client = KubeClient(settings) if self.api else None
        self.pods: PodIdentities | None = None
        self.informers: list[Informer] = []
        self.policies: ApiPolicies | None = None  # the data plane's policy source, if any
        self.connect_error = ""
        if self.client is None:
            return
        if settings.watch_pods != "none":
            self.pods = PodIdentities(self.peers, settings.node_name, self._local_pods_changed)
            selector = (
                f"spec.nodeName={settings.node_name}" if settings.watch_pods == "node" else ""
            )
            self.informers.append(Informer(self.client, PODS, self.pods, field_selector=selector))
        if enforce_from_api:
            local = (lambda: set(self.pods.local)) if self.pods else None
            self.policies = ApiPolicies(EventRecorder(self.client, settings.node_name), local)
            self.informers.append(Informer(self.client, POLICY_ENDPOINTS, self.policies))

    def describe(self) -> str:
        """One line for the log: where names and policies come from."""
        named = [f"the VPC CNI checkpoint {self.settings.ipam_checkpoint}"]
        if self.pods is not None:
            which = "this node's" if self.settings.watch_pods == "node" else "the cluster's"
            named.insert(0, f"{which} pods from the Kubernetes API ({self.api})")
        text = "flows named from " + " and ".join(named)
        if self.policies is not None:
            text += "; PolicyEndpoints from the Kubernetes API"
        elif self.client is None and not self.settings.policy_dir:
            text += (
                "; no Kubernetes API (no service account in a pod, no --kubeconfig) "
                "and no --policy-dir: no policies to enforce"
            )
        return text

    def _local_pods_changed(self) -> None:
        if self.policies is not None:
            self.policies.local_pods_changed()

    def policies_in_force(self, documents: list) -> None:
        """The data plane's documents: their pods' IPs name flows too."""
        claims = {
            (f"{pod.namespace}/{pod.name}", address_bytes(pod.ip)): Identity(
                POD, pod.name, pod.namespace
            )
            for document in documents
            for pod in document.pods
            if pod.ip
        }
        self.peers.replace_claims(POLICY, claims)

    # --- running ------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [self.checkpoint.follow(), self._expire()]
        if self.client is not None:
            tasks.append(self._follow_api())
        await asyncio.gather(*tasks)

    async def _follow_api(self) -> None:
        assert self.client is not None
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, Exception)),
            wait=backoff(),
            before_sleep=self._connect_failed,
        ):
            with attempt:
                await self.client.connect()
        self.connect_error = ""
        await asyncio.gather(
            self.client.follow_token(), *(informer.run() for informer in self.informers)
        )

    def _connect_failed(self, state: Any) -> None:
        error = state.outcome.exception()
        text = f"{type(error).__name__}: {error}"
        if text != self.connect_error:
            log.warning("cannot reach the Kubernetes API (%s); trying again", text)
        self.connect_error = text

    async def _expire(self) -> None:
        while True:
            metrics.ADDRESSES.set(self.peers.addresses)
            await asyncio.sleep(EXPIRE_SECONDS)
            self.peers.expire()

    async def wait_synced(self, timeout: float) -> bool:
        """Until the checkpoint is read and every informer has listed once (False if
        ``timeout`` passes first)."""
        waits = [informer.synced.wait() for informer in self.informers]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(self.checkpoint.read_once.wait(), *waits), timeout
            )
        return self.synced

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.informers)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        missing = [i.resource.plural for i in self.informers if not i.synced.is_set()]
        detail: dict[str, Any] = {
            "api": self.api,
            "server": self.client.server if self.client else None,
            "apiError": self.connect_error or None,
            **{informer.resource.plural: informer.status() for informer in self.informers},
            "notSynced": missing,
            "checkpoint": {
                "path": str(self.checkpoint.path),
                "pods": self.checkpoint.pods,
                "problem": self.checkpoint.problem,
            },
            "addresses": self.peers.addresses,
        }
        return not missing, detail
