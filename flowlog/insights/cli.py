"""``flowlog query`` and ``flowlog insights install``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import botocore.exceptions
import orjson

from flowlog.config import OPTIONS_BY_NAME, ConfigError, Settings, load_settings
from flowlog.insights.cloudwatch_query import (
    CloudWatchQueryError,
    describe_client_error,
    logs_client,
    run_query,
)
from flowlog.insights.definitions import FOLDER, install_definitions
from flowlog.insights.evaluator import execute, plan
from flowlog.insights.local_logs import LocalFlowLogs, live_log_and_backups
from flowlog.insights.output import Progress, render_json, render_table
from flowlog.insights.parser import INSIGHTS_ONLY_COMMANDS, SUPPORTED_COMMANDS, parse_query
from flowlog.insights.saved import (
    DIRECTORY_ENV,
    PLACEHOLDER,
    ad_hoc_query,
    find_saved_query,
    list_saved_queries,
    saved_queries_directory,
)
from flowlog.insights.timerange import time_range

DEFAULT_SINCE = "1h"
# A bare word that is one of these is query text, not the name of a saved query.
COMMAND_WORDS = frozenset(SUPPORTED_COMMANDS) | INSIGHTS_ONLY_COMMANDS
DEFAULT_TIMEOUT_SECONDS = 300.0
# Agent settings these commands use, with the flags people type for them.
SETTING_FLAGS = {
    "cluster_name": ("--cluster", "--cluster-name"),
    "log_group": ("--log-group",),
    "region": ("--region",),
    "cloudwatch_endpoint": ("--cloudwatch-endpoint",),
}

QUERY_EXAMPLES = f"""\
examples:
  flowlog query --list
  flowlog query denied-flows --cluster prod --since 1h
  flowlog query pod-flows --param ip=10.0.0.5 --cluster prod --since 6h --output json
  flowlog query 'filter Verdict = "DENY" | stats count(*) by bin(5m)' --cluster prod --since 1d
  flowlog query --local /var/log/aws-routed-eni/network-policy-agent*.log* top-denied-sources
  flowlog query --local                        # this node's flow log and its backups
      denied-flows --since 30m

NAME is a saved query (see --list: files in ${DIRECTORY_ENV}, else the repository's
config/insights, else share/flowlog/insights under the Python prefix or /usr), a
path to an .insights file, or query text. Parameters ({{{{ip}}}}) are filled from
--param. In CloudWatch the whole Insights language works; --local runs
  {", ".join(SUPPORTED_COMMANDS)}
and refuses anything else before reading a line. Times: 15m, 1h, 2d (ago),
2026-11-22T05:00:00Z, now. Without a sort or stats, rows come newest first; at most
10,000 rows unless the query has a limit.
"""

INSTALL_EXAMPLES = f"""\
examples:
  flowlog insights install --cluster prod
  flowlog insights install --log-group /aws/k8s-cluster/cluster --region eu-west-1

Every saved query becomes a CloudWatch Logs Insights query definition named
{FOLDER}<name> (the console shows a {FOLDER.rstrip("/")} folder) on the flow log group, with
its {{{{parameters}}}}. Running it again updates them in place; nothing is duplicated.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    query = subparsers.add_parser(
        "query",
        help="run a saved or ad-hoc Logs Insights query, in CloudWatch or on local flow logs",
        description="Run a Logs Insights query on the flow log group in CloudWatch, or with "
        "--local on flow-log files (rotated and gzipped ones too), and print the rows.",
        epilog=QUERY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query.add_argument("query", nargs="?", metavar="NAME|QUERY", help="saved query or query text")
    query.add_argument("--list", action="store_true", help="list the saved queries and exit")
    query.add_argument(
        "--local",
        nargs="*",
        metavar="PATH",
        help="query these flow-log files instead of CloudWatch (default: --log-file and its "
        "rotated backups); the query may come last",
    )
    query.add_argument(
        "--since",
        metavar="WHEN",
        help=f"start of the time range (CloudWatch default: {DEFAULT_SINCE} ago)",
    )
    query.add_argument("--until", metavar="WHEN", help="end of the time range (default: now)")
    query.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of a {{NAME}} placeholder; repeat for several",
    )
    query.add_argument("--output", choices=("table", "json"), default="table")
    query.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"stop a CloudWatch query still running after this long (default "
        f"{DEFAULT_TIMEOUT_SECONDS:g})",
    )
    _add_setting_flags(query, with_log_file=True)
    query.set_defaults(run=run_query_command)

    insights = subparsers.add_parser(
        "insights",
        help="manage the saved queries in CloudWatch (install them as query definitions)",
        description="Manage flowlog's saved Logs Insights queries in CloudWatch.",
        epilog=INSTALL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    insights.set_defaults(run=lambda args: _usage(insights))
    actions = insights.add_subparsers(title="actions", metavar="ACTION")
    install = actions.add_parser(
        "install",
        help=f"put every saved query into CloudWatch as a query definition in {FOLDER}",
        description="Create or update one CloudWatch query definition per saved query.",
        epilog=INSTALL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_setting_flags(install, with_log_file=False)
    install.set_defaults(run=run_install_command)


def _add_setting_flags(parser: argparse.ArgumentParser, with_log_file: bool) -> None:
    group = parser.add_argument_group("where (flags > environment > --config)")
    group.add_argument("--config", metavar="FILE", help="EKS add-on configuration values")
    names = dict(SETTING_FLAGS)
    if with_log_file:
        names["log_file"] = ("--log-file",)
    for name, flags in names.items():
        option = OPTIONS_BY_NAME[name]
        help_text = option.help + (f" [env {', '.join(option.env)}]" if option.env else "")
        group.add_argument(*flags, dest=name, metavar=option.metavar, help=help_text)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# --- flowlog query ------------------------------------------------------------------


def run_query_command(args: argparse.Namespace) -> int:
    if args.list:
        return _list_saved(args.output)
    local_paths = list(args.local) if args.local is not None else None
    query_argument = args.query
    if query_argument is None and local_paths:
        query_argument = local_paths.pop()  # "--local PATH... QUERY"
    if not query_argument:
        raise ConfigError("name a saved query or give query text (flowlog query --list)")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout: must be above 0, got {args.timeout:g}")
    settings = load_settings(args)
    text = _query_text(query_argument, _parameters(args.param))
    if local_paths is not None:
        return _run_local(args, settings, text, local_paths)
    return _run_cloudwatch(args, settings, text)


def _parameters(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not PLACEHOLDER.fullmatch("{{" + name.strip() + "}}"):
            raise ConfigError(f"--param {pair}: expected NAME=VALUE")
        values[name.strip()] = value
    return values


def _query_text(argument: str, values: dict[str, str]) -> str:
    saved = find_saved_query(argument)
    if saved is None:
        looks_like_a_name = not any(c in argument for c in " |(\n")
        first_word = argument.strip().split(maxsplit=1)[0].lower() if argument.strip() else ""
        if looks_like_a_name and first_word not in COMMAND_WORDS:
            raise ConfigError(
                f"no saved query named {argument!r} in {saved_queries_directory()} "
                f"(flowlog query --list)"
            )
        saved = ad_hoc_query(argument)
    return saved.render(values)


def _run_local(args: argparse.Namespace, settings: Settings, text: str, paths: list[str]) -> int:
    query = parse_query(text)  # refuses what we cannot run before reading anything
    query_plan = plan(query)
    files = [Path(p) for p in paths] or live_log_and_backups(Path(settings.log_file))
    if not files:
        raise ConfigError(f"--local: no flow log at {settings.log_file} (name the files to read)")
    since, until = time_range(args.since, args.until, time.time(), None).milliseconds()
    source = LocalFlowLogs(files, since, until, query_plan.source_fields)
    source.check_readable()
    result = execute(query_plan, source.rows())
    _print(args.output, result.columns, result.rows)
    if source.skipped_lines:
        print(
            f"flowlog: warning: skipped {source.skipped_lines} lines that are not flow-log JSON "
            f"with a timestamp",
            file=sys.stderr,
        )
    for damaged in source.damaged_files:
        print(
            f"flowlog: warning: read up to a damaged or unfinished file: {damaged}", file=sys.stderr
        )
    return 0


def _run_cloudwatch(args: argparse.Namespace, settings: Settings, text: str) -> int:
    log_group = settings.cloudwatch_log_group
    start, end = time_range(args.since, args.until, time.time(), DEFAULT_SINCE).cloudwatch_seconds()
    client = logs_client(settings)
    try:
        results = run_query(client, log_group, text, start, end, args.timeout, Progress(sys.stderr))
    except CloudWatchQueryError as error:
        print(f"flowlog: error: {error}", file=sys.stderr)
        return 1
    _print(args.output, results.columns, results.rows)
    return 0


def _print(output: str, columns: list[str], rows: list[dict[str, str]]) -> None:
    if output == "table" and not rows:
        print("flowlog: no results", file=sys.stderr)
        return
    text = render_json(columns, rows) if output == "json" else render_table(columns, rows)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (head, less) has seen enough; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _list_saved(output: str) -> int:
    directory = saved_queries_directory()
    queries = list_saved_queries(directory)
    if output == "json":
        described = [
            {
                "name": query.name,
                "description": query.description,
                "parameters": [
                    {"name": p.name, "description": p.description} for p in query.parameters
                ],
                "columns": list(query.columns),
                "path": str(query.path),
            }
            for query in queries
        ]
        sys.stdout.write(orjson.dumps(described, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"saved queries in {directory}:")
    rows = [
        {
            "NAME": query.name,
            "PARAMETERS": " ".join(f"--param {p.name}=..." for p in query.parameters),
            "DESCRIPTION": query.description,
        }
        for query in queries
    ]
    sys.stdout.write(render_table(["NAME", "PARAMETERS", "DESCRIPTION"], rows))
    return 0


# --- flowlog insights install --------------------------------------------------------


def run_install_command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    queries = list_saved_queries()
    log_group = settings.cloudwatch_log_group
    client = logs_client(settings)
    try:
        installed = install_definitions(client, queries, log_group)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        print(f"flowlog: error: {describe_client_error(error, log_group)}", file=sys.stderr)
        return 1
    for item in installed:
        print(f"{item.action:9}  {item.name}  ({item.definition_id})")
    print(f"{len(installed)} query definitions on {log_group}", file=sys.stderr)
    return 0
