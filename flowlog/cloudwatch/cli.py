"""``flowlog ship``: the CloudWatch exporter on flow-log files that already exist.

Each PATH is a live flow log; its rotated backups (``<stem>-<time><ext>`` and
``.gz``) are read first, oldest first. Progress is kept in a checkpoint beside
each file (as Fluent Bit's tail input keeps its DB), so a second run continues
where the first stopped and never sends an acknowledged line again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

import watchfiles

from flowlog import config
from flowlog.cloudwatch.checkpoint import checkpoint_path_for
from flowlog.cloudwatch.exporter import CloudWatchExporter
from flowlog.logfile import list_backups

log = logging.getLogger(__name__)

# Lines written to a followed file are noticed within this long (milliseconds).
WATCH_DEBOUNCE_MS = 100

EPILOG = """\
examples:
  # send the AWS agent's flow logs (and their backups) once, then exit
  flowlog ship /var/log/aws-routed-eni/network-policy-agent.log --cluster-name prod --once

  # follow a flow log like the agent does, until Ctrl-C or SIGTERM
  flowlog ship /var/log/aws-routed-eni/network-policy-agent.log --cluster-name prod \\
      --node-name ip-10-0-0-1

  # to a local endpoint and a group of your own, keeping checkpoints elsewhere
  flowlog ship /tmp/flows/network-policy-agent.log --cloudwatch-endpoint http://127.0.0.1:5000 \\
      --log-group /test/flows --checkpoint-dir /tmp/checkpoints --once

events go to --log-group, or /aws/eks/<cluster>/cluster, or /aws/k8s-cluster/cluster,
stream aws-network-policy-agent-audit-<node name>. The checkpoint of PATH is
<dir>/<stem>.cloudwatch-checkpoint.json; delete it to send a file again.

While CloudWatch refuses access (or cannot be reached) the problem is printed once
and shipping retried, --once included; Ctrl-C gives up, keeping the checkpoint.

exit status: 0 when done (with --once: everything acknowledged); 1 when interrupted
before --once finished; 2 for bad usage.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ship",
        help="send existing flow-log files to CloudWatch Logs",
        description="Send flow-log files (and their rotated backups) to CloudWatch Logs in "
        "full batches, at least once, resuming from a checkpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="live flow-log file")
    parser.add_argument(
        "--once",
        action="store_true",
        help="exit once everything present now is acknowledged, instead of following",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="where to keep checkpoints (default: beside each file)",
    )
    config.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = config.load_settings(args)
    paths = _live_files(args.paths)
    for path in paths:
        if not path.parent.is_dir():
            raise config.ConfigError(f"{path}: no such directory {path.parent}")
    if args.checkpoint_dir and not args.checkpoint_dir.is_dir():
        raise config.ConfigError(f"--checkpoint-dir {args.checkpoint_dir}: no such directory")
    logging.basicConfig(level=logging.INFO, format="flowlog: %(message)s")
    # Not a line per file change, nor where the credentials were found.
    for chatty in ("watchfiles", "botocore", "aiobotocore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    return asyncio.run(ship(settings, paths, once=args.once, checkpoint_dir=args.checkpoint_dir))


def _live_files(paths: list[Path]) -> list[Path]:
    """The PATHs without those that are backups of another PATH (a shell glob gives both)."""
    unique = list(dict.fromkeys(path.absolute() for path in paths))
    backups = {backup.path for path in unique for backup in list_backups(path)}
    return [path for path in unique if path not in backups]


async def ship(
    settings: config.Settings, paths: list[Path], once: bool, checkpoint_dir: Path | None = None
) -> int:
    """Run one exporter per file; the exit status of ``flowlog ship``."""
    exporters = [
        CloudWatchExporter(
            settings, path, checkpoint_path=checkpoint_path_for(path, checkpoint_dir)
        )
        for path in paths
    ]
    runs = [asyncio.create_task(exporter.run()) for exporter in exporters]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s: finishing the calls in flight", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    watcher = asyncio.create_task(_wake_on_change(exporters, stop))
    finished = True
    try:
        if once:
            waits = asyncio.gather(*(e.wait_acknowledged(float("inf")) for e in exporters))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([waits, stopped], return_when=asyncio.FIRST_COMPLETED)
            finished = waits.done() and all(waits.result())
            if finished:
                for path in paths:
                    log.info("%s: every line is in CloudWatch Logs", path)
            waits.cancel()
            stopped.cancel()
        else:
            await stop.wait()
    finally:
        await asyncio.gather(*(exporter.stop() for exporter in exporters))
        await asyncio.gather(*runs, return_exceptions=True)
        stop.set()
        await watcher
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0 if finished else 1


async def _wake_on_change(exporters: list[CloudWatchExporter], stop: asyncio.Event) -> None:
    """New lines are shipped as soon as they are written, without polling."""
    directories = {str(exporter.log_path.parent) for exporter in exporters}
    live_files = [exporter.log_path for exporter in exporters]

    def is_flow_log(_: watchfiles.Change, path: str) -> bool:
        name = Path(path).name
        return any(name == live.name or name.startswith(f"{live.stem}-") for live in live_files)

    async for _ in watchfiles.awatch(
        *directories,
        watch_filter=is_flow_log,
        stop_event=stop,
        debounce=WATCH_DEBOUNCE_MS,
        recursive=False,
    ):
        for exporter in exporters:
            exporter.wake()
