"""docker/daemonset.yaml and rbac.yaml: the fields a node agent needs, flags the CLI
really takes, and API access limited to reading what it enforces and names."""

import argparse
import re
from pathlib import Path, PurePosixPath

import pytest

from flowlog import __version__, agent
from flowlog.cli import build_parser
from flowlog.config import (
    Settings,
    load_settings,
    parse_bind_addr,
    read_config_file,
    validate_agent_settings,
)
from tests.deploy.manifests import (
    AGENT_MANIFEST,
    FLUENT_BIT_MANIFEST,
    REPOSITORY,
    host_paths,
    load_documents,
    mounts_by_volume,
    only,
    pod_spec,
    resolved_environment,
    the_container,
    walk,
)

NODE_NAME = "ip-10-0-0-1.eu-west-1.compute.internal"
RBAC_MANIFEST = REPOSITORY / "docker" / "rbac.yaml"
# Where the VPC CNI writes its IPAM checkpoint, and where the agent reads it by default.
IPAM_CHECKPOINT = "/var/run/aws-node/ipam.json"
HEALTH_PORT = 8163
METRICS_PORT = 8162


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return load_documents(AGENT_MANIFEST)


@pytest.fixture(scope="module")
def daemonset(documents) -> dict:
    return only(documents, "DaemonSet", "flowlog")


@pytest.fixture(scope="module")
def container(daemonset) -> dict:
    return the_container(daemonset)


@pytest.fixture
def addon_config(documents, tmp_path) -> Path:
    """The add-on configuration from the ConfigMap, as the pod sees it in its file."""
    path = tmp_path / "addon-config.json"
    path.write_text(only(documents, "ConfigMap", "flowlog-config")["data"]["addon-config.json"])
    return path


@pytest.fixture
def parsed(container) -> argparse.Namespace:
    assert container["command"] == ["flowlog"]
    return build_parser().parse_args(container["args"])


@pytest.fixture
def settings(parsed, container, documents, addon_config) -> Settings:
    environment = resolved_environment(container, documents, NODE_NAME)
    return load_settings(parsed, environ=environment, config_path=str(addon_config))


def test_every_object_parses_and_lives_in_kube_system(documents):
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["ConfigMap", "DaemonSet", "ServiceAccount"]
    assert {d["metadata"]["namespace"] for d in documents} == {"kube-system"}


def test_the_service_account_keeps_its_iam_role_and_its_token_is_mounted(documents, daemonset):
    account = only(documents, "ServiceAccount", "flowlog")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    assert pod_spec(daemonset)["automountServiceAccountToken"] is True


def test_rbac_grants_reading_pods_and_policyendpoints_and_creating_events():
    rbac = load_documents(RBAC_MANIFEST)
    assert sorted(d["kind"] for d in rbac) == ["ClusterRole", "ClusterRoleBinding"]
    role = only(rbac, "ClusterRole", "flowlog")
    granted = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("", "pods"): ["get", "list", "watch"],
        ("networking.k8s.aws", "policyendpoints"): ["get", "list", "watch"],
        ("", "events"): ["create"],
    }
    assert all(
        "resourceNames" not in rule and "nonResourceURLs" not in rule for rule in role["rules"]
    )
    binding = only(rbac, "ClusterRoleBinding", "flowlog")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "flowlog",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "flowlog", "namespace": "kube-system"}
    ]


def test_runs_on_the_node_network_on_every_node(daemonset):
    spec = pod_spec(daemonset)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["serviceAccountName"] == "flowlog"


def test_probes_and_ports(container):
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {
        ("metrics", METRICS_PORT),
        ("health", HEALTH_PORT),
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": HEALTH_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": HEALTH_PORT}


def test_the_agent_listens_where_the_probes_and_ports_point(settings):
    assert parse_bind_addr(settings.health_probe_bind_addr)[1] == HEALTH_PORT
    assert parse_bind_addr(settings.metrics_bind_addr)[1] == METRICS_PORT


def test_node_name_from_the_downward_api_cluster_and_region_from_the_configmap(container):
    environment = {variable["name"]: variable for variable in container["env"]}
    assert environment["MY_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    for name in ("CLUSTER_NAME", "AWS_REGION"):
        assert environment[name]["valueFrom"]["configMapKeyRef"]["name"] == "flowlog-config"


def test_resources_as_stated(container):
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "192Mi"},
        "limits": {"memory": "320Mi"},
    }


def test_host_paths(daemonset):
    mounted = host_paths(daemonset)
    assert set(mounted) == {
        "/sys/fs/bpf",
        "/var/log/aws-routed-eni",
        "/lib/modules",
        "/usr/src",
        "/var/run/aws-node",
    }
    for host_path, (mount_path, _) in mounted.items():
        assert mount_path == host_path
    assert not mounted["/sys/fs/bpf"][1].get("readOnly", False)
    assert mounted["/sys/fs/bpf"][1]["mountPropagation"] == "HostToContainer"
    assert not mounted["/var/log/aws-routed-eni"][1].get("readOnly", False)
    assert mounted["/lib/modules"][1]["readOnly"] is True
    assert mounted["/usr/src"][1]["readOnly"] is True
    assert mounted["/var/run/aws-node"][1]["readOnly"] is True


def test_no_manifest_asks_for_privileged():
    for manifest in (AGENT_MANIFEST, FLUENT_BIT_MANIFEST):
        for document in load_documents(manifest):
            for path, key, value in walk(document):
                assert not (key == "privileged" and value is not False), f"{manifest}: {path}"


def documented_capabilities() -> list[str]:
    """The capability table in docker/README.md, in order."""
    readme = (REPOSITORY / "docker" / "README.md").read_text()
    section = readme.split("## Users and capabilities", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z_]+)` \|", section, re.MULTILINE)


def test_capabilities_are_exactly_the_documented_ones(container):
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    added = security["capabilities"]["add"]
    assert added == documented_capabilities() == ["BPF", "NET_ADMIN", "PERFMON"]
    # Each one is explained where it is granted.
    manifest = AGENT_MANIFEST.read_text()
    for capability in added:
        assert re.search(rf"^\s*#\s+{capability}\s+\S", manifest, re.MULTILINE), capability
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsUser"] == 0  # documented in docker/README.md: capabilities need UID 0
    assert security["readOnlyRootFilesystem"] is True


def test_the_configmap_holds_addon_json_the_agent_accepts(addon_config):
    values = read_config_file(addon_config)
    assert values["enable_policy_event_logs"] is True
    assert values["enable_cloudwatch_logs"] is True


def test_the_command_line_is_one_the_cli_accepts(parsed, settings):
    assert parsed.run is agent.run
    validate_agent_settings(settings)
    assert settings.shipping
    assert (settings.node_name, settings.cluster_name) == (NODE_NAME, "my-cluster")
    assert settings.region == "us-west-2"
    assert settings.cloudwatch_log_group == "/aws/eks/my-cluster/cluster"


def test_every_path_the_agent_uses_is_mounted(parsed, settings, daemonset):
    mounts = {m["mountPath"]: m for m in mounts_by_volume(daemonset).values()}

    def mount_of(path: str) -> dict:
        parents = [str(p) for p in PurePosixPath(path).parents]
        (mount_path,) = [m for m in mounts if m == path or m in parents]
        return mounts[mount_path]

    config_mount = mount_of(parsed.config)
    assert config_mount["name"] == "config"
    (volume,) = [v for v in pod_spec(daemonset)["volumes"] if v["name"] == "config"]
    (item,) = volume["configMap"]["items"]
    assert PurePosixPath(config_mount["mountPath"], item["path"]) == PurePosixPath(parsed.config)
    # Policies come from the API, not from a mounted directory.
    assert not settings.policy_dir
    assert mount_of(IPAM_CHECKPOINT)["name"] == "aws-node"
    assert mount_of(settings.log_file)["name"] == "flow-logs"
    assert mount_of(settings.bpf_pin_dir)["name"] == "bpffs"


def test_the_image_is_this_version(container):
    assert container["image"].endswith(f"flowlog:{__version__}")
