"""The manifests as kubectl and the Kubernetes API's schemas see them.

``kubectl apply --dry-run=client`` still asks a server which kinds exist
(discovery) and whether each object is already there; no API server runs
here, so a small one answers those two questions the way a cluster does
(FACTS: the wire protocol), for the API groups a cluster has built in. The
fields are checked offline against the Kubernetes JSON schemas that
kubernetes-validate bundles, strictly: a misspelt or misplaced field fails.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
import pytest

from tests.deploy.manifests import AGENT_MANIFEST, FLUENT_BIT_MANIFEST, REPOSITORY, load_documents

KUBECTL = "/usr/bin/kubectl"
RBAC_MANIFEST = REPOSITORY / "docker" / "rbac.yaml"
MANIFESTS = [AGENT_MANIFEST, RBAC_MANIFEST, FLUENT_BIT_MANIFEST]
# The oldest Kubernetes release EKS still supports in standard support, and the newest schemas.
SCHEMA_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "patch", "update"]
# group/version -> (resource, kind, namespaced), as a cluster's discovery lists them.
BUILT_IN_RESOURCES = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
        ("events", "Event", True),
    ],
    "apps/v1": [("daemonsets", "DaemonSet", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    ],
}


def discovery(path: str) -> dict | None:
    """The discovery document at ``path`` (legacy, unaggregated form), or None."""
    groups = [gv for gv in BUILT_IN_RESOURCES if "/" in gv]
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": gv.split("/")[0],
                    "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                    "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
                }
                for gv in groups
            ],
        }
    group_version = path.removeprefix("/api/").removeprefix("/apis/")
    if path in ("/api/v1", *(f"/apis/{gv}" for gv in groups)):
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [
                {
                    "name": resource,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": READ + WRITE,
                }
                for resource, kind, namespaced in BUILT_IN_RESOURCES[group_version]
            ],
        }
    return None


class DiscoveryOnlyServer(BaseHTTPRequestHandler):
    """Discovery documents, and 404 NotFound for every object: an empty cluster."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        document = discovery(path)
        if document is None:
            status = 404
            document = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
            }
        else:
            status = 200
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory) -> Iterator[Path]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DiscoveryOnlyServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    path = tmp_path_factory.mktemp("kube") / "config"
    url = f"http://127.0.0.1:{server.server_address[1]}"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "empty", "cluster": {"server": url}}],
                "contexts": [{"name": "empty", "context": {"cluster": "empty"}}],
                "current-context": "empty",
                "users": [],
            }
        )
    )
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def kubectl_apply(kubeconfig: Path, *paths: Path) -> subprocess.CompletedProcess:
    files = [argument for path in paths for argument in ("-f", str(path))]
    client = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(kubeconfig.parent)]
    return subprocess.run(
        [*client, "apply", "--dry-run=client", "--validate=false", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )


def created(documents: list[dict]) -> list[str]:
    """kubectl's line for each object: kind.group/name (no group for the core API)."""
    lines = []
    for document in documents:
        group = document["apiVersion"].rpartition("/")[0]
        kind = document["kind"].lower() + (f".{group}" if group else "")
        lines.append(f"{kind}/{document['metadata']['name']} created (dry run)")
    return sorted(lines)


def test_kubectl_applies_the_agents_directory(kubeconfig):
    result = kubectl_apply(kubeconfig, REPOSITORY / "docker")
    assert result.returncode == 0, result.stderr
    expected = created(load_documents(AGENT_MANIFEST) + load_documents(RBAC_MANIFEST))
    assert sorted(result.stdout.splitlines()) == expected


def test_kubectl_applies_fluent_bits_daemonset(kubeconfig):
    result = kubectl_apply(kubeconfig, FLUENT_BIT_MANIFEST)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == created(load_documents(FLUENT_BIT_MANIFEST))


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.parent.name + "/" + path.name)
def test_every_field_is_in_the_kubernetes_schema(manifest, version):
    for document in load_documents(manifest):
        kubernetes_validate.validate(document, version, strict=True)


def test_a_misspelt_field_fails_the_schema_check():
    (daemonset,) = [d for d in load_documents(AGENT_MANIFEST) if d["kind"] == "DaemonSet"]
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # "FileSystem": wrong
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, SCHEMA_VERSIONS[-1], strict=True)
