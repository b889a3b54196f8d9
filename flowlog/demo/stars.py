"""The EKS user guide's "Stars demo of network policy": services, probes, policies.

Four services each run one pod: the management UI (namespace ``management-ui``),
the client (namespace ``client``), and the frontend and backend (namespace
``stars``). The UI probes the other three; each of those probes the other two.
The demo applies the guide's NetworkPolicies one step at a time.

NetworkPolicies are modelled here with the two selectors the guide uses (a
pod's or a namespace's ``role`` label), then resolved into the PolicyEndpoint
documents the network policy controller would write for them (the selected
pods, and each allowed peer pod's address as a /32 and /128). The same model
says which probes each step should allow, by NetworkPolicy's rules: a pod that
no policy selects accepts everything; a selected pod accepts what at least one
of its policies allows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POLICY_ENDPOINT_API = "networking.k8s.aws/v1alpha1"
INGRESS = "Ingress"


@dataclass(frozen=True)
class Service:
    """One of the demo's services: its pod, the port it serves and its ``role`` label."""

    name: str
    pod: str
    namespace: str
    port: int
    role: str


MANAGEMENT_UI = Service(
    "management-ui", "management-ui-qrb2g", "management-ui", 9001, "management-ui"
)
CLIENT = Service("client", "client-xlffc", "client", 9000, "client")
FRONTEND = Service("frontend", "frontend-cscnf", "stars", 80, "frontend")
BACKEND = Service("backend", "backend-sz87q", "stars", 6379, "backend")
SERVICES = (MANAGEMENT_UI, CLIENT, FRONTEND, BACKEND)
# The namespaces' own ``role`` labels (namespace.yaml of the demo).
NAMESPACE_ROLES = {"management-ui": "management-ui", "client": "client"}


@dataclass(frozen=True)
class Probe:
    """``source`` opens a TCP connection to ``target``'s port, as the demo's pods do."""

    source: Service
    target: Service

    @property
    def port(self) -> int:
        return self.target.port


PROBES = (
    Probe(MANAGEMENT_UI, CLIENT),
    Probe(MANAGEMENT_UI, FRONTEND),
    Probe(MANAGEMENT_UI, BACKEND),
    Probe(CLIENT, FRONTEND),
    Probe(CLIENT, BACKEND),
    Probe(FRONTEND, BACKEND),
    Probe(FRONTEND, CLIENT),
    Probe(BACKEND, FRONTEND),
    Probe(BACKEND, CLIENT),
)


# --- NetworkPolicy, as much of it as the seed uses ------------------------------


@dataclass(frozen=True)
class Peer:
    """``from:`` one selector: pods by role in the policy's namespace, or namespaces by role."""

    pod_role: str | None = None
    namespace_role: str | None = None

    def matches(self, policy_namespace: str, service: Service) -> bool:
        if self.namespace_role is not None:
            return NAMESPACE_ROLES.get(service.namespace) == self.namespace_role
        return service.namespace == policy_namespace and service.role == self.pod_role


@dataclass(frozen=True)
class IngressRule:
    peer: Peer
    tcp_ports: tuple[int, ...] = ()  # empty: every port and protocol


@dataclass(frozen=True)
class NetworkPolicy:
    name: str
    namespace: str
    pod_role: str | None = None  # None is ``podSelector: {}``: every pod in the namespace
    ingress: tuple[IngressRule, ...] = ()

    def selects(self, service: Service) -> bool:
        return service.namespace == self.namespace and self.pod_role in (None, service.role)

    def allows(self, source: Service, port: int) -> bool:
        return any(
            rule.peer.matches(self.namespace, source)
            and (not rule.tcp_ports or port in rule.tcp_ports)
            for rule in self.ingress
        )

    def describe(self) -> str:
        return f"{self.name} in {self.namespace}"


def default_deny(namespace: str) -> NetworkPolicy:
    return NetworkPolicy("default-deny", namespace)


def allow_ui(namespace: str) -> NetworkPolicy:
    return NetworkPolicy(
        "allow-ui", namespace, ingress=(IngressRule(Peer(namespace_role="management-ui")),)
    )


BACKEND_POLICY = NetworkPolicy(
    "backend-policy",
    "stars",
    pod_role="backend",
    ingress=(IngressRule(Peer(pod_role="frontend"), tcp_ports=(6379,)),),
)
FRONTEND_POLICY = NetworkPolicy(
    "frontend-policy",
    "stars",
    pod_role="frontend",
    ingress=(IngressRule(Peer(namespace_role="client"), tcp_ports=(80,)),),
)


@dataclass(frozen=True)
class Step:
    title: str
    applies: tuple[NetworkPolicy, ...]
    guide_says: str  # what the guide tells its reader to look for


STEPS = (
    Step(
        "No network policies",
        (),
        "Each node has full communication access to all other nodes.",
    ),
    Step(
        "default-deny in stars and client",
        (default_deny("stars"), default_deny("client")),
        "The management user interface can no longer reach any of the nodes.",
    ),
    Step(
        "allow-ui in stars and client: ingress from the management-ui namespace",
        (allow_ui("stars"), allow_ui("client")),
        "The management user interface can reach the nodes again, but the nodes cannot "
        "communicate with each other.",
    ),
    Step(
        "backend-policy: the backend accepts the frontend on TCP 6379",
        (BACKEND_POLICY,),
        "The front-end can communicate with the back-end.",
    ),
    Step(
        "frontend-policy: the frontend accepts the client namespace on TCP 80",
        (FRONTEND_POLICY,),
        "The client can communicate to the front-end service. The front-end service can still "
        "communicate to the back-end service.",
    ),
)


def allowed(policies: Sequence[NetworkPolicy], probe: Probe) -> bool:
    """NetworkPolicy's verdict on ``probe`` with ``policies`` in force."""
    selecting = [policy for policy in policies if policy.selects(probe.target)]
    return not selecting or any(policy.allows(probe.source, probe.port) for policy in selecting)


def isolated(policies: Sequence[NetworkPolicy], service: Service) -> bool:
    """True when some policy selects ``service``, so its traffic is judged (and logged)."""
    return any(policy.selects(service) for policy in policies)


# --- PolicyEndpoints ----------------------------------------------------------------


@dataclass(frozen=True)
class PodAddresses:
    ipv4: str
    ipv6: str = ""

    def cidrs(self) -> list[str]:
        return [f"{self.ipv4}/32"] + ([f"{self.ipv6}/128"] if self.ipv6 else [])


def policy_endpoint(policy: NetworkPolicy, addresses: Mapping[str, PodAddresses]) -> dict:
    """The PolicyEndpoint the controller writes for ``policy``; ``addresses`` by service name."""
    selected = [service for service in SERVICES if policy.selects(service)]
    ingress = []
    for rule in policy.ingress:
        for service in SERVICES:
            if rule.peer.matches(policy.namespace, service):
                for cidr in addresses[service.name].cidrs():
                    entry: dict = {"cidr": cidr}
                    if rule.tcp_ports:
                        entry["ports"] = [{"protocol": "TCP", "port": p} for p in rule.tcp_ports]
                    ingress.append(entry)
    # The controller names each PolicyEndpoint after its policy plus a random suffix.
    suffix = hashlib.sha1(f"{policy.namespace}/{policy.name}".encode()).hexdigest()[:5]
    return {
        "apiVersion": POLICY_ENDPOINT_API,
        "kind": "PolicyEndpoint",
        "metadata": {"name": f"{policy.name}-{suffix}", "namespace": policy.namespace},
        "spec": {
            "policyRef": {"name": policy.name, "namespace": policy.namespace},
            "podIsolation": [INGRESS],
            "podSelectorEndpoints": [
                {
                    "podIP": addresses[service.name].ipv4,
                    "name": service.pod,
                    "namespace": service.namespace,
                }
                for service in selected
            ],
            "ingress": ingress,
        },
    }


def policy_file_name(policy: NetworkPolicy) -> str:
    return f"{policy.namespace}-{policy.name}.yaml"
