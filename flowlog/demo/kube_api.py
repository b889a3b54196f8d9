"""A Kubernetes API server of our own, for the tests and the demo.

No kube-apiserver can run here, so this one speaks its wire protocol for the
few resources flowlog uses: Pods, PolicyEndpoints (``networking.k8s.aws``
v1alpha1) and Events. It serves HTTPS with a CA of its own, wants a bearer
token, answers discovery as kr8s asks for it, and lists and watches the way
the real server does: one global resourceVersion counter, items of built-in
kinds without kind/apiVersion, ``limit``/``continue`` pages from a consistent
snapshot, watches that replay history from a resourceVersion, bookmarks,
``timeoutSeconds``, and 410 Expired after a compaction.

The server runs on an asyncio loop in a thread of its own; the test controls
(``apply``, ``delete``, ``compact``, ``drop_watches``, ``stop``/``start``,
``set_token``...) may be called from any other thread::

    with KubeApiServer(tmp_path) as kube:
        kube.apply(pod("frontend-5d8f9c7b6-x2x4z", "stars", "10.42.0.10", "node-1"))
        kubeconfig = kube.write_kubeconfig()
        ...  # a client under test lists and watches through kubeconfig
        assert kube.events("stars")

Only loopback addresses or addresses inside network namespaces made by the
test are ever listened on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import hmac
import ipaddress
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_T = TypeVar("_T")

# kr8s warns outside 1.28–1.35; EKS reports versions like this one.
VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T17:59:15Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}
# kube-apiserver's --min-request-timeout: how long a watch without timeoutSeconds lasts.
DEFAULT_WATCH_TIMEOUT = 1800.0
# Names the real server's certificate carries besides its addresses.
DEFAULT_CERTIFICATE_NAMES = (
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
DEFAULT_HOST_IP = "192.168.0.10"
CONTROL_TIMEOUT = 10.0
# How long stop() lets requests in progress finish (watches are aborted at once).
STOP_TIMEOUT = 1.0
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_TRUE_VALUES = {"1", "t", "T", "true", "True", "TRUE"}  # Go's strconv.ParseBool


# --- resources ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # compared by identity: one instance per resource
class ResourceType:
    """One kind of object the server stores, and how the API names it."""

    plural: str
    singular: str
    kind: str
    group: str
    version: str
    short_names: tuple[str, ...]
    builtin: bool
    # field selector label -> (path in the object, value when absent)
    field_labels: Mapping[str, tuple[tuple[str, ...], str]]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_name(self) -> str:
        """The name in error messages: ``pods``, ``policyendpoints.networking.k8s.aws``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": True,
            "kind": self.kind,
            "verbs": ALL_VERBS,
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry


_METADATA_LABELS = {
    "metadata.name": (("metadata", "name"), ""),
    "metadata.namespace": (("metadata", "namespace"), ""),
}

PODS = ResourceType(
    plural="pods",
    singular="pod",
    kind="Pod",
    group="",
    version="v1",
    short_names=("po",),
    builtin=True,
    field_labels={
        **_METADATA_LABELS,
        "spec.nodeName": (("spec", "nodeName"), ""),
        "spec.restartPolicy": (("spec", "restartPolicy"), ""),
        "spec.schedulerName": (("spec", "schedulerName"), ""),
        "spec.serviceAccountName": (("spec", "serviceAccountName"), ""),
        "spec.hostNetwork": (("spec", "hostNetwork"), "false"),
        "status.phase": (("status", "phase"), ""),
        "status.podIP": (("status", "podIP"), ""),
        "status.nominatedNodeName": (("status", "nominatedNodeName"), ""),
    },
)
EVENTS = ResourceType(
    plural="events",
    singular="event",
    kind="Event",
    group="",
    version="v1",
    short_names=("ev",),
    builtin=True,
    field_labels={
        **_METADATA_LABELS,
        **{
            f"involvedObject.{name}": (("involvedObject", name), "")
            for name in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
        },
        "involvedObject.fieldPath": (("involvedObject", "fieldPath"), ""),
        "reason": (("reason",), ""),
        "reportingComponent": (("reportingComponent",), ""),
        "source": (("source", "component"), ""),
        "type": (("type",), ""),
    },
)
POLICY_ENDPOINTS = ResourceType(
    plural="policyendpoints",
    singular="policyendpoint",
    kind="PolicyEndpoint",
    group="networking.k8s.aws",
    version="v1alpha1",
    short_names=(),
    builtin=False,
    field_labels=_METADATA_LABELS,
)
RESOURCE_TYPES = (PODS, EVENTS, POLICY_ENDPOINTS)


def resource_type(kind: str) -> ResourceType:
    """The resource for a kind (``Pod``), plural (``pods``), singular or short name."""
    for resource in RESOURCE_TYPES:
        if kind in (resource.kind, resource.plural, resource.singular, *resource.short_names):
            return resource
    raise KeyError(f"this server does not serve {kind!r}")


def _by_api_version(kind: str, api_version: str) -> ResourceType | None:
    for resource in RESOURCE_TYPES:
        if resource.kind == kind and resource.api_version == api_version:
            return resource
    return None


# --- objects as clients would create them -----------------------------------------


_OWNER_API_VERSIONS = {
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Deployment": "apps/v1",
    "Job": "batch/v1",
    "Node": "v1",
}


def pod(
    name: str,
    namespace: str,
    ip: str | None,
    node: str | None,
    owner: tuple[str, str] | None = ("ReplicaSet", "frontend-5d8f9c7b6"),
    labels: Mapping[str, str] | None = None,
    host_network: bool = False,
    ips: Sequence[str] | None = None,
    host_ip: str = DEFAULT_HOST_IP,
    phase: str | None = None,
) -> dict[str, Any]:
    """A Pod shaped like one the API serves (before the server adds uid and resourceVersion).

    ``owner`` is the controller as (kind, name), or None for a bare pod; ``labels``
    default to ``app: <name>`` (plus ReplicaSet's ``pod-template-hash``). ``ips``
    are all pod IPs (dual stack), ``ip`` the primary one. A ``host_network`` pod has
    the node's address, ``host_ip``, as its IP. A pod without ``node`` is Pending and
    unscheduled; ``phase`` defaults to Running for a pod with an IP.
    """
    pod_ips = [host_ip] if host_network else list(ips or ([ip] if ip else []))
    started = _timestamp()
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels is None:
        labels = {"app": name}
        if owner and owner[0] == "ReplicaSet":
            labels = {**labels, "pod-template-hash": owner[1].rsplit("-", 1)[-1]}
    metadata["labels"] = dict(labels)
    if owner:
        kind, owner_name = owner
        metadata["ownerReferences"] = [
            {
                "apiVersion": _OWNER_API_VERSIONS.get(kind, "v1"),
                "kind": kind,
                "name": owner_name,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{kind}/{owner_name}")),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }
        ],
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": "default",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
    }
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    phase = phase or ("Running" if pod_ips and node else "Pending")
    status: dict[str, Any] = {"phase": phase, "qosClass": "BestEffort"}
    if node:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
        status["startTime"] = started
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": address} for address in pod_ips]
    if phase == "Running":
        status["conditions"] = [
            {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
            for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
        ]
        status["containerStatuses"] = [
            {
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "imageID": "",
                "containerID": f"containerd://{secrets.token_hex(32)}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def policy_endpoint(name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A PolicyEndpoint custom resource with the given spec (podSelectorEndpoints, ingress...)."""
    return {
        "apiVersion": POLICY_ENDPOINTS.api_version,
        "kind": POLICY_ENDPOINTS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": copy.deepcopy(dict(spec)),
    }


def _timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- errors -----------------------------------------------------------------------


def status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ``Status`` object, as the API sends with every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        body["details"] = dict(details)
    body["code"] = code
    return body


class ApiError(Exception):
    """An error answer; the dispatcher turns it into a Status response."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status_body(code, reason, message, details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def not_found(cls, resource: ResourceType, name: str) -> ApiError:
        return cls(
            404,
            "NotFound",
            f'{resource.qualified_name} "{name}" not found',
            _details(resource, name),
        )


def _details(resource: ResourceType, name: str) -> dict[str, str]:
    details = {"name": name, "kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    return details


UNAUTHORIZED = status_body(401, "Unauthorized", "Unauthorized")


# --- selectors --------------------------------------------------------------------

# (path in the object, value when absent, wanted value, equal?)
FieldRequirement = tuple[tuple[str, ...], str, str, bool]
# (label key, wanted value or None for "has the label", equal?)
LabelRequirement = tuple[str, str | None, bool]


@dataclass(frozen=True)
class Selector:
    """Which objects a list or watch wants: namespace, field selector, label selector."""

    namespace: str | None = None
    fields: tuple[FieldRequirement, ...] = ()
    labels: tuple[LabelRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        metadata = obj["metadata"]
        if self.namespace is not None and metadata.get("namespace") != self.namespace:
            return False
        for path, absent, wanted, equal in self.fields:
            if (_field_value(obj, path, absent) == wanted) != equal:
                return False
        object_labels = metadata.get("labels") or {}
        for key, wanted, equal in self.labels:
            present = key in object_labels and (wanted is None or object_labels[key] == wanted)
            if present != equal:
                return False
        return True


def _field_value(obj: Mapping[str, Any], path: tuple[str, ...], absent: str) -> str:
    value: Any = obj
    for step in path:
        if not isinstance(value, Mapping) or step not in value:
            return absent
        value = value[step]
    if isinstance(value, bool):
        return "true" if value else "false"
    return absent if value is None else str(value)


def parse_field_selector(resource: ResourceType, text: str) -> tuple[FieldRequirement, ...]:
    """``spec.nodeName=node-1,metadata.namespace!=kube-system`` for ``Selector.fields``."""
    requirements: list[FieldRequirement] = []
    for term in filter(None, (part.strip() for part in text.split(","))):
        operator = next((op for op in ("!=", "==", "=") if op in term), None)
        if operator is None:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        label, value = (piece.strip() for piece in term.split(operator, 1))
        equal = operator != "!="
        if label not in resource.field_labels:
            if resource.builtin:
                raise ApiError.bad_request(f'field label not supported: "{label}"')
            raise ApiError.bad_request(
                f'"{label}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        path, absent = resource.field_labels[label]
        requirements.append((path, absent, value, equal))
    return tuple(requirements)


def parse_label_selector(text: str) -> tuple[LabelRequirement, ...]:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a`` and ``!a``."""
    requirements: list[LabelRequirement] = []
    for term in filter(None, (part.strip() for part in text.split(","))):
        requirement: LabelRequirement
        if "!=" in term:
            key, value = term.split("!=", 1)
            requirement = (key.strip(), value.strip(), False)
        elif "=" in term:
            key, value = term.replace("==", "=", 1).split("=", 1)
            requirement = (key.strip(), value.strip(), True)
        elif term.startswith("!"):
            requirement = (term[1:].strip(), None, False)
        else:
            requirement = (term, None, True)
        if not requirement[0] or any(c in requirement[0] for c in " ()"):
            raise ApiError.bad_request(f"unable to parse requirement: {term!r}")
        requirements.append(requirement)
    return tuple(requirements)


# --- certificates -----------------------------------------------------------------


def _subject_alternative_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_certificates(names: Iterable[str], directory: Path) -> tuple[Path, Path, Path]:
    """A new CA and a server certificate for ``names``; writes ca.crt, server.crt, server.key."""
    now = datetime.now(UTC)
    valid_from, valid_until = now - timedelta(minutes=5), now + timedelta(days=365)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowlog-test-kubernetes-ca")])
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(certificate_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    unique_names = list(dict.fromkeys(names))
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(certificate_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName([_subject_alternative_name(n) for n in unique_names]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, certificate_path, key_path = (
        directory / "ca.crt",
        directory / "server.crt",
        directory / "server.key",
    )
    ca_path.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    certificate_path.write_bytes(server_certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, certificate_path, key_path


def _key_usage(certificate_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificate_sign,
        crl_sign=certificate_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- files clients read -----------------------------------------------------------


def _write_atomically(path: Path, content: bytes, mode: int = 0o600) -> None:
    """Write beside ``path``, then rename over it: a reader sees the old file or the new one."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    partial.write_bytes(content)
    partial.chmod(mode)
    partial.rename(path)


def _write_projected_volume(directory: Path, files: Mapping[str, bytes]) -> None:
    """Lay out ``files`` as the kubelet's atomic writer does for a projected volume.

    The files live in a timestamped directory that ``..data`` points to, and each
    visible name is a link through ``..data``. An update writes a new timestamped
    directory and renames a new ``..data`` link over the old one, so a reader sees
    all old files or all new ones; then the old directory is removed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    payload = Path(tempfile.mkdtemp(prefix=stamp, dir=directory))
    payload.chmod(0o755)
    for name, content in files.items():
        (payload / name).write_bytes(content)
        (payload / name).chmod(0o644)
    data_link = directory / "..data"
    previous = directory / os.readlink(data_link) if data_link.is_symlink() else None
    new_link = directory / "..data_tmp"
    new_link.unlink(missing_ok=True)
    new_link.symlink_to(payload.name)
    new_link.rename(data_link)
    for name in files:
        visible = directory / name
        if not visible.is_symlink():
            visible.symlink_to(Path("..data") / name)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def listening_socket(host: str, port: int = 0, backlog: int = 128) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; reusable right after a stop."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Connections closed by the last stop() sit in TIME_WAIT on this port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# --- state ------------------------------------------------------------------------


def _object_key(obj: Mapping[str, Any]) -> str:
    """The object's place in the store's order (etcd's key order: namespace/name)."""
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _with_resource_version(obj: Mapping[str, Any], revision: int) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(revision)}}


@dataclass(frozen=True)
class Change:
    """One write in the history: the object after it and before it (None if created)."""

    revision: int
    type: str  # ADDED, MODIFIED or DELETED
    resource: ResourceType
    obj: dict[str, Any]
    previous: dict[str, Any] | None


class ClusterState:
    """Objects, the resourceVersion counter and the history of changes.

    Not thread-safe: the server touches it only from its own loop. Stored objects
    are never changed in place, so they can be handed out without copying.
    """

    def __init__(self) -> None:
        self.revision = 0
        self.compacted = 0
        self.objects: dict[ResourceType, dict[str, dict[str, Any]]] = {
            resource: {} for resource in RESOURCE_TYPES
        }
        self.history: list[Change] = []
        self.listeners: list[Callable[[Change], None]] = []

    def create(self, obj: Mapping[str, Any]) -> Change:
        resource = self._resource_of(obj)
        key = _object_key(obj)
        if key in self.objects[resource]:
            name = obj["metadata"]["name"]
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource.qualified_name} "{name}" already exists',
                _details(resource, name),
            )
        metadata = {
            **obj["metadata"],
            "uid": str(uuid.uuid4()),
            "creationTimestamp": _timestamp(),
        }
        if not resource.builtin:
            metadata["generation"] = 1
        return self._record("ADDED", resource, {**obj, "metadata": metadata}, None)

    def update(self, obj: Mapping[str, Any], check_version: bool) -> Change:
        resource = self._resource_of(obj)
        name = obj["metadata"]["name"]
        previous = self.objects[resource].get(_object_key(obj))
        if previous is None:
            raise ApiError.not_found(resource, name)
        wanted = obj["metadata"].get("resourceVersion")
        if check_version and wanted and wanted != previous["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource.qualified_name} "{name}": the '
                "object has been modified; please apply your changes to the latest version "
                "and try again",
                _details(resource, name),
            )
        kept = {key: previous["metadata"][key] for key in ("uid", "creationTimestamp")}
        metadata = {**obj["metadata"], **kept}
        if not resource.builtin:
            spec_changed = obj.get("spec") != previous.get("spec")
            metadata["generation"] = previous["metadata"]["generation"] + spec_changed
        return self._record("MODIFIED", resource, {**obj, "metadata": metadata}, previous)

    def apply(self, obj: Mapping[str, Any]) -> Change:
        resource = self._resource_of(obj)
        if _object_key(obj) in self.objects[resource]:
            return self.update(obj, check_version=False)
        return self.create(obj)

    def delete(self, resource: ResourceType, namespace: str, name: str) -> Change:
        previous = self.objects[resource].get(f"{namespace}/{name}")
        if previous is None:
            raise ApiError.not_found(resource, name)
        return self._record("DELETED", resource, previous, previous)

    def compact(self) -> None:
        self.compacted = self.revision
        self.history.clear()

    def snapshot(self, resource: ResourceType, revision: int) -> dict[str, dict[str, Any]]:
        """The objects as they were at ``revision`` (not older than the last compaction)."""
        objects = dict(self.objects[resource])
        for change in reversed(self.history):
            if change.revision <= revision:
                break
            if change.resource is not resource:
                continue
            key = _object_key(change.obj)
            if change.previous is None:
                del objects[key]
            else:
                objects[key] = change.previous
        return objects

    def changes_after(self, revision: int) -> list[Change]:
        first = next(
            (i for i, change in enumerate(self.history) if change.revision > revision),
            len(self.history),
        )
        return self.history[first:]

    def _resource_of(self, obj: Mapping[str, Any]) -> ResourceType:
        resource = _by_api_version(obj.get("kind", ""), obj.get("apiVersion", ""))
        if resource is None:
            raise ApiError.bad_request(
                f"this server does not serve {obj.get('apiVersion')}/{obj.get('kind')}"
            )
        return resource

    def _record(
        self,
        change_type: str,
        resource: ResourceType,
        obj: Mapping[str, Any],
        previous: dict[str, Any] | None,
    ) -> Change:
        self.revision += 1
        stored = _with_resource_version(obj, self.revision)
        objects = self.objects[resource]
        if change_type == "DELETED":
            del objects[_object_key(stored)]
        else:
            objects[_object_key(stored)] = stored
        change = Change(self.revision, change_type, resource, stored, previous)
        self.history.append(change)
        for listener in self.listeners:
            listener(change)
        return change


def _served(resource: ResourceType, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """A list item: built-in kinds' items carry no kind/apiVersion, custom resources' do."""
    if resource.builtin:
        return {key: value for key, value in obj.items() if key not in ("kind", "apiVersion")}
    return obj


def watch_event(change: Change, selector: Selector) -> tuple[str, Mapping[str, Any]] | None:
    """What a watch with ``selector`` sees of ``change``, as the API server's watch cache.

    An object that starts matching arrives as ADDED; one that stops matching
    leaves as DELETED, with its previous content at the change's resourceVersion.
    """
    now_matches = change.type != "DELETED" and selector.matches(change.obj)
    matched = change.previous is not None and selector.matches(change.previous)
    if now_matches:
        return ("MODIFIED" if matched else "ADDED"), change.obj
    if matched:
        assert change.previous is not None
        return "DELETED", _with_resource_version(change.previous, change.revision)
    return None


# --- continue tokens --------------------------------------------------------------


def encode_continue(revision: int, last_key: str) -> str:
    """The token for the page after ``last_key`` of the snapshot at ``revision`` (etcd's form)."""
    token = {"v": "meta.k8s.io/v1", "rv": revision, "start": f"{last_key}\x00"}
    return base64.urlsafe_b64encode(orjson.dumps(token)).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(decoded["rv"]), str(decoded["start"])
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ApiError.bad_request(f"continue key is not valid: {error}") from error


# --- the server -------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered: for assertions on what a client did."""

    method: str
    path: str
    query: Mapping[str, str]
    status: int

    @property
    def watch(self) -> bool:
        return self.query.get("watch", "") in _TRUE_VALUES


@dataclass(eq=False)
class _Watch:
    request: web.Request
    selector: Selector
    resource: ResourceType
    pending: list[Change] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False

    def offer(self, change: Change) -> None:
        if change.resource is self.resource:
            self.pending.append(change)
            self.wakeup.set()

    def drop(self) -> None:
        """End the stream abruptly, without the final chunk, as a dropped connection."""
        self.dropped = True
        if self.request.transport is not None:
            self.request.transport.abort()
        self.wakeup.set()


@dataclass(frozen=True)
class _Route:
    resource: ResourceType
    namespace: str | None
    name: str | None


class KubeApiServer:
    """An HTTPS Kubernetes API server for Pods, PolicyEndpoints and Events.

    ``workdir`` receives ca.crt (and the server's own certificate and key); a
    temporary directory, removed on close, if not given. The server listens on
    ``host:port`` (port 0: a free one, kept across stop()/start()), or on the
    socket that ``listen_socket(port)`` returns: a bound, listening socket,
    called with ``port`` at the first start and with the port it got at every
    later one, so it comes back on the same address. A socket keeps the network
    namespace it was created in, so a factory running in a namespace puts the
    server there. ``host`` is also the address clients are given (with
    ``listen_socket``, the socket's own address by default); the certificate
    names it, loopback, ``kubernetes.default.svc`` and ``extra_names``.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        host: str | None = None,
        port: int = 0,
        listen_socket: Callable[[int], socket.socket] | None = None,
        extra_names: Sequence[str] = (),
        token: str | None = None,
        bookmark_interval: float = 1.0,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="flowlog-kube-api-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._host = host
        self.port = port
        self._listen_socket = listen_socket or (
            lambda wanted: listening_socket(host or "127.0.0.1", wanted)
        )
        self._extra_names = tuple(extra_names)
        self.token = token or secrets.token_urlsafe(32)
        self.bookmark_interval = bookmark_interval
        self.ca_path: Path | None = None
        self._server_ssl: ssl.SSLContext | None = None
        self._state = ClusterState()
        self._state.listeners.append(self._publish)
        self._watches: set[_Watch] = set()
        self._runner: web.AppRunner | None = None
        self._requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()
        self._kubeconfigs: dict[Path, str] = {}
        self._service_accounts: dict[Path, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def host(self) -> str:
        """The address clients connect to."""
        if self._host is None:
            raise RuntimeError("the server has not started yet")
        return self._host

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._runner is not None

    def start(self) -> KubeApiServer:
        """Start listening (again, after stop(), on the same address with the same state)."""
        if self._thread is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="kube-api-server", daemon=True
            )
            self._thread.start()
        self._run(self._start_listening())
        return self

    def stop(self) -> None:
        """Stop listening and close every connection; state and history are kept."""
        if self._thread is not None:
            self._run(self._stop_listening())

    def close(self) -> None:
        """Stop for good: the loop thread ends, a temporary workdir is removed."""
        if self._thread is None:
            return
        assert self._loop is not None
        try:
            self.stop()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CONTROL_TIMEOUT)
            self._loop.close()
            self._thread = self._loop = None
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    async def _start_listening(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"already listening on {self.url}")
        sock = self._listen_socket(self.port)
        try:
            address, self.port = sock.getsockname()[:2]
            if self._host is None:
                self._host = _reachable(address)
            if self._server_ssl is None:
                self._server_ssl = self._issue_certificates()
            app = web.Application(middlewares=[self._authenticate])
            app.on_response_prepare.append(self._log_response)
            app.router.add_route("*", "/{path:.*}", self._dispatch)
            # handler_cancellation: a watch whose client went away ends at once.
            runner = web.AppRunner(
                app,
                handle_signals=False,
                access_log=None,
                handler_cancellation=True,
                shutdown_timeout=STOP_TIMEOUT,
            )
            await runner.setup()
        except BaseException:
            sock.close()
            raise
        try:
            await web.SockSite(runner, sock, ssl_context=self._server_ssl).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner

    async def _stop_listening(self) -> None:
        runner, self._runner = self._runner, None
        for watch in list(self._watches):
            watch.drop()
        if runner is not None:
            await runner.cleanup()

    def _issue_certificates(self) -> ssl.SSLContext:
        names = (*DEFAULT_CERTIFICATE_NAMES, self.host, *self._extra_names)
        self.ca_path, certificate, key = issue_certificates(names, self.workdir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        return context

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the server is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CONTROL_TIMEOUT)

    def _on_loop(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the server's loop, where the state lives."""

        async def call() -> _T:
            return function(*args)

        return self._run(call())

    # --- test controls ---

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace ``obj``; returns it as stored (uid, resourceVersion...)."""
        document = copy.deepcopy(dict(obj))
        document["metadata"].setdefault("namespace", "default")
        change = self._on_loop(self._state.apply, document)
        return copy.deepcopy(change.obj)

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """Delete an object (KeyError if there is none); returns its final state."""
        try:
            change = self._on_loop(self._state.delete, resource_type(kind), namespace, name)
        except ApiError as error:
            raise KeyError(f"{kind} {namespace}/{name}") from error
        return copy.deepcopy(change.obj)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._on_loop(
            lambda: self._state.objects[resource_type(kind)].get(f"{namespace}/{name}")
        )
        return copy.deepcopy(found)

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """Every stored object of a kind, in the API's order (namespace, then name)."""
        stored = self._on_loop(lambda: sorted(self._state.objects[resource_type(kind)].items()))
        return [copy.deepcopy(obj) for _, obj in stored]

    def events(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Events clients posted (in one namespace, or all)."""
        return [
            event
            for event in self.objects("Event")
            if namespace is None or event["metadata"]["namespace"] == namespace
        ]

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion, as the API writes it."""
        return str(self._state.revision)

    def compact(self) -> None:
        """Forget the history up to now: watches from an older resourceVersion get 410."""
        self._on_loop(self._state.compact)

    def drop_watches(self) -> int:
        """Abort every open watch stream, as a load balancer dropping connections; how many."""

        def drop_all() -> int:
            watches = list(self._watches)
            for watch in watches:
                watch.drop()
            return len(watches)

        return self._on_loop(drop_all)

    def open_watches(self) -> int:
        return self._on_loop(lambda: len(self._watches))

    def requests(self) -> list[RequestRecord]:
        """Every request answered so far, oldest first (a watch when its stream started)."""
        with self._requests_lock:
            return list(self._requests)

    def set_token(self, token: str | None = None, rewrite_files: bool = True) -> str:
        """Accept only ``token`` (a new random one if None) from now on; returns it.

        With ``rewrite_files``, the kubeconfigs and service-account directories
        written by ``write_kubeconfig``/``write_service_account`` get the new
        token, atomically, as the kubelet rotates a projected token.
        """
        self.token = token or secrets.token_urlsafe(32)
        if rewrite_files:
            for path, namespace in list(self._kubeconfigs.items()):
                self.write_kubeconfig(path, namespace)
            for directory, namespace in list(self._service_accounts.items()):
                self.write_service_account(directory, namespace)
        return self.token

    # --- credentials for clients ---

    def write_kubeconfig(
        self, path: str | os.PathLike[str] | None = None, namespace: str = "default"
    ) -> Path:
        """A kubeconfig for this server (CA inline, bearer token); workdir/kubeconfig by default."""
        target = Path(path) if path is not None else self.workdir / "kubeconfig"
        ca = self._ca_pem()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "flowlog-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": "flowlog-test", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "flowlog-test",
                    "context": {
                        "cluster": "flowlog-test",
                        "user": "flowlog-test",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "flowlog-test",
            "preferences": {},
        }
        # JSON is YAML: every kubeconfig reader takes it.
        _write_atomically(target, orjson.dumps(config, option=orjson.OPT_INDENT_2))
        self._kubeconfigs[target] = namespace
        return target

    def write_service_account(
        self, directory: str | os.PathLike[str] | None = None, namespace: str = "default"
    ) -> Path:
        """token, ca.crt and namespace as a pod sees them; workdir/serviceaccount by default.

        Pair it with ``service_account_environment()`` for in-cluster configuration.
        """
        target = Path(directory) if directory is not None else self.workdir / "serviceaccount"
        files = {
            "ca.crt": self._ca_pem(),
            "namespace": namespace.encode(),
            "token": self.token.encode(),
        }
        _write_projected_volume(target, files)
        self._service_accounts[target] = namespace
        return target

    def service_account_environment(self) -> dict[str, str]:
        """``KUBERNETES_SERVICE_HOST``/``_PORT`` as the kubelet sets them in every pod."""
        return {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this server's CA, for plain HTTP clients."""
        return ssl.create_default_context(cafile=str(self._ca_file()))

    def _ca_file(self) -> Path:
        if self.ca_path is None:
            raise RuntimeError("the server has not started yet: no CA")
        return self.ca_path

    def _ca_pem(self) -> bytes:
        return self._ca_file().read_bytes()

    # --- HTTP ---

    @web.middleware
    async def _authenticate(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]],
    ) -> web.StreamResponse:
        offered = request.headers.get("Authorization", "")
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(offered.encode(), expected.encode()):
            return _json_response(UNAUTHORIZED, 401)
        return await handler(request)

    async def _log_response(self, request: web.Request, response: web.StreamResponse) -> None:
        record = RequestRecord(request.method, request.path, dict(request.query), response.status)
        with self._requests_lock:
            self._requests.append(record)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._answer(request)
        except ApiError as error:
            return _json_response(error.status, error.status["code"])

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        # kr8s asks for /version/, /api/ and /apis/ with a trailing slash.
        path = request.path.rstrip("/") or "/"
        discovery = self._discovery(path)
        if discovery is not None:
            if request.method != "GET":
                raise _method_not_allowed()
            return _json_response(discovery)
        route = _route(path)
        if request.method == "GET":
            if route.name is None or _is_true(request.query.get("watch")):
                return await self._list_or_watch(request, route)
            found = self._state.objects[route.resource].get(f"{route.namespace}/{route.name}")
            if found is None:
                raise ApiError.not_found(route.resource, route.name)
            return _json_response(found)
        if route.namespace is None:
            raise _method_not_allowed()
        if request.method == "POST" and route.name is None:
            change = self._state.create(await self._body(request, route))
            return _json_response(change.obj, 201)
        if request.method == "PUT" and route.name is not None:
            change = self._state.update(await self._body(request, route), check_version=True)
            return _json_response(change.obj)
        if request.method == "DELETE" and route.name is not None:
            change = self._state.delete(route.resource, route.namespace, route.name)
            return _json_response(change.obj)
        raise _method_not_allowed()

    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "/version":
            return VERSION_INFO
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                ],
            }
        if path == "/api/v1":
            return _resource_list("v1", [PODS, EVENTS])
        group = _group_entry(POLICY_ENDPOINTS)
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
        if path == f"/apis/{POLICY_ENDPOINTS.group}":
            return {"kind": "APIGroup", "apiVersion": "v1", **group}
        if path == f"/apis/{POLICY_ENDPOINTS.api_version}":
            return {
                "apiVersion": "v1",
                **_resource_list(POLICY_ENDPOINTS.api_version, [POLICY_ENDPOINTS]),
            }
        return None

    async def _body(self, request: web.Request, route: _Route) -> dict[str, Any]:
        """The object in a POST or PUT, checked against the path as the API checks it."""
        try:
            obj = orjson.loads(await request.read())
        except orjson.JSONDecodeError as error:
            raise ApiError.bad_request(f"the body of the request was not JSON: {error}") from error
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise ApiError.bad_request("the body of the request is not an object")
        resource = route.resource
        if obj.get("kind") != resource.kind or obj.get("apiVersion") != resource.api_version:
            raise ApiError.bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) and the kind "
                f"({obj.get('kind')}) do not match {resource.api_version} {resource.kind}"
            )
        metadata = obj.setdefault("metadata", {})
        if metadata.setdefault("namespace", route.namespace) != route.namespace:
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        if route.name is None and not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        if not metadata.get("name"):
            raise ApiError(422, "Invalid", "name or generateName is required")
        if route.name is not None and metadata["name"] != route.name:
            raise ApiError.bad_request("the name of the object does not match the name on the URL")
        return obj

    async def _list_or_watch(self, request: web.Request, route: _Route) -> web.StreamResponse:
        query = request.query
        fields = parse_field_selector(route.resource, query.get("fieldSelector", ""))
        if route.name is not None:  # a watch on one object's path
            fields += parse_field_selector(route.resource, f"metadata.name={route.name}")
        selector = Selector(
            namespace=route.namespace,
            fields=fields,
            labels=parse_label_selector(query.get("labelSelector", "")),
        )
        if _is_true(query.get("watch")):
            return await self._watch(request, route.resource, selector)
        return _json_response(self._list(route.resource, selector, query))

    def _list(
        self, resource: ResourceType, selector: Selector, query: Mapping[str, str]
    ) -> dict[str, Any]:
        limit = _integer(query, "limit", 0)
        if query.get("continue"):
            revision, start = decode_continue(query["continue"])
            if revision < self._state.compacted:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                )
            objects = self._state.snapshot(resource, revision)
        else:
            revision, start = self._state.revision, ""
            objects = self._state.objects[resource]
        keys = sorted(key for key in objects if key >= start)
        items: list[Mapping[str, Any]] = []
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        for position, key in enumerate(keys):
            if not selector.matches(objects[key]):
                continue
            if limit and len(items) == limit:
                metadata["continue"] = encode_continue(revision, _object_key(items[-1]))
                if not selector.fields and not selector.labels:
                    metadata["remainingItemCount"] = len(keys) - position
                break
            items.append(objects[key])
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": metadata,
            "items": [_served(resource, item) for item in items],
        }

    async def _watch(
        self, request: web.Request, resource: ResourceType, selector: Selector
    ) -> web.StreamResponse:
        query = request.query
        timeout = _integer(query, "timeoutSeconds", 0) or DEFAULT_WATCH_TIMEOUT
        bookmarks = _is_true(query.get("allowWatchBookmarks"))
        since = query.get("resourceVersion", "")
        expired: dict[str, Any] | None = None
        initial: list[tuple[str, Mapping[str, Any]]] = []
        # The replay and the subscription are taken together, with no await between,
        # so no change falls between them.
        if since in ("", "0"):
            initial = [
                ("ADDED", obj)
                for _, obj in sorted(self._state.objects[resource].items())
                if selector.matches(obj)
            ]
        else:
            revision = _integer(query, "resourceVersion", 0)
            if revision < self._state.compacted:
                expired = status_body(
                    410,
                    "Expired",
                    f"too old resource version: {revision} ({self._state.compacted})",
                )
            else:
                initial = [
                    event
                    for change in self._state.changes_after(revision)
                    if change.resource is resource
                    and (event := watch_event(change, selector)) is not None
                ]
        watch = _Watch(request, selector, resource)
        self._watches.add(watch)
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            if expired is not None:
                await response.write(_line("ERROR", expired))
            else:
                for event_type, obj in initial:
                    await response.write(_line(event_type, obj))
                await self._stream_changes(response, watch, timeout, bookmarks)
            if not watch.dropped:
                await response.write_eof()
            return response
        except ConnectionError:
            return response
        finally:
            self._watches.discard(watch)

    async def _stream_changes(
        self, response: web.StreamResponse, watch: _Watch, timeout: float, bookmarks: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval
        while not watch.dropped:
            if watch.pending:
                event = watch_event(watch.pending.pop(0), watch.selector)
                if event is not None:
                    await response.write(_line(*event))
                continue
            now = loop.time()
            if now >= deadline:
                return
            if bookmarks and now >= next_bookmark:
                # Nothing is pending, so every change up to now has reached this watch.
                await response.write(_line("BOOKMARK", self._bookmark(watch.resource)))
                next_bookmark = now + self.bookmark_interval
                continue
            watch.wakeup.clear()
            wake_at = min(deadline, next_bookmark) if bookmarks else deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.wakeup.wait(), wake_at - now)

    def _bookmark(self, resource: ResourceType) -> dict[str, Any]:
        return {
            "kind": resource.kind,
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(self._state.revision)},
        }

    def _publish(self, change: Change) -> None:
        for watch in self._watches:
            watch.offer(change)


# --- HTTP helpers -----------------------------------------------------------------


def _reachable(address: str) -> str:
    """The address to give clients for a socket bound to ``address``."""
    if address == "0.0.0.0":
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address


def _json_response(body: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _line(event_type: str, obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"type": event_type, "object": obj}) + b"\n"


def _is_true(value: str | None) -> bool:
    return value in _TRUE_VALUES


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError.bad_request(f"{name}: Invalid value: {text!r}") from None
    if value < 0:
        raise ApiError.bad_request(f"{name}: Invalid value: {text!r}: must be non-negative")
    return value


def _method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def _resource_list(group_version: str, resources: Iterable[ResourceType]) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "groupVersion": group_version,
        "resources": [resource.discovery_entry() for resource in resources],
    }


def _group_entry(resource: ResourceType) -> dict[str, Any]:
    version = {"groupVersion": resource.api_version, "version": resource.version}
    return {"name": resource.group, "versions": [version], "preferredVersion": version}


def _route(path: str) -> _Route:
    """The resource, namespace and name a resource path names (404 for anything else)."""
    segments = path.strip("/").split("/")
    for resource in RESOURCE_TYPES:
        prefix = ["api", "v1"] if not resource.group else ["apis", *resource.api_version.split("/")]
        if segments[: len(prefix)] != prefix:
            continue
        rest = segments[len(prefix) :]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] != resource.plural or len(rest) > 2:
            continue
        name = rest[1] if len(rest) == 2 else None
        if name is not None and namespace is None:
            break  # namespaced objects have no cluster-wide path of their own
        return _Route(resource, namespace, name)
    raise ApiError(404, "NotFound", "the server could not find the requested resource")
