"""A made-up cluster's flow log: namespaces of workloads and their pods, nodes, the internet.

Each workload calls a few others on their service port; some calls are denied
by the destination's default-deny, some by the source's egress policy. The
kubelet probes pods from its node's address, frontends are reached from
outside, and some pods call outside networks on 443. Every flow gives the
lines the agent writes for it: the source pod's egress verdict, the
destination pod's ingress verdict, and for allowed TCP flows an
EXPIRED/DELETED line with its sizes. Used by the flow-map tests and by
``make bench``.
"""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
START_SECONDS = 1_795_000_000  # 2026-11-18
OUTSIDE_NETWORKS = ("203.0.113", "198.51.100", "192.0.2")


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    workload: str
    ip: str
    node: str


@dataclass(frozen=True)
class Call:
    """Pods of ``source`` open connections to pods of ``target`` on ``port``."""

    source: str  # namespace/workload
    target: str
    port: int
    denied_at: str | None  # "ingress", "egress" or None: allowed


@dataclass
class Cluster:
    pods: list[Pod]
    calls: list[Call]
    nodes: dict[str, str]  # name -> address
    by_workload: dict[str, list[Pod]]

    @property
    def workloads(self) -> list[str]:
        return sorted(self.by_workload)


def _random_name(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(SAFE_ALPHABET) for _ in range(length))


def make_cluster(
    namespaces: int = 12, workloads_per_namespace: int = 6, nodes: int = 8, seed: int = 1
) -> Cluster:
    rng = random.Random(seed)
    node_addresses = {f"ip-10-0-0-{n + 10}": f"10.0.0.{n + 10}" for n in range(nodes)}
    node_names = sorted(node_addresses)
    pods, by_workload = [], {}
    address = 0
    for n in range(namespaces):
        namespace = f"team-{n:02d}"
        for w in range(workloads_per_namespace):
            name = ("frontend", "api", "worker", "cache", "db", "queue", "auth", "search")[w % 8]
            name = f"{name}-{w // 8}" if w >= 8 else name
            stateful = name in ("db", "queue")
            workload = f"{'statefulset' if stateful else 'deployment'}/{name}"
            template_hash = _random_name(rng, 9)
            replicas = []
            for r in range(rng.randint(1, 4)):
                pod_name = (
                    f"{name}-{r}" if stateful else f"{name}-{template_hash}-{_random_name(rng, 5)}"
                )
                address += 1
                ip = f"10.{1 + address // 62500}.{address // 250 % 250}.{address % 250 + 1}"
                replicas.append(Pod(pod_name, namespace, workload, ip, rng.choice(node_names)))
            pods.extend(replicas)
            by_workload[f"{namespace}/{workload}"] = replicas
    keys = sorted(by_workload)
    calls = []
    for source in keys:
        for target in rng.sample(keys, 3):
            if target == source:
                continue
            denied = rng.random()
            denied_at = "ingress" if denied < 0.15 else "egress" if denied < 0.2 else None
            calls.append(Call(source, target, rng.choice((80, 443, 5432, 6379, 8080)), denied_at))
    return Cluster(pods, calls, node_addresses, by_workload)


def _iso(milliseconds: int) -> str:
    seconds, millis = divmod(milliseconds, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


@dataclass(frozen=True)
class End:
    """One end of a flow: a pod, a node's own address, or an outside address."""

    ip: str
    pod: Pod | None = None
    node: str | None = None

    def keys(self, prefix: str) -> dict:
        if self.pod is not None:
            return {
                f"{prefix} Pod": self.pod.name,
                f"{prefix} Namespace": self.pod.namespace,
                f"{prefix} Workload": self.pod.workload,
            }
        return {f"{prefix} Node": self.node} if self.node else {}


def _pod_end(pod: Pod) -> End:
    return End(pod.ip, pod)


def _outside(rng: random.Random) -> End:
    return End(f"{rng.choice(OUTSIDE_NETWORKS)}.{rng.randint(1, 254)}")


def flow_lines(cluster: Cluster, count: int, seed: int = 2) -> Iterator[dict]:
    """``count`` flow-log lines, oldest first, in the newest format."""
    rng = random.Random(seed)
    now = START_SECONDS * 1000
    written = 0
    while written < count:
        now += rng.randint(0, 3)
        kind = rng.random()
        if kind < 0.8:
            call = rng.choice(cluster.calls)
            source = rng.choice(cluster.by_workload[call.source])
            target = rng.choice(cluster.by_workload[call.target])
            lines = _pod_to_pod(rng, now, source, target, call)
        elif kind < 0.9:  # the kubelet's probes, from the pod's node
            target = rng.choice(cluster.pods)
            kubelet = End(cluster.nodes[target.node], node=target.node)
            lines = [
                _line(rng, now, kubelet, _pod_end(target), 8080, "ACCEPT", "ingress", target,
                      "allow-kubelet")
            ]  # fmt: skip
        elif kind < 0.95:  # the public reaching the first frontend
            target = rng.choice(cluster.by_workload[cluster.workloads[0]])
            lines = [
                _line(rng, now, _outside(rng), _pod_end(target), 443, "ACCEPT", "ingress", target,
                      "allow-public")
            ]  # fmt: skip
        else:  # pods calling out, denied from one namespace
            source = rng.choice(cluster.pods)
            verdict = "DENY" if source.namespace.endswith("3") else "ACCEPT"
            lines = [
                _line(rng, now, _pod_end(source), _outside(rng), 443, verdict, "egress", source,
                      "egress-policy")
            ]  # fmt: skip
        yield from lines[: count - written]
        written += len(lines)


def _pod_to_pod(rng: random.Random, now: int, source: Pod, target: Pod, call: Call) -> list[dict]:
    ends = (_pod_end(source), _pod_end(target), call.port)
    egress_verdict = "DENY" if call.denied_at == "egress" else "ACCEPT"
    lines = [_line(rng, now, *ends, egress_verdict, "egress", source, "egress-policy")]
    if egress_verdict == "DENY":
        return lines
    ingress_verdict = "DENY" if call.denied_at == "ingress" else "ACCEPT"
    policy = "default-deny" if ingress_verdict == "DENY" else "allow-callers"
    lines.append(_line(rng, now + 1, *ends, ingress_verdict, "ingress", target, policy))
    if ingress_verdict == "ACCEPT" and rng.random() < 0.3:
        expired = _line(rng, now + 2, *ends, "EXPIRED/DELETED", "ingress", target, None)
        del expired["Packet Size"]
        expired.update(
            {
                "Start Time": _iso(now + 1),
                "Duration": 1.5,
                "Packets Sent": 12,
                "Bytes Sent": 1800,
                "Packets Received": 10,
                "Bytes Received": 64000,
            }
        )
        lines.append(expired)
    return lines


def _line(
    rng: random.Random,
    now: int,
    source: End,
    destination: End,
    port: int,
    verdict: str,
    direction: str,
    local: Pod,
    policy: str | None,
) -> dict:
    line = {
        "level": "info",
        "timestamp": _iso(now),
        "logger": "ebpf-client",
        "msg": "Flow Info: ",
        "Src IP": source.ip,
        "Src Port": rng.randint(32768, 60999),
        "Dest IP": destination.ip,
        "Dest Port": port,
        "Proto": "TCP",
        "Verdict": verdict,
        "Direction": direction,
        "Tier": "NETWORK_POLICY" if policy else "DEFAULT",
        "Packet Size": 74,
        "Node": local.node,
        "Pod": local.name,
        "Namespace": local.namespace,
    }
    if policy:
        line["Policy"] = policy
        line["Policy Namespace"] = local.namespace
    return line | source.keys("Src") | destination.keys("Dest")


def write_rotated(
    directory: Path, lines: Iterator[dict], per_file: int, gzipped: int
) -> list[Path]:
    """The lines as a live file and rotated backups (the first ``gzipped`` of them gzipped),
    lumberjack's names, oldest first; each file holds ``per_file`` lines."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    chunk: list[bytes] = []

    def flush() -> None:
        index = len(files)
        name = f"network-policy-agent-2026-11-18T00-{index // 60:02d}-{index % 60:02d}.000.log"
        path = directory / name
        data = b"".join(chunk)
        if index < gzipped:
            path = path.with_name(name + ".gz")
            path.write_bytes(gzip.compress(data, compresslevel=1))
        else:
            path.write_bytes(data)
        files.append(path)
        chunk.clear()

    for line in lines:
        chunk.append(orjson.dumps(line) + b"\n")
        if len(chunk) == per_file:
            flush()
    live = directory / "network-policy-agent.log"
    live.write_bytes(b"".join(chunk))
    return [*files, live]
