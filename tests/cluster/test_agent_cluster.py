"""The whole agent as on EKS: pods and PolicyEndpoints from the Kubernetes API only.

The API stand-in listens inside the test's node namespace (where the agent
runs, as a hostNetwork pod would), the pods are network namespaces whose
names and addresses the API serves, and nothing comes from a policy
directory. Real packets; the flow log must name both ends of every line.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from flowlog.dataplane.programs import PinLayout
from flowlog.demo.kube_api import KubeApiServer, listening_socket, pod, policy_endpoint
from flowlog.demo.topology import Pod, TcpServer, Topology, tcp_connect
from tests.dataplane.conftest import new_pin_dir
from tests.support.agent_process import AgentProcess, wait_until

pytestmark = pytest.mark.bpf

NODE = "node-1"
ELSEWHERE = "node-2"
NODE_ADDRESS = "192.168.0.10"


@dataclass
class Cluster:
    topology: Topology
    kube: KubeApiServer
    client: Pod
    frontend: Pod
    backend: Pod
    log: Path
    pins: PinLayout

    def serve_pod(self, member: Pod, node: str, owner: str, name: str | None = None) -> dict:
        obj = pod(
            name or member.name,
            member.namespace,
            member.ipv4,
            node,
            ("ReplicaSet", owner),
            ips=[member.ipv4, member.ipv6],
            host_ip=NODE_ADDRESS if node == NODE else "192.168.0.20",
        )
        return self.kube.apply(obj)

    def lines(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [orjson.loads(line) for line in self.log.read_bytes().splitlines()]


def backend_policy(cluster: Cluster, ports: list[dict] | None) -> dict:
    """backend isolates ingress; the client may reach ``ports`` (none: nothing)."""
    spec = {
        "policyRef": {"name": "backend-policy", "namespace": "stars"},
        "podIsolation": ["Ingress"],
        "podSelectorEndpoints": [
            {
                "podIP": cluster.backend.ipv4,
                "hostIP": NODE_ADDRESS,
                "name": cluster.backend.name,
                "namespace": "stars",
            }
        ],
        "ingress": [{"cidr": f"{cluster.client.ipv4}/32", "ports": ports}] if ports else [],
    }
    return policy_endpoint("backend-policy-x1", "stars", spec)


def frontend_policy(cluster: Cluster) -> dict:
    spec = {
        "policyRef": {"name": "frontend-policy", "namespace": "stars"},
        "podIsolation": ["Ingress"],
        "podSelectorEndpoints": [
            {"podIP": cluster.frontend.ipv4, "name": cluster.frontend.name, "namespace": "stars"}
        ],
        "ingress": [{"cidr": "10.42.0.0/16", "ports": [{"protocol": "TCP", "port": 80}]}],
    }
    return policy_endpoint("frontend-policy-x1", "stars", spec)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Topology() as topology:
        # The client's veth is on this node's namespace, but the API says its pod
        # runs elsewhere: it is a remote peer, named from the API alone.
        client = topology.add_pod("client-7d9f8-abcde", "client")
        frontend = topology.add_pod("frontend-5d8f9c7b6-x2x4z", "stars")
        backend = topology.add_pod("backend-6b7c9d-qwert", "stars")
        node = topology.node
        with KubeApiServer(
            tmp_path / "kube",
            listen_socket=lambda port: node.call(lambda: listening_socket("127.0.0.1", port)),
            bookmark_interval=0.5,
        ) as kube:
            pins = PinLayout(new_pin_dir())
            state = Cluster(topology, kube, client, frontend, backend, tmp_path / "flows.log", pins)
            state.serve_pod(client, ELSEWHERE, "client-7d9f8")
            state.serve_pod(frontend, NODE, "frontend-5d8f9c7b6")
            state.serve_pod(backend, NODE, "backend-6b7c9d")
            kube.apply(frontend_policy(state))
            kube.apply(backend_policy(state, None))
            try:
                yield state
            finally:
                pins.remove()


@contextlib.contextmanager
def agent_in(cluster: Cluster, tmp_path: Path, *flags: str) -> Iterator[AgentProcess]:
    """The agent in the node namespace, in-cluster: a service account and its environment."""
    account = cluster.kube.write_service_account(tmp_path / "serviceaccount")
    agent = AgentProcess(
        "--enable-policy-event-logs",
        "--bpf-pin-dir",
        str(cluster.pins.root),
        "--log-file",
        str(cluster.log),
        "--node-name",
        NODE,
        "--service-account-dir",
        str(account),
        "--ipam-checkpoint",
        str(tmp_path / "no-aws-node" / "ipam.json"),
        *flags,
        namespace=cluster.topology.node,
        env=cluster.kube.service_account_environment(),
    )
    try:
        agent.wait_ready()
        yield agent
    finally:
        agent.close()


def verdict_lines(cluster: Cluster, port: int) -> list[dict]:
    return [
        line
        for line in cluster.lines()
        if line["Dest Port"] == port and line["Verdict"] in ("ACCEPT", "DENY")
    ]


def connects(cluster: Cluster, target: Pod, port: int, source_port: int) -> bool:
    with TcpServer(target, port):
        return tcp_connect(cluster.client, target.ipv4, port, timeout=0.5, source_port=source_port)


def test_stars_served_by_the_api_are_enforced_and_both_ends_named(cluster, tmp_path):
    with agent_in(cluster, tmp_path) as agent:
        ready = agent.ready()
        assert ready["cluster"]["api"] == "in-cluster"
        assert ready["cluster"]["pods"]["objects"] == 3
        assert ready["dataplane"]["policy_source"].startswith("the Kubernetes API")
        # Only this node's pods are programmed: the client runs elsewhere.
        assert sorted(ready["dataplane"]["selected_pods"]) == [
            f"stars/{cluster.backend.name}",
            f"stars/{cluster.frontend.name}",
        ]
        assert connects(cluster, cluster.frontend, 80, 40001)
        assert not connects(cluster, cluster.backend, 6379, 40002)
        wait_until(lambda: verdict_lines(cluster, 6379) and verdict_lines(cluster, 80))
        assert agent.stop() == 0
    (accept,) = verdict_lines(cluster, 80)
    assert (accept["Verdict"], accept["Policy"]) == ("ACCEPT", "frontend-policy")
    assert (accept["Src Pod"], accept["Src Namespace"], accept["Src Workload"]) == (
        cluster.client.name,
        "client",
        "deployment/client",
    )
    assert (accept["Dest Pod"], accept["Dest Namespace"], accept["Dest Workload"]) == (
        cluster.frontend.name,
        "stars",
        "deployment/frontend",
    )
    denied = verdict_lines(cluster, 6379)
    assert {line["Verdict"] for line in denied} == {"DENY"}
    assert {(line["Src Pod"], line["Dest Pod"]) for line in denied} == {
        (cluster.client.name, cluster.backend.name)
    }
    ends = [line for line in cluster.lines() if line["Verdict"] == "EXPIRED/DELETED"]
    assert any(line["Dest Port"] == 80 and line["Src Pod"] == cluster.client.name for line in ends)


def test_policyendpoint_changes_apply_live_and_a_bad_one_changes_nothing(cluster, tmp_path):
    with agent_in(cluster, tmp_path) as agent:
        assert not connects(cluster, cluster.backend, 6379, 40010)
        cluster.kube.apply(backend_policy(cluster, [{"protocol": "TCP", "port": 6379}]))
        wait_until(lambda: connects(cluster, cluster.backend, 6379, 40011), message="the new rules")
        # A version the agent cannot enforce: rejected, named, and the rules in force stay.
        bad = backend_policy(cluster, [{"protocol": "TCP", "port": 70000}])
        cluster.kube.apply(bad)
        wait_until(lambda: agent.metric("flowlog_kube_policyendpoints_rejected_total") >= 1)
        assert connects(cluster, cluster.backend, 6379, 40012)
        rejected = agent.ready()["dataplane"]["rejected"]
        assert rejected == {
            "stars/backend-policy-x1": "stars/backend-policy-x1: spec.ingress[0].ports[0].port: "
            "expected 1-65535, got 70000"
        }
        wait_until(lambda: cluster.kube.events("stars"), message="a Kubernetes Event")
        (event,) = cluster.kube.events("stars")
        assert event["involvedObject"]["name"] == "backend-policy-x1"
        assert "expected 1-65535, got 70000" in event["message"]
        assert "stars/backend-policy-x1: spec.ingress[0].ports[0].port" in agent.stderr()
        # Back to nothing allowed.
        cluster.kube.apply(backend_policy(cluster, None))
        wait_until(lambda: not connects(cluster, cluster.backend, 6379, 40013))
        assert agent.stop() == 0


def test_a_forced_410_and_ten_seconds_without_the_api_server_are_survived(cluster, tmp_path):
    kube = cluster.kube
    with agent_in(cluster, tmp_path) as agent:
        wait_until(lambda: kube.open_watches() >= 2, message="both watches")
        # Changes the agent cannot watch, then a history it cannot resume from.
        kube.stop()
        kube.apply(backend_policy(cluster, [{"protocol": "TCP", "port": 6379}]))
        kube.compact()
        kube.start()
        wait_until(lambda: agent.metric("flowlog_kube_relists_total", kind="policyendpoints") >= 1)
        wait_until(lambda: connects(cluster, cluster.backend, 6379, 40020), message="relisted")

        kube.stop()
        outage_ends = time.monotonic() + 10
        while time.monotonic() < outage_ends:  # the outage itself; the agent must keep going
            assert agent.ready() is not None
            time.sleep(0.5)
        kube.start()
        kube.apply(backend_policy(cluster, None))
        wait_until(
            lambda: not connects(cluster, cluster.backend, 6379, 40021),
            timeout=30,
            message="the change made after the restart",
        )
        assert agent.metric("flowlog_kube_watch_restarts_total", kind="policyendpoints") >= 1
        assert agent.stop() == 0


def test_an_ip_given_to_another_pod_names_each_line_by_who_held_it_then(cluster, tmp_path):
    kube = cluster.kube
    with agent_in(cluster, tmp_path) as agent:
        assert connects(cluster, cluster.frontend, 80, 40030)
        wait_until(lambda: verdict_lines(cluster, 80))
        # The client's pod goes; a new pod elsewhere gets its address.
        kube.delete("Pod", "client", cluster.client.name)
        wait_until(lambda: agent.metric("flowlog_kube_objects", kind="pods") == 2)
        cluster.serve_pod(cluster.client, ELSEWHERE, "batch-5c4d3", name="batch-5c4d3-zzzzz")
        wait_until(lambda: agent.metric("flowlog_kube_objects", kind="pods") == 3)
        time.sleep(0.05)  # the kernel's clock and ours tick apart by a millisecond or two
        assert connects(cluster, cluster.frontend, 80, 40031)
        wait_until(lambda: len(verdict_lines(cluster, 80)) == 2)
        agent.signal(signal.SIGTERM)
        assert agent.process.wait(10) == 0
    before, after = verdict_lines(cluster, 80)
    assert (before["Src Port"], before["Src Pod"]) == (40030, cluster.client.name)
    assert (after["Src Port"], after["Src Pod"]) == (40031, "batch-5c4d3-zzzzz")
    assert after["Src Workload"] == "deployment/batch"
