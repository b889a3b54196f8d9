"""Agent settings: flags, environment, the EKS add-on configuration file, defaults.

Each setting is declared once in ``OPTIONS``, which drives the command-line
flags, the configuration file keys, the environment variables and the README's
table. Precedence: flags > environment > file > defaults.

The configuration file holds the EKS add-on configuration values (JSON or
YAML), for example::

    {"enableNetworkPolicy": "true",
     "nodeAgent": {"enablePolicyEventLogs": "true", "enableCloudWatchLogs": "true",
                   "healthProbeBindAddr": "8163", "metricsBindAddr": "8162"}}

Booleans may be strings, as in the add-on. Settings of flowlog's own sit under
``nodeAgent`` too (``logFile``, ``clusterName``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from flowlog.flows.timeouts import IdleTimeouts, parse_idle_timeouts
from flowlog.records import LAYOUTS, VERDICT_NAMES

DEFAULT_LOG_FILE = "/var/log/aws-routed-eni/network-policy-agent.log"
DEFAULT_IPAM_CHECKPOINT = "/var/run/aws-node/ipam.json"
DEFAULT_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
STDOUT = "stdout"
MEGABYTE = 1024 * 1024
MAX_COMPRESS_LEVEL = 3
AGGREGATION_LEVELS = ("flow", "peer", "workload")
WATCH_PODS = ("all", "node", "none")


class ConfigError(ValueError):
    """A bad flag, environment variable or configuration file entry.

    The message is one line that names the key and the problem; the command
    line turns it into exit status 2.
    """


# --- value parsers: each takes the raw value and returns it typed or raises ----


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_int(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _parse_seconds(value: Any) -> float:
    try:
        seconds = float(str(value).strip().removesuffix("s"))
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 3600:
        raise ValueError(f"must be between 0 and 3600 seconds, got {seconds:g}")
    return seconds


def parse_bind_addr(value: Any) -> tuple[str, int]:
    """``[host]:port`` or a bare port, as the add-on's ``"8163"``."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host = ""
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected [host]:port or a port number, got {text!r}")
    return host, int(port)


def _bind_addr(value: Any) -> str:
    host, port = parse_bind_addr(value)
    return f"{host}:{port}"


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _string(value: Any) -> str:
    if isinstance(value, list | dict):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value).strip()


def _parse_compress_level(value: Any) -> int:
    level = _parse_int(0)(value)
    if level > MAX_COMPRESS_LEVEL:
        raise ValueError(f"expected 0-{MAX_COMPRESS_LEVEL} (ISA-L's levels), got {level}")
    return level


def parse_verdicts(value: Any) -> frozenset[str]:
    """``ACCEPT,DENY``, ``all``, or a list; names as written in the flow log."""
    items = value if isinstance(value, list) else str(value).split(",")
    names = {str(item).strip().upper() for item in items if str(item).strip()}
    aliases = {"EXPIRED": "EXPIRED/DELETED", "DELETED": "EXPIRED/DELETED"}
    names = {aliases.get(name, name) for name in names}
    if names == {"ALL"}:
        return frozenset(VERDICT_NAMES.values())
    unknown = names - set(VERDICT_NAMES.values())
    if unknown or not names:
        raise ValueError(f"expected a list of ACCEPT, DENY, EXPIRED or 'all', got {value!r}")
    return frozenset(names)


# --- the settings ----------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting, as a flag, a configuration key and maybe an environment variable."""

    name: str  # attribute of Settings
    parse: Callable[[Any], Any]
    help: str
    config_key: str | None = None  # under nodeAgent in the configuration file
    env: tuple[str, ...] = ()
    metavar: str | None = None
    is_flag_bool: bool = False  # --flag alone means true; --flag=false also works

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option(
        "enable_policy_event_logs",
        parse_bool,
        "write a flow log line for every verdict",
        "enablePolicyEventLogs",
        is_flag_bool=True,
    ),
    Option(
        "enable_cloudwatch_logs",
        parse_bool,
        "ship the flow log to CloudWatch Logs (needs policy event logs on)",
        "enableCloudWatchLogs",
        is_flag_bool=True,
    ),
    Option(
        "metrics_bind_addr",
        _bind_addr,
        "Prometheus metrics address, [host]:port",
        "metricsBindAddr",
        metavar="ADDR",
    ),
    Option(
        "health_probe_bind_addr",
        _bind_addr,
        "/healthz and /readyz address, [host]:port",
        "healthProbeBindAddr",
        metavar="ADDR",
    ),
    Option("log_file", _string, f"flow log path, or '{STDOUT}'", "logFile", metavar="PATH"),
    Option(
        "log_file_max_size",
        _parse_int(1),
        "rotate the flow log at this size, in MB",
        "logFileMaxSize",
        metavar="MB",
    ),
    Option(
        "log_file_max_backups",
        _parse_int(0),
        "rotated flow logs to keep",
        "logFileMaxBackups",
        metavar="N",
    ),
    Option(
        "log_file_max_age",
        _parse_int(0),
        "delete rotated flow logs older than this many days (0: keep)",
        "logFileMaxAge",
        metavar="DAYS",
    ),
    Option(
        "log_file_compress",
        parse_bool,
        "gzip rotated flow logs",
        "logFileCompress",
        is_flag_bool=True,
    ),
    Option(
        "log_file_compress_level",
        _parse_compress_level,
        f"compression level of rotated flow logs, 0 (fastest) to {MAX_COMPRESS_LEVEL}",
        "logFileCompressLevel",
        metavar="LEVEL",
    ),
    Option(
        "flow_log_verdicts",
        parse_verdicts,
        "verdicts to write: a list of ACCEPT, DENY, EXPIRED, or all",
        "flowLogVerdicts",
        metavar="LIST",
    ),
    Option(
        "flow_log_aggregate",
        _parse_int(0),
        "write one summary per flow key every this many seconds instead of a line "
        "per verdict (0: a line per verdict)",
        "flowLogAggregate",
        metavar="SECONDS",
    ),
    Option(
        "flow_log_aggregate_by",
        _choice(*AGGREGATION_LEVELS),
        "what a summary's key keeps: flow (the 5-tuple), peer (both ends and the "
        "destination port), workload (pods of one workload together)",
        "flowLogAggregateBy",
        metavar="LEVEL",
    ),
    Option(
        "flow_idle_timeouts",
        parse_idle_timeouts,
        "seconds without a packet before a flow ends, by protocol: "
        "tcp=300,tcp-half-open=30,udp=60,icmp=30,other=60",
        "flowIdleTimeouts",
        metavar="LIST",
    ),
    Option(
        "enable_ipv6",
        parse_bool,
        "the cluster is IPv6 (pinned ring buffers default to the aws-v6 layout)",
        "enableIpv6",
        is_flag_bool=True,
    ),
    Option(
        "cluster_name",
        _string,
        "EKS cluster name; picks /aws/eks/<name>/cluster",
        "clusterName",
        env=("CLUSTER_NAME",),
        metavar="NAME",
    ),
    Option(
        "node_name",
        _string,
        "this node's name, written in every line and in the CloudWatch stream name",
        "nodeName",
        env=("MY_NODE_NAME",),
        metavar="NAME",
    ),
    Option(
        "region",
        _string,
        "AWS region of the CloudWatch Logs endpoint",
        "region",
        env=("AWS_REGION", "AWS_DEFAULT_REGION"),
        metavar="REGION",
    ),
    Option(
        "cloudwatch_endpoint",
        _string,
        "CloudWatch Logs endpoint URL (default: AWS's)",
        "cloudWatchEndpoint",
        metavar="URL",
    ),
    Option(
        "log_group",
        _string,
        "log group (default /aws/eks/<cluster>/cluster, or "
        "/aws/k8s-cluster/cluster without a cluster name)",
        "logGroup",
        metavar="NAME",
    ),
    Option(
        "cloudwatch_flush_interval",
        _parse_seconds,
        "longest an event waits before it is sent to CloudWatch, in seconds",
        "cloudWatchFlushInterval",
        metavar="SECONDS",
    ),
    Option(
        "enforcing_mode",
        _choice("standard", "strict"),
        "standard: pods allow all until their policies arrive; strict: deny",
        "enforcingMode",
        env=("NETWORK_POLICY_ENFORCING_MODE",),
        metavar="MODE",
    ),
    Option(
        "policy_dir",
        _string,
        "directory of PolicyEndpoint YAML files to enforce",
        "policyDir",
        metavar="DIR",
    ),
    Option(
        "kubeconfig",
        _string,
        "kubeconfig for the Kubernetes API outside a cluster (in a pod the service "
        "account is used)",
        "kubeconfig",
        env=("KUBECONFIG",),
        metavar="PATH",
    ),
    Option(
        "service_account_dir",
        _string,
        "where the pod's service account token and CA are mounted",
        "serviceAccountDir",
        metavar="DIR",
    ),
    Option(
        "watch_pods",
        _choice(*WATCH_PODS),
        "pods to name flows by: all (the cluster's), node (this node's only), none",
        "watchPods",
        metavar="WHICH",
    ),
    Option(
        "ipam_checkpoint",
        _string,
        "the VPC CNI's checkpoint, naming this node's pods without the API",
        "ipamCheckpoint",
        metavar="PATH",
    ),
    Option(
        "ringbuf_pin",
        _string,
        "read this pinned ring buffer instead of loading "
        "programs, e.g. /sys/fs/bpf/globals/aws/maps/global_policy_events",
        "ringbufPin",
        metavar="PATH",
    ),
    Option(
        "ringbuf_layout",
        _choice(*(n for n in LAYOUTS if n != "flowlog")),
        "record layout of a pinned ring buffer",
        "ringbufLayout",
        metavar="LAYOUT",
    ),
    Option(
        "ringbuf_size",
        _parse_int(4096),
        "ring buffer size of our programs, in bytes",
        "ringbufSize",
        metavar="BYTES",
    ),
    Option(
        "bpf_pin_dir", _string, "where our programs and maps are pinned", "bpfPinDir", metavar="DIR"
    ),
    Option(
        "program_cache_dir",
        _string,
        "where compiled programs are kept, so a restart need not compile them ('' : never)",
        "programCacheDir",
        metavar="DIR",
    ),
    Option(
        "keep_programs",
        parse_bool,
        "leave programs attached (enforcement in place) when the agent stops",
        "keepPrograms",
        is_flag_bool=True,
    ),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
OPTIONS_BY_KEY = {option.config_key: option for option in OPTIONS if option.config_key}
# Keys of the add-on configuration that are valid but not ours to act on.
IGNORED_TOP_LEVEL_KEYS = {"enableNetworkPolicy"}


@dataclass(frozen=True)
class Settings:
    enable_policy_event_logs: bool = False
    enable_cloudwatch_logs: bool = False
    metrics_bind_addr: str = ":8162"
    health_probe_bind_addr: str = ":8163"
    log_file: str = DEFAULT_LOG_FILE
    log_file_max_size: int = 200
    log_file_max_backups: int = 8
    log_file_max_age: int = 30
    log_file_compress: bool = True
    log_file_compress_level: int = 1
    # The Go agent writes every verdict; so do we, unless told otherwise.
    flow_log_verdicts: frozenset[str] = field(
        default_factory=lambda: frozenset(VERDICT_NAMES.values())
    )
    flow_log_aggregate: int = 0
    flow_log_aggregate_by: str = "peer"
    flow_idle_timeouts: IdleTimeouts = field(default_factory=IdleTimeouts)
    enable_ipv6: bool = False
    cluster_name: str = ""
    node_name: str = field(default_factory=socket.gethostname)
    region: str = ""
    cloudwatch_endpoint: str = ""
    log_group: str = ""
    cloudwatch_flush_interval: float = 5.0
    enforcing_mode: str = "standard"
    policy_dir: str = ""
    kubeconfig: str = ""
    service_account_dir: str = DEFAULT_SERVICE_ACCOUNT_DIR
    watch_pods: str = "all"
    ipam_checkpoint: str = DEFAULT_IPAM_CHECKPOINT
    ringbuf_pin: str = ""
    ringbuf_layout: str = ""
    # 466,000 of our 72-byte records: half a second at a million events a second,
    # to ride out a stall of the writer (a page-cache hiccup, a slow disk).
    ringbuf_size: int = 32 * MEGABYTE
    bpf_pin_dir: str = "/sys/fs/bpf/flowlog"
    program_cache_dir: str = "/var/cache/flowlog"
    keep_programs: bool = False
    config: str = ""  # the file these came from, if any

    @property
    def log_to_stdout(self) -> bool:
        return self.log_file == STDOUT

    @property
    def log_file_max_bytes(self) -> int:
        return self.log_file_max_size * MEGABYTE

    @property
    def cloudwatch_log_group(self) -> str:
        if self.log_group:
            return self.log_group
        if self.cluster_name:
            return f"/aws/eks/{self.cluster_name}/cluster"
        return "/aws/k8s-cluster/cluster"

    @property
    def cloudwatch_log_stream(self) -> str:
        return f"aws-network-policy-agent-audit-{self.node_name}"

    @property
    def pinned_ringbuf_layout(self) -> str:
        if self.ringbuf_layout:
            return self.ringbuf_layout
        return "aws-v6" if self.enable_ipv6 else "aws-v4"

    @property
    def shipping(self) -> bool:
        """CloudWatch shipping happens only when there is a flow log to ship."""
        return self.enable_cloudwatch_logs and self.enable_policy_event_logs

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# --- loading ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's flags, shared by ``agent``, ``replay`` and ``ship``."""
    group = parser.add_argument_group("agent settings (flags > environment > --config > defaults)")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="EKS add-on configuration values, JSON or YAML; watched and reloaded on change",
    )
    for option in OPTIONS:
        help_text = option.help
        if option.env:
            help_text += f" [env {', '.join(option.env)}]"
        if option.is_flag_bool:
            group.add_argument(
                option.flag,
                dest=option.name,
                nargs="?",
                const="true",
                metavar="BOOL",
                help=help_text,
            )
        else:
            group.add_argument(
                option.flag, dest=option.name, metavar=option.metavar, help=help_text
            )


def _apply(values: dict[str, Any], option: Option, raw: Any, source: str) -> None:
    try:
        values[option.name] = option.parse(raw)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings a configuration file sets, validated; raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read: {error.strerror}") from None
    try:
        document = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as error:
        problem = str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid JSON or YAML: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected an object at the top level")
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key in IGNORED_TOP_LEVEL_KEYS:
            continue
        if key != "nodeAgent":
            raise ConfigError(f"{path}: {key}: unknown key")
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: nodeAgent: expected an object")
        for sub_key, sub_value in value.items():
            option = OPTIONS_BY_KEY.get(sub_key)
            if option is None:
                raise ConfigError(f"{path}: nodeAgent.{sub_key}: unknown key")
            _apply(values, option, sub_value, f"{path}: nodeAgent.{sub_key}")
    return values


def load_settings(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Settings:
    """Settings from flags > environment > configuration file > defaults."""
    environ = os.environ if environ is None else environ
    flag_values = vars(args) if args is not None else {}
    config_path = config_path or flag_values.get("config") or ""
    values: dict[str, Any] = read_config_file(config_path) if config_path else {}
    for option in OPTIONS:
        for variable in option.env:
            if environ.get(variable):
                _apply(values, option, environ[variable], f"environment {variable}")
                break
    for option in OPTIONS:
        raw = flag_values.get(option.name)
        if raw is not None:
            _apply(values, option, raw, option.flag)
    return Settings(config=config_path, **values)


def check_agent_settings(settings: Settings) -> list[str]:
    """Combinations that are allowed but do something a user may not expect.

    Returned as one-line warnings for the agent to log at start and on reload.
    """
    warnings = []
    if settings.enable_cloudwatch_logs and not settings.enable_policy_event_logs:
        warnings.append(
            "enableCloudWatchLogs is on but enablePolicyEventLogs is off: nothing is "
            "shipped until policy event logs are enabled"
        )
    return warnings


def validate_agent_settings(settings: Settings) -> None:
    """Combinations that cannot work; raises ConfigError naming the key."""
    if settings.enable_cloudwatch_logs and settings.log_to_stdout:
        raise ConfigError(
            "--enable-cloudwatch-logs: needs a flow log file (it is the durable queue "
            "CloudWatch shipping reads); --log-file stdout cannot be shipped"
        )
    if settings.ringbuf_pin and settings.policy_dir:
        raise ConfigError(
            "--ringbuf-pin: reads another agent's events and loads no programs; "
            "it cannot be combined with --policy-dir"
        )
