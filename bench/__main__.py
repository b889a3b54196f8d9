"""``make bench``: run every benchmark, print each figure with its target and baseline ratio."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench import flow_volume, flowmap, replay_to_file, ringbuf_to_file, shipping
from bench.measure import Figure, cpu_times, steal_share

BENCHMARKS = {
    "ringbuf": ringbuf_to_file.run,
    "replay": replay_to_file.run,
    "shipping": shipping.run,
    "map": flowmap.run,
    "flows": flow_volume.run,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *BENCHMARKS],
        default=[],
        help="benchmarks to run (default: all)",
    )
    args = parser.parse_args()
    figures: list[Figure] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flowlog-bench-") as work:
        for name in args.names or BENCHMARKS:
            print(f"== {name}", flush=True)
            before = cpu_times()
            results = BENCHMARKS[name](Path(work))
            # On a VM, time the host gives to others slows our code and the baselines alike.
            steal = steal_share(before, cpu_times()) * 100
            label = results[0].benchmark if results else name
            results.append(Figure(label, "CPU time taken by the VM's host (steal)", steal, "%"))
            for figure in results:
                print(figure.render(), flush=True)
            figures += results
    print(f"\n== summary ({time.monotonic() - started:.0f} s)")
    for figure in figures:
        print(figure.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
