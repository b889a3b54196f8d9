"""The graph the map draws, built from flow-log lines of every form."""

from __future__ import annotations

import pytest

from flowlog.flowmap.endpoints import KnownPod, guess_workload
from flowlog.flowmap.graph import (
    BY_NAMESPACE,
    BY_POD,
    BY_WORKLOAD,
    MAX_OUTSIDE_NETWORKS,
    FlowGraph,
    MapOptions,
    build_graph,
)
from flowlog.flowmap.tally import FlowTally
from tests.flowmap.lines import (
    BACKEND,
    CLIENT,
    FRONTEND,
    NODE_ADDRESS,
    NODE_NAME,
    aws_verdict,
    expired,
    old_verdict,
    summary,
    verdict,
)

DEFAULT_DENY = ("stars", "default-deny")
FRONTEND_POLICY = ("stars", "frontend-policy")


def graph_of(lines: list[dict], known_pods=None, max_observations=None, **options) -> FlowGraph:
    map_options = MapOptions(**options)
    tally = FlowTally(map_options.outside_networks())
    if max_observations:
        tally.max_observations = max_observations
    for line in lines:
        assert tally.add_line(line), line
    return build_graph(tally, map_options, known_pods)


def edge(graph: FlowGraph, source: str, target: str, service: str):
    [found] = [
        e for e in graph.edges if (e.source, e.target, e.service) == (source, target, service)
    ]
    return found


def pod_id(pod) -> str:
    return f"pod:{pod[0]}/{pod[1]}"


def test_pods_are_grouped_by_namespace():
    graph = graph_of(
        [
            verdict(CLIENT, FRONTEND, 80, policy=FRONTEND_POLICY),
            verdict(FRONTEND, BACKEND, 6379, policy=("stars", "backend-policy")),
        ]
    )
    assert graph.level == BY_POD
    assert graph.pods == 3
    groups = {group.label: group.members for group in graph.groups}
    assert groups == {
        "client": [pod_id(CLIENT)],
        "stars": [pod_id(BACKEND), pod_id(FRONTEND)],
    }
    frontend = graph.nodes[pod_id(FRONTEND)]
    assert (frontend.kind, frontend.label, frontend.workload) == (
        "pod",
        FRONTEND[1],
        "deployment/frontend",
    )
    assert frontend.addresses == {FRONTEND[3]}
    assert graph.summary() == "3 pods in 2 namespaces · 2 edges: 0 denied, 0 partly denied"


def test_by_workload_replicas_are_one_box():
    second_frontend = ("stars", "frontend-5c4b8d7f9-zzzzz", "deployment/frontend", "10.0.1.9")
    lines = [
        verdict(CLIENT, FRONTEND, 80),
        verdict(CLIENT, second_frontend, 80),
        verdict(CLIENT, second_frontend, 80),
    ]
    graph = graph_of(lines, by=BY_WORKLOAD)
    assert graph.level == BY_WORKLOAD
    assert set(graph.nodes) == {
        "workload:client/deployment/client",
        "workload:stars/deployment/frontend",
    }
    frontend = graph.nodes["workload:stars/deployment/frontend"]
    assert frontend.pods == {FRONTEND[1], second_frontend[1]}
    [only] = graph.edges
    assert (only.flows, only.denied) == (3, 0)


def test_by_namespace():
    graph = graph_of(
        [verdict(CLIENT, FRONTEND, 80), verdict(FRONTEND, BACKEND, 6379)], by=BY_NAMESPACE
    )
    assert set(graph.nodes) == {"namespace:client", "namespace:stars"}
    assert [group.label for group in graph.groups] == ["Namespaces"]
    loop = edge(graph, "namespace:stars", "namespace:stars", "6379/TCP")
    assert loop.flows == 1


def test_a_flow_judged_at_both_ends_counts_once():
    # Allowed out of the client, then denied into the frontend: one denied flow.
    lines = [
        verdict(CLIENT, FRONTEND, 80, "ACCEPT", "egress"),
        verdict(CLIENT, FRONTEND, 80, "DENY", "ingress", policy=DEFAULT_DENY),
    ] * 3 + [
        verdict(CLIENT, FRONTEND, 80, "ACCEPT", "egress"),
        verdict(CLIENT, FRONTEND, 80, "ACCEPT", "ingress", policy=FRONTEND_POLICY),
    ]
    graph = graph_of(lines)
    [only] = graph.edges
    assert (only.flows, only.denied, only.allowed) == (4, 3, 1)
    assert only.status == "partly-denied"


def test_denied_edges_name_the_policy_that_denied_them():
    lines = [
        verdict(CLIENT, FRONTEND, 80, "ACCEPT", "egress"),
        verdict(CLIENT, FRONTEND, 80, "DENY", "ingress", policy=DEFAULT_DENY),
        verdict(CLIENT, BACKEND, 6379, "DENY", "ingress"),  # strict mode, no policy yet
    ]
    graph = graph_of(lines)
    to_frontend = edge(graph, pod_id(CLIENT), pod_id(FRONTEND), "80/TCP")
    assert to_frontend.status == "denied"
    assert dict(to_frontend.policies) == {
        ("ACCEPT", "no policy (tier DEFAULT)", "egress"): 1,
        ("DENY", "stars/default-deny", "ingress"): 1,
    }
    to_backend = edge(graph, pod_id(CLIENT), pod_id(BACKEND), "6379/TCP")
    assert dict(to_backend.policies) == {("DENY", "no policy (tier DEFAULT)", "ingress"): 1}


def test_times_and_the_latest_verdict():
    lines = [
        verdict(
            CLIENT, FRONTEND, 80, "DENY", policy=DEFAULT_DENY, stamp="2026-11-22T05:00:00.000Z"
        ),
        verdict(
            CLIENT, FRONTEND, 80, "ACCEPT", policy=FRONTEND_POLICY, stamp="2026-11-22T05:10:00.000Z"
        ),
    ]
    [only] = graph_of(lines).edges
    assert (only.first_seen, only.last_seen) == (
        "2026-11-22T05:00:00.000Z",
        "2026-11-22T05:10:00.000Z",
    )
    assert (only.last_denied, only.last_allowed) == (
        "2026-11-22T05:00:00.000Z",
        "2026-11-22T05:10:00.000Z",
    )


def test_bytes_come_from_the_flows_ends():
    lines = [
        verdict(CLIENT, FRONTEND, 80, "ACCEPT"),
        expired(CLIENT, FRONTEND, 80, sent=1500, received=64000),
        verdict(CLIENT, FRONTEND, 80, "ACCEPT"),
        expired(CLIENT, FRONTEND, 80, sent=500, received=1000),
    ]
    [only] = graph_of(lines).edges
    assert only.flows == 2  # a flow's end is not another flow
    assert only.has_sizes
    assert (only.size("bytes_sent"), only.size("bytes_received")) == (2000, 65000)
    assert (only.size("packets_sent"), only.size("packets_received")) == (20, 16)
    assert only.first_seen == "2026-11-22T04:59:58.000Z"  # the flow's Start Time


def test_old_lines_name_the_remote_pod_from_the_lines_where_it_is_local():
    both_sides = [
        (CLIENT, FRONTEND, 80, "ACCEPT", "egress"),
        (CLIENT, FRONTEND, 80, "DENY", "ingress"),
        (FRONTEND, BACKEND, 6379, "ACCEPT", "egress"),
        (FRONTEND, BACKEND, 6379, "ACCEPT", "ingress"),
    ]
    old = graph_of([old_verdict(*args) for args in both_sides])
    new = graph_of([verdict(*args) for args in both_sides])

    def shape(graph: FlowGraph) -> set:
        return {(e.source, e.target, e.service, e.flows, e.denied) for e in graph.edges}

    assert (
        shape(old)
        == shape(new)
        == {
            (pod_id(CLIENT), pod_id(FRONTEND), "80/TCP", 1, 1),
            (pod_id(FRONTEND), pod_id(BACKEND), "6379/TCP", 1, 0),
        }
    )
    # Old lines do not say the workload: it is read from the pod's generated name.
    frontend = old.nodes[pod_id(FRONTEND)]
    assert (frontend.workload, frontend.workload_guessed) == ("deployment/frontend", True)
    assert old.nodes[pod_id(BACKEND)].workload == "statefulset/backend"


def test_an_old_line_whose_remote_end_is_never_local_is_outside_unless_known():
    lines = [old_verdict(CLIENT, FRONTEND, 80, "DENY", "ingress")]
    assert set(graph_of(lines).nodes) == {"outside:10.0.0.0/24", pod_id(FRONTEND)}
    known = {CLIENT[3]: KnownPod("client", CLIENT[1])}
    assert set(graph_of(lines, known_pods=known).nodes) == {pod_id(CLIENT), pod_id(FRONTEND)}


def test_guessed_workloads_join_the_workload_newer_lines_name():
    lines = [
        old_verdict(CLIENT, FRONTEND, 80, "ACCEPT", "ingress"),
        verdict(CLIENT, ("stars", "frontend-xyz12", "deployment/frontend", "10.0.1.20"), 80),
    ]
    graph = graph_of(lines, by=BY_WORKLOAD)
    assert "workload:stars/deployment/frontend" in graph.nodes
    assert len([n for n in graph.nodes if n.startswith("workload:stars/")]) == 1


@pytest.mark.parametrize(
    ("pod", "workload"),
    [
        ("frontend-7d9f8b6c4-x2x9k", "deployment/frontend"),
        ("client-xlffc", "client"),  # a ReplicaSet's, DaemonSet's or Job's: kind unknown
        ("web-0", "statefulset/web"),
        ("my-tool", "pod/my-tool"),
    ],
)
def test_workload_guessed_from_a_pod_name(pod, workload):
    assert guess_workload(pod) == workload


def test_aws_agent_lines_are_addresses_only():
    lines = [
        aws_verdict("10.0.0.5", "10.0.1.7", 80, "ACCEPT"),
        aws_verdict("10.0.0.5", "10.0.1.7", 80, "DENY"),
    ]
    graph = graph_of(lines)
    assert set(graph.nodes) == {"outside:10.0.0.0/24", "outside:10.0.1.0/24"}
    [only] = graph.edges
    assert (only.flows, only.denied) == (2, 1)  # no direction: one side, added up
    assert only.policies == {}  # the AWS agent does not say


def test_summary_lines_count_their_flows():
    lines = [
        summary(CLIENT, FRONTEND, 80, "ACCEPT", 12, policy=FRONTEND_POLICY),
        summary(CLIENT, FRONTEND, 80, "DENY", 3, policy=DEFAULT_DENY),
    ]
    [only] = graph_of(lines).edges
    assert (only.flows, only.denied, only.status) == (15, 3, "partly-denied")
    assert only.size("bytes_sent") == 300 * 15
    assert (only.first_seen, only.last_seen) == (
        "2026-11-22T05:00:00.000Z",
        "2026-11-22T05:01:00.000Z",
    )
    assert only.policies[("DENY", "stars/default-deny", "ingress")] == 3


def test_workload_summaries_are_workload_boxes_even_by_pod():
    graph = graph_of([summary(CLIENT, FRONTEND, 80, "ACCEPT", 7, aggregation="workload")])
    assert set(graph.nodes) == {
        "workload:client/deployment/client",
        "workload:stars/deployment/frontend",
    }
    assert graph.edges[0].flows == 7


def test_node_addresses_are_node_boxes():
    line = verdict(NODE_ADDRESS, FRONTEND, 8080) | {"Src Node": NODE_NAME}
    graph = graph_of([line])
    node = graph.nodes[f"node:{NODE_NAME}"]
    assert (node.kind, node.group, node.addresses) == ("node", "nodes", {NODE_ADDRESS})
    assert [group.label for group in graph.groups] == ["stars", "Nodes"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"outside:203.0.113.0/24", "outside:198.51.100.0/24", "outside:2001:db8::/64"}),
        (
            {"ipv4_prefix": 16},
            {"outside:203.0.0.0/16", "outside:198.51.0.0/16", "outside:2001:db8::/64"},
        ),
        ({"ipv4_prefix": 0, "ipv6_prefix": 0}, {"outside:world"}),
    ],
)
def test_outside_addresses_are_grouped_by_network(options, expected):
    lines = [
        verdict("203.0.113.9", FRONTEND, 443),
        verdict("203.0.113.200", FRONTEND, 443),
        verdict("198.51.100.1", FRONTEND, 443),
        verdict("2001:db8::7", FRONTEND, 443),
    ]
    graph = graph_of(lines, **options)
    outside = {node for node in graph.nodes if node.startswith("outside:")}
    assert outside == expected
    assert all(graph.nodes[node].group == "outside" for node in outside)
    assert sum(e.flows for e in graph.edges) == 4


def test_beyond_the_busiest_outside_networks_the_rest_is_world():
    lines = [verdict(f"198.51.{n}.1", FRONTEND, 443) for n in range(MAX_OUTSIDE_NETWORKS + 10)]
    lines += [verdict("198.51.0.2", FRONTEND, 443)] * 5  # the busiest
    graph = graph_of(lines)
    outside = [node for node in graph.nodes if node.startswith("outside:")]
    assert len(outside) == MAX_OUTSIDE_NETWORKS
    assert "outside:world" in outside and "outside:198.51.0.0/24" in outside
    assert sum(e.flows for e in graph.edges) == len(lines)
    assert any("outside networks" in note for note in graph.notes)


def many_pods(count: int, per_workload: int = 1, namespaces: int = 4) -> list[dict]:
    """``count`` pods, ``per_workload`` replicas each, each reached by the client."""
    lines = []
    for n in range(count):
        namespace = f"team-{n // per_workload % namespaces}"
        workload = f"deployment/app-{n // per_workload}"
        pod = (namespace, f"app-{n // per_workload}-{n}", workload, f"10.1.{n // 250}.{n % 250}")
        lines.append(verdict(CLIENT, pod, 8080))
    return lines


def test_up_to_max_nodes_pods_are_drawn_as_pods():
    graph = graph_of(many_pods(199))  # and the client: 200
    assert (graph.level, graph.pods, graph.notes) == (BY_POD, 200, [])


def test_more_pods_than_max_nodes_are_drawn_by_workload_and_the_page_says_so():
    graph = graph_of(many_pods(400, per_workload=4))
    assert graph.level == BY_WORKLOAD
    assert len(graph.nodes) == 101  # 100 workloads and the client's
    assert graph.notes == [
        "401 pods are more than 200 can show readably: drawn by workload (--max-nodes)"
    ]


def test_more_workloads_than_max_nodes_are_drawn_by_namespace():
    graph = graph_of(many_pods(300), max_nodes=200)
    assert graph.level == BY_NAMESPACE
    assert set(graph.nodes) == {"namespace:client", *(f"namespace:team-{n}" for n in range(4))}
    assert len(graph.notes) == 2


def test_a_tally_that_outgrows_its_bound_merges_outside_addresses_into_networks():
    lines = [verdict(f"203.0.{n // 200}.{n % 200}", FRONTEND, 443) for n in range(1000)]
    lines += [old_verdict(CLIENT, FRONTEND, 80, "ACCEPT", "egress")]  # a pod's address
    lines += [old_verdict(CLIENT, FRONTEND, 80, "ACCEPT", "ingress")] * 2
    graph = graph_of(lines, max_observations=100)
    assert {n for n in graph.nodes if n.startswith("outside:")} == {
        f"outside:203.0.{n}.0/24" for n in range(5)
    }
    assert sum(e.flows for e in graph.edges) == 1002  # nothing lost
    assert edge(graph, pod_id(CLIENT), pod_id(FRONTEND), "80/TCP").flows == 2
    assert any("merged into their networks" in note for note in graph.notes)
