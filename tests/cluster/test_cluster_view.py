"""The cluster view against the API stand-in: informers through kr8s, and the names they give.

Each test runs a ClusterView on its own event loop against a KubeApiServer,
changes objects through the server, and polls what the agent would see: who
holds an address, what is ready, how often it listed and watched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowlog.cluster import ClusterView
from flowlog.cluster import metrics as cluster_metrics
from flowlog.cluster.peers import NODE, POD, Identity
from flowlog.config import Settings
from flowlog.demo.kube_api import KubeApiServer, pod, policy_endpoint

NODE_NAME = "node-1"
TEST_SECONDS = 60.0


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeApiServer]:
    with KubeApiServer(tmp_path / "kube", bookmark_interval=0.2) as server:
        yield server


def settings_for(kube: KubeApiServer, tmp_path: Path, **values: Any) -> Settings:
    defaults = {
        "kubeconfig": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
        "node_name": NODE_NAME,
        "ipam_checkpoint": str(tmp_path / "aws-node" / "ipam.json"),
    }
    return Settings(**{**defaults, **values})


def run_view(view: ClusterView, scenario: Callable[[ClusterView], Any]) -> Any:
    """``scenario(view)`` with the view running, on a loop of its own, bounded in time."""

    async def main() -> Any:
        task = asyncio.create_task(view.run())
        try:
            return await asyncio.wait_for(scenario(view), TEST_SECONDS)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return asyncio.run(main())


async def eventually(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {predicate}")
        await asyncio.sleep(0.02)


def holder(view: ClusterView, address: str) -> Identity | None:
    """Who the view says holds ``address`` now."""
    current, _ = view.peers.leases(address)
    if current is None or current.until_ms < time.time() * 1000:
        return None
    return view.peers.identity(current.id)


def lists(kube: KubeApiServer, plural: str = "pods") -> int:
    return sum(1 for r in kube.requests() if r.path.endswith(plural) and not r.watch)


def watches(kube: KubeApiServer, plural: str = "pods") -> int:
    return sum(1 for r in kube.requests() if r.path.endswith(plural) and r.watch)


FRONTEND = pod("frontend-5d8f9c7b6-x2x4z", "stars", "10.42.0.11", NODE_NAME)
CLIENT = pod("client-7d9f8-abcde", "client", "10.42.1.5", "node-2", ("ReplicaSet", "client-7d9f8"))


def test_pods_cluster_wide_name_their_addresses_and_nodes(kube, tmp_path):
    kube.apply(FRONTEND)
    kube.apply(CLIENT)
    kube.apply(
        pod(
            "aws-node-xyz",
            "kube-system",
            None,
            "node-2",
            ("DaemonSet", "aws-node"),
            host_network=True,
            host_ip="192.168.0.20",
        )
    )
    view = ClusterView(settings_for(kube, tmp_path))

    async def scenario(view):
        assert not view.readiness()[0]
        await eventually(lambda: view.synced)
        ready, detail = view.readiness()
        assert ready and detail["pods"]["objects"] == 3 and detail["notSynced"] == []
        assert holder(view, "10.42.0.11") == Identity(
            POD, "frontend-5d8f9c7b6-x2x4z", "stars", "deployment/frontend"
        )
        assert holder(view, "10.42.1.5") == Identity(
            POD, "client-7d9f8-abcde", "client", "deployment/client"
        )
        # A host-network pod's address is its node's; every pod names its node's address.
        assert holder(view, "192.168.0.20") == Identity(NODE, "node-2")
        assert set(view.pods.local) == {("stars", "frontend-5d8f9c7b6-x2x4z")}

    run_view(view, scenario)


def test_changes_arrive_by_the_watch_and_a_dropped_watch_resumes_without_a_list(kube, tmp_path):
    view = ClusterView(settings_for(kube, tmp_path))

    async def scenario(view):
        await eventually(lambda: view.synced and view.informers[0].watching)
        kube.apply(FRONTEND)
        await eventually(lambda: holder(view, "10.42.0.11") is not None)
        restarts = cluster_metrics.WATCH_RESTARTS.labels(kind="pods")._value.get()
        assert kube.drop_watches() >= 1
        kube.apply(CLIENT)
        await eventually(lambda: holder(view, "10.42.1.5") is not None)
        kube.delete("Pod", "stars", FRONTEND["metadata"]["name"])
        await eventually(lambda: view.peers.leases("10.42.0.11")[0].until_ms < 2**62)
        assert lists(kube) == 1 and watches(kube) >= 2
        assert cluster_metrics.WATCH_RESTARTS.labels(kind="pods")._value.get() >= restarts

    run_view(view, scenario)


def test_an_expired_resource_version_relists_and_reconciles_what_changed_meanwhile(kube, tmp_path):
    kube.apply(FRONTEND)
    kube.apply(CLIENT)
    view = ClusterView(settings_for(kube, tmp_path))

    async def scenario(view):
        await eventually(lambda: view.synced and view.informers[0].watching)
        relists = cluster_metrics.RELISTS.labels(kind="pods")._value.get()
        # While the agent cannot watch: one pod goes, one comes, one changes its IP;
        # then the history it would resume from is compacted away.
        kube.stop()
        kube.delete("Pod", "client", CLIENT["metadata"]["name"])
        kube.apply(
            pod(
                "backend-6b7c-qwert",
                "stars",
                "10.42.0.12",
                NODE_NAME,
                ("ReplicaSet", "backend-6b7c"),
            )
        )
        moved = orjson.loads(orjson.dumps(kube.get("Pod", "stars", FRONTEND["metadata"]["name"])))
        moved["status"]["podIP"], moved["status"]["podIPs"] = "10.42.0.21", [{"ip": "10.42.0.21"}]
        kube.apply(moved)
        kube.compact()
        kube.start()
        await eventually(lambda: cluster_metrics.RELISTS.labels(kind="pods")._value.get() > relists)
        await eventually(lambda: holder(view, "10.42.0.12") is not None)
        assert holder(view, "10.42.0.21").name == FRONTEND["metadata"]["name"]
        # Gone (kept for the grace period only): their leases now end.
        assert view.peers.leases("10.42.1.5")[0].until_ms < 2**62
        assert view.peers.leases("10.42.0.11")[0].until_ms < 2**62
        assert lists(kube) == 2

    run_view(view, scenario)


def test_the_api_server_away_for_a_while_is_waited_for(kube, tmp_path):
    view = ClusterView(settings_for(kube, tmp_path))

    async def scenario(view):
        await eventually(lambda: view.synced and view.informers[0].watching)
        kube.stop()
        await eventually(lambda: not view.informers[0].watching)
        await asyncio.sleep(3)  # the outage itself, not a synchronisation
        kube.start()
        kube.apply(FRONTEND)
        await eventually(lambda: holder(view, "10.42.0.11") is not None, timeout=30)
        assert view.readiness()[0]

    run_view(view, scenario)


def test_in_cluster_the_rotated_token_is_read_again(kube, tmp_path, monkeypatch):
    account = kube.write_service_account(tmp_path / "serviceaccount")
    for name, value in kube.service_account_environment().items():
        monkeypatch.setenv(name, value)
    settings = settings_for(kube, tmp_path, kubeconfig="", service_account_dir=str(account))
    view = ClusterView(settings)
    assert view.api == "in-cluster"

    async def scenario(view):
        await eventually(lambda: view.synced and view.informers[0].watching)
        kube.set_token()  # the old token is refused from now on; the file is rewritten
        kube.drop_watches()
        kube.apply(FRONTEND)
        await eventually(lambda: holder(view, "10.42.0.11") is not None)
        statuses = [r.status for r in kube.requests()]
        assert statuses.count(401) <= 4  # kr8s' own retries at most, before the new token

    run_view(view, scenario)


def test_without_credentials_a_client_is_refused_and_the_view_is_not_ready(kube, tmp_path):
    config = orjson.loads(kube.write_kubeconfig(tmp_path / "kubeconfig").read_bytes())
    config["users"][0]["user"]["token"] = "not-the-token"
    (tmp_path / "bad-kubeconfig").write_bytes(orjson.dumps(config))
    view = ClusterView(settings_for(kube, tmp_path, kubeconfig=str(tmp_path / "bad-kubeconfig")))

    async def scenario(view):
        await eventually(lambda: view.connect_error or view.informers[0].last_error)
        ready, detail = view.readiness()
        assert not ready and detail["notSynced"] == ["pods"]
        assert "401" in (detail["apiError"] or detail["pods"]["error"] or "")

    run_view(view, scenario)


def test_the_checkpoint_names_this_nodes_pods_and_the_api_wins(kube, tmp_path):
    checkpoint = tmp_path / "aws-node" / "ipam.json"
    checkpoint.parent.mkdir()

    def write(*allocations: tuple[str, str, str]) -> None:
        document = {
            "version": "vpc-cni-ipam/1",
            "allocations": [
                {
                    "networkName": "aws-cni",
                    "containerID": f"c-{name}",
                    "ifName": "eth0",
                    "ipv4": ip,
                    "ipv6": "",
                    "allocationTimestamp": 1,
                    "metadata": {"k8sPodNamespace": namespace, "k8sPodName": name},
                }
                for name, namespace, ip in allocations
            ],
        }
        partial = checkpoint.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(document))
        partial.rename(checkpoint)

    write(("local-only", "stars", "10.42.0.30"), ("stale-name", "stars", "10.42.0.11"))
    kube.apply(FRONTEND)
    view = ClusterView(settings_for(kube, tmp_path))

    async def scenario(view):
        await eventually(lambda: view.synced and view.checkpoint.pods == 2)
        assert holder(view, "10.42.0.30") == Identity(POD, "local-only", "stars")
        assert holder(view, "10.42.0.11").name == FRONTEND["metadata"]["name"]
        write(("local-only", "stars", "10.42.0.30"), ("newcomer", "stars", "10.42.0.31"))
        await eventually(lambda: holder(view, "10.42.0.31") is not None)
        checkpoint.write_text("{not json")
        await eventually(lambda: view.checkpoint.problem)
        assert holder(view, "10.42.0.31") == Identity(POD, "newcomer", "stars")

    run_view(view, scenario)


def test_policyendpoints_are_cut_to_this_nodes_pods_and_a_rejection_is_an_event(kube, tmp_path):
    spec = {
        "policyRef": {"name": "frontend-policy", "namespace": "stars"},
        "podIsolation": ["Ingress"],
        "podSelectorEndpoints": [
            {"podIP": "10.42.0.11", "name": FRONTEND["metadata"]["name"], "namespace": "stars"},
            {"podIP": "10.42.1.5", "name": CLIENT["metadata"]["name"], "namespace": "client"},
        ],
        "ingress": [{"cidr": "10.42.0.0/16", "ports": [{"protocol": "TCP", "port": 80}]}],
    }
    elsewhere = {**spec, "podSelectorEndpoints": spec["podSelectorEndpoints"][1:]}
    kube.apply(FRONTEND)
    kube.apply(CLIENT)
    kube.apply(policy_endpoint("frontend-policy-x1", "stars", spec))
    kube.apply(policy_endpoint("client-policy-x1", "client", elsewhere))
    view = ClusterView(settings_for(kube, tmp_path), enforce_from_api=True)

    async def scenario(view):
        await eventually(lambda: view.synced)
        documents = view.policies.snapshot()
        assert list(documents) == ["stars/frontend-policy-x1"]
        endpoints = documents["stars/frontend-policy-x1"]["spec"]["podSelectorEndpoints"]
        assert [e["name"] for e in endpoints] == [FRONTEND["metadata"]["name"]]
        view.policies.rejected("stars/frontend-policy-x1", "spec.ingress[0]: bad")
        await eventually(lambda: kube.events("stars"))
        (event,) = kube.events("stars")
        assert event["type"] == "Warning" and event["reason"] == "PolicyEndpointRejected"
        assert event["involvedObject"]["name"] == "frontend-policy-x1"
        assert "spec.ingress[0]: bad" in event["message"]

    run_view(view, scenario)
