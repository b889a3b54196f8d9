"""Reading the Kubernetes manifests in docker/ and fluent-bit/ the way the API server would.

Only what the tests need: the documents by kind, the one container of a
DaemonSet, and its environment resolved as the kubelet would resolve it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
AGENT_MANIFEST = REPOSITORY / "docker" / "daemonset.yaml"
FLUENT_BIT_MANIFEST = REPOSITORY / "fluent-bit" / "daemonset.yaml"

Document = dict[str, Any]


def load_documents(path: Path) -> list[Document]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def only(documents: list[Document], kind: str, name: str | None = None) -> Document:
    matches = [
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_spec(daemonset: Document) -> Document:
    return daemonset["spec"]["template"]["spec"]


def the_container(daemonset: Document) -> Document:
    containers = pod_spec(daemonset)["containers"]
    assert len(containers) == 1
    return containers[0]


def resolved_environment(
    container: Document, documents: list[Document], node_name: str
) -> dict[str, str]:
    """The container's environment with the downward API and ConfigMap references filled in."""
    environment = {}
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
            continue
        source = variable["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "spec.nodeName", variable
            environment[variable["name"]] = node_name
        else:
            reference = source["configMapKeyRef"]
            config_map = only(documents, "ConfigMap", reference["name"])
            environment[variable["name"]] = config_map["data"][reference["key"]]
    return environment


def mounts_by_volume(daemonset: Document) -> dict[str, Document]:
    mounts = {m["name"]: m for m in the_container(daemonset).get("volumeMounts", [])}
    volumes = {v["name"] for v in pod_spec(daemonset).get("volumes", [])}
    assert set(mounts) == volumes, "every volume is mounted, every mount has a volume"
    return mounts


def host_paths(daemonset: Document) -> dict[str, tuple[str, Document]]:
    """hostPath on the node -> (path in the container, the mount)."""
    mounts = mounts_by_volume(daemonset)
    return {
        volume["hostPath"]["path"]: (mounts[volume["name"]]["mountPath"], mounts[volume["name"]])
        for volume in pod_spec(daemonset)["volumes"]
        if "hostPath" in volume
    }


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (path, key, value) pair in a parsed document, at any depth."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk(item, f"{path}[{index}]")
