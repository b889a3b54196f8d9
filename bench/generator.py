"""A traffic generator with no network: our tc program run on a crafted TCP SYN.

``BPF_PROG_TEST_RUN`` runs the pinned ingress program ``repeat`` times on one
frame, as if it crossed a pod's veth; each run judges the SYN (a denied one,
here) and writes one event to the ring buffer, exactly as a real packet would.
Run inside the node's network namespace (the veth's ifindex must resolve):

    python -m bench.generator PROG IFINDEX SRC DST RATE SECONDS

RATE is events per second (0: as fast as it goes). Prints one JSON object:
the runs made and the seconds they took.
"""

from __future__ import annotations

import sys
import time

import orjson

from flowlog import bpf_syscall
from tests.support.frames import TCP_SYN, ipv4, tcp

SLICE_SECONDS = 0.005  # paced rates are met in slices this long
FLAT_OUT_REPEAT = 20_000


def generate(prog_fd: int, ifindex: int, frame: bytes, rate: float, seconds: float) -> int:
    runs = 0
    started = time.monotonic()
    deadline = started + seconds
    while (now := time.monotonic()) < deadline:
        if rate:
            due = int(rate * (now - started)) - runs
            if due <= 0:
                time.sleep(SLICE_SECONDS)
                continue
        else:
            due = FLAT_OUT_REPEAT
        bpf_syscall.prog_test_run(prog_fd, frame, repeat=due, ifindex=ifindex)
        runs += due
    return runs


def main() -> None:
    prog, ifindex, source, destination, rate, seconds = sys.argv[1:]
    frame = ipv4(source, destination, 6, tcp(40000, 80, TCP_SYN))
    fd = bpf_syscall.obj_get(prog)
    started = time.monotonic()
    runs = generate(fd, int(ifindex), frame, float(rate), float(seconds))
    print(orjson.dumps({"runs": runs, "seconds": time.monotonic() - started}).decode())


if __name__ == "__main__":
    main()
