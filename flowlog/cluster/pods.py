"""Pods from the API: what names flows (their IPs, their node's address, their workload).

A pod holds its IPs from when it has them until it finishes or is deleted
(a Succeeded or Failed pod's IPs are free for others, though the API still
shows them). A pod on the host network has its node's address, which names
the node, not the pod. Every pod's ``status.hostIP`` names its node, so
node addresses are known without watching nodes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowlog.cluster.peers import API, NODE, POD, Identity, Peers

FINISHED = ("Succeeded", "Failed")
# A ReplicaSet made by a Deployment is named <deployment>-<pod-template-hash>.
TEMPLATE_HASH_LABEL = "pod-template-hash"


@dataclass(frozen=True)
class PodFacts:
    """What the agent keeps of a pod."""

    namespace: str
    name: str
    uid: str
    node: str
    ips: tuple[str, ...]  # while it holds them
    host_ip: str
    host_network: bool
    workload: str

    @property
    def identity(self) -> Identity:
        return Identity(POD, self.name, self.namespace, self.workload)


def workload_of(metadata: dict[str, Any]) -> str:
    """``deployment/frontend`` from the controlling owner; ``pod/<name>`` for a bare pod."""
    owners = metadata.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None:
        return f"pod/{metadata.get('name', '')}"
    kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
    template_hash = (metadata.get("labels") or {}).get(TEMPLATE_HASH_LABEL)
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return f"deployment/{name.removesuffix(f'-{template_hash}')}"
    if kind == "Job" and re.fullmatch(r".+-\d{8,}", name):
        # A CronJob names its Jobs <cronjob>-<scheduled minute>.
        return f"cronjob/{name.rsplit('-', 1)[0]}"
    return f"{kind.lower()}/{name}"


def pod_facts(pod: dict[str, Any]) -> PodFacts:
    metadata, spec, status = (
        pod.get("metadata") or {},
        pod.get("spec") or {},
        pod.get("status") or {},
    )
    ips = [entry.get("ip") for entry in status.get("podIPs") or [] if entry.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    host_network = bool(spec.get("hostNetwork"))
    holds = not host_network and status.get("phase") not in FINISHED
    return PodFacts(
        namespace=metadata.get("namespace", ""),
        name=metadata.get("name", ""),
        uid=metadata.get("uid", ""),
        node=spec.get("nodeName", ""),
        ips=tuple(ips) if holds else (),
        host_ip=status.get("hostIP", ""),
        host_network=host_network,
        workload=workload_of(metadata),
    )


class PodIdentities:
    """The informer's handler for pods: their claims on addresses, and this node's pods."""

    def __init__(
        self, peers: Peers, node_name: str, on_local_pods: Callable[[], None] | None = None
    ) -> None:
        self.peers = peers
        self.node_name = node_name
        self.local: dict[tuple[str, str], PodFacts] = {}  # (namespace, name) on this node
        self.on_local_pods = on_local_pods

    def reduce(self, obj: dict[str, Any]) -> PodFacts:
        return pod_facts(obj)

    def changed(self, key: tuple[str, str], old: PodFacts | None, new: PodFacts | None) -> None:
        peers = self.peers
        if old is not None:
            for ip in set(old.ips) - set(new.ips if new and new.uid == old.uid else ()):
                peers.release(API, old.uid, ip)
            if old.host_ip and (new is None or new.host_ip != old.host_ip or new.uid != old.uid):
                peers.release(API, old.uid, old.host_ip)
        if new is not None:
            for ip in new.ips:
                peers.claim(API, new.uid, ip, new.identity)
            if new.host_ip and new.node:
                peers.claim(API, new.uid, new.host_ip, Identity(NODE, new.node))
        was_local = key in self.local
        if new is not None and new.node == self.node_name:
            self.local[key] = new
        else:
            self.local.pop(key, None)
        if was_local != (key in self.local) and self.on_local_pods is not None:
            self.on_local_pods()
