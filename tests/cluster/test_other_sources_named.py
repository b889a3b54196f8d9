"""Every source names both ends the same way: ``flowlog replay`` and ``--ringbuf-pin``.

A remote pod is named from the API (the AWS agent cannot name it), a pod of
this node from the VPC CNI checkpoint alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from flowlog.demo.kube_api import KubeApiServer, pod
from tests.core.test_records import aws_v4_record
from tests.support.agent_process import AgentProcess, wait_until

REMOTE_IP, LOCAL_IP, OUTSIDE_IP = "10.42.7.7", "10.42.0.30", "203.0.113.9"


def write_checkpoint(path: Path) -> Path:
    path.write_bytes(
        orjson.dumps(
            {
                "version": "vpc-cni-ipam/1",
                "allocations": [
                    {
                        "networkName": "aws-cni",
                        "containerID": "0123abcd",
                        "ifName": "eth0",
                        "ipv4": LOCAL_IP,
                        "ipv6": "",
                        "allocationTimestamp": 1764806400,
                        "metadata": {
                            "k8sPodNamespace": "shop",
                            "k8sPodName": "cart-0",
                            "interfacesCount": 1,
                        },
                    }
                ],
            }
        )
    )
    return path


def records() -> bytes:
    return aws_v4_record(REMOTE_IP, 40100, LOCAL_IP, 8080, 6, 1, 60, 0, 2) + aws_v4_record(
        LOCAL_IP, 40200, OUTSIDE_IP, 443, 6, 0, 60, 1, 2
    )


def check_named(lines: list[dict]) -> None:
    inbound, outbound = lines
    assert (inbound["Src Pod"], inbound["Src Namespace"], inbound["Src Workload"]) == (
        "web-6f7d8-abcde",
        "shop",
        "deployment/web",
    )
    # The checkpoint knows the pod, not its owner.
    assert (inbound["Dest Pod"], inbound["Dest Namespace"]) == ("cart-0", "shop")
    assert "Dest Workload" not in inbound
    assert outbound["Src Pod"] == "cart-0"
    assert not {"Dest Pod", "Dest Node", "Dest Namespace"} & set(outbound)


def test_replay_names_a_remote_pod_from_the_api_and_a_local_one_from_the_checkpoint(tmp_path):
    capture = tmp_path / "events.bin"
    capture.write_bytes(records())
    checkpoint = write_checkpoint(tmp_path / "ipam.json")
    with KubeApiServer(tmp_path / "kube") as kube:
        kube.apply(pod("web-6f7d8-abcde", "shop", REMOTE_IP, "node-2", ("ReplicaSet", "web-6f7d8")))
        log = tmp_path / "flows.log"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "flowlog",
                "replay",
                str(capture),
                "--layout",
                "aws-v4",
                "--log-file",
                str(log),
                "--kubeconfig",
                str(kube.write_kubeconfig()),
                "--ipam-checkpoint",
                str(checkpoint),
            ],
            capture_output=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    check_named([orjson.loads(line) for line in log.read_bytes().splitlines()])


@pytest.mark.bpf
def test_beside_the_aws_agent_its_verdicts_get_both_ends_named(tmp_path):
    from tests.support.ringbuf_producer import RecordProducer

    producer = RecordProducer(32)
    pin = Path(f"/sys/fs/bpf/flowlog-test-aws-{tmp_path.name[-12:]}")
    checkpoint = write_checkpoint(tmp_path / "ipam.json")
    log = tmp_path / "flows.log"
    try:
        producer.pin(pin)
        with KubeApiServer(tmp_path / "kube") as kube:
            kube.apply(
                pod("web-6f7d8-abcde", "shop", REMOTE_IP, "node-2", ("ReplicaSet", "web-6f7d8"))
            )
            with AgentProcess(
                "--ringbuf-pin",
                str(pin),
                "--enable-policy-event-logs",
                "--log-file",
                str(log),
                "--kubeconfig",
                str(kube.write_kubeconfig()),
                "--ipam-checkpoint",
                str(checkpoint),
            ) as agent:
                ready = agent.wait_ready()
                assert ready["cluster"]["checkpoint"]["pods"] == 1
                producer.produce(records())
                wait_until(lambda: log.exists() and len(log.read_bytes().splitlines()) == 2)
                assert agent.stop() == 0
        check_named([orjson.loads(line) for line in log.read_bytes().splitlines()])
    finally:
        producer.close()
