"""The ``flowlog`` command: one subcommand per job, each in its own module.

Every subcommand module has ``register(subparsers)``, which adds its parser and
sets ``run`` to a function taking the parsed arguments and returning the exit
status. Usage and configuration errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import sys

from flowlog import __version__
from flowlog.config import ConfigError

# Each subcommand and the module that registers it, in the order `flowlog --help`
# lists them. Only the chosen one is imported: the agent then carries neither
# the query engine nor botocore unless it ships.
SUBCOMMANDS = {
    "agent": "flowlog.agent",
    "replay": "flowlog.replay",
    "ship": "flowlog.cloudwatch.cli",
    "query": "flowlog.insights.cli",
    "insights": "flowlog.insights.cli",
    "map": "flowlog.flowmap.cli",
    "ebpf": "flowlog.dataplane.cli",
    "demo": "flowlog.demo.cli",
}

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters

EXAMPLES = """\
examples:
  flowlog agent --enable-policy-event-logs --policy-dir /etc/flowlog/policies
  flowlog agent --ringbuf-pin /sys/fs/bpf/globals/aws/maps/global_policy_events \\
      --enable-policy-event-logs --enable-cloudwatch-logs --cluster-name prod
  flowlog replay events.bin --layout aws-v4 --log-file stdout
  flowlog ship /var/log/aws-routed-eni/network-policy-agent.log --cluster-name prod
  flowlog query denied-flows --cluster-name prod --since 1h
  flowlog ebpf progs
  flowlog demo
"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or only ``command``'s part of it."""
    parser = ArgumentParser(
        prog="flowlog",
        description="Kubernetes network-policy flow logs: eBPF verdicts to JSON lines "
        "and CloudWatch Logs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowlog {__version__}")
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=ArgumentParser
    )
    modules = [SUBCOMMANDS[command]] if command in SUBCOMMANDS else SUBCOMMANDS.values()
    for module_name in dict.fromkeys(modules):
        importlib.import_module(module_name).register(subparsers)
    return parser


def keep_freed_memory() -> None:
    """Ask glibc to keep large freed blocks instead of returning them at once.

    Batches allocate buffers of a few MB; by default each one is a fresh mmap,
    and every page of it a page fault on first use (about 0.3 us of system time
    per event measured). Keeping up to 32 MB blocks in the heap reuses the
    pages; the resident size stays bounded by the largest batch.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"flowlog: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
