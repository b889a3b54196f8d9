"""The node agent image, run with podman the way docker/daemonset.yaml runs it.

Everything the container gets comes from the DaemonSet: its capabilities (and
no others: --cap-drop=all), its read-only root filesystem, no privilege
escalation, UID 0, its hostPath mounts at their container paths, its
ConfigMap files, its environment. What differs, and why:

- the node is a test's network namespace (``--network ns:``) whose pods are
  namespaces of their own, and the hostPaths point at the test's own
  directories: a subdirectory of the host's bpffs, a log directory;
- policies come from ``--policy-dir`` (a mounted directory) until the agent
  reads PolicyEndpoints from the API;
- shipping is off in the add-on configuration: no CloudWatch is reachable;
- seccomp: the DaemonSet asks for the runtime's default profile, and
  containerd's lets holders of CAP_BPF call bpf(2). Podman 4.3's default
  profile lets only CAP_SYS_ADMIN holders call it, so the container runs with
  podman's profile changed in exactly that respect, as containerd's has it.

Run by ``make image-test`` (marker ``image``), after ``make image``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from flowlog import __version__
from flowlog.dataplane.programs import PinLayout
from flowlog.demo import stars
from flowlog.demo.topology import Pod, TcpServer, Topology, tcp_connect, udp_send
from tests.deploy.manifests import (
    AGENT_MANIFEST,
    load_documents,
    only,
    pod_spec,
    resolved_environment,
    the_container,
)
from tests.support.agent_process import wait_until

pytestmark = pytest.mark.image

IMAGE = os.environ.get("FLOWLOG_IMAGE", f"flowlog:{__version__}")
NODE_NAME = "ip-10-0-0-1.eu-west-1.compute.internal"
HEALTH_PORT = 8163
POLICY_MOUNT = "/etc/flowlog/policies"
PODMAN_SECCOMP = Path("/usr/share/containers/seccomp.json")
# This host's cgroup v1 hybrid hierarchy: crun fails on it, and without lower
# explicit limits runc fails setting rlimits (root lacks CAP_SYS_RESOURCE).
PODMAN_RUN = [
    "podman",
    "--runtime",
    "runc",
    "run",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
]
UDP_LOAD = 20_000  # denied datagrams, for the memory after traffic


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def image() -> str:
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.skip("needs root and podman (make image-test)")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.skip(f"no image {IMAGE}: make image-test builds it")
    return IMAGE


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return load_documents(AGENT_MANIFEST)


@pytest.fixture(scope="module")
def seccomp_profile(tmp_path_factory) -> Path:
    """Podman's default profile, but bpf(2) and perf_event_open(2) as containerd allows them."""
    profile = json.loads(PODMAN_SECCOMP.read_text())
    moved = {"bpf", "perf_event_open"}
    for rule in profile["syscalls"]:
        if "CAP_SYS_ADMIN" in {*rule.get("includes", {}).get("caps", [])} | {
            *rule.get("excludes", {}).get("caps", [])
        }:
            rule["names"] = [name for name in rule["names"] if name not in moved]
    profile["syscalls"] = [rule for rule in profile["syscalls"] if rule["names"]]
    for name, capability in (("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")):
        for holder in (capability, "CAP_SYS_ADMIN"):
            profile["syscalls"].append(
                {"names": [name], "action": "SCMP_ACT_ALLOW", "includes": {"caps": [holder]}}
            )
    path = tmp_path_factory.mktemp("seccomp") / "containerd-like.json"
    path.write_text(json.dumps(profile))
    return path


@dataclass
class NodeDirectories:
    """What the test puts where the DaemonSet's hostPaths point."""

    bpffs: Path  # a directory of the host's bpffs, the container's /sys/fs/bpf
    logs: Path
    aws_node: Path
    policies: Path
    config: Path

    def host_path(self, path: str) -> str:
        replaced = {
            "/sys/fs/bpf": self.bpffs,
            "/var/log/aws-routed-eni": self.logs,
            "/var/run/aws-node": self.aws_node,
        }
        if path in replaced:
            return str(replaced[path])
        assert path in ("/lib/modules", "/usr/src"), f"new hostPath {path}: decide what to mount"
        return path  # the kernel headers, read-only, as on a node


@pytest.fixture
def node_dirs(tmp_path, documents) -> Iterator[NodeDirectories]:
    bpffs = Path(f"/sys/fs/bpf/flowlog-image-{os.getpid()}-{secrets.token_hex(3)}")
    bpffs.mkdir()
    directories = NodeDirectories(
        bpffs, tmp_path / "logs", tmp_path / "aws-node", tmp_path / "policies", tmp_path / "config"
    )
    for directory in (directories.logs, directories.aws_node, directories.policies):
        directory.mkdir()
    directories.config.mkdir()
    addon = json.loads(only(documents, "ConfigMap", "flowlog-config")["data"]["addon-config.json"])
    addon["nodeAgent"]["enableCloudWatchLogs"] = "false"
    (directories.config / "addon-config.json").write_text(json.dumps(addon))
    try:
        yield directories
    finally:
        PinLayout(bpffs / "flowlog").remove()
        bpffs.rmdir()


def run_arguments(
    documents: list[dict], dirs: NodeDirectories, capabilities: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """podman run options and the container's arguments, from the DaemonSet."""
    daemonset = only(documents, "DaemonSet", "flowlog")
    container = the_container(daemonset)
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security.get("privileged") is False
    options = ["--cap-drop=all"]
    added = security["capabilities"]["add"] if capabilities is None else capabilities
    options += [f"--cap-add={capability}" for capability in added]
    options += ["--user", str(security["runAsUser"])]
    if security["readOnlyRootFilesystem"]:
        options.append("--read-only")
    if security["allowPrivilegeEscalation"] is False:
        options += ["--security-opt", "no-new-privileges"]
    volumes = {volume["name"]: volume for volume in pod_spec(daemonset)["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        flags = ["ro" if mount.get("readOnly") else "rw"]
        if mount.get("mountPropagation") == "HostToContainer":
            flags.append("rslave")
        if "hostPath" in volume:
            source = dirs.host_path(volume["hostPath"]["path"])
        elif "configMap" in volume:
            assert volume["configMap"]["name"] == "flowlog-config", volume
            source = str(dirs.config)
        else:
            assert "emptyDir" in volume, volume
            options += ["--tmpfs", mount["mountPath"]]
            continue
        options += ["--volume", f"{source}:{mount['mountPath']}:{','.join(flags)}"]
    options += ["--volume", f"{dirs.policies}:{POLICY_MOUNT}:ro"]
    for name, value in resolved_environment(container, documents, NODE_NAME).items():
        options += ["--env", f"{name}={value}"]
    assert container["command"] == ["flowlog"]  # the image's entrypoint
    return options, [*container["args"], f"--policy-dir={POLICY_MOUNT}"]


class Container:
    """The agent's container, removed on exit whatever happened."""

    def __init__(self, name: str, node: Topology) -> None:
        self.name = name
        self.node = node

    def ready(self) -> bool:
        def fetch() -> bool:
            try:
                url = f"http://127.0.0.1:{HEALTH_PORT}/readyz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        return self.node.node.call(fetch)

    def state(self, field: str) -> str:
        return podman("inspect", "--format", f"{{{{.State.{field}}}}}", self.name).stdout.strip()

    def running(self) -> bool:
        return self.state("Running") == "true"

    def resident_mib(self) -> float:
        """VmRSS of the agent, the container's first process."""
        status = Path(f"/proc/{self.state('Pid')}/status").read_text()
        (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
        return int(line.split()[1]) / 1024

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"flowlog-test-{os.getpid()}-{secrets.token_hex(3)}"
    yield name
    podman("rm", "--force", "--time", "0", name, check=False)


def stars_topology(topology: Topology) -> dict[str, Pod]:
    return {
        service.name: topology.add_pod(service.pod, service.namespace) for service in stars.SERVICES
    }


def write_stars_policies(directory: Path, pods: dict[str, Pod]) -> list[stars.NetworkPolicy]:
    """Every policy of the demo's last step, as PolicyEndpoint files."""
    policies = [policy for step in stars.STEPS for policy in step.applies]
    addresses = {name: stars.PodAddresses(pod.ipv4, pod.ipv6) for name, pod in pods.items()}
    for policy in policies:
        document = stars.policy_endpoint(policy, addresses)
        (directory / stars.policy_file_name(policy)).write_text(json.dumps(document))
    return policies


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def veth_filters(topology: Topology, pods: dict[str, Pod]) -> dict[str, str]:
    """``tc filter show`` on both hooks of every pod's host-side veth."""
    return {
        pod.host_veth: topology.node.run(
            ["tc", "filter", "show", "dev", pod.host_veth, "ingress"]
        ).stdout
        + topology.node.run(["tc", "filter", "show", "dev", pod.host_veth, "egress"]).stdout
        for pod in pods.values()
    }


def report(capsys: pytest.CaptureFixture, text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


def test_the_stars_scenario_against_the_container(
    image, documents, node_dirs, seccomp_profile, container_name, capsys
):
    with Topology() as topology:
        pods = stars_topology(topology)
        policies = write_stars_policies(node_dirs.policies, pods)
        options, arguments = run_arguments(documents, node_dirs)
        options += ["--security-opt", f"seccomp={seccomp_profile}"]
        options += ["--network", f"ns:{topology.node.path}"]
        container = Container(container_name, topology)
        started = time.monotonic()
        subprocess.run(
            [*PODMAN_RUN, "--detach", "--name", container_name, *options, image, *arguments],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(lambda: container.ready() or not container.running(), 120, message="/readyz")
        start_to_ready = time.monotonic() - started
        assert container.ready(), container.logs()
        resident_at_ready = container.resident_mib()

        # Every probe of the demo: allowed ones connect, denied ones do not.
        expected = set()
        with contextlib.ExitStack() as servers:
            for service in (stars.CLIENT, stars.FRONTEND, stars.BACKEND):
                servers.enter_context(TcpServer(pods[service.name], service.port))
            for probe in stars.PROBES:
                source, target = pods[probe.source.name], pods[probe.target.name]
                allowed = stars.allowed(policies, probe)
                timeout = 2.0 if allowed else 0.5
                connected = tcp_connect(source, target.ipv4, probe.port, timeout=timeout)
                assert connected == allowed, probe
                verdict = "ACCEPT" if allowed else "DENY"
                flow = (source.ipv4, target.ipv4, probe.port, "TCP", verdict)
                expected.add((*flow, target.name, target.namespace))
        log = node_dirs.logs / "network-policy-agent.log"

        def ingress_lines() -> set[tuple]:
            return {
                (
                    line["Src IP"],
                    line["Dest IP"],
                    line["Dest Port"],
                    line["Proto"],
                    line["Verdict"],
                    line.get("Pod"),
                    line.get("Namespace"),
                )
                for line in read_lines(log)
                if line["Direction"] == "ingress" and line["Verdict"] != "EXPIRED/DELETED"
            }

        def ends() -> set[tuple]:
            return {
                (line["Src IP"], line["Dest IP"], line["Dest Port"], "TCP", "ACCEPT")
                for line in read_lines(log)
                if line["Direction"] == "ingress" and line["Verdict"] == "EXPIRED/DELETED"
            }

        wait_until(lambda: ingress_lines() >= expected, 10, message="a line per probe")
        assert ingress_lines() == expected
        # Every allowed connection closed: each ends in a line with its counters.
        accepted = {flow[:5] for flow in expected if flow[4] == "ACCEPT"}
        wait_until(lambda: ends() >= accepted, 10, message="each allowed connection's end")
        lines = read_lines(log)
        assert {line["Node"] for line in lines} == {NODE_NAME}
        # Each line names a policy that selects its pod.
        services = {(service.pod, service.namespace): service for service in stars.SERVICES}
        for line in lines:
            if line["Direction"] == "ingress":
                service = services[(line["Pod"], line["Namespace"])]
                selecting = {(p.name, p.namespace) for p in policies if p.selects(service)}
                assert (line["Policy"], line["Policy Namespace"]) in selecting, line

        # Traffic for the memory figure: denied datagrams, one line each.
        before = len(lines)
        udp_send(pods["client"], pods["backend"].ipv4, 6379, count=UDP_LOAD)
        wait_until(
            lambda: len(read_lines(log)) >= before + UDP_LOAD * 0.99, 30, message="load lines"
        )
        resident_after_traffic = container.resident_mib()
        assert any(filters for filters in veth_filters(topology, pods).values())

        podman("stop", "--time", "20", container_name, timeout=40)
        assert container.state("ExitCode") == "0", container.logs()
        # Detached and unpinned: no filters left on the veths, no pins in the bpffs.
        assert veth_filters(topology, pods) == dict.fromkeys(veth_filters(topology, pods), "")
        assert not list(node_dirs.bpffs.rglob("*")), list(node_dirs.bpffs.rglob("*"))

    size = podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()
    report(
        capsys,
        f"image {image}: {int(size) / 1e6:.0f} MB; start to ready {start_to_ready:.1f} s; "
        f"agent RSS {resident_at_ready:.0f} MiB at ready, {resident_after_traffic:.0f} MiB "
        f"after {UDP_LOAD} denied datagrams",
    )


@pytest.mark.parametrize("missing", ["BPF", "NET_ADMIN", "PERFMON"])
def test_without_one_capability_the_container_says_which(
    image, documents, node_dirs, seccomp_profile, container_name, missing
):
    granted = the_container(only(documents, "DaemonSet", "flowlog"))["securityContext"]
    capabilities = [c for c in granted["capabilities"]["add"] if c != missing]
    assert len(capabilities) == len(granted["capabilities"]["add"]) - 1
    options, arguments = run_arguments(documents, node_dirs, capabilities)
    options += ["--security-opt", f"seccomp={seccomp_profile}", "--network", "none"]
    result = subprocess.run(
        [*PODMAN_RUN, "--name", container_name, *options, image, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert f"missing capability CAP_{missing} " in error, result.stderr
    assert "Traceback" not in result.stderr
