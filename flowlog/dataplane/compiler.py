"""From PolicyEndpoints to what each pod's maps must hold.

A pod may be selected by several policies; Kubernetes allows the union of
what they allow. The programs make one longest-prefix lookup per new flow, so
the union is computed here: every CIDR and every ``except`` becomes a prefix
of its own, and each prefix P holds the port entries of every rule whose CIDR
contains P and none of whose excepts contains P. The longest prefix that
contains an address then holds exactly what is allowed for that address. An
except nothing else allows holds no entries: a deny.

IPv4 lives in the IPv4-mapped range ``::ffff:0:0/96``; when an IPv6 rule
covers that range (``::/0``), the range gets a prefix of its own, filled from
IPv4 rules only, so that IPv6 rules never allow IPv4 peers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from flowlog.dataplane.maps import MAX_PORT_RULES
from flowlog.dataplane.policy import EGRESS, INGRESS, PeerRule, PolicyEndpoint

IPV4_MAPPED_BASE = 0xFFFF << 32
IPV4_MAPPED_LENGTH = 96
ADDRESS_BITS = 128

PodKey = tuple[str, str]  # (namespace, pod name)
PolicyKey = tuple[str, str]  # policyRef (name, namespace)


class CompileError(ValueError):
    """The policies cannot be represented in the maps (one line)."""


@dataclass(frozen=True, order=True)
class Prefix:
    """An address prefix in the 128-bit space where IPv4 is ``::ffff:a.b.c.d``."""

    value: int
    length: int  # of the 128 bits
    is_ipv4: bool

    @classmethod
    def of(cls, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Prefix:
        if network.version == 4:
            return cls(
                IPV4_MAPPED_BASE | int(network.network_address),
                IPV4_MAPPED_LENGTH + network.prefixlen,
                True,
            )
        return cls(int(network.network_address), network.prefixlen, False)

    def contains(self, other: Prefix) -> bool:
        shift = ADDRESS_BITS - self.length
        return (
            self.is_ipv4 == other.is_ipv4
            and self.length <= other.length
            and self.value >> shift == other.value >> shift
        )

    def covers_ipv4_range(self) -> bool:
        shift = ADDRESS_BITS - self.length
        return (
            not self.is_ipv4
            and self.length <= IPV4_MAPPED_LENGTH
            and (self.value >> shift == IPV4_MAPPED_BASE >> shift)
        )

    @property
    def address(self) -> bytes:
        return self.value.to_bytes(16, "big")

    def __str__(self) -> str:
        if self.is_ipv4:
            address = ipaddress.IPv4Address(self.value & 0xFFFFFFFF)
            return f"{address}/{self.length - IPV4_MAPPED_LENGTH}"
        return f"{ipaddress.IPv6Address(self.value)}/{self.length}"


IPV4_RANGE = Prefix(IPV4_MAPPED_BASE, IPV4_MAPPED_LENGTH, True)


@dataclass(frozen=True, order=True)
class PortEntry:
    """One allowed protocol and port range, with the policy that allows it."""

    policy_id: int
    protocol: int  # 0: any protocol
    port: int  # 0: any port
    end_port: int

    def covers(self, other: PortEntry) -> bool:
        if self.protocol and self.protocol != other.protocol:
            return False
        if not self.port:
            return True
        return bool(other.port) and self.port <= other.port and other.end_port <= self.end_port


@dataclass(frozen=True)
class DirectionRules:
    isolated_by: int = 0  # lowest policy id isolating this direction; 0: not isolated
    prefixes: Mapping[Prefix, tuple[PortEntry, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PodRules:
    """What one pod's endpoint entry and rule maps hold."""

    ingress: DirectionRules
    egress: DirectionRules

    def direction(self, name: str) -> DirectionRules:
        return self.ingress if name == INGRESS else self.egress


def merge_port_entries(entries: Iterable[PortEntry]) -> tuple[PortEntry, ...]:
    """The entries without duplicates and without entries another one covers.

    Of two equal entries the one of the lower policy id stays.
    """
    kept: list[PortEntry] = []
    for entry in sorted(entries):
        if any(other.covers(entry) for other in kept):
            continue
        kept = [other for other in kept if not entry.covers(other)]
        kept.append(entry)
    return tuple(sorted(kept))


def _entries(rule: PeerRule, policy_id: int) -> list[PortEntry]:
    if not rule.ports:
        return [PortEntry(policy_id, 0, 0, 0)]
    return [PortEntry(policy_id, p.protocol, p.port, p.end_port) for p in rule.ports]


def compile_direction(
    rules: list[tuple[int, PeerRule]], isolated_by: int, pod: PodKey, direction: str
) -> DirectionRules:
    """The prefixes of one pod in one direction, from (policy id, rule) pairs."""
    compiled = [
        (Prefix.of(rule.cidr), [Prefix.of(e) for e in rule.excepts], _entries(rule, policy_id))
        for policy_id, rule in rules
    ]
    prefixes = {cidr for cidr, _, _ in compiled}
    prefixes.update(excluded for _, excepts, _ in compiled for excluded in excepts)
    if any(prefix.covers_ipv4_range() for prefix in prefixes):
        prefixes.add(IPV4_RANGE)
    result = {}
    for prefix in sorted(prefixes):
        allowed = [
            entry
            for cidr, excepts, entries in compiled
            if cidr.contains(prefix) and not any(e.contains(prefix) for e in excepts)
            for entry in entries
        ]
        merged = merge_port_entries(allowed)
        if len(merged) > MAX_PORT_RULES:
            namespace, name = pod
            peers = "from" if direction == INGRESS else "to"
            raise CompileError(
                f"pod {namespace}/{name}: {direction.lower()} {peers} {prefix} needs "
                f"{len(merged)} port entries once its policies are merged, "
                f"at most {MAX_PORT_RULES}"
            )
        result[prefix] = merged
    return DirectionRules(isolated_by, result)


def compile_pods(
    endpoints: Iterable[PolicyEndpoint], policy_id: Callable[[PolicyKey], int]
) -> dict[PodKey, PodRules]:
    """Every selected pod's rules; raises CompileError if one does not fit the maps."""
    per_pod: dict[PodKey, list[tuple[int, PolicyEndpoint]]] = {}
    for endpoint in endpoints:
        number = policy_id(endpoint.policy)
        for pod in endpoint.pods:
            per_pod.setdefault((pod.namespace, pod.name), []).append((number, endpoint))
    compiled = {}
    for pod, selections in per_pod.items():
        directions = {}
        for direction in (INGRESS, EGRESS):
            isolating = [(n, e) for n, e in selections if direction in e.isolation]
            rules = [(n, rule) for n, e in isolating for rule in e.rules(direction)]
            isolated_by = min((n for n, _ in isolating), default=0)
            directions[direction] = compile_direction(rules, isolated_by, pod, direction)
        compiled[pod] = PodRules(directions[INGRESS], directions[EGRESS])
    return compiled
