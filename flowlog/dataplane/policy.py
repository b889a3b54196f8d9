"""PolicyEndpoint documents: read, validated, and turned into plain values.

The shape is the CRD ``policyendpoints.networking.k8s.aws`` (API
``networking.k8s.aws/v1alpha1``) as the network policy controller writes it::

    apiVersion: networking.k8s.aws/v1alpha1
    kind: PolicyEndpoint
    metadata: {name: frontend-abcde, namespace: stars}
    spec:
      policyRef: {name: frontend-policy, namespace: stars}
      podIsolation: [Ingress, Egress]
      podSelectorEndpoints:
        - {podIP: 10.0.0.5, name: frontend-abc, namespace: stars}
      ingress:
        - cidr: 10.0.0.0/16
          except: [10.0.5.0/24]
          ports: [{protocol: TCP, port: 80}, {protocol: UDP, port: 5000, endPort: 5100}]
      egress:
        - cidr: 0.0.0.0/0

A port's protocol defaults to TCP; a rule without ports allows every port and
protocol. Without ``podIsolation``, a direction is isolated when the document
has rules for it (NetworkPolicy's policyTypes default). A file may hold
several documents (``---``) or a ``List``/``PolicyEndpointList`` of them.

Every problem is reported as one line naming the file and the field, e.g.
``policies/frontend.yaml: spec.ingress[0].ports[1].port: expected 1-65535, got 70000``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "networking.k8s.aws/v1alpha1"
KIND = "PolicyEndpoint"
LIST_KINDS = ("List", "PolicyEndpointList")
INGRESS, EGRESS = "Ingress", "Egress"
PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": socket.IPPROTO_SCTP}
DEFAULT_PROTOCOL = "TCP"
# Fields the controller writes that do not change what is allowed.
KNOWN_SPEC_FIELDS = {
    "policyRef",
    "podIsolation",
    "podSelectorEndpoints",
    "ingress",
    "egress",
    "podSelector",
    "isGlobal",
    "priority",
}
KNOWN_RULE_FIELDS = {"cidr", "except", "ports", "action"}
KNOWN_PORT_FIELDS = {"protocol", "port", "endPort"}
KNOWN_POD_FIELDS = {"podIP", "name", "namespace", "hostIP"}
ALLOW_ACTION = "Allow"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """A document that cannot be enforced; the message is one line naming file and field."""


@dataclass(frozen=True)
class PortRange:
    protocol: int  # IPPROTO_*
    port: int  # 0: every port of the protocol
    end_port: int  # inclusive; equal to port for a single port


@dataclass(frozen=True)
class PeerRule:
    """Peers in ``cidr`` but in none of ``excepts`` may talk on ``ports`` (empty: all)."""

    cidr: Network
    excepts: tuple[Network, ...]
    ports: tuple[PortRange, ...]


@dataclass(frozen=True)
class PodRef:
    name: str
    namespace: str
    ip: str


@dataclass(frozen=True)
class PolicyEndpoint:
    source: str  # the file it came from
    policy: tuple[str, str]  # policyRef (name, namespace)
    pods: tuple[PodRef, ...]
    isolation: frozenset[str]  # INGRESS, EGRESS
    ingress: tuple[PeerRule, ...]
    egress: tuple[PeerRule, ...]

    def rules(self, direction: str) -> tuple[PeerRule, ...]:
        return self.ingress if direction == INGRESS else self.egress


class _Reader:
    """Walks one document, knowing the path to the field it is looking at."""

    def __init__(self, source: str, document: str = "", path_prefix: str = "") -> None:
        self.source = source
        self.document = document  # "document 2" in a file of several
        self.path_prefix = path_prefix  # "items[0]" in a list

    def fail(self, path: str, problem: str) -> PolicyError:
        field = ".".join(part for part in (self.path_prefix, path) if part)
        where = ": ".join(part for part in (self.source, self.document, field) if part)
        return PolicyError(f"{where}: {problem}")

    def mapping(self, value: Any, path: str, known: set[str] | None = None) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected an object, got {_show(value)}")
        if known is not None:
            for key in value:
                if key not in known:
                    raise self.fail(f"{path}.{key}" if path else str(key), "unknown field")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_show(value)}")
        return value

    def text(self, value: Any, path: str, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(path, f"expected a non-empty string, got {_show(value)}")
        return value.strip()

    def network(self, value: Any, path: str) -> Network:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a CIDR such as 10.0.0.0/16, got {_show(value)}")
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise self.fail(
                path, f"expected a CIDR such as 10.0.0.0/16, got {_show(value)}"
            ) from None

    def port_number(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.fail(path, f"expected 1-65535, got {_show(value)}")
        return value


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _port(reader: _Reader, raw: Any, path: str) -> PortRange:
    entry = reader.mapping(raw, path, KNOWN_PORT_FIELDS)
    name = entry.get("protocol") or DEFAULT_PROTOCOL
    if not isinstance(name, str) or name.upper() not in PROTOCOLS:
        raise reader.fail(f"{path}.protocol", f"expected TCP, UDP or SCTP, got {_show(name)}")
    protocol = PROTOCOLS[name.upper()]
    if entry.get("port") is None:
        if entry.get("endPort") is not None:
            raise reader.fail(f"{path}.endPort", "needs port")
        return PortRange(protocol, 0, 0)
    port = reader.port_number(entry["port"], f"{path}.port")
    end_port = port
    if entry.get("endPort") is not None:
        end_port = reader.port_number(entry["endPort"], f"{path}.endPort")
        if end_port < port:
            raise reader.fail(f"{path}.endPort", f"must not be below port {port}, got {end_port}")
    return PortRange(protocol, port, end_port)


def _rule(reader: _Reader, raw: Any, path: str) -> PeerRule:
    entry = reader.mapping(raw, path, KNOWN_RULE_FIELDS)
    action = entry.get("action")
    if action not in (None, "", ALLOW_ACTION):
        raise reader.fail(
            f"{path}.action", f"only {ALLOW_ACTION} is supported, got {_show(action)}"
        )
    if entry.get("cidr") is None:
        raise reader.fail(f"{path}.cidr", "required")
    cidr = reader.network(entry["cidr"], f"{path}.cidr")
    excepts = []
    for index, raw_except in enumerate(reader.sequence(entry.get("except"), f"{path}.except")):
        where = f"{path}.except[{index}]"
        excluded = reader.network(raw_except, where)
        if excluded.version != cidr.version or not excluded.subnet_of(cidr):  # type: ignore[arg-type]
            raise reader.fail(where, f"{excluded} is not inside {cidr}")
        excepts.append(excluded)
    ports = tuple(
        _port(reader, raw_port, f"{path}.ports[{index}]")
        for index, raw_port in enumerate(reader.sequence(entry.get("ports"), f"{path}.ports"))
    )
    return PeerRule(cidr, tuple(excepts), ports)


def _pod(reader: _Reader, raw: Any, path: str) -> PodRef:
    entry = reader.mapping(raw, path, KNOWN_POD_FIELDS)
    ip = reader.text(entry.get("podIP"), f"{path}.podIP", required=False)
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise reader.fail(f"{path}.podIP", f"expected an IP address, got {_show(ip)}") from None
    return PodRef(
        name=reader.text(entry.get("name"), f"{path}.name"),
        namespace=reader.text(entry.get("namespace"), f"{path}.namespace"),
        ip=ip,
    )


def parse_document(
    document: Any, source: str, label: str = "", path_prefix: str = ""
) -> PolicyEndpoint:
    """One PolicyEndpoint object; raises PolicyError naming ``source``, ``label`` and the field."""
    reader = _Reader(source, label, path_prefix)
    top = reader.mapping(document, "")
    if top.get("apiVersion") != API_VERSION:
        raise reader.fail(
            "apiVersion", f"expected {API_VERSION}, got {_show(top.get('apiVersion'))}"
        )
    if top.get("kind") != KIND:
        raise reader.fail("kind", f"expected {KIND}, got {_show(top.get('kind'))}")
    spec = reader.mapping(top.get("spec"), "spec", KNOWN_SPEC_FIELDS)
    ref = reader.mapping(spec.get("policyRef"), "spec.policyRef")
    policy = (
        reader.text(ref.get("name"), "spec.policyRef.name"),
        reader.text(ref.get("namespace"), "spec.policyRef.namespace"),
    )
    pods = tuple(
        _pod(reader, raw, f"spec.podSelectorEndpoints[{index}]")
        for index, raw in enumerate(
            reader.sequence(spec.get("podSelectorEndpoints"), "spec.podSelectorEndpoints")
        )
    )
    rules = {}
    for direction, key in ((INGRESS, "ingress"), (EGRESS, "egress")):
        rules[direction] = tuple(
            _rule(reader, raw, f"spec.{key}[{index}]")
            for index, raw in enumerate(reader.sequence(spec.get(key), f"spec.{key}"))
        )
    if "podIsolation" in spec and spec["podIsolation"] is not None:
        isolation = set()
        for index, raw in enumerate(reader.sequence(spec["podIsolation"], "spec.podIsolation")):
            if raw not in (INGRESS, EGRESS):
                raise reader.fail(
                    f"spec.podIsolation[{index}]", f"expected Ingress or Egress, got {_show(raw)}"
                )
            isolation.add(raw)
    else:
        isolation = {direction for direction, found in rules.items() if found}
    return PolicyEndpoint(
        source=source,
        policy=policy,
        pods=pods,
        isolation=frozenset(isolation),
        ingress=rules[INGRESS],
        egress=rules[EGRESS],
    )


def parse_text(text: str, source: str) -> list[PolicyEndpoint]:
    """Every PolicyEndpoint in a YAML (or JSON) text; raises PolicyError."""
    try:
        documents = [document for document in yaml.safe_load_all(text) if document is not None]
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        raise PolicyError(f"{source}: not valid YAML: {problem}") from None
    found = []
    for number, document in enumerate(documents, start=1):
        label = f"document {number}" if len(documents) > 1 else ""
        if isinstance(document, Mapping) and document.get("kind") in LIST_KINDS:
            items = _Reader(source, label).sequence(document.get("items"), "items")
            found += [
                parse_document(item, source, label, f"items[{index}]")
                for index, item in enumerate(items)
            ]
        else:
            found.append(parse_document(document, source, label))
    return found


def parse_bytes(data: bytes, source: str) -> list[PolicyEndpoint]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{source}: not UTF-8 text") from None
    return parse_text(text, source)


def parse_file(path: Path, display: str | None = None) -> list[PolicyEndpoint]:
    """The PolicyEndpoints in one file; ``display`` names it in errors (default: the path)."""
    source = display or str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PolicyError(f"{source}: cannot read: {error.strerror}") from None
    return parse_bytes(data, source)


POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def is_policy_file(path: Path) -> bool:
    """Files the agent reads from the policy directory (editors' temporary files are not)."""
    return path.suffix in POLICY_SUFFIXES and not path.name.startswith(".")
