"""``flowlog map``: the flow map of local flow logs or of the cluster's log group."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from flowlog.config import OPTIONS_BY_NAME, ConfigError, Settings, load_settings
from flowlog.flowmap import MapOptions, MapReport, write_cloudwatch_map, write_map
from flowlog.flowmap.graph import DEFAULT_MAX_NODES, LEVELS
from flowlog.flowmap.local_files import check_readable
from flowlog.insights.local_logs import live_log_and_backups
from flowlog.insights.timerange import TimeRange, time_range

DEFAULT_OUTPUT = "flow-map.html"
DEFAULT_CLOUDWATCH_SINCE = "1h"
DEFAULT_TIMEOUT_SECONDS = 300.0
# Agent settings this command uses, with the flags people type for them.
SETTING_FLAGS = {
    "cluster_name": ("--cluster-name", "--cluster"),
    "log_group": ("--log-group",),
    "region": ("--region",),
    "cloudwatch_endpoint": ("--cloudwatch-endpoint",),
    "log_file": ("--log-file",),
}

EPILOG = f"""\
examples:
  flowlog map /var/log/aws-routed-eni/network-policy-agent*.log* --output map.html
  flowlog map                                   # this node's flow log and its backups
  flowlog map ./stars-demo/network-policy-agent.log --by workload --output stars.html
  flowlog map --cloudwatch --cluster-name prod --since 1h --output prod.html
  flowlog map --cloudwatch --log-group /aws/k8s-cluster/cluster --region eu-west-1 \\
      --since 2026-11-22T05:00:00Z --until 2026-11-22T06:00:00Z
  flowlog map flows.log --cidr-prefix 16        # outside addresses by /16; 0: one "world"

The page is one HTML file with everything inline: it opens offline in any current
browser and can be attached to a ticket. Boxes are pods (or workloads, or
namespaces) in their namespaces, nodes, and outside networks; an arrow is one
source, destination and port, red and dashed when flows were denied, with the
policy that denied them. Hover or click for details; filter by namespace,
verdict and port; search for a pod. Over --max-nodes pods (default
{DEFAULT_MAX_NODES}) it draws workloads, then namespaces, and says so.

--cloudwatch runs one Logs Insights query over the whole log group (every node's
stream) that adds the flows up in CloudWatch; it returns at most 10,000 rows.
Lines that are not flow-log lines are skipped and counted on stderr.

exit status: 0 when the map is written; 1 when the CloudWatch query failed or
the page could not be written; 2 for bad usage.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "map",
        help="draw who talks to whom, and what policy denied, as one HTML page",
        description="Draw the flow map of local flow-log files (plain, rotated, gzipped) or "
        "of the cluster's flow log in CloudWatch Logs, as a self-contained HTML page.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources",
        nargs="*",
        type=Path,
        metavar="SOURCE",
        help="flow-log files (default: --log-file and its rotated backups)",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path(DEFAULT_OUTPUT),
        metavar="FILE",
        help=f"the page to write (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--by",
        choices=LEVELS,
        default=LEVELS[0],
        help="what a box is (default pod; coarser beyond --max-nodes)",
    )
    parser.add_argument(
        "--cidr-prefix",
        type=int,
        default=MapOptions.ipv4_prefix,
        metavar="BITS",
        help=f"group outside IPv4 addresses by this network (default /{MapOptions.ipv4_prefix}; "
        "0: all as one 'world')",
    )
    parser.add_argument(
        "--cidr6-prefix",
        type=int,
        default=MapOptions.ipv6_prefix,
        metavar="BITS",
        help=f"the same for IPv6 (default /{MapOptions.ipv6_prefix})",
    )
    parser.add_argument(
        "--max-nodes",
        type=int,
        default=DEFAULT_MAX_NODES,
        metavar="N",
        help=f"draw workloads instead of more pods than this, then namespaces (default "
        f"{DEFAULT_MAX_NODES})",
    )
    parser.add_argument(
        "--since", metavar="WHEN", help="start of the time range (CloudWatch default: 1h ago)"
    )
    parser.add_argument("--until", metavar="WHEN", help="end of the time range (default: now)")
    parser.add_argument("--title", default="Flow map", help="the page's title")
    cloudwatch = parser.add_argument_group("CloudWatch (flags > environment > --config)")
    cloudwatch.add_argument(
        "--cloudwatch",
        action="store_true",
        help="query the cluster's log group in CloudWatch Logs instead of reading files",
    )
    cloudwatch.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"stop a query still running after this long (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    cloudwatch.add_argument("--config", metavar="FILE", help="EKS add-on configuration values")
    for name, flags in SETTING_FLAGS.items():
        option = OPTIONS_BY_NAME[name]
        help_text = option.help + (f" [env {', '.join(option.env)}]" if option.env else "")
        cloudwatch.add_argument(*flags, dest=name, metavar=option.metavar, help=help_text)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    output = args.output
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: no directory {output.parent}")
    settings = load_settings(args)
    now = time.time()
    if args.cloudwatch:
        if args.sources:
            raise ConfigError("--cloudwatch: reads the log group, not SOURCE files; give one")
        if args.timeout <= 0:
            raise ConfigError(f"--timeout: must be above 0, got {args.timeout:g}")
        window = time_range(args.since, args.until, now, DEFAULT_CLOUDWATCH_SINCE)
        return _map_cloudwatch(args, settings, window, options)
    window = time_range(args.since, args.until, now, None)
    paths = list(args.sources) or live_log_and_backups(Path(settings.log_file))
    if not paths:
        raise ConfigError(f"no flow log at {settings.log_file} (name the files to read)")
    check_readable(paths)
    since_ms, until_ms = window.milliseconds()
    try:
        report = write_map(
            paths,
            output,
            options,
            since_ms=since_ms,
            until_ms=until_ms,
            title=args.title,
            time_range=_describe_range(args),
        )
    except OSError as error:
        print(f"flowlog: error: --output {output}: {error.strerror}", file=sys.stderr)
        return 1
    _print_report(report)
    return 0


def _options(args: argparse.Namespace) -> MapOptions:
    if not 0 <= args.cidr_prefix <= 32:
        raise ConfigError(f"--cidr-prefix: expected 0 to 32, got {args.cidr_prefix}")
    if not 0 <= args.cidr6_prefix <= 128:
        raise ConfigError(f"--cidr6-prefix: expected 0 to 128, got {args.cidr6_prefix}")
    if args.max_nodes < 1:
        raise ConfigError(f"--max-nodes: expected 1 or more, got {args.max_nodes}")
    return MapOptions(args.by, args.cidr_prefix, args.cidr6_prefix, args.max_nodes)


def _describe_range(args: argparse.Namespace, default_since: str | None = None) -> str:
    since = args.since or default_since
    if not since and not args.until:
        return ""
    return f"from {since or 'the start'} to {args.until or 'now'}"


def _map_cloudwatch(
    args: argparse.Namespace, settings: Settings, window: TimeRange, options: MapOptions
) -> int:
    from flowlog.insights.cloudwatch_query import CloudWatchQueryError, logs_client
    from flowlog.insights.output import Progress

    start, end = window.cloudwatch_seconds()
    try:
        report = write_cloudwatch_map(
            logs_client(settings),
            settings.cloudwatch_log_group,
            start,
            end,
            args.output,
            options,
            timeout=args.timeout,
            progress=Progress(sys.stderr),
            title=args.title,
            time_range=_describe_range(args, DEFAULT_CLOUDWATCH_SINCE),
        )
    except CloudWatchQueryError as error:
        print(f"flowlog: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"flowlog: error: --output {args.output}: {error.strerror}", file=sys.stderr)
        return 1
    _print_report(report)
    return 0


def _print_report(report: MapReport) -> None:
    read = report.read
    if read.bad_lines:
        print(
            f"flowlog: warning: skipped {read.bad_lines:,} lines that are not flow-log lines "
            f"(the first: {read.first_bad_line})",
            file=sys.stderr,
        )
    for damaged in read.damaged_files:
        print(
            f"flowlog: warning: read up to a damaged or unfinished file: {damaged}", file=sys.stderr
        )
    for note in report.graph.notes:
        print(f"flowlog: note: {note}", file=sys.stderr)
    print(f"flowlog: wrote {report.describe()}", file=sys.stderr)
