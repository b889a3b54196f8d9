"""From counted observations to the picture's graph: nodes in groups, and edges.

Nodes are pods (or workloads, or namespaces), Kubernetes nodes, and outside
networks; groups are namespaces, "Nodes" and "Outside the cluster". An edge
is one (source, destination, protocol, port) with what was decided on it.

A flow is judged at its source's egress and again at its destination's
ingress when both pods are on flowlog's nodes, so the lines of both sides are
kept apart and an edge's flows are the larger side's count: a flow judged
twice counts once. A flow denied at either side is denied; a flow allowed at
egress and denied at ingress (the usual default-deny) is denied.

More than ``max_nodes`` pods make no readable picture: the graph is then drawn
by workload, and by namespace if there are too many workloads too, and says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from flowlog.flowmap.endpoints import (
    NODE,
    OUTSIDE,
    POD,
    WORKLOAD,
    WORLD,
    AddressBook,
    Endpoint,
    KnownPod,
    OutsideNetworks,
    named_end,
    workload_name,
)
from flowlog.flowmap.observation import DECIDED, Observation
from flowlog.flowmap.tally import Counts, FlowTally

BY_POD, BY_WORKLOAD, BY_NAMESPACE = "pod", "workload", "namespace"
LEVELS = (BY_POD, BY_WORKLOAD, BY_NAMESPACE)
DEFAULT_MAX_NODES = 200
# Beyond these the page grows past what a browser draws smoothly; the busiest are kept.
MAX_OUTSIDE_NETWORKS = 40
MAX_EDGES = 3000
NODES_GROUP, OUTSIDE_GROUP, NAMESPACES_GROUP = "nodes", "outside", "namespaces"
ALLOWED, DENIED, PARTLY_DENIED = "allowed", "denied", "partly-denied"
SIDES = ("egress", "ingress")  # where a verdict was made: at the source, at the destination


@dataclass(frozen=True)
class MapOptions:
    by: str = BY_POD
    ipv4_prefix: int = 24  # outside IPv4 addresses grouped by this network; 0: one "world"
    ipv6_prefix: int = 64
    max_nodes: int = DEFAULT_MAX_NODES  # pods (then workloads) before drawing coarser

    def outside_networks(self) -> OutsideNetworks:
        return OutsideNetworks(self.ipv4_prefix, self.ipv6_prefix)


@dataclass
class MapNode:
    id: str
    kind: str  # pod, workload, namespace, node, outside
    label: str
    group: str
    namespace: str | None = None
    workload: str | None = None
    workload_guessed: bool = False
    pods: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)  # Kubernetes nodes its pods were seen on


@dataclass
class SideCounts:
    """What one side (the source's egress, the destination's ingress, or unknown) saw."""

    allowed: int = 0
    denied: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0

    @property
    def flows(self) -> int:
        return self.allowed + self.denied


@dataclass
class MapEdge:
    id: str
    source: str
    target: str
    proto: str
    port: int
    sides: dict[str | None, SideCounts] = field(default_factory=dict)
    # (verdict, policy or why none, direction) -> lines or flows
    policies: Counter[tuple[str, str, str | None]] = field(default_factory=Counter)
    first_seen: str = ""
    last_seen: str = ""
    last_allowed: str = ""
    last_denied: str = ""
    has_sizes: bool = False

    @property
    def flows(self) -> int:
        return max((side.flows for side in self.sides.values()), default=0)

    @property
    def denied(self) -> int:
        return min(self.flows, sum(side.denied for side in self.sides.values()))

    @property
    def allowed(self) -> int:
        return self.flows - self.denied

    @property
    def status(self) -> str:
        if not self.denied:
            return ALLOWED
        return DENIED if not self.allowed else PARTLY_DENIED

    def size(self, name: str) -> int:
        """Packets or bytes (``bytes_sent``...), from the side that counted most."""
        return max((getattr(side, name) for side in self.sides.values()), default=0)

    @property
    def service(self) -> str:
        return f"{self.port}/{self.proto}"


@dataclass
class MapGroup:
    id: str
    kind: str  # namespace, namespaces, nodes, outside
    label: str
    members: list[str] = field(default_factory=list)


@dataclass
class FlowGraph:
    nodes: dict[str, MapNode]
    edges: list[MapEdge]
    groups: list[MapGroup]
    level: str  # what a node stands for: pod, workload or namespace
    pods: int  # distinct pods (or workloads from summaries) in the input
    notes: list[str]  # what the picture leaves out or draws coarser than asked
    undecided_lines: int

    def summary(self) -> str:
        """``184 pods in 12 namespaces · 8 nodes · 2,094 edges: 295 denied, 0 partly denied``"""
        namespaces = {node.namespace for node in self.nodes.values() if node.namespace}
        hosts = sum(1 for node in self.nodes.values() if node.kind == NODE)
        networks = sum(1 for node in self.nodes.values() if node.kind == OUTSIDE)
        denied = sum(1 for edge in self.edges if edge.status == DENIED)
        partly = sum(1 for edge in self.edges if edge.status == PARTLY_DENIED)
        parts = [f"{plural(self.pods, 'pod')} in {plural(len(namespaces), 'namespace')}"]
        if hosts:
            parts.append(plural(hosts, "node"))
        if networks:
            parts.append(plural(networks, "outside network"))
        parts.append(
            f"{plural(len(self.edges), 'edge')}: {denied:,} denied, {partly:,} partly denied"
        )
        return " · ".join(parts)


def plural(count: int, word: str) -> str:
    return f"1 {word}" if count == 1 else f"{count:,} {word}s"


@dataclass
class _Resolved:
    observation: Observation
    counts: Counts
    source: Endpoint
    destination: Endpoint


def build_graph(
    tally: FlowTally, options: MapOptions, known_pods: Mapping[str, KnownPod] | None = None
) -> FlowGraph:
    """The graph of everything counted, drawn at ``options.by`` or coarser."""
    resolved = _resolve(tally, AddressBook(known_pods))
    _canonical_workloads(resolved)
    networks = tally.networks
    pods = {_node_id(end, BY_POD, networks) for r in resolved for end in (r.source, r.destination)}
    pods = {node for node in pods if node.startswith(("pod:", "workload:"))}
    level, notes = _level(resolved, options, networks, len(pods))
    if tally.merged_addresses:
        notes.append(
            "Too many distinct conversations to keep apart: outside addresses were merged "
            "into their networks while reading"
        )
    builder = _GraphBuilder(level, networks, _busiest_networks(resolved, networks, notes))
    for item in resolved:
        builder.add(item)
    edges = builder.edges_to_draw(notes)
    if not edges:
        notes.append("No flows to draw in what was read")
    return FlowGraph(
        builder.nodes, edges, builder.groups(), level, len(pods), notes, tally.undecided_lines
    )


def _resolve(tally: FlowTally, book: AddressBook) -> list[_Resolved]:
    """Both ends of every observation: named by the line, else by address."""
    named = []
    for observation, counts in tally.observations():
        source, destination = named_end(observation, True), named_end(observation, False)
        for end in (source, destination):
            if end is not None:
                book.learn(end)
        named.append((observation, counts, source, destination))
    resolved = []
    for observation, counts, source, destination in named:
        source = source or book.look_up(observation.src_ip) or _outside(observation.src_ip)
        destination = (
            destination or book.look_up(observation.dest_ip) or _outside(observation.dest_ip)
        )
        resolved.append(_Resolved(observation, counts, source, destination))
    return resolved


def _outside(address: str | None) -> Endpoint:
    return Endpoint(OUTSIDE, address=address)


def _canonical_workloads(resolved: list[_Resolved]) -> None:
    """A workload guessed from a pod's name becomes the one newer lines name, if any."""
    named: dict[tuple[str, str], str] = {}
    for item in resolved:
        for end in (item.source, item.destination):
            if end.workload and not end.workload_guessed and end.namespace:
                named.setdefault((end.namespace, workload_name(end.workload)), end.workload)
    if not named:
        return
    for item in resolved:
        item.source = _with_named_workload(item.source, named)
        item.destination = _with_named_workload(item.destination, named)


def _with_named_workload(end: Endpoint, named: dict[tuple[str, str], str]) -> Endpoint:
    if not end.workload_guessed or end.namespace is None or end.workload is None:
        return end
    workload = named.get((end.namespace, workload_name(end.workload)))
    if workload is None:
        return end
    return Endpoint(end.kind, end.namespace, end.name, workload, False, end.address)


def _level(
    resolved: list[_Resolved], options: MapOptions, networks: OutsideNetworks, pods: int
) -> tuple[str, list[str]]:
    level = options.by
    notes = []
    if level == BY_POD and pods > options.max_nodes:
        notes.append(
            f"{pods:,} pods are more than {options.max_nodes} can show readably: "
            f"drawn by workload (--max-nodes)"
        )
        level = BY_WORKLOAD
    if level == BY_WORKLOAD:
        workloads = {
            _node_id(end, BY_WORKLOAD, networks)
            for item in resolved
            for end in (item.source, item.destination)
            if end.kind in (POD, WORKLOAD)
        }
        if len(workloads) > options.max_nodes:
            notes.append(
                f"{len(workloads):,} workloads are more than {options.max_nodes} can show "
                f"readably: drawn by namespace (--max-nodes)"
            )
            level = BY_NAMESPACE
    return level, notes


def _busiest_networks(
    resolved: list[_Resolved], networks: OutsideNetworks, notes: list[str]
) -> frozenset[str] | None:
    """The outside networks drawn on their own (None: all), the rest go to ``world``."""
    flows: Counter[str] = Counter()
    for item in resolved:
        for end in (item.source, item.destination):
            if end.kind == OUTSIDE:
                flows[networks.network_of(end.address or "")] += item.counts.attempts
    if len(flows) <= MAX_OUTSIDE_NETWORKS:
        return None
    kept = frozenset(network for network, _ in flows.most_common(MAX_OUTSIDE_NETWORKS - 1))
    notes.append(
        f"{len(flows):,} outside networks: the {len(kept)} busiest drawn, the other "
        f"{len(flows) - len(kept):,} as {WORLD}"
    )
    return kept


def _node_id(end: Endpoint, level: str, networks: OutsideNetworks) -> str:
    if end.kind == OUTSIDE:
        return f"outside:{networks.network_of(end.address or '')}"
    if end.kind == NODE:
        return f"node:{end.name}"
    if level == BY_NAMESPACE:
        return f"namespace:{end.namespace}"
    if level == BY_WORKLOAD or end.kind == WORKLOAD:
        return f"workload:{end.namespace}/{end.workload}"
    return f"pod:{end.namespace}/{end.name}"


class _GraphBuilder:
    def __init__(
        self, level: str, networks: OutsideNetworks, drawn_networks: frozenset[str] | None
    ) -> None:
        self.level = level
        self.networks = networks
        self.drawn_networks = drawn_networks
        self.nodes: dict[str, MapNode] = {}
        self._edges: dict[tuple[str, str, str, int], MapEdge] = {}

    def add(self, item: _Resolved) -> None:
        observation, counts = item.observation, item.counts
        source = self._node(item.source, observation.node if _local(observation, True) else None)
        target = self._node(
            item.destination, observation.node if _local(observation, False) else None
        )
        key = (source.id, target.id, observation.proto, observation.dest_port)
        edge = self._edges.get(key)
        if edge is None:
            edge_id = f"{source.id}>{target.id}:{observation.dest_port}/{observation.proto}"
            edge = self._edges[key] = MapEdge(
                edge_id, source.id, target.id, observation.proto, observation.dest_port
            )
        direction = (
            observation.direction if observation.direction in ("ingress", "egress") else None
        )
        side = edge.sides.setdefault(direction, SideCounts())
        attempts = counts.attempts
        if observation.verdict == "DENY":
            side.denied += attempts
            edge.last_denied = max(edge.last_denied, counts.last_seen)
        elif observation.verdict in DECIDED:
            side.allowed += attempts
            edge.last_allowed = max(edge.last_allowed, counts.last_seen)
        side.packets_sent += counts.packets_sent
        side.bytes_sent += counts.bytes_sent
        side.packets_received += counts.packets_received
        side.bytes_received += counts.bytes_received
        edge.has_sizes = edge.has_sizes or counts.has_sizes
        edge.first_seen = min(edge.first_seen or counts.first_seen, counts.first_seen)
        edge.last_seen = max(edge.last_seen, counts.last_seen)
        if attempts and observation.verdict in DECIDED:
            reason = _policy_label(observation)
            if reason is not None:
                edge.policies[(observation.verdict, reason, direction)] += attempts

    def _node(self, end: Endpoint, host: str | None) -> MapNode:
        node_id = _node_id(end, self.level, self.networks)
        drawn = self.drawn_networks
        if end.kind == OUTSIDE and drawn is not None and node_id[len("outside:") :] not in drawn:
            node_id = f"outside:{WORLD}"
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = _new_node(node_id, end, self.level)
        if end.name and end.kind == POD:
            node.pods.add(end.name)
        if end.address:
            node.addresses.add(end.address)
        if host:
            node.hosts.add(host)
        return node

    def edges_to_draw(self, notes: list[str]) -> list[MapEdge]:
        # Denied edges first, then the busiest: the order they are kept in, and drawn in.
        edges = sorted(self._edges.values(), key=lambda e: (-e.denied, -e.flows, e.id))
        if len(edges) > MAX_EDGES:
            notes.append(
                f"{len(edges):,} edges: the {MAX_EDGES:,} with the most denied, then the "
                f"most flows, are drawn"
            )
            edges = edges[:MAX_EDGES]
        drawn = {node for edge in edges for node in (edge.source, edge.target)}
        for node_id in set(self.nodes) - drawn:
            del self.nodes[node_id]
        return edges

    def groups(self) -> list[MapGroup]:
        groups: dict[str, MapGroup] = {}
        for node in sorted(self.nodes.values(), key=lambda n: n.label):
            group = groups.get(node.group)
            if group is None:
                group = groups[node.group] = _new_group(node)
            group.members.append(node.id)
        return sorted(groups.values(), key=_group_order)


def _local(observation: Observation, source: bool) -> bool:
    """Whether this end is the pod the line was written for (its node is the line's)."""
    return observation.direction == ("egress" if source else "ingress")


def _policy_label(observation: Observation) -> str | None:
    if observation.policy:
        if observation.policy_namespace:
            return f"{observation.policy_namespace}/{observation.policy}"
        return observation.policy
    if observation.tier:
        return f"no policy (tier {observation.tier})"
    return None  # the AWS agent's lines do not say


def _new_node(node_id: str, end: Endpoint, level: str) -> MapNode:
    if end.kind == OUTSIDE:
        network = node_id.removeprefix("outside:")
        return MapNode(node_id, OUTSIDE, network, OUTSIDE_GROUP)
    if end.kind == NODE:
        return MapNode(node_id, NODE, end.name or "", NODES_GROUP)
    namespace = end.namespace or ""
    if level == BY_NAMESPACE:
        return MapNode(node_id, "namespace", namespace, NAMESPACES_GROUP, namespace)
    if level == BY_WORKLOAD or end.kind == WORKLOAD:
        workload = end.workload or ""
        return MapNode(
            node_id,
            "workload",
            workload,
            f"namespace:{namespace}",
            namespace,
            workload,
            end.workload_guessed,
        )
    return MapNode(
        node_id,
        "pod",
        end.name or "",
        f"namespace:{namespace}",
        namespace,
        end.workload,
        end.workload_guessed,
    )


def _new_group(node: MapNode) -> MapGroup:
    if node.group == NODES_GROUP:
        return MapGroup(NODES_GROUP, "nodes", "Nodes")
    if node.group == OUTSIDE_GROUP:
        return MapGroup(OUTSIDE_GROUP, "outside", "Outside the cluster")
    if node.group == NAMESPACES_GROUP:
        return MapGroup(NAMESPACES_GROUP, "namespaces", "Namespaces")
    return MapGroup(node.group, "namespace", node.namespace or "")


def _group_order(group: MapGroup) -> tuple[int, str]:
    # Namespaces by name, then the nodes, then the outside world.
    rank = {"namespace": 0, "namespaces": 0, "nodes": 1, "outside": 2}[group.kind]
    return rank, group.label
