"""The Kubernetes API stand-in, driven by the client the agent uses (kr8s) and by plain
HTTPS where the wire itself is the point."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kr8s.asyncio
import pytest
from kr8s import ServerError
from kr8s._api import Api

from flowlog.demo.kube_api import (
    UNAUTHORIZED,
    KubeApiServer,
    listening_socket,
    pod,
    policy_endpoint,
)

PE_VERSION = "networking.k8s.aws/v1alpha1"
TEST_TIMEOUT = 30.0


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeApiServer]:
    with KubeApiServer(tmp_path / "kube", bookmark_interval=0.2) as server:
        yield server


def run(scenario: Callable[[], Any]) -> Any:
    """Run an async test body on a loop of its own, bounded in time."""

    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(), TEST_TIMEOUT)

    return asyncio.run(bounded())


async def client(kube: KubeApiServer) -> Api:
    # kr8s caches one Api per arguments and event loop: each test's kubeconfig
    # path is its own, so no test gets another's client.
    return await kr8s.asyncio.api(kubeconfig=str(kube.write_kubeconfig()))


async def get_json(api: Api, url: str, version: str = "v1", **params: Any) -> dict:
    async with api.call_api("GET", version=version, url=url, params=params or None) as response:
        return response.json()


class Watch:
    """The events of one watch stream, read with a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> dict:
        return json.loads(await asyncio.wait_for(anext(self._lines), timeout))

    async def take(self, count: int) -> list[dict]:
        return [await self.next() for _ in range(count)]

    async def rest(self, timeout: float = 10.0) -> list[dict]:
        """Every event until the server ends the stream."""

        async def read_all() -> list[dict]:
            return [json.loads(line) async for line in self._lines]

        return await asyncio.wait_for(read_all(), timeout)

    async def next_change(self) -> dict:
        """The next event that is not a bookmark."""
        while (event := await self.next())["type"] == "BOOKMARK":
            pass
        return event


@contextlib.asynccontextmanager
async def watching(
    api: Api, url: str = "pods", version: str = "v1", **params: Any
) -> AsyncIterator[Watch]:
    params = {"watch": "1", **params}
    async with api.call_api(
        "GET", version=version, url=url, stream=True, params=params
    ) as response:
        yield Watch(response)


def summary(events: list[dict]) -> list[tuple[str, str]]:
    return [(event["type"], event["object"]["metadata"].get("name", "")) for event in events]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def frontend(name: str, node: str = "node-1", ip: str = "10.42.0.10", **options: Any) -> dict:
    return pod(name, "stars", ip, node, **options)


# --- TLS and authentication ---------------------------------------------------------


def test_tls_is_verified_against_its_own_ca_and_fails_without_it(kube: KubeApiServer) -> None:
    headers = {"Authorization": f"Bearer {kube.token}"}
    trusted = kube.client_ssl_context()
    for url in (kube.url, kube.url.replace("127.0.0.1", "localhost")):
        with httpx.Client(verify=trusted, headers=headers) as http:
            assert http.get(f"{url}/version").json()["gitVersion"].startswith("v1.")
    assert kube.ca_path == kube.workdir / "ca.crt"

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{kube.url}/version", headers=headers, verify=ssl.create_default_context())


def test_a_request_without_the_current_token_gets_401_unauthorized(kube: KubeApiServer) -> None:
    with httpx.Client(verify=kube.client_ssl_context()) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": kube.token}):
            answer = http.get(f"{kube.url}/api/v1/pods", headers=headers)
            assert answer.status_code == 401
            assert answer.json() == UNAUTHORIZED

        old = kube.token
        kube.set_token("rotated")
        assert (
            http.get(f"{kube.url}/version", headers={"Authorization": f"Bearer {old}"}).status_code
            == 401
        )
        answer = http.get(f"{kube.url}/version", headers={"Authorization": "Bearer rotated"})
        assert answer.status_code == 200


def test_kr8s_with_a_stale_token_retries_three_times_then_fails(kube: KubeApiServer) -> None:
    async def scenario() -> None:
        api = await client(kube)
        kube.set_token(rewrite_files=False)  # the kubeconfig keeps the old token
        before = len(kube.requests())
        with pytest.raises(ServerError) as failure:
            await get_json(api, "pods")
        assert failure.value.response.status_code == 401
        # One request and three more after re-reading the kubeconfig.
        assert [r.status for r in kube.requests()[before:]] == [401] * 4

    run(scenario)


def test_kr8s_picks_up_a_rotated_token_file_on_401(kube: KubeApiServer) -> None:
    async def scenario() -> None:
        api = await client(kube)
        kube.set_token()  # rewrites the kubeconfig, as a rotation would
        before = len(kube.requests())
        assert (await get_json(api, "pods"))["kind"] == "PodList"
        assert [r.status for r in kube.requests()[before:]] == [401, 200]

    run(scenario)


def test_service_account_credentials_work_in_cluster(
    kube: KubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = kube.write_service_account(tmp_path / "serviceaccount", namespace="stars")
    assert {p.name for p in directory.iterdir() if not p.name.startswith("..")} == {
        "ca.crt",
        "namespace",
        "token",
    }
    assert (directory / "token").read_text() == kube.token
    # kr8s reads a kubeconfig first when there is one.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    for name, value in kube.service_account_environment().items():
        monkeypatch.setenv(name, value)
    kube.apply(frontend("frontend-1"))

    async def scenario() -> None:
        api = await kr8s.asyncio.api(serviceaccount=str(directory))
        # kr8s 0.20 never reads the namespace file: its namespace is "default" unless given.
        assert (directory / "namespace").read_text() == "stars"
        pods = await get_json(api, "pods", namespace="stars")
        assert [item["metadata"]["name"] for item in pods["items"]] == ["frontend-1"]

        old_payload = os.readlink(directory / "..data")
        kube.set_token()
        assert os.readlink(directory / "..data") != old_payload
        assert (directory / "token").read_text() == kube.token
        assert not (directory / old_payload).exists()
        # kr8s re-reads the projected token after a 401 and carries on.
        assert (await get_json(api, "pods"))["items"]

    run(scenario)


# --- discovery ----------------------------------------------------------------------


def test_discovery_answers_what_kr8s_asks(kube: KubeApiServer) -> None:
    async def scenario() -> None:
        api = await client(kube)
        assert (await api.version())["gitVersion"] == "v1.32.0"
        assert await api.lookup_kind("pods") == ("pod/v1", "pods", True)
        assert await api.lookup_kind("events") == ("event/v1", "events", True)
        assert await api.lookup_kind("policyendpoints") == (
            f"policyendpoint.{PE_VERSION}",
            "policyendpoints",
            True,
        )
        assert [v async for v in api.api_versions()] == ["v1", PE_VERSION]

    run(scenario)
    paths = {record.path for record in kube.requests()}
    assert {"/version/", "/api/", "/api/v1", "/apis/", f"/apis/{PE_VERSION}"} <= paths
    assert all(record.status == 200 for record in kube.requests())


# --- objects and lists --------------------------------------------------------------


def test_lists_carry_a_resource_version_and_items_shaped_as_the_api_serves_them(
    kube: KubeApiServer,
) -> None:
    kube.apply(frontend("frontend-1"))
    kube.apply(pod("backend-1", "stars", "10.42.0.11", "node-1", owner=("StatefulSet", "backend")))
    kube.apply(policy_endpoint("frontend-x1", "stars", {"podSelectorEndpoints": []}))

    async def scenario() -> tuple[dict, dict]:
        api = await client(kube)
        return await get_json(api, "pods"), await get_json(api, "policyendpoints", PE_VERSION)

    pods, policies = run(scenario)
    assert pods["kind"] == "PodList" and pods["apiVersion"] == "v1"
    assert pods["metadata"] == {"resourceVersion": kube.resource_version}
    for item in pods["items"]:
        assert "kind" not in item and "apiVersion" not in item
        assert item["spec"]["containers"][0]["name"]
        assert item["spec"]["nodeName"] == "node-1"
        assert item["status"]["phase"] == "Running"
        [owner] = item["metadata"]["ownerReferences"]
        assert owner["controller"] is True
        assert item["metadata"]["uid"] and item["metadata"]["creationTimestamp"]
    assert [item["metadata"]["name"] for item in pods["items"]] == ["backend-1", "frontend-1"]
    assert pods["items"][0]["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    assert pods["items"][1]["status"]["podIPs"] == [{"ip": "10.42.0.10"}]

    assert policies["kind"] == "PolicyEndpointList" and policies["apiVersion"] == PE_VERSION
    [policy] = policies["items"]
    assert policy["kind"] == "PolicyEndpoint" and policy["apiVersion"] == PE_VERSION
    assert policy["metadata"]["generation"] == 1


def test_create_replace_delete_and_their_errors(kube: KubeApiServer) -> None:
    async def scenario() -> None:
        api = await client(kube)
        document = policy_endpoint("frontend-x1", "stars", {"podIsolation": ["Ingress"]})
        path = {"version": PE_VERSION, "namespace": "stars"}
        async with api.call_api("POST", url="policyendpoints", json=document, **path) as answer:
            assert answer.status_code == 201
            created = answer.json()
        with pytest.raises(ServerError) as failure:
            async with api.call_api("POST", url="policyendpoints", json=document, **path):
                pass
        assert failure.value.status["reason"] == "AlreadyExists"
        assert failure.value.response.status_code == 409

        changed = {**created, "spec": {"podIsolation": ["Ingress", "Egress"]}}
        async with api.call_api(
            "PUT", url="policyendpoints/frontend-x1", json=changed, **path
        ) as answer:
            replaced = answer.json()
        assert replaced["metadata"]["generation"] == 2
        assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
        assert int(replaced["metadata"]["resourceVersion"]) > int(
            created["metadata"]["resourceVersion"]
        )
        # Replacing from the old resourceVersion is a conflict.
        with pytest.raises(ServerError) as failure:
            async with api.call_api("PUT", url="policyendpoints/frontend-x1", json=changed, **path):
                pass
        assert failure.value.response.status_code == 409
        assert failure.value.status["reason"] == "Conflict"

        async with api.call_api("DELETE", url="policyendpoints/frontend-x1", **path) as answer:
            assert answer.json()["metadata"]["name"] == "frontend-x1"
        with pytest.raises(ServerError) as failure:
            async with api.call_api("GET", url="policyendpoints/frontend-x1", **path):
                pass
        assert failure.value.response.status_code == 404
        assert failure.value.status == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'policyendpoints.networking.k8s.aws "frontend-x1" not found',
            "reason": "NotFound",
            "details": {
                "name": "frontend-x1",
                "kind": "policyendpoints",
                "group": "networking.k8s.aws",
            },
            "code": 404,
        }

    run(scenario)
    assert kube.objects("PolicyEndpoint") == []


def test_events_posted_by_a_client_are_listed(kube: KubeApiServer) -> None:
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "flowlog-", "namespace": "stars"},
        "involvedObject": {"kind": "Pod", "namespace": "stars", "name": "frontend-1"},
        "reason": "PolicyVerdictsDropped",
        "message": "12 verdicts did not fit in the ring buffer",
        "type": "Warning",
        "source": {"component": "flowlog"},
    }

    async def scenario() -> dict:
        api = await client(kube)
        async with api.call_api(
            "POST", version="v1", namespace="stars", url="events", json=event
        ) as answer:
            assert answer.status_code == 201
        return await get_json(api, "events", namespace="stars", fieldSelector="type=Warning")

    listed = run(scenario)
    [stored] = kube.events("stars")
    assert stored["metadata"]["name"].startswith("flowlog-")
    assert stored["reason"] == "PolicyVerdictsDropped"
    assert kube.events("default") == []
    assert listed["kind"] == "EventList"
    assert [item["reason"] for item in listed["items"]] == ["PolicyVerdictsDropped"]


def test_field_and_label_selectors_filter_lists(kube: KubeApiServer) -> None:
    kube.apply(frontend("frontend-1", labels={"app": "frontend"}))
    kube.apply(frontend("frontend-2", node="node-2", labels={"app": "frontend"}))
    kube.apply(pod("client-1", "client", "10.42.0.12", "node-1", labels={"app": "client"}))

    async def names(**params: str) -> list[str]:
        api = await client(kube)
        listed = await get_json(api, "pods", **params)
        return [item["metadata"]["name"] for item in listed["items"]]

    async def scenario() -> None:
        assert await names(fieldSelector="spec.nodeName=node-1") == ["client-1", "frontend-1"]
        assert await names(fieldSelector="spec.nodeName!=node-1") == ["frontend-2"]
        assert await names(fieldSelector="spec.nodeName=node-1,metadata.namespace=stars") == [
            "frontend-1"
        ]
        assert await names(labelSelector="app=frontend") == ["frontend-1", "frontend-2"]
        assert await names(labelSelector="app!=frontend,app") == ["client-1"]
        api = await client(kube)
        with pytest.raises(ServerError) as failure:
            await get_json(api, "policyendpoints", PE_VERSION, fieldSelector="spec.nodeName=x")
        assert failure.value.response.status_code == 400

    run(scenario)


def test_pages_of_a_list_come_from_one_snapshot(kube: KubeApiServer) -> None:
    for number in range(5):
        kube.apply(frontend(f"frontend-{number}", ip=f"10.42.0.{10 + number}"))
    snapshot = kube.resource_version

    async def scenario() -> list[dict]:
        api = await client(kube)
        pages = [await get_json(api, "pods", limit=2)]
        # Changes between pages do not show in the later pages.
        await asyncio.to_thread(kube.delete, "Pod", "stars", "frontend-3")
        await asyncio.to_thread(kube.apply, frontend("frontend-9"))
        while token := pages[-1]["metadata"].get("continue"):
            pages.append(await get_json(api, "pods", limit=2, **{"continue": token}))
        return pages

    pages = run(scenario)
    assert [[item["metadata"]["name"] for item in page["items"]] for page in pages] == [
        ["frontend-0", "frontend-1"],
        ["frontend-2", "frontend-3"],
        ["frontend-4"],
    ]
    assert {page["metadata"]["resourceVersion"] for page in pages} == {snapshot}
    assert pages[0]["metadata"]["remainingItemCount"] == 3


def test_kr8s_get_pages_through_everything(kube: KubeApiServer) -> None:
    for number in range(105):
        kube.apply(frontend(f"frontend-{number:03}"))

    async def scenario() -> list[str]:
        api = await client(kube)
        return [p.name async for p in api.get("pods", namespace=kr8s.ALL)]

    assert len(run(scenario)) == 105
    lists = [r for r in kube.requests() if r.path == "/api/v1/pods"]
    assert [r.query.get("limit") for r in lists] == ["100", "100"]
    assert "continue" in lists[1].query


# --- watches ------------------------------------------------------------------------


def test_a_watch_from_a_resource_version_replays_the_changes_after_it_then_live_ones(
    kube: KubeApiServer,
) -> None:
    kube.apply(frontend("frontend-1"))
    kube.apply(frontend("frontend-2"))
    since = kube.resource_version
    kube.apply(frontend("frontend-3"))
    kube.apply(frontend("frontend-1", labels={"app": "frontend", "tier": "web"}))
    kube.delete("Pod", "stars", "frontend-2")

    async def scenario() -> tuple[list[dict], list[dict]]:
        api = await client(kube)
        async with watching(api, resourceVersion=since) as watch:
            replayed = await watch.take(3)
            await asyncio.to_thread(kube.apply, frontend("frontend-4"))
            live = [await watch.next_change()]
        return replayed, live

    replayed, live = run(scenario)
    assert summary(replayed) == [
        ("ADDED", "frontend-3"),
        ("MODIFIED", "frontend-1"),
        ("DELETED", "frontend-2"),
    ]
    assert summary(live) == [("ADDED", "frontend-4")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in replayed + live]
    assert versions == sorted(versions) and versions[0] > int(since)
    for event in replayed + live:
        assert event["object"]["kind"] == "Pod" and event["object"]["apiVersion"] == "v1"
    assert replayed[1]["object"]["metadata"]["labels"]["tier"] == "web"


def test_a_watch_without_a_resource_version_starts_with_every_object(
    kube: KubeApiServer,
) -> None:
    kube.apply(frontend("frontend-1"))
    kube.apply(policy_endpoint("frontend-x1", "stars", {"podSelectorEndpoints": []}))

    async def scenario() -> None:
        api = await client(kube)
        for version in ({}, {"resourceVersion": "0"}):
            async with watching(api, "policyendpoints", PE_VERSION, **version) as watch:
                [added] = await watch.take(1)
                assert added["type"] == "ADDED"
                assert added["object"]["kind"] == "PolicyEndpoint"
                await asyncio.to_thread(kube.delete, "PolicyEndpoint", "stars", "frontend-x1")
                deleted = await watch.next_change()
                assert summary([deleted]) == [("DELETED", "frontend-x1")]
                await asyncio.to_thread(
                    kube.apply,
                    policy_endpoint("frontend-x1", "stars", {"podSelectorEndpoints": []}),
                )

    run(scenario)


def test_bookmarks_carry_only_the_latest_resource_version(kube: KubeApiServer) -> None:
    kube.apply(frontend("frontend-1"))

    async def scenario() -> list[dict]:
        api = await client(kube)
        async with watching(
            api, resourceVersion=kube.resource_version, allowWatchBookmarks="true"
        ) as watch:
            first = await watch.next()
            await asyncio.to_thread(kube.apply, frontend("frontend-2"))
            changes = [await watch.next_change()]
            return [first, *changes, await watch.next()]

    first, added, bookmark = run(scenario)
    assert first == {
        "type": "BOOKMARK",
        "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}},
    }
    assert added["type"] == "ADDED"
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"] == {"resourceVersion": kube.resource_version}


def test_a_watch_ends_normally_at_its_timeout(kube: KubeApiServer) -> None:
    async def scenario() -> tuple[list[dict], float]:
        api = await client(kube)
        started = time.monotonic()
        async with watching(api, timeoutSeconds="1") as watch:
            events = await watch.rest()
        return events, time.monotonic() - started

    events, elapsed = run(scenario)
    assert events == []
    assert 0.9 <= elapsed < 5


def test_a_watch_from_before_a_compaction_gets_410_expired(kube: KubeApiServer) -> None:
    kube.apply(frontend("frontend-1"))
    old = kube.resource_version
    kube.apply(frontend("frontend-2"))
    kube.compact()
    compacted = kube.resource_version

    async def scenario() -> tuple[list[dict], list[dict]]:
        api = await client(kube)
        async with watching(api, resourceVersion=old) as watch:
            expired = await watch.rest()
        async with watching(api, resourceVersion=compacted, timeoutSeconds="1") as watch:
            current = await watch.rest()
        return expired, current

    expired, current = run(scenario)
    assert expired == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {old} ({compacted})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    assert current == []


def test_a_watch_with_a_field_selector_sees_objects_enter_and_leave_it(
    kube: KubeApiServer,
) -> None:
    kube.apply(frontend("frontend-1"))
    kube.apply(frontend("frontend-2", node="node-2"))

    async def scenario() -> tuple[list[dict], list[dict]]:
        api = await client(kube)
        selector = {"fieldSelector": "spec.nodeName=node-1"}
        async with watching(api, **selector) as watch:
            initial = await watch.take(1)
            for change in (
                frontend("frontend-3", node="node-2"),  # elsewhere: not seen
                frontend("frontend-1", node="node-2"),  # moved away: DELETED
                frontend("frontend-2", node="node-1"),  # moved here: ADDED
            ):
                await asyncio.to_thread(kube.apply, change)
            live = await watch.take(2)
        return initial, live

    initial, live = run(scenario)
    assert summary(initial) == [("ADDED", "frontend-1")]
    assert summary(live) == [("DELETED", "frontend-1"), ("ADDED", "frontend-2")]
    # A DELETED for an object that left the selection shows it as it was.
    assert live[0]["object"]["spec"]["nodeName"] == "node-1"


def test_drop_watches_aborts_every_open_stream(kube: KubeApiServer) -> None:
    async def scenario() -> None:
        api = await client(kube)
        async with watching(api) as pods, watching(api, "policyendpoints", PE_VERSION) as pes:
            await eventually(lambda: kube.open_watches() == 2)
            assert await asyncio.to_thread(kube.drop_watches) == 2
            for watch in (pods, pes):
                with pytest.raises(httpx.RemoteProtocolError):
                    await watch.rest()
        # The server is still there for the relist and the next watch.
        assert (await get_json(api, "pods"))["kind"] == "PodList"

    run(scenario)
    assert kube.open_watches() == 0
    assert sum(record.watch for record in kube.requests()) == 2


def test_stop_and_start_keep_address_state_and_history(kube: KubeApiServer) -> None:
    kube.apply(frontend("frontend-1"))
    since = kube.resource_version
    port = kube.port

    async def scenario() -> list[dict]:
        api = await client(kube)
        async with watching(api, resourceVersion=since) as watch:
            await eventually(lambda: kube.open_watches() == 1)
            await asyncio.to_thread(kube.stop)
            assert not kube.listening
            with pytest.raises(httpx.RemoteProtocolError):
                await watch.rest()
        with pytest.raises(httpx.ConnectError):
            await get_json(api, "pods")
        # Written while the server was down: a resumed watch must replay it.
        await asyncio.to_thread(kube.apply, frontend("frontend-2"))
        await asyncio.to_thread(kube.start)
        assert len((await get_json(api, "pods"))["items"]) == 2
        async with watching(api, resourceVersion=since) as watch:
            return await watch.take(1)

    replayed = run(scenario)
    assert kube.port == port
    assert summary(replayed) == [("ADDED", "frontend-2")]


# --- network namespaces -------------------------------------------------------------


@pytest.mark.root
def test_a_server_bound_inside_a_network_namespace_serves_clients_there(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    from flowlog.demo.topology import Topology

    with Topology() as topology:
        node = topology.node
        server = KubeApiServer(
            tmp_path / "kube",
            listen_socket=lambda port: node.call(lambda: listening_socket("127.0.0.1", port)),
        )
        with server as kube:
            kube.apply(frontend("frontend-1"))
            kubeconfig = str(kube.write_kubeconfig())

            async def list_pods() -> list[str]:
                api = await kr8s.asyncio.api(kubeconfig=kubeconfig)
                return [item["metadata"]["name"] for item in (await get_json(api, "pods"))["items"]]

            # The client runs in the node's namespace, as the agent would.
            assert node.call(lambda: asyncio.run(list_pods())) == ["frontend-1"]
            # Nothing listens on that port in this namespace: the port is free here.
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", kube.port))
