"""Who each end of an observation is: a pod, a workload, a node, or an outside address.

A line names an end by its ``Src``/``Dest`` ``Pod``, ``Namespace`` and
``Workload`` keys (a pod), ``… Workload`` alone (a workload summary),
``… Node`` (a node's own address), or only by its IP. Lines written before
those keys existed name only the local pod (``Pod``, ``Namespace``): the
destination for ingress, the source for egress. An end known only by its IP
is looked up among the addresses the lines showed to be a pod's or a node's
(the same address as some line's local pod, say), then among addresses the
caller knows; anything else is outside the cluster, grouped by network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from flowlog.flowmap.observation import (
    DEST_IP,
    DEST_NODE,
    DIRECTION,
    LOCAL_NAMESPACE,
    LOCAL_POD,
    SRC_IP,
    SRC_NODE,
    Observation,
)

POD, WORKLOAD, NODE, OUTSIDE = "pod", "workload", "node", "outside"
WORLD = "world"
NETWORKS_REMEMBERED = 100_000
# Kubernetes names generated pods from this alphabet (no vowels, no look-alikes): a
# Deployment's <name>-<pod-template-hash>-<5 random>, other owners' <name>-<5 random>, a
# StatefulSet's <name>-<ordinal>.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD = re.compile(rf"(?P<owner>.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}")
_OWNED_POD = re.compile(rf"(?P<owner>.+)-{_SAFE}{{5}}")
_STATEFUL_POD = re.compile(r"(?P<owner>.+)-\d+")


@dataclass(frozen=True)
class Endpoint:
    """One end of a conversation, as precisely as the lines tell it."""

    kind: str  # POD, WORKLOAD (a workload summary's end), NODE or OUTSIDE
    namespace: str | None = None
    name: str | None = None  # the pod's or the node's
    workload: str | None = None  # deployment/x, statefulset/x, pod/x, ...
    workload_guessed: bool = False  # from the pod's name: older lines do not say
    address: str | None = None


@dataclass(frozen=True)
class KnownPod:
    """A pod the caller knows the address of, for lines that give only addresses."""

    namespace: str
    name: str
    workload: str | None = None


def guess_workload(pod: str) -> str:
    """The workload a pod's generated name points to: ``deployment/x``, ``statefulset/x``,
    a bare ``x`` when the kind cannot be told (ReplicaSet, DaemonSet, Job), or ``pod/<pod>``."""
    if match := _DEPLOYMENT_POD.fullmatch(pod):
        return f"deployment/{match['owner']}"
    if match := _OWNED_POD.fullmatch(pod):
        return match["owner"]
    if match := _STATEFUL_POD.fullmatch(pod):
        return f"statefulset/{match['owner']}"
    return f"pod/{pod}"


def workload_name(workload: str) -> str:
    """``deployment/frontend`` -> ``frontend``."""
    return workload.rpartition("/")[2]


def is_named(observation: tuple, source: bool) -> bool:
    """Whether the line names this end (a pod, a workload, a node), beyond an address.

    Takes an Observation or the plain tuple the tally keeps."""
    if source:
        _, pod, namespace, workload, node = observation[SRC_IP : SRC_NODE + 1]
        local = observation[DIRECTION] == "egress"
    else:
        _, pod, namespace, workload, node = observation[DEST_IP : DEST_NODE + 1]
        local = observation[DIRECTION] == "ingress"
    return (
        (namespace is not None and (pod is not None or workload is not None))
        or node is not None
        or (
            local
            and observation[LOCAL_POD] is not None
            and observation[LOCAL_NAMESPACE] is not None
        )
    )


def named_end(observation: Observation, source: bool) -> Endpoint | None:
    """The end as the line names it, or None when it gives only an address."""
    if not is_named(observation, source):
        return None
    if source:
        ip, pod, namespace, workload, node = observation[SRC_IP : SRC_NODE + 1]
    else:
        ip, pod, namespace, workload, node = observation[DEST_IP : DEST_NODE + 1]
    if namespace is not None and (pod is not None or workload is not None):
        if pod is None:
            return Endpoint(WORKLOAD, namespace, workload=workload)
        return _pod(namespace, pod, workload, ip)
    if node is not None:
        return Endpoint(NODE, name=node, address=ip)
    return _pod(observation.namespace, observation.pod, None, ip)  # type: ignore[arg-type]


def _pod(namespace: str, pod: str, workload: str | None, address: str | None) -> Endpoint:
    if workload is None:
        return Endpoint(POD, namespace, pod, guess_workload(pod), True, address)
    return Endpoint(POD, namespace, pod, workload, False, address)


class AddressBook:
    """Addresses the lines (or the caller) showed to be pods' or nodes'."""

    def __init__(self, known_pods: Mapping[str, KnownPod] | None = None) -> None:
        self._learned: dict[str, Endpoint] = {}
        self._known = {
            address: _pod(pod.namespace, pod.name, pod.workload, address)
            for address, pod in (known_pods or {}).items()
        }

    def learn(self, end: Endpoint) -> None:
        if end.address is not None and end.kind in (POD, NODE):
            self._learned.setdefault(end.address, end)

    def look_up(self, address: str | None) -> Endpoint | None:
        if address is None:
            return None
        return self._learned.get(address) or self._known.get(address)


class OutsideNetworks:
    """Outside addresses grouped by network: ``203.0.113.0/24``, or all as ``world``."""

    def __init__(self, ipv4_prefix: int, ipv6_prefix: int) -> None:
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self._ipv4_mask = (0xFFFFFFFF << (32 - ipv4_prefix)) & 0xFFFFFFFF
        self._networks: dict[str, str] = {}

    def network_of(self, address: str) -> str:
        network = self._networks.get(address)
        if network is None:
            if len(self._networks) >= NETWORKS_REMEMBERED:
                self._networks.clear()  # the clients of a public service: each one new
            network = self._networks[address] = self._group(address)
        return network

    def _group(self, address: str) -> str:
        if "/" in address or address == WORLD:
            return address  # a network already: merged by flowlog.flowmap.tally
        octets = address.split(".")
        if len(octets) == 4 and all(octet.isdigit() and int(octet) < 256 for octet in octets):
            if not self.ipv4_prefix:
                return WORLD
            a, b, c, d = (int(octet) for octet in octets)
            network = ((a << 24) | (b << 16) | (c << 8) | d) & self._ipv4_mask
            dotted = ".".join(str(network >> shift & 0xFF) for shift in (24, 16, 8, 0))
            return f"{dotted}/{self.ipv4_prefix}"
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return WORLD  # not an address: it cannot be placed anywhere better
        if not self.ipv6_prefix:
            return WORLD
        return str(ipaddress.ip_network(f"{ip}/{self.ipv6_prefix}", strict=False))
