"""Settings: precedence, the add-on configuration file, and one-line errors with status 2."""

import argparse
import subprocess
import sys

import pytest

from flowlog.config import ConfigError, Settings, add_arguments, load_settings, read_config_file

ADDON_JSON = """{
    "enableNetworkPolicy": "true",
    "nodeAgent": {
        "enablePolicyEventLogs": "true",
        "enableCloudWatchLogs": "true",
        "healthProbeBindAddr": "8163",
        "metricsBindAddr": "8162"
    }
}"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def run_flowlog(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowlog", *argv], capture_output=True, text=True, timeout=60
    )


def test_defaults_match_the_go_agent():
    settings = load_settings(parse(), environ={})
    assert settings.log_file == "/var/log/aws-routed-eni/network-policy-agent.log"
    assert (settings.metrics_bind_addr, settings.health_probe_bind_addr) == (":8162", ":8163")
    assert (
        settings.log_file_max_size,
        settings.log_file_max_backups,
        settings.log_file_max_age,
    ) == (200, 8, 30)
    assert not settings.enable_policy_event_logs and not settings.enable_cloudwatch_logs
    assert settings.flow_log_verdicts == {"ACCEPT", "DENY", "EXPIRED/DELETED"}
    assert settings.enforcing_mode == "standard"


def test_the_addon_configuration_file_with_string_booleans(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(ADDON_JSON)
    settings = load_settings(parse("--config", str(path)), environ={})
    assert settings.enable_policy_event_logs and settings.enable_cloudwatch_logs
    assert (settings.metrics_bind_addr, settings.health_probe_bind_addr) == (":8162", ":8163")


def test_yaml_configuration(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("nodeAgent:\n  enablePolicyEventLogs: true\n  logFileMaxSize: 50\n")
    settings = load_settings(parse("--config", str(path)), environ={})
    assert settings.enable_policy_event_logs and settings.log_file_max_size == 50


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        '{"nodeAgent": {"clusterName": "from-file", "nodeName": "file-node",'
        ' "region": "eu-west-1", "enforcingMode": "strict"}}'
    )
    environ = {"CLUSTER_NAME": "from-env", "MY_NODE_NAME": "env-node"}
    settings = load_settings(parse("--config", str(path), "--cluster-name", "from-flag"), environ)
    assert settings.cluster_name == "from-flag"  # flag over environment and file
    assert settings.node_name == "env-node"  # environment over file
    assert settings.region == "eu-west-1"  # file over default
    assert settings.enforcing_mode == "strict"
    assert load_settings(parse(), {"NETWORK_POLICY_ENFORCING_MODE": "strict"}).enforcing_mode == (
        "strict"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--enable-policy-event-logs",), True),
        (("--enable-policy-event-logs=true",), True),
        (("--enable-policy-event-logs=false",), False),
        (("--enable-policy-event-logs", "False"), False),
    ],
)
def test_boolean_flags_take_the_go_agent_forms(argv, expected):
    assert load_settings(parse(*argv), environ={}).enable_policy_event_logs is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8163", ":8163"),
        (":8163", ":8163"),
        ("127.0.0.1:9000", "127.0.0.1:9000"),
        ("[::1]:8163", "::1:8163"),
    ],
)
def test_bind_addresses_accept_a_bare_port(value, expected):
    settings = load_settings(parse("--health-probe-bind-addr", value), environ={})
    assert settings.health_probe_bind_addr == expected


def test_verdict_selection():
    assert load_settings(parse("--flow-log-verdicts", "deny"), {}).flow_log_verdicts == {"DENY"}
    assert load_settings(parse("--flow-log-verdicts", "ACCEPT,expired"), {}).flow_log_verdicts == {
        "ACCEPT",
        "EXPIRED/DELETED",
    }


def test_log_group_and_stream_names():
    assert Settings(cluster_name="prod").cloudwatch_log_group == "/aws/eks/prod/cluster"
    assert Settings().cloudwatch_log_group == "/aws/k8s-cluster/cluster"
    assert Settings(log_group="/custom").cloudwatch_log_group == "/custom"
    assert Settings(node_name="ip-1").cloudwatch_log_stream == "aws-network-policy-agent-audit-ip-1"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            '{"nodeAgent": {"enablePolicyEventLog": "true"}}',
            "nodeAgent.enablePolicyEventLog: unknown key",
        ),
        ('{"nodeAgnt": {}}', "nodeAgnt: unknown key"),
        (
            '{"nodeAgent": {"enablePolicyEventLogs": "maybe"}}',
            "nodeAgent.enablePolicyEventLogs: expected true or false, got 'maybe'",
        ),
        (
            '{"nodeAgent": {"logFileMaxSize": "big"}}',
            "nodeAgent.logFileMaxSize: expected a whole number",
        ),
        (
            '{"nodeAgent": {"metricsBindAddr": "80800"}}',
            "nodeAgent.metricsBindAddr: expected [host]:port",
        ),
        ('{"nodeAgent": [1]}', "nodeAgent: expected an object"),
        ('{"nodeAgent": {', "not valid JSON or YAML"),
    ],
)
def test_bad_files_name_the_key_and_the_problem(tmp_path, document, message):
    path = tmp_path / "config.json"
    path.write_text(document)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_config_file(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent", "--log-file-max-size", "0"], "--log-file-max-size: must be at least 1, got 0"),
        (
            ["agent", "--enforcing-mode", "lax"],
            "--enforcing-mode: expected one of standard, strict",
        ),
        (["agent", "--config", "/nonexistent/flowlog.json"], "cannot read"),
        (["agent", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (
            ["agent", "--enable-cloudwatch-logs", "--log-file", "stdout"],
            "--enable-cloudwatch-logs: needs a flow log file",
        ),
        (["replay", "/nonexistent", "--layout", "aws-v4"], "/nonexistent: no such file"),
        (["replay", "x", "--layout", "aws-v5"], "invalid choice: 'aws-v5'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(argv, message):
    result = run_flowlog(*argv)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("flowlog") and message in line


def test_environment_errors_name_the_variable():
    with pytest.raises(ConfigError, match="environment NETWORK_POLICY_ENFORCING_MODE"):
        load_settings(parse(), {"NETWORK_POLICY_ENFORCING_MODE": "loose"})
