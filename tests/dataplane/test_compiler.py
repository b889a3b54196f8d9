"""The rule compiler: one longest-prefix lookup must give the union of every policy's allows."""

import ipaddress
import random
import socket

import pytest

from flowlog.dataplane.compiler import (
    IPV4_RANGE,
    CompileError,
    PortEntry,
    Prefix,
    compile_pods,
    merge_port_entries,
)
from flowlog.dataplane.maps import MAX_PORT_RULES
from flowlog.dataplane.policy import EGRESS, INGRESS, PeerRule, PodRef, PolicyEndpoint, PortRange

TCP, UDP, SCTP = socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_SCTP
POD = ("stars", "backend")


def net(text):
    return ipaddress.ip_network(text)


def rule(cidr, excepts=(), ports=()):
    return PeerRule(net(cidr), tuple(net(e) for e in excepts), tuple(ports))


def tcp(port, end_port=None):
    return PortRange(TCP, port, end_port or port)


def policy(name, ingress=(), egress=(), isolation=(INGRESS,), pods=(POD,)):
    return PolicyEndpoint(
        source=f"{name}.yaml",
        policy=(name, "stars"),
        pods=tuple(PodRef(pod, namespace, "") for namespace, pod in pods),
        isolation=frozenset(isolation),
        ingress=tuple(ingress),
        egress=tuple(egress),
    )


def numbering():
    ids = {}
    return lambda ref: ids.setdefault(ref, len(ids) + 1)


def ingress_of(*policies):
    return compile_pods(policies, numbering())[POD].ingress


def table(direction):
    return {str(prefix): entries for prefix, entries in direction.prefixes.items()}


def test_a_rule_without_ports_allows_every_protocol():
    compiled = ingress_of(policy("a", [rule("10.0.0.0/16")]))
    assert compiled.isolated_by == 1
    assert table(compiled) == {"10.0.0.0/16": (PortEntry(1, 0, 0, 0),)}


def test_an_except_is_a_prefix_of_its_own_that_allows_nothing():
    compiled = ingress_of(policy("a", [rule("10.0.0.0/16", ["10.0.5.0/24"], [tcp(80)])]))
    assert table(compiled) == {
        "10.0.0.0/16": (PortEntry(1, TCP, 80, 80),),
        "10.0.5.0/24": (),
    }


def test_policies_on_one_pod_add_up_but_excepts_only_cut_their_own_rule():
    compiled = ingress_of(
        policy("a", [rule("10.0.0.0/16", ["10.0.5.0/24"], [tcp(80)])]),
        policy("b", [rule("10.0.0.0/8", ports=[tcp(22)]), rule("10.0.5.0/24", ports=[tcp(443)])]),
    )
    assert table(compiled) == {
        "10.0.0.0/8": (PortEntry(2, TCP, 22, 22),),
        "10.0.0.0/16": (PortEntry(1, TCP, 80, 80), PortEntry(2, TCP, 22, 22)),
        "10.0.5.0/24": (PortEntry(2, TCP, 22, 22), PortEntry(2, TCP, 443, 443)),
    }


def test_ipv6_rules_never_allow_ipv4_peers():
    compiled = ingress_of(policy("a", [rule("::/0")]))
    assert table(compiled) == {"::/0": (PortEntry(1, 0, 0, 0),), "0.0.0.0/0": ()}
    assert IPV4_RANGE in compiled.prefixes
    both = ingress_of(policy("a", [rule("::/0"), rule("0.0.0.0/0", ports=[tcp(53)])]))
    assert table(both) == {
        "::/0": (PortEntry(1, 0, 0, 0),),
        "0.0.0.0/0": (PortEntry(1, TCP, 53, 53),),
    }


def test_the_lowest_policy_id_isolating_a_direction_takes_the_blame_for_denies():
    compiled = compile_pods(
        [
            policy("ingress-only", [rule("10.0.0.0/8")]),
            policy("egress-only", egress=[rule("10.1.0.0/16")], isolation=(EGRESS,)),
            policy("both", isolation=(INGRESS, EGRESS)),
        ],
        numbering(),
    )[POD]
    assert compiled.ingress.isolated_by == 1
    assert compiled.egress.isolated_by == 2
    assert table(compiled.egress) == {"10.1.0.0/16": (PortEntry(2, 0, 0, 0),)}


def test_rules_of_a_direction_a_policy_does_not_isolate_are_ignored():
    compiled = compile_pods(
        [policy("a", ingress=[rule("10.0.0.0/8")], isolation=(EGRESS,))], numbering()
    )[POD]
    assert compiled.ingress.isolated_by == 0
    assert compiled.ingress.prefixes == {}
    assert compiled.egress.isolated_by == 1


def test_every_selected_pod_gets_the_rules():
    pods = (("stars", "a"), ("stars", "b"))
    compiled = compile_pods([policy("p", [rule("10.0.0.0/8")], pods=pods)], numbering())
    assert set(compiled) == set(pods)


@pytest.mark.parametrize(
    ("entries", "merged"),
    [
        # duplicates: the lower policy id stays
        ([PortEntry(2, TCP, 80, 80), PortEntry(1, TCP, 80, 80)], [PortEntry(1, TCP, 80, 80)]),
        # any protocol covers everything
        ([PortEntry(2, TCP, 80, 80), PortEntry(3, 0, 0, 0)], [PortEntry(3, 0, 0, 0)]),
        # all ports of a protocol cover its single ports, not other protocols'
        (
            [PortEntry(1, UDP, 53, 53), PortEntry(2, UDP, 0, 0), PortEntry(1, TCP, 53, 53)],
            [PortEntry(1, TCP, 53, 53), PortEntry(2, UDP, 0, 0)],
        ),
        # a range covers the ports and ranges inside it
        (
            [
                PortEntry(1, TCP, 8080, 8080),
                PortEntry(1, TCP, 8000, 9000),
                PortEntry(1, TCP, 8500, 9500),
            ],
            [PortEntry(1, TCP, 8000, 9000), PortEntry(1, TCP, 8500, 9500)],
        ),
    ],
)
def test_port_entries_merge_without_losing_anything(entries, merged):
    assert list(merge_port_entries(entries)) == merged


def test_more_port_entries_than_the_maps_hold_are_refused():
    fits = [tcp(port) for port in range(1000, 1000 + MAX_PORT_RULES)]
    assert len(ingress_of(policy("a", [rule("10.0.0.0/16", ports=fits)])).prefixes) == 1
    with pytest.raises(CompileError) as raised:
        ingress_of(
            policy("a", [rule("10.0.0.0/16", ports=fits[:13])]),
            policy("b", [rule("10.0.0.0/8", ports=[tcp(p) for p in range(2000, 2012)])]),
        )
    assert str(raised.value) == (
        "pod stars/backend: ingress from 10.0.0.0/16 needs 25 port entries "
        "once its policies are merged, at most 24"
    )


# --- the compiled prefixes answer exactly as the rules do ----------------------------


def longest_prefix_entries(compiled, address):
    probe = Prefix.of(ipaddress.ip_network(address))
    matches = [prefix for prefix in compiled.prefixes if prefix.contains(probe)]
    if not matches:
        return ()
    return compiled.prefixes[max(matches, key=lambda prefix: prefix.length)]


def lookup_allows(compiled, address, protocol, port):
    """What the tc program does with the compiled prefixes."""
    return any(
        (not e.protocol or e.protocol == protocol) and (not e.port or e.port <= port <= e.end_port)
        for e in longest_prefix_entries(compiled, address)
    )


def rules_allow(policies, address, protocol, port):
    """Kubernetes' answer: the union over every rule."""
    ip = ipaddress.ip_address(address)
    for endpoint in policies:
        for peer in endpoint.ingress:
            if ip.version != peer.cidr.version or ip not in peer.cidr:
                continue
            if any(ip in excluded for excluded in peer.excepts):
                continue
            if not peer.ports or any(
                p.protocol == protocol and (not p.port or p.port <= port <= p.end_port)
                for p in peer.ports
            ):
                return True
    return False


def random_network(rng, base):
    """A random network inside ``base``, up to 12 bits longer."""
    length = rng.randint(base.prefixlen, base.prefixlen + 12)
    address = base.network_address + rng.getrandbits(base.max_prefixlen - base.prefixlen)
    return ipaddress.ip_network(f"{address}/{length}", strict=False)


@pytest.mark.parametrize("seed", range(8))
def test_the_longest_prefix_gives_the_union_of_all_rules(seed):
    rng = random.Random(seed)
    bases = [net("10.0.0.0/8"), net("fd00::/16")]
    policies = []
    for number in range(3):
        rules = []
        for _ in range(rng.randint(1, 4)):
            cidr = random_network(rng, rng.choice(bases))
            excepts = [e for e in (random_network(rng, cidr) for _ in range(2)) if e != cidr]
            ports = rng.choice(
                [
                    (),
                    (tcp(80),),
                    (PortRange(UDP, 53, 53), tcp(8000, 8100)),
                    (PortRange(SCTP, 0, 0),),
                ]
            )
            rules.append(PeerRule(cidr, tuple(excepts), ports))
        policies.append(policy(f"p{number}", rules))
    compiled = ingress_of(*policies)
    probes = [
        str(prefix.network_address)
        for p in policies
        for r in p.ingress
        for prefix in (r.cidr, *r.excepts)
    ]
    probes += [str(random_network(rng, rng.choice(bases)).network_address) for _ in range(200)]
    answers = set()
    for address in probes:
        for protocol, port in ((TCP, 80), (TCP, 8050), (UDP, 53), (SCTP, 9), (TCP, 22), (1, 0)):
            expected = rules_allow(policies, address, protocol, port)
            assert lookup_allows(compiled, address, protocol, port) == expected, (address, port)
            answers.add(expected)
    assert answers == {True, False}
