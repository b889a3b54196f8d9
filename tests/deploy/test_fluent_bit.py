"""fluent-bit/: both configuration formats say the same thing, and it fits flowlog's files."""

import datetime
import fnmatch
import subprocess
import sys
from pathlib import Path, PurePosixPath

import orjson
import pytest

from flowlog.config import Settings
from flowlog.logfile import RotatingLogFile
from tests.core.test_records import aws_v4_record
from tests.deploy.fluent_bit_config import (
    CONFIG_MOUNT,
    FLUENT_BIT_DIR,
    Pipeline,
    expand,
    local_path,
    python_time_format,
    read_classic,
    read_classic_sections,
    read_yaml,
    variables,
)
from tests.deploy.manifests import (
    FLUENT_BIT_MANIFEST,
    host_paths,
    load_documents,
    mounts_by_volume,
    only,
    pod_spec,
    resolved_environment,
    the_container,
)

# The input the EKS user guide gives for Fluent Bit, key for key.
SEED_TAIL_INPUT = {
    "Name": "tail",
    "Tag": "eksnp.*",
    "Path": "/var/log/aws-routed-eni/network-policy-agent*.log",
    "Parser": "json",
    "DB": "/var/log/aws-routed-eni/flb_npagent.db",
    "Mem_Buf_Limit": "5MB",
    "Skip_Long_Lines": "On",
    "Refresh_Interval": "10",
}
# A line in the exact format flowlog writes.
EXAMPLE_LINE = (
    '{"level":"info","timestamp":"2026-11-22T05:00:00.123Z","logger":"ebpf-client",'
    '"msg":"Flow Info: ","Src IP":"10.0.0.5","Src Port":38971,"Dest IP":"10.0.1.7",'
    '"Dest Port":80,"Proto":"TCP","Verdict":"DENY","Direction":"ingress",'
    '"Tier":"NETWORK_POLICY","Packet Size":60,"Node":"ip-10-0-0-1","Pod":"frontend-abc",'
    '"Namespace":"stars","Policy":"default-deny","Policy Namespace":"stars"}'
)
CONFIG_FILES = ("fluent-bit.conf", "parsers.conf", "fluent-bit.yaml")
NODE_NAME = "ip-10-0-0-1.eu-west-1.compute.internal"


@pytest.fixture(scope="module")
def classic() -> Pipeline:
    return read_classic(FLUENT_BIT_DIR / "fluent-bit.conf")


@pytest.fixture(scope="module")
def yaml_format() -> Pipeline:
    return read_yaml(FLUENT_BIT_DIR / "fluent-bit.yaml")


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return load_documents(FLUENT_BIT_MANIFEST)


def tail_input(pipeline: Pipeline) -> dict[str, str]:
    (tail,) = pipeline.inputs
    return tail


def test_the_classic_input_is_the_eks_guides_word_for_word():
    (tail,) = [
        s for s in read_classic_sections(FLUENT_BIT_DIR / "fluent-bit.conf") if s.name == "INPUT"
    ]
    assert tail.entries == SEED_TAIL_INPUT


def test_both_formats_say_the_same_thing(classic, yaml_format):
    assert yaml_format.service == classic.service
    assert yaml_format.parsers == classic.parsers
    assert yaml_format.inputs == classic.inputs
    assert yaml_format.filters == classic.filters == []
    assert yaml_format.outputs == classic.outputs


def test_the_input_uses_the_parser_both_formats_define(classic, yaml_format):
    for pipeline in (classic, yaml_format):
        (parser,) = [p for p in pipeline.parsers if p["name"] == tail_input(pipeline)["parser"]]
        assert parser["format"] == "json"
        assert parser["time_key"] == "timestamp"
        assert parser["time_keep"] == "on"
        # No offset or system time zone: the time is read as UTC, which it is.
        assert "time_offset" not in parser and "time_system_timezone" not in parser


def test_the_output_reads_what_the_input_tags(classic):
    (output,) = classic.outputs
    assert output["name"] == "cloudwatch_logs"
    assert fnmatch.fnmatchcase(
        "eksnp.var.log.aws-routed-eni.network-policy-agent.log", output["match"]
    )
    assert output["match"] == tail_input(classic)["tag"]
    assert output["auto_create_group"] == "on"


def test_group_and_stream_are_the_ones_flowlog_ships_to(classic):
    (output,) = classic.outputs
    environment = {"CLUSTER_NAME": "prod", "MY_NODE_NAME": NODE_NAME, "AWS_REGION": "eu-west-1"}
    settings = Settings(cluster_name="prod", node_name=NODE_NAME, region="eu-west-1")
    assert expand(output["log_group_name"], environment) == settings.cloudwatch_log_group
    assert expand(output["log_stream_name"], environment) == settings.cloudwatch_log_stream
    assert expand(output["region"], environment) == settings.region


def flowlog_lines(tmp_path: Path) -> list[bytes]:
    """Lines written by flowlog itself: raw AWS records replayed through its pipeline."""
    capture = tmp_path / "events.bin"
    capture.write_bytes(
        aws_v4_record("10.0.0.5", 38971, "10.0.1.7", 80, 6, 0, 60, 0, 2)
        + aws_v4_record("10.0.0.5", 53, "10.0.1.8", 5353, 17, 1, 1400, 1, 4)
    )
    log = tmp_path / "network-policy-agent.log"
    argv = ["replay", str(capture), "--layout", "aws-v4", "--log-file", str(log)]
    result = subprocess.run(
        [sys.executable, "-m", "flowlog", *argv, "--node-name", "ip-10-0-0-1"],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return log.read_bytes().splitlines()


def test_the_time_format_parses_the_lines_flowlog_writes(classic, tmp_path):
    (parser,) = classic.parsers
    time_format = python_time_format(parser["time_format"])
    before = datetime.datetime.now(datetime.UTC)
    for line in [EXAMPLE_LINE.encode(), *flowlog_lines(tmp_path)]:
        record = orjson.loads(line)
        text = record[parser["time_key"]]
        # strptime matches the whole string or fails: the format covers every character.
        parsed = datetime.datetime.strptime(text, time_format).replace(tzinfo=datetime.UTC)
        assert parsed.isoformat(timespec="milliseconds").replace("+00:00", "Z") == text
    assert parsed >= before.replace(microsecond=before.microsecond // 1000 * 1000)


def test_the_path_matches_live_and_rotated_files_only(classic, tmp_path):
    pattern = PurePosixPath(tail_input(classic)["path"])
    live = tmp_path / "network-policy-agent.log"
    line = EXAMPLE_LINE.encode() + b"\n"
    rotating = RotatingLogFile(live, max_bytes=len(line) * 2, max_backups=0, compress=False)
    rotating.write(line * 5, 5)
    rotating.close()
    rotated = sorted(p.name for p in tmp_path.iterdir() if p != live)
    assert len(rotated) == 2 and all(name.endswith(".log") for name in rotated)

    compressing = RotatingLogFile(live, max_bytes=len(line) * 2, max_backups=0, compress=True)
    compressing.write(line * 3, 3)
    compressing.wait_housekeeping()
    compressing.close()
    gzipped = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".gz"))
    assert gzipped

    read = [live.name, *rotated, "network-policy-agent-2026-08-07T15-04-05.000.log"]
    not_read = [
        *gzipped,
        "network-policy-agent-2026-08-07T15-04-05.000.log.gz",
        "network-policy-agent-2026-08-07T15-04-05.000.log.gz.tmp",
        # flowlog's CloudWatch checkpoint and its partial write, beside the log.
        "network-policy-agent.cloudwatch-checkpoint.json",
        "network-policy-agent.cloudwatch-checkpoint.json.tmp",
        "flb_npagent.db",
        "flb_npagent.db-wal",
        "flb_npagent.db-shm",
        "ipamd.log",
    ]

    def tailed(name: str) -> bool:
        return fnmatch.fnmatchcase(name, pattern.name)

    assert [name for name in read if not tailed(name)] == []
    assert [name for name in not_read if tailed(name)] == []
    assert str(pattern.parent) == str(PurePosixPath(Settings().log_file).parent)
    assert PurePosixPath(tail_input(classic)["db"]).parent == pattern.parent


def test_the_configmap_holds_these_very_files(documents):
    config_map = only(documents, "ConfigMap", "fluent-bit-flowlog")
    for name in CONFIG_FILES:
        assert config_map["data"][name] == (FLUENT_BIT_DIR / name).read_text(), name


def test_the_pod_finds_its_configuration_where_the_files_say(documents):
    daemonset = only(documents, "DaemonSet")
    assert mounts_by_volume(daemonset)["config"]["mountPath"] == CONFIG_MOUNT
    (volume,) = [v for v in pod_spec(daemonset)["volumes"] if v["name"] == "config"]
    mounted = {item["path"] for item in volume["configMap"]["items"]}
    assert mounted == set(CONFIG_FILES)
    (config_flag,) = [a for a in the_container(daemonset)["args"] if a.startswith("--config=")]
    assert local_path(config_flag.removeprefix("--config=")).name in mounted
    (service,) = [
        s for s in read_classic_sections(FLUENT_BIT_DIR / "fluent-bit.conf") if s.name == "SERVICE"
    ]
    assert local_path(service.entries["Parsers_File"]).name in mounted


def test_the_pod_provides_every_variable_the_configuration_uses(documents):
    daemonset = only(documents, "DaemonSet")
    environment = resolved_environment(the_container(daemonset), documents, NODE_NAME)
    for name in CONFIG_FILES:
        assert variables((FLUENT_BIT_DIR / name).read_text()) <= set(environment), name
    assert environment["MY_NODE_NAME"] == NODE_NAME


def test_the_log_directory_is_mounted_read_write_for_the_db(documents, classic):
    daemonset = only(documents, "DaemonSet")
    directory = str(PurePosixPath(tail_input(classic)["db"]).parent)
    mount_path, mount = host_paths(daemonset)[directory]
    assert mount_path == directory and not mount.get("readOnly", False)


def test_the_image_is_pinned_and_the_container_holds_no_capabilities(documents):
    container = the_container(only(documents, "DaemonSet"))
    image, _, tag = container["image"].rpartition(":")
    assert image in (
        "cr.fluentbit.io/fluent/fluent-bit",
        "public.ecr.aws/aws-observability/aws-for-fluent-bit",
    )
    assert tag[0].isdigit() and tag.count(".") == 2
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
