"""``flowlog replay``: raw records from a file through the agent's own pipeline and sinks.

For debugging captured events, and as the backbone of many tests: the records
are decoded, counted, filtered, formatted, written and (with
``--enable-cloudwatch-logs``) shipped exactly as the running agent does it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from flowlog import config, metrics
from flowlog.records import LAYOUTS, Layout, decode
from flowlog.sinks import Shipper, open_sink

log = logging.getLogger(__name__)

CHUNK_RECORDS = 8192
CLUSTER_SYNC_SECONDS = 30.0
SHIPPING_TIMEOUT_SECONDS = 600.0

EPILOG = """\
examples:
  # what the AWS agent's ring buffer held, as flow-log lines on the terminal
  flowlog replay captured.bin --layout aws-v4 --log-file stdout

  # through rotation, and on to a local CloudWatch endpoint
  flowlog replay captured.bin --layout aws-v6 --log-file /tmp/flows/network-policy-agent.log \\
      --log-file-max-size 1 --enable-cloudwatch-logs --cloudwatch-endpoint http://127.0.0.1:5000

  # both ends named: pods from a cluster's API, this node's from a saved CNI checkpoint
  flowlog replay captured.bin --layout aws-v4 --log-file stdout \\
      --kubeconfig ~/.kube/config --ipam-checkpoint ./ipam.json

layouts: aws-v4 and aws-v6 are the AWS agent's records; flowlog is struct flow_end
(bpf/flow_event.h) back to back, a verdict in its first 64 bytes and zeros after.

exit status: 0 when every record is written (and acknowledged by CloudWatch when shipping);
1 when the file ends in a partial record (the whole ones are still processed); 2 for bad usage.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="push a file of raw ring-buffer records through the pipeline",
        description="Read back-to-back raw records and write them as the agent would.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="file of raw records")
    parser.add_argument(
        "--layout",
        required=True,
        choices=sorted(LAYOUTS),
        help="record layout: the AWS agent's aws-v4/aws-v6, or flowlog's own",
    )
    config.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = config.load_settings(args)
    if not args.file.is_file():
        raise config.ConfigError(f"{args.file}: no such file")
    logging.basicConfig(level=logging.INFO, format="flowlog: %(message)s")
    return asyncio.run(replay(settings, args.file, LAYOUTS[args.layout]))


async def replay(settings: config.Settings, path: Path, layout: Layout) -> int:
    """Process every whole record of ``path``; the exit status of ``flowlog replay``."""
    from flowlog.cluster import ClusterView
    from flowlog.pipeline import Pipeline

    shipping = settings.enable_cloudwatch_logs
    config.validate_agent_settings(settings.replace(enable_policy_event_logs=True))
    cluster = ClusterView(settings)
    cluster_task = asyncio.create_task(cluster.run())
    if not await cluster.wait_synced(CLUSTER_SYNC_SECONDS):
        log.warning(
            "the Kubernetes API did not answer within %.0fs; replaying without its names",
            CLUSTER_SYNC_SECONDS,
        )
    exporter = Shipper(settings) if shipping else None
    sink = open_sink(settings, exporter.before_delete if exporter else None)
    pipeline = Pipeline(
        settings,
        sink,
        on_written=exporter.wake if exporter else None,
        always_log=True,
        peers=cluster.peers,
    )
    chunk_bytes = CHUNK_RECORDS * layout.size
    offset = 0
    try:
        with path.open("rb") as source:
            while chunk := source.read(chunk_bytes):
                whole = len(chunk) - len(chunk) % layout.size
                if whole:
                    pipeline.process(decode(chunk[:whole], layout))
                offset += whole
                if whole < len(chunk):
                    break
                await asyncio.sleep(0)  # let the exporter ship while we read
        pipeline.close()  # the open window's summaries
        if exporter and not await exporter.wait_acknowledged(SHIPPING_TIMEOUT_SECONDS):
            print(
                f"flowlog: CloudWatch did not acknowledge every event within "
                f"{SHIPPING_TIMEOUT_SECONDS:.0f}s: {exporter.problem or 'still sending'}",
                file=sys.stderr,
            )
            return 1
    finally:
        cluster_task.cancel()
        if exporter:
            await exporter.stop()
        sink.close()
    size = path.stat().st_size
    if offset < size:
        metrics.RECORDS_REJECTED.labels(reason="partial").inc()
        print(
            f"flowlog: {path}: partial record at byte offset {offset} "
            f"({size - offset} of {layout.size} bytes)",
            file=sys.stderr,
        )
        return 1
    return 0
