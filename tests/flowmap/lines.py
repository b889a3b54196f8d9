"""Flow-log lines for the flow-map tests, in each of the forms the agent has written.

``verdict()`` is a line of this version: both ends named by their ``Src``/``Dest``
keys. ``old_verdict()`` names only the local pod, as lines written before those
keys did; ``aws_verdict()`` has only the AWS agent's keys; ``expired()`` is a
flow's end with its sizes; ``summary()`` is a ``--flow-log-aggregate`` line.
A pod is given as ``(namespace, pod, workload, address)``.
"""

from __future__ import annotations

from pathlib import Path

import orjson

Pod = tuple[str, str, str, str]

CLIENT: Pod = ("client", "client-7d9f8b6c4-x2x9k", "deployment/client", "10.0.0.5")
FRONTEND: Pod = ("stars", "frontend-5c4b8d7f9-bcdfg", "deployment/frontend", "10.0.1.7")
BACKEND: Pod = ("stars", "backend-0", "statefulset/backend", "10.0.1.8")
NODE_NAME, NODE_ADDRESS = "ip-10-0-0-1", "10.0.0.1"
STAMP = "2026-11-22T05:00:00.123Z"


def _head(stamp: str, message: str = "Flow Info: ") -> dict:
    return {"level": "info", "timestamp": stamp, "logger": "ebpf-client", "msg": message}


def _end(prefix: str, end: Pod | str) -> dict:
    """A pod's keys, or for a bare address nothing but it."""
    if isinstance(end, str):
        return {}
    namespace, pod, workload, _ = end
    return {f"{prefix} Pod": pod, f"{prefix} Namespace": namespace, f"{prefix} Workload": workload}


def _address(end: Pod | str) -> str:
    return end if isinstance(end, str) else end[3]


END_KEYS = frozenset(
    f"{side} {key}" for side in ("Src", "Dest") for key in ("Pod", "Namespace", "Workload", "Node")
)


def verdict(
    source: Pod | str,
    destination: Pod | str,
    port: int,
    verdict: str = "ACCEPT",
    direction: str = "ingress",
    policy: tuple[str, str] | None = None,
    stamp: str = STAMP,
    node: str = NODE_NAME,
) -> dict:
    """A verdict line of this version; the local pod is the end ``direction`` says."""
    local = destination if direction == "ingress" else source
    line = {
        **_head(stamp),
        "Src IP": _address(source),
        "Src Port": 38971,
        "Dest IP": _address(destination),
        "Dest Port": port,
        "Proto": "TCP",
        "Verdict": verdict,
        "Direction": direction,
        "Tier": "NETWORK_POLICY" if policy else "DEFAULT",
        "Packet Size": 60,
        "Node": node,
    }
    if not isinstance(local, str):
        line |= {"Pod": local[1], "Namespace": local[0]}
    if policy:
        line |= {"Policy": policy[1], "Policy Namespace": policy[0]}
    return line | _end("Src", source) | _end("Dest", destination)


def old_verdict(
    source: Pod | str, destination: Pod | str, port: int, decision: str, direction: str, **more
) -> dict:
    """The same verdict as written before the Src/Dest keys: only the local pod is named."""
    line = verdict(source, destination, port, decision, direction, **more)
    return {key: value for key, value in line.items() if key not in END_KEYS}


def aws_verdict(source: str, destination: str, port: int, verdict: str) -> dict:
    """The AWS agent's line: the five-tuple and the verdict, nothing else."""
    return {
        **_head(STAMP),
        "Src IP": source,
        "Src Port": 40000,
        "Dest IP": destination,
        "Dest Port": port,
        "Proto": "TCP",
        "Verdict": verdict,
    }


def expired(
    source: Pod, destination: Pod, port: int, sent: int, received: int, stamp: str = STAMP
) -> dict:
    line = verdict(source, destination, port, "EXPIRED/DELETED", "ingress", stamp=stamp)
    del line["Packet Size"]
    return line | {
        "Start Time": "2026-11-22T04:59:58.000Z",
        "Duration": 2.1,
        "Packets Sent": 10,
        "Bytes Sent": sent,
        "Packets Received": 8,
        "Bytes Received": received,
    }


def summary(
    source: Pod,
    destination: Pod,
    port: int,
    verdict: str,
    flows: int,
    aggregation: str = "peer",
    policy: tuple[str, str] | None = None,
) -> dict:
    """A --flow-log-aggregate line for one window; ``workload`` ones name no pod or address."""
    line = {
        **_head("2026-11-22T05:01:00.000Z", "Flow Summary: "),
        "Aggregation": aggregation,
        "Src IP": source[3],
        "Dest IP": destination[3],
        "Dest Port": port,
        "Proto": "TCP",
        "Verdict": verdict,
        "Direction": "ingress",
        "Node": NODE_NAME,
    }
    if policy:
        line |= {"Policy": policy[1], "Policy Namespace": policy[0]}
    line |= _end("Src", source) | _end("Dest", destination)
    line |= {
        "Start Time": "2026-11-22T05:00:00.000Z",
        "End Time": "2026-11-22T05:01:00.000Z",
        "Flows Started": flows,
        "Flows Completed": flows,
        "Packets Sent": 3 * flows,
        "Bytes Sent": 300 * flows,
        "Packets Received": 2 * flows,
        "Bytes Received": 2000 * flows,
    }
    if aggregation == "workload":
        for key in ("Src IP", "Dest IP", "Src Pod", "Dest Pod"):
            del line[key]
    return line


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path
