"""``flowlog ebpf``: the programs, maps and live verdicts of the running data plane.

Everything is read from the pins under ``--bpf-pin-dir``, so it works beside a
running agent (or after one stopped with ``--keep-programs``) without
disturbing it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from flowlog import config
from flowlog.dataplane import pinned
from flowlog.dataplane.links import Links
from flowlog.dataplane.programs import PinLayout
from flowlog.dataplane.tap import tapped
from flowlog.records import (
    VERDICT_EXPIRED,
    decode_each,
    direction_name,
    monotonic_to_epoch_offset_ns,
    protocol_name,
    tier_name,
    verdict_name,
)

POLL_MS = 200
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Names of new pods, policies and veths are looked up again at most this often.
REFRESH_SECONDS = 1.0
ICMP_PROTOCOLS = (1, 58)

EPILOG = """\
examples:
  # the programs, their ids, and the pod veths (and tc hooks) they are attached to
  flowlog ebpf progs

  # the maps: sizes, entries in use, the event switches and the lost-event counters
  flowlog ebpf maps

  # watch verdicts as they happen, one line each (Ctrl-C to stop); the agent's own
  # flow log is not affected: these come from a second ring buffer, filled only
  # while this command runs
  flowlog ebpf events
  flowlog ebpf events --count 20 --duration 30

  # pins somewhere else, veths in another network namespace
  flowlog ebpf progs --bpf-pin-dir /sys/fs/bpf/flowlog-test --netns node1

an events line:
  2026-11-22T05:00:00.123Z DENY ingress TCP 10.0.0.5:38971 -> 10.0.1.7:80 \\
      pod=stars/backend policy=stars/backend-policy tier=NETWORK_POLICY size=60 veth=eni4fad2c602cf

exit status: 0 on success, 1 when nothing is pinned (is the agent running?), 2 for bad usage.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ebpf",
        help="list flowlog's eBPF programs and maps, or watch live verdicts",
        description="Inspect the data plane through its pins: programs (and the veths they "
        "are attached to), maps, and live verdict events.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=("progs", "maps", "events"), help="what to show")
    parser.add_argument(
        "--netns",
        metavar="NAME",
        help="network namespace holding the pod veths (default: this one)",
    )
    parser.add_argument(
        "--count", type=int, default=0, metavar="N", help="events: stop after N events"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="events: stop after this long (default: until interrupted)",
    )
    config.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = config.load_settings(args)
    pins = PinLayout(Path(settings.bpf_pin_dir))
    if not pins.exists():
        print(
            f"flowlog ebpf: nothing pinned under {pins.root} (is the agent running?)",
            file=sys.stderr,
        )
        return 1
    if args.what == "progs":
        show_programs(pins, args.netns, sys.stdout)
    elif args.what == "maps":
        show_maps(pins, sys.stdout)
    else:
        watch_events(pins, args.netns, args.count, args.duration, sys.stdout)
    return 0


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")


def show_programs(pins: PinLayout, netns: str | None, out: TextIO) -> None:
    rows = [["ID", "NAME", "TYPE", "TAG", "INSNS", "PIN"]]
    for program in pinned.pinned_programs(pins):
        rows.append(
            [
                str(program.id),
                program.name,
                program.type,
                program.tag,
                str(program.instructions),
                program.pin,
            ]
        )
    _table(rows, out)
    attachments = asyncio.run(_attachments(netns))
    out.write(f"\nattached to pod veths ({len({a.ifindex for a in attachments})}):\n")
    rows = [["VETH", "IFINDEX", "HOOK", "PROGRAM"]]
    rows += [[a.ifname, str(a.ifindex), a.hook, a.program] for a in attachments]
    _table(rows, out)


async def _attachments(netns: str | None) -> list:
    async with Links(netns) as links:
        return await links.attachments()


async def _veth_names(netns: str | None) -> dict[int, str]:
    async with Links(netns) as links:
        return await links.pod_veths()


def show_maps(pins: PinLayout, out: TextIO) -> None:
    rows = [["ID", "NAME", "TYPE", "KEY", "VALUE", "MAX_ENTRIES", "ENTRIES", "PIN"]]
    for found in pinned.pinned_maps(pins):
        rows.append(
            [
                str(found.id),
                found.name,
                found.type,
                str(found.key_size),
                str(found.value_size),
                str(found.max_entries),
                "-" if found.entries is None else str(found.entries),
                found.pin,
            ]
        )
    _table(rows, out)
    values = pinned.switches(pins)
    out.write("\n" + " ".join(f"{name}={value}" for name, value in values.items()) + "\n")


def watch_events(
    pins: PinLayout, netns: str | None, count: int, duration: float, out: TextIO
) -> int:
    """Print verdicts as they happen; returns how many were printed."""
    deadline = time.monotonic() + duration if duration > 0 else float("inf")
    format_line = EventFormatter(pins, netns)
    printed = 0
    with _stop_on_signals() as stopped, tapped(pins) as reader:
        while not stopped() and time.monotonic() < deadline and not (count and printed >= count):
            records = reader.poll(POLL_MS)
            if not records:
                continue
            for event in decode_each(records):
                out.write(format_line(event) + "\n")
                printed += 1
                if count and printed >= count:
                    break
            out.flush()
    return printed


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """SIGINT and SIGTERM end the watch cleanly (the tap is switched off on the way out)."""
    stopped = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True

    previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
    try:
        yield lambda: stopped
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class EventFormatter:
    """One readable line per event, naming pods, policies and veths where known."""

    def __init__(self, pins: PinLayout, netns: str | None) -> None:
        self.pins = pins
        self.netns = netns
        self.offset_ns = monotonic_to_epoch_offset_ns()
        self._refresh()

    def _refresh(self) -> None:
        self.pods, self.policies = pinned.names(self.pins)
        self.veths = asyncio.run(_veth_names(self.netns))
        self._next_refresh = time.monotonic() + REFRESH_SECONDS

    def __call__(self, event: np.void) -> str:
        pod_id, policy_id = int(event["endpoint_id"]), int(event["policy_id"])
        ifindex = int(event["ifindex"])
        unknown = (pod_id and pod_id not in self.pods) or (
            policy_id and policy_id not in self.policies
        )
        if (unknown or ifindex not in self.veths) and time.monotonic() > self._next_refresh:
            self._refresh()
        seconds, ns = divmod(int(event["timestamp_ns"]) + self.offset_ns, 1_000_000_000)
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1_000_000:03d}Z"
        )
        protocol = int(event["protocol"])
        source = _endpoint(event["src_ip"], int(event["src_port"]), protocol)
        destination = _endpoint(event["dest_ip"], int(event["dest_port"]), protocol)
        parts = [
            stamp,
            verdict_name(int(event["verdict"])),
            direction_name(int(event["is_egress"])),
            protocol_name(protocol),
            f"{source} -> {destination}",
            f"pod={_named(self.pods.get(pod_id))}",
            f"policy={_named(self.policies.get(policy_id))}",
            f"tier={tier_name(int(event['tier']))}",
            *_carried(event),
            f"veth={self.veths.get(ifindex, ifindex)}",
        ]
        return " ".join(parts)


def _carried(event: np.void) -> list[str]:
    """A verdict's packet size, or what an ended flow carried each way."""
    if int(event["verdict"]) != VERDICT_EXPIRED or not int(event["start_ns"]):
        return [f"size={int(event['packet_size'])}"]
    seconds = max(0, int(event["last_ns"]) - int(event["start_ns"])) / 1e9
    return [
        f"sent={int(event['packets_sent'])}/{int(event['bytes_sent'])}B",
        f"received={int(event['packets_received'])}/{int(event['bytes_received'])}B",
        f"duration={seconds:.3f}s",
    ]


def _named(name: tuple[str, str] | None) -> str:
    if name is None:
        return "-"
    object_name, namespace = name
    return f"{namespace}/{object_name}"


def _endpoint(raw: np.ndarray, port: int, protocol: int) -> str:
    address = ipaddress.IPv6Address(bytes(raw))
    text = str(address.ipv4_mapped or address)
    if protocol in ICMP_PROTOCOLS:
        return text
    return f"[{text}]:{port}" if address.ipv4_mapped is None else f"{text}:{port}"
