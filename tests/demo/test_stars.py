"""The demo's model of the seed's policies: the verdicts it expects and the
PolicyEndpoints it writes, checked against the seed and read by the agent's own parser."""

from __future__ import annotations

import ipaddress

import yaml

from flowlog.dataplane.policy import INGRESS, parse_bytes
from flowlog.demo.stars import (
    BACKEND_POLICY,
    FRONTEND_POLICY,
    PROBES,
    SERVICES,
    STEPS,
    PodAddresses,
    allow_ui,
    allowed,
    default_deny,
    policy_endpoint,
)
from tests.demo.seed import PORTS, seed_outcome

ADDRESSES = {
    service.name: PodAddresses(f"10.0.0.{index}", f"fd00::{index}")
    for index, service in enumerate(SERVICES, 1)
}
IP = {name: addresses.ipv4 for name, addresses in ADDRESSES.items()}


def read_back(document: dict):
    """The PolicyEndpoint as the agent reads it from a file."""
    (endpoint,) = parse_bytes(yaml.safe_dump(document).encode(), "policy.yaml")
    return endpoint


def test_the_model_expects_what_the_seed_says():
    in_force = []
    expected = {}
    for number, step in enumerate(STEPS, 1):
        in_force.extend(step.applies)
        for probe in PROBES:
            expected[(number, probe.source.name, probe.target.name)] = allowed(in_force, probe)
    assert expected == seed_outcome()
    assert {probe.target.name: probe.port for probe in PROBES} == PORTS


def test_default_deny_selects_every_pod_of_its_namespace_and_lets_nothing_in():
    endpoint = read_back(policy_endpoint(default_deny("stars"), ADDRESSES))
    assert endpoint.policy == ("default-deny", "stars")
    assert {(pod.name, pod.namespace, pod.ip) for pod in endpoint.pods} == {
        ("frontend-cscnf", "stars", IP["frontend"]),
        ("backend-sz87q", "stars", IP["backend"]),
    }
    assert endpoint.isolation == {INGRESS}
    assert endpoint.ingress == ()


def test_allow_ui_lets_the_ui_pod_in_on_every_port():
    endpoint = read_back(policy_endpoint(allow_ui("client"), ADDRESSES))
    assert [pod.name for pod in endpoint.pods] == ["client-xlffc"]
    ui = ADDRESSES["management-ui"]
    assert {str(rule.cidr) for rule in endpoint.ingress} == {f"{ui.ipv4}/32", f"{ui.ipv6}/128"}
    assert all(rule.ports == () for rule in endpoint.ingress)


def test_backend_and_frontend_policies_let_one_peer_in_on_one_port():
    backend = read_back(policy_endpoint(BACKEND_POLICY, ADDRESSES))
    frontend = read_back(policy_endpoint(FRONTEND_POLICY, ADDRESSES))
    for endpoint, pod, peer, port in (
        (backend, "backend-sz87q", "frontend", 6379),
        (frontend, "frontend-cscnf", "client", 80),
    ):
        assert [p.name for p in endpoint.pods] == [pod]
        peers = {rule.cidr for rule in endpoint.ingress}
        assert ipaddress.ip_network(f"{IP[peer]}/32") in peers
        assert {
            (r.protocol, r.port, r.end_port) for rule in endpoint.ingress for r in rule.ports
        } == {(6, port, port)}
