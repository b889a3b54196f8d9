"""PolicyEndpoint documents: what is read from them, and one-line errors for what is wrong."""

import ipaddress
import socket
import textwrap

import pytest

from flowlog.dataplane.policy import (
    EGRESS,
    INGRESS,
    PeerRule,
    PolicyError,
    PortRange,
    parse_bytes,
    parse_file,
    parse_text,
)

FRONTEND = """\
apiVersion: networking.k8s.aws/v1alpha1
kind: PolicyEndpoint
metadata: {name: frontend-abcde, namespace: stars}
spec:
  policyRef: {name: frontend-policy, namespace: stars}
  podIsolation: [Ingress, Egress]
  podSelectorEndpoints:
    - {podIP: 10.0.0.5, hostIP: 192.168.1.1, name: frontend-abc, namespace: stars}
  ingress:
    - cidr: 10.0.0.0/16
      except: [10.0.5.0/24]
      ports:
        - {port: 80}
        - {protocol: UDP, port: 5000, endPort: 5100}
        - {protocol: SCTP}
  egress:
    - cidr: ::/0
"""


def test_a_full_document_reads_into_rules():
    (endpoint,) = parse_text(FRONTEND, "frontend.yaml")
    assert endpoint.source == "frontend.yaml"
    assert endpoint.policy == ("frontend-policy", "stars")
    assert [(p.name, p.namespace, p.ip) for p in endpoint.pods] == [
        ("frontend-abc", "stars", "10.0.0.5")
    ]
    assert endpoint.isolation == {INGRESS, EGRESS}
    assert endpoint.ingress == (
        PeerRule(
            ipaddress.ip_network("10.0.0.0/16"),
            (ipaddress.ip_network("10.0.5.0/24"),),
            (
                PortRange(socket.IPPROTO_TCP, 80, 80),  # TCP is the default protocol
                PortRange(socket.IPPROTO_UDP, 5000, 5100),
                PortRange(socket.IPPROTO_SCTP, 0, 0),  # no port: all of the protocol
            ),
        ),
    )
    assert endpoint.egress == (PeerRule(ipaddress.ip_network("::/0"), (), ()),)


def test_isolation_defaults_to_the_directions_that_have_rules():
    text = FRONTEND.replace("  podIsolation: [Ingress, Egress]\n", "")
    (endpoint,) = parse_text(text, "f.yaml")
    assert endpoint.isolation == {INGRESS, EGRESS}
    text = text.replace("  egress:\n    - cidr: ::/0\n", "")
    (endpoint,) = parse_text(text, "f.yaml")
    assert endpoint.isolation == {INGRESS}


def test_an_empty_isolation_list_isolates_nothing():
    text = FRONTEND.replace("podIsolation: [Ingress, Egress]", "podIsolation: []")
    (endpoint,) = parse_text(text, "f.yaml")
    assert endpoint.isolation == frozenset()


def test_several_documents_and_lists_add_up(tmp_path):
    second = FRONTEND.replace("frontend-policy", "second-policy")
    listed = "apiVersion: v1\nkind: List\nitems:\n" + textwrap.indent(
        "- " + textwrap.indent(FRONTEND, "  ").lstrip(), ""
    )
    path = tmp_path / "all.yaml"
    path.write_text(FRONTEND + "---\n" + second + "---\n" + listed)
    endpoints = parse_file(path)
    assert [e.policy[0] for e in endpoints] == [
        "frontend-policy",
        "second-policy",
        "frontend-policy",
    ]


def test_a_host_address_without_a_length_is_a_single_address():
    text = FRONTEND.replace("cidr: 10.0.0.0/16\n      except: [10.0.5.0/24]", "cidr: 10.0.7.1")
    (endpoint,) = parse_text(text, "f.yaml")
    assert endpoint.ingress[0].cidr == ipaddress.ip_network("10.0.7.1/32")


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            "{protocol: UDP, port: 5000, endPort: 5100}",
            "{protocol: UDP, port: 70000}",
            "policies/frontend.yaml: spec.ingress[0].ports[1].port: expected 1-65535, got 70000",
        ),
        (
            "{port: 80}",
            "{port: http}",
            "policies/frontend.yaml: spec.ingress[0].ports[0].port: expected 1-65535, got 'http'",
        ),
        (
            "endPort: 5100",
            "endPort: 4000",
            "policies/frontend.yaml: spec.ingress[0].ports[1].endPort: "
            "must not be below port 5000, got 4000",
        ),
        (
            "{protocol: SCTP}",
            "{protocol: ICMP}",
            "policies/frontend.yaml: spec.ingress[0].ports[2].protocol: "
            "expected TCP, UDP or SCTP, got 'ICMP'",
        ),
        (
            "{protocol: SCTP}",
            "{endPort: 90}",
            "policies/frontend.yaml: spec.ingress[0].ports[2].endPort: needs port",
        ),
        (
            "cidr: 10.0.0.0/16",
            "cidr: 10.0.0.0/33",
            "policies/frontend.yaml: spec.ingress[0].cidr: "
            "expected a CIDR such as 10.0.0.0/16, got '10.0.0.0/33'",
        ),
        (
            "except: [10.0.5.0/24]",
            "except: [10.1.5.0/24]",
            "policies/frontend.yaml: spec.ingress[0].except[0]: "
            "10.1.5.0/24 is not inside 10.0.0.0/16",
        ),
        (
            "except: [10.0.5.0/24]",
            "excepts: [10.0.5.0/24]",
            "policies/frontend.yaml: spec.ingress[0].excepts: unknown field",
        ),
        (
            "podIsolation: [Ingress, Egress]",
            "podIsolation: [Ingres]",
            "policies/frontend.yaml: spec.podIsolation[0]: "
            "expected Ingress or Egress, got 'Ingres'",
        ),
        (
            "policyRef: {name: frontend-policy, namespace: stars}",
            "policyRef: {name: frontend-policy}",
            "policies/frontend.yaml: spec.policyRef.namespace: "
            "expected a non-empty string, got None",
        ),
        (
            "{podIP: 10.0.0.5, hostIP: 192.168.1.1, name: frontend-abc, namespace: stars}",
            "{podIP: 10.0.0.5, namespace: stars}",
            "policies/frontend.yaml: spec.podSelectorEndpoints[0].name: "
            "expected a non-empty string, got None",
        ),
        (
            "kind: PolicyEndpoint",
            "kind: NetworkPolicy",
            "policies/frontend.yaml: kind: expected PolicyEndpoint, got 'NetworkPolicy'",
        ),
        (
            "apiVersion: networking.k8s.aws/v1alpha1",
            "apiVersion: networking.k8s.io/v1",
            "policies/frontend.yaml: apiVersion: "
            "expected networking.k8s.aws/v1alpha1, got 'networking.k8s.io/v1'",
        ),
        (
            "    - cidr: ::/0",
            "    - cidr: ::/0\n      action: Deny",
            "policies/frontend.yaml: spec.egress[0].action: only Allow is supported, got 'Deny'",
        ),
    ],
)
def test_errors_name_the_file_and_the_field_on_one_line(old, new, error):
    assert old in FRONTEND
    with pytest.raises(PolicyError) as raised:
        parse_text(FRONTEND.replace(old, new), "policies/frontend.yaml")
    assert str(raised.value) == error


def test_errors_in_a_file_of_several_documents_say_which_one():
    text = FRONTEND + "---\n" + FRONTEND.replace("port: 80", "port: 0")
    with pytest.raises(PolicyError) as raised:
        parse_text(text, "p.yaml")
    assert (
        str(raised.value)
        == "p.yaml: document 2: spec.ingress[0].ports[0].port: expected 1-65535, got 0"
    )


def test_yaml_that_does_not_parse_is_one_line():
    with pytest.raises(PolicyError) as raised:
        parse_text("spec: [unclosed\n  more: x\n", "bad.yaml")
    message = str(raised.value)
    assert message.startswith("bad.yaml: not valid YAML: ")
    assert "\n" not in message


def test_bytes_that_are_not_text_are_rejected():
    with pytest.raises(PolicyError, match=r"^b.yaml: not UTF-8 text$"):
        parse_bytes(b"\xff\xfe\x00", "b.yaml")


def test_an_empty_file_holds_no_policies():
    assert parse_text("", "empty.yaml") == []
    assert parse_text("---\n---\n", "empty.yaml") == []
