"""Where the demo runs: a node with the stars pods, its Kubernetes API, a local
CloudWatch, and the agent.

Everything lives in network namespaces this process creates: the node
namespace holds the pods' veths, the agent (started there with ``nsenter``, so
its probes listen on the node's loopback, and in-cluster, as a hostNetwork pod
of a DaemonSet runs), the Kubernetes API stand-in that serves the pods and
PolicyEndpoints (its socket made inside the node namespace) and moto_server
(started from a thread inside the node namespace). The agent learns pods and
policies only from that API, as on EKS. Nothing is added to the namespace the
demo was started in.

``close()`` undoes everything in reverse order and is safe to call at any
point: the agent is stopped (it detaches its programs and unpins them), its
pins are removed in case it could not do so, moto_server is stopped, the
namespaces are deleted, and the work directory too unless it is to be kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml

from flowlog.config import Settings
from flowlog.dataplane.programs import PinLayout
from flowlog.demo.kube_api import KubeApiServer, listening_socket, pod
from flowlog.demo.local_cloudwatch import DUMMY_CREDENTIALS, LocalCloudWatch
from flowlog.demo.stars import (
    SERVICES,
    NetworkPolicy,
    PodAddresses,
    Probe,
    policy_endpoint,
    policy_file_name,
)
from flowlog.demo.topology import Namespace, Pod, TcpServer, Topology, tcp_connect

NODE_NAME = "ip-10-42-0-1"
CLUSTER_NAME = "stars-demo"
# The agent's settings that name things (log group, stream) as the agent derives them.
SETTINGS = Settings(cluster_name=CLUSTER_NAME, node_name=NODE_NAME)
# moto_server's usual port; it is the node namespace's own loopback, so it is free.
CLOUDWATCH_PORT = 5000
METRICS_PORT = 8162
HEALTH_PORT = 8163
BPF_FS = Path("/sys/fs/bpf")
# The pin directory and the temporary directory are named flowlog-demo-<pid>-<random>,
# so that a later demo can tell those of a demo that was killed outright.
RUN_PREFIX = "flowlog-demo-"
LOG_FILE_NAME = "network-policy-agent.log"
AGENT_OUTPUT_NAME = "agent.log"
POLICY_DIR_NAME = "policies"
KUBE_DIR_NAME = "kube"
# The stand-in's bookmarks: as often as a real API server sends them.
KUBE_BOOKMARK_SECONDS = 60.0
# The agent compiles its programs with bcc at start: several seconds on a small machine.
AGENT_START_SECONDS = 120.0
AGENT_STOP_SECONDS = 15.0
# LocalCloudWatch.start gives up after 30 s.
CLOUDWATCH_START_SECONDS = 40.0
POLICY_APPLY_SECONDS = 20.0
POLL_SECONDS = 0.05
# Short enough that a denied SYN is sent once (Linux retransmits it after 1 s).
PROBE_TIMEOUT = 0.5
PR_SET_PDEATHSIG = 1

_T = TypeVar("_T")


class StageError(RuntimeError):
    """Something the demo needs did not happen; the message is one line."""


class Interrupted(Exception):
    """Someone asked the demo to stop (Ctrl-C, SIGTERM); raised at the next safe point."""


# Looked up now: the child between fork and exec should do as little as possible.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    # If the demo is killed outright, the agent still gets SIGTERM and cleans up its pins.
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def remove_stale_leftovers() -> None:
    """Pins and temporary directories of demos that were killed outright (SIGKILL).

    Their namespaces go with the next Topology. Both names carry the demo's pid.
    """
    leftovers = [
        *BPF_FS.glob(f"{RUN_PREFIX}*-*"),
        *Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*-*"),
    ]
    for path in leftovers:
        pid = path.name.removeprefix(RUN_PREFIX).split("-")[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        if path.is_relative_to(BPF_FS):
            PinLayout(path).remove()
        else:
            shutil.rmtree(path, ignore_errors=True)


class Stage:
    """The demo's node, pods, local CloudWatch and agent; ``close()`` removes them all."""

    def __init__(
        self, keep_dir: Path | None = None, stop_requested: threading.Event | None = None
    ) -> None:
        """Files go to a new temporary directory, removed on close, or to ``keep_dir``.

        Once ``stop_requested`` is set, the next wait or step raises Interrupted.
        """
        self.stop_requested = stop_requested or threading.Event()
        remove_stale_leftovers()
        self._closing = contextlib.ExitStack()
        self._closed = False
        self.keep_work_dir = keep_dir is not None
        if keep_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-"))
            self._closing.callback(shutil.rmtree, self.work_dir, ignore_errors=True)
        else:
            self.work_dir = keep_dir
            keep_dir.mkdir(parents=True, exist_ok=True)
        self.policy_dir = self.work_dir / POLICY_DIR_NAME
        self.log_file = self.work_dir / LOG_FILE_NAME
        self.agent_output = self.work_dir / AGENT_OUTPUT_NAME
        self.pin_dir = BPF_FS / f"{RUN_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.topology: Topology | None = None
        self.pods: dict[str, Pod] = {}  # by service name
        self.cloudwatch: LocalCloudWatch | None = None
        self.kube: KubeApiServer | None = None
        self.agent: subprocess.Popen | None = None
        self._logs: Any = None  # boto3 CloudWatch Logs client, made at first use

    # --- waiting ------------------------------------------------------------------------

    def check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise Interrupted

    def wait_for(self, condition: Callable[[], _T], timeout: float) -> _T | None:
        """``condition()`` once it returns something truthy, or None after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_stop()
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                return None
            self.stop_requested.wait(POLL_SECONDS)

    def poll(self, condition: Callable[[], _T], timeout: float, what: str) -> _T:
        """Like ``wait_for``, but StageError after ``timeout`` s."""
        result = self.wait_for(condition, timeout)
        if result is None:
            raise StageError(f"gave up after {timeout:g}s waiting for {what}")
        return result

    # --- building ----------------------------------------------------------------------

    def build_node(self) -> None:
        """The policy directory, the node namespace and one wired namespace per pod."""
        self.policy_dir.mkdir(exist_ok=True)
        self.topology = Topology()
        self._closing.callback(self.topology.close)
        for service in SERVICES:
            self.check_stop()
            self.pods[service.name] = self.topology.add_pod(service.pod, service.namespace)

    @property
    def node(self) -> Namespace:
        if self.topology is None:
            raise RuntimeError("build_node() has not run")
        return self.topology.node

    def namespaces(self) -> list[Namespace]:
        if self.topology is None:
            return []
        return [self.topology.node, *(pod.netns for pod in self.pods.values())]

    def addresses(self) -> dict[str, PodAddresses]:
        return {name: PodAddresses(pod.ipv4, pod.ipv6) for name, pod in self.pods.items()}

    def start_kube_api(self) -> KubeApiServer:
        """The cluster's API, serving the stars pods as scheduled on this node."""
        node = self.node
        kube = KubeApiServer(
            self.work_dir / KUBE_DIR_NAME,
            listen_socket=lambda port: node.call(lambda: listening_socket("127.0.0.1", port)),
            bookmark_interval=KUBE_BOOKMARK_SECONDS,
        )
        self.kube = kube.start()
        self._closing.callback(kube.close)
        for service in SERVICES:
            member = self.pods[service.name]
            deployment = f"{service.name}-{secrets.token_hex(5)[:9]}"  # the ReplicaSet
            kube.apply(
                pod(
                    member.name,
                    member.namespace,
                    member.ipv4,
                    NODE_NAME,
                    ("ReplicaSet", deployment),
                    labels={"role": service.role, "pod-template-hash": deployment.rsplit("-")[-1]},
                    ips=[member.ipv4, member.ipv6],
                )
            )
        return kube

    def start_cloudwatch(self) -> LocalCloudWatch:
        cloudwatch = LocalCloudWatch(port=CLOUDWATCH_PORT)
        self.cloudwatch = cloudwatch
        starter = ThreadPoolExecutor(1, thread_name_prefix="cloudwatch-start")
        # Started from a thread inside the node namespace, moto_server listens there.
        starting = starter.submit(self.node.call, cloudwatch.start)
        starter.shutdown(wait=False)
        self._closing.callback(self._stop_cloudwatch, starting)
        starting.result()
        return cloudwatch

    def _stop_cloudwatch(self, starting: Future) -> None:
        # A start interrupted by Ctrl-C goes on in its thread: stop what it started.
        with contextlib.suppress(Exception):
            starting.result(timeout=CLOUDWATCH_START_SECONDS)
        assert self.cloudwatch is not None
        self.cloudwatch.stop()

    def start_agent(self) -> subprocess.Popen:
        assert self.cloudwatch is not None and self.kube is not None
        account = self.kube.write_service_account(self.work_dir / KUBE_DIR_NAME / "serviceaccount")
        argv = [
            sys.executable,
            "-m",
            "flowlog",
            "agent",
            "--enable-policy-event-logs",
            "--enable-cloudwatch-logs",
            "--service-account-dir",
            str(account),
            "--ipam-checkpoint",
            str(self.work_dir / "no-vpc-cni" / "ipam.json"),
            "--log-file",
            str(self.log_file),
            "--bpf-pin-dir",
            str(self.pin_dir),
            "--node-name",
            NODE_NAME,
            "--cluster-name",
            CLUSTER_NAME,
            "--cloudwatch-endpoint",
            self.cloudwatch.endpoint,
            "--cloudwatch-flush-interval",
            "1",
            "--metrics-bind-addr",
            f"127.0.0.1:{METRICS_PORT}",
            "--health-probe-bind-addr",
            f"127.0.0.1:{HEALTH_PORT}",
        ]
        self._closing.callback(PinLayout(self.pin_dir).remove)
        with self.agent_output.open("ab") as output:
            # A session of its own: a Ctrl-C at the terminal reaches the demo, which
            # then stops the agent itself and waits for it to clean up.
            self.agent = subprocess.Popen(
                self.node.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    **self.cloudwatch.client_environment(),
                    **self.kube.service_account_environment(),
                },
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._closing.callback(self._stop_agent)
        return self.agent

    def wait_agent_ready(self) -> dict:
        return self.poll(self.readiness, AGENT_START_SECONDS, "the agent to be ready")

    def readiness(self) -> dict | None:
        """The agent's /readyz detail once it is ready; StageError if it has exited."""
        assert self.agent is not None
        if self.agent.poll() is not None:
            raise StageError(f"the agent exited with status {self.agent.returncode}")

        def fetch() -> dict | None:
            url = f"http://127.0.0.1:{HEALTH_PORT}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return orjson.loads(response.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return None

        return self.node.call(fetch)

    def agent_output_tail(self, count: int) -> str:
        try:
            lines = self.agent_output.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-count:])

    # --- policies and traffic -------------------------------------------------------------

    def apply(self, policies: Sequence[NetworkPolicy]) -> list[Path]:
        """Create each policy's PolicyEndpoint in the API, as the network policy
        controller does, and wait until the agent has programmed it. A copy of
        each goes to the policies directory, for people to read."""
        return [self._apply_one(policy) for policy in policies]

    def _apply_one(self, policy: NetworkPolicy) -> Path:
        assert self.kube is not None
        updates_before = self._dataplane_status()["policy_updates"]
        document = policy_endpoint(policy, self.addresses())
        path = self.policy_dir / policy_file_name(policy)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        self.kube.apply(document)
        name = f"{document['metadata']['namespace']}/{document['metadata']['name']}"
        self.poll(
            lambda: self._programmed(name, updates_before),
            POLICY_APPLY_SECONDS,
            f"the agent to program PolicyEndpoint {name}",
        )
        return path

    def _dataplane_status(self) -> dict:
        readiness = self.readiness()
        if not readiness:
            raise StageError("the agent is not ready")
        return readiness["dataplane"]

    def _programmed(self, name: str, updates_before: int) -> bool:
        status = self._dataplane_status()
        if name in status["rejected"]:
            raise StageError(f"the agent rejected {name}: {status['rejected'][name]}")
        return name in status["in_force"] and status["policy_updates"] > updates_before

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Every service listening on its port while the context lasts."""
        with contextlib.ExitStack() as servers:
            for service in SERVICES:
                servers.enter_context(TcpServer(self.pods[service.name], service.port))
            yield

    def probe(self, probes: Sequence[Probe], source_ports: Sequence[int]) -> list[bool]:
        """Each probe's TCP connection (all at once), from the given source ports."""

        def connect(probe: Probe, source_port: int) -> bool:
            source, target = self.pods[probe.source.name], self.pods[probe.target.name]
            return tcp_connect(source, target.ipv4, probe.port, PROBE_TIMEOUT, source_port)

        with ThreadPoolExecutor(len(probes), thread_name_prefix="probe") as pool:
            return list(pool.map(connect, probes, source_ports))

    # --- reading back ----------------------------------------------------------------------

    def flow_log(self) -> list[dict]:
        try:
            data = self.log_file.read_bytes()
        except FileNotFoundError:
            return []
        # A line being written has no newline yet; it is read next time.
        return [orjson.loads(line) for line in data.split(b"\n")[:-1] if line]

    def cloudwatch_events(self) -> list[dict]:
        """Every event in the node's stream, oldest first ([] while it does not exist)."""
        import botocore.exceptions

        client = self._logs_client()

        def read_stream() -> list[dict]:
            events: list[dict] = []
            arguments = {
                "logGroupName": SETTINGS.cloudwatch_log_group,
                "logStreamName": SETTINGS.cloudwatch_log_stream,
                "startFromHead": True,
            }
            while True:
                page = client.get_log_events(**arguments)
                events.extend(page["events"])
                if page.get("nextForwardToken") in (None, arguments.get("nextToken")):
                    return events
                arguments["nextToken"] = page["nextForwardToken"]

        try:
            # Connections to moto_server must be opened from inside the node namespace.
            return self.node.call(read_stream)
        except client.exceptions.ResourceNotFoundException:
            return []
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise StageError(f"cannot read the local CloudWatch: {error}") from None

    def _logs_client(self) -> Any:
        if self._logs is None:
            import boto3
            from botocore.config import Config

            assert self.cloudwatch is not None
            self._logs = boto3.client(
                "logs",
                endpoint_url=self.cloudwatch.endpoint,
                region_name=self.cloudwatch.region,
                aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
                # The endpoint is local: a call that takes longer has failed.
                config=Config(
                    connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 1}
                ),
            )
        return self._logs

    # --- closing --------------------------------------------------------------------------

    def _stop_agent(self) -> None:
        agent = self.agent
        if agent is None or agent.poll() is not None:
            return
        agent.send_signal(signal.SIGTERM)  # it drains, flushes, detaches and unpins
        try:
            agent.wait(AGENT_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._closing.close()
