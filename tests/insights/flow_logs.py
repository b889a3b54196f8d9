"""A generated flow log for the Insights tests: the records, and the files holding them.

Several thousand flows over three hours from several pods, namespaces,
policies, verdicts and protocols, written as the agent writes them: a gzipped
backup, a plain rotated backup and the live file, with lumberjack's names.
Timestamps are strictly increasing, so "newest first" has one right answer.
Some lines are the AWS agent's own (only the first ten keys), some flows have
no known pod or no known policy. Both ends are named as the agent names them:
pods (with namespace and workload), a node, or nothing for an outside address;
flow ends carry their counters instead of a packet size.
"""

from __future__ import annotations

import calendar
import gzip
import random
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

START_MS = calendar.timegm((2026, 11, 22, 2, 0, 0)) * 1000
NODES = ("ip-10-0-0-1", "ip-10-0-0-2")
# (IP, pod, namespace) of the pods on our nodes.
PODS = (
    ("10.0.1.10", "frontend-7d9f", "stars"),
    ("10.0.1.11", "backend-5c4b", "stars"),
    ("10.0.1.12", "backend-5c4b-2", "stars"),
    ("10.0.2.20", "client-6f8a", "client"),
    ("10.0.3.30", "management-ui-9b1c", "management-ui"),
    ("10.0.4.40", "coredns-77aa", "kube-system"),
)
REMOTE_IPS = ("10.0.9.5", "10.0.9.17", "10.0.9.100", "192.168.3.4", "172.16.0.9", "10.0.1.11")
# What the agent knows each address as: (kind, name, namespace, workload).
IDENTITIES = {
    "10.0.1.10": ("pod", "frontend-7d9f", "stars", "deployment/frontend"),
    "10.0.1.11": ("pod", "backend-5c4b", "stars", "deployment/backend"),
    "10.0.1.12": ("pod", "backend-5c4b-2", "stars", "deployment/backend"),
    "10.0.2.20": ("pod", "client-6f8a", "client", "deployment/client"),
    "10.0.3.30": ("pod", "management-ui-9b1c", "management-ui", "deployment/management-ui"),
    "10.0.4.40": ("pod", "coredns-77aa", "kube-system", "deployment/coredns"),
    "10.0.9.5": ("pod", "web-0", "shop", "statefulset/web"),
    "10.0.9.17": ("pod", "cart-5f6d", "shop", "deployment/cart"),
    "192.168.3.4": ("node", "ip-192-168-3-4", "", ""),
}
# (policy, policy namespace); the same name in two namespaces on purpose.
POLICIES = (
    ("default-deny", "stars"),
    ("default-deny", "client"),
    ("allow-frontend", "stars"),
    ("allow-ui", "management-ui"),
    ("allow-dns", "kube-system"),
)
VERDICTS = (("ACCEPT", 55), ("DENY", 35), ("EXPIRED/DELETED", 7), ("UNKNOWN", 3))
PROTOCOLS = (("TCP", 60), ("UDP", 25), ("SCTP", 4), ("ICMP", 5), ("ICMPv6", 3), ("UNKNOWN", 3))
PORTS = (80, 443, 53, 8080, 9090, 6379, 5432, 22)
TIERS = ("ADMIN", "NETWORK_POLICY", "BASELINE", "DEFAULT", "UNKNOWN")


def iso(milliseconds: int) -> str:
    seconds, millis = divmod(milliseconds, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def backup_stamp(milliseconds: int) -> str:
    seconds, millis = divmod(milliseconds, 1000)
    return time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(seconds)) + f".{millis:03d}"


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([value for value, _ in weighted], [weight for _, weight in weighted])[0]


def generate_records(count: int = 6000, seed: int = 5) -> list[dict]:
    """Flow-log records in write order; each dict's keys in the line's order."""
    rng = random.Random(seed)
    records = []
    now = START_MS
    for _ in range(count):
        now += rng.randint(1, 3600)
        pod_ip, pod, namespace = rng.choice(PODS)
        remote = rng.choice(REMOTE_IPS)
        direction = rng.choice(("ingress", "egress"))
        src, dest = (remote, pod_ip) if direction == "ingress" else (pod_ip, remote)
        protocol = _pick(rng, PROTOCOLS)
        icmp = protocol.startswith("ICMP")
        record = {
            "level": "info",
            "timestamp": iso(now),
            "logger": "ebpf-client",
            "msg": "Flow Info: ",
            "Src IP": src,
            "Src Port": 0 if icmp else rng.randint(1024, 65535),
            "Dest IP": dest,
            "Dest Port": 0 if icmp else rng.choice(PORTS),
            "Proto": protocol,
            "Verdict": _pick(rng, VERDICTS),
        }
        if rng.random() < 0.08:
            records.append(record)  # the AWS agent's own line: ten keys only
            continue
        record.update(
            {
                "Direction": direction,
                "Tier": rng.choice(TIERS),
                "Packet Size": rng.randint(40, 1500),
                "Node": rng.choice(NODES),
            }
        )
        if rng.random() < 0.9:
            record.update({"Pod": pod, "Namespace": namespace})
        if rng.random() < 0.8:
            policy, policy_namespace = rng.choice(POLICIES)
            record.update({"Policy": policy, "Policy Namespace": policy_namespace})
        for end, address in (("Src", src), ("Dest", dest)):
            record.update(identity_keys(end, address))
        if record["Verdict"] == "EXPIRED/DELETED":
            del record["Packet Size"]
            record.update(
                {
                    "Start Time": iso(now - rng.randint(1, 300_000)),
                    "Duration": rng.randint(0, 300_000) / 1000,
                    "Packets Sent": rng.randint(1, 500),
                    "Bytes Sent": rng.randint(40, 500_000),
                    "Packets Received": rng.randint(0, 500),
                    "Bytes Received": rng.randint(0, 500_000),
                }
            )
        records.append(record)
    return records


def identity_keys(end: str, address: str) -> dict:
    known = IDENTITIES.get(address)
    if known is None:
        return {}
    kind, name, namespace, workload = known
    if kind == "node":
        return {f"{end} Node": name}
    return {f"{end} Pod": name, f"{end} Namespace": namespace, f"{end} Workload": workload}


def timestamp_ms(record: dict) -> int:
    stamp = record["timestamp"]
    seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1000 + int(stamp[20:23])


@dataclass(frozen=True)
class FlowLogFiles:
    records: list[dict]
    live: Path
    plain_backup: Path
    gzipped_backup: Path

    @property
    def paths(self) -> list[Path]:
        return [self.gzipped_backup, self.plain_backup, self.live]


def write_flow_logs(directory: Path, records: list[dict]) -> FlowLogFiles:
    """Oldest third gzipped, middle third a plain backup, the rest the live file."""
    third = len(records) // 3
    parts = (records[:third], records[third : 2 * third], records[2 * third :])

    def block(part: list[dict]) -> bytes:
        return b"".join(orjson.dumps(record) + b"\n" for record in part)

    # Each backup is named for the moment it was rotated: just after its last line.
    first_closed = timestamp_ms(parts[0][-1]) + 1
    second_closed = timestamp_ms(parts[1][-1]) + 1
    gzipped = directory / f"network-policy-agent-{backup_stamp(first_closed)}.log.gz"
    plain = directory / f"network-policy-agent-{backup_stamp(second_closed)}.log"
    live = directory / "network-policy-agent.log"
    with gzip.open(gzipped, "wb") as handle:
        handle.write(block(parts[0]))
    plain.write_bytes(block(parts[1]))
    live.write_bytes(block(parts[2]))
    return FlowLogFiles(records, live, plain, gzipped)


def generate_summaries(windows: int = 30, seed: int = 9) -> list[dict]:
    """Summary lines (--flow-log-aggregate 60, peer level) over ``windows`` minutes."""
    rng = random.Random(seed)
    records = []
    start = START_MS
    addresses = [pod[0] for pod in PODS] + list(REMOTE_IPS)
    for _ in range(windows):
        end = start + 60_000
        for _ in range(rng.randint(20, 40)):
            src, dest = rng.sample(addresses, 2)
            verdict = rng.choice(("ACCEPT", "ACCEPT", "DENY"))
            started = rng.randint(1, 50)
            record = {
                "level": "info",
                "timestamp": iso(end),
                "logger": "ebpf-client",
                "msg": "Flow Summary: ",
                "Aggregation": "peer",
                "Src IP": src,
                "Dest IP": dest,
                "Dest Port": rng.choice(PORTS),
                "Proto": "TCP",
                "Verdict": verdict,
                "Direction": rng.choice(("ingress", "egress")),
                "Node": rng.choice(NODES),
            }
            if rng.random() < 0.8:
                policy, policy_namespace = rng.choice(POLICIES)
                record.update({"Policy": policy, "Policy Namespace": policy_namespace})
            record.update(identity_keys("Src", src))
            record.update(identity_keys("Dest", dest))
            denied = verdict == "DENY"
            record.update(
                {
                    "Start Time": iso(start),
                    "End Time": iso(end),
                    "Flows Started": started,
                    "Flows Completed": 0 if denied else rng.randint(0, started),
                    "Packets Sent": started if denied else rng.randint(started, 1000),
                    "Bytes Sent": started * 60 if denied else rng.randint(100, 10_000_000),
                    "Packets Received": 0 if denied else rng.randint(0, 1000),
                    "Bytes Received": 0 if denied else rng.randint(0, 10_000_000),
                }
            )
            records.append(record)
        start = end
    return records
