"""A stand-in for another agent's ring buffer: a tiny BPF program, run with
BPF_PROG_TEST_RUN, that copies each "packet" it is given into a ring buffer as
one record. Tests use it to feed exact records of any layout to the agent's
``--ringbuf-pin`` mode, and to fill the ring buffer on purpose."""

from __future__ import annotations

import os
from pathlib import Path

from flowlog import bpf_syscall

PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

struct record { u8 bytes[RECORD_SIZE]; };

BPF_RINGBUF_OUTPUT(global_policy_events, RING_PAGES);
BPF_ARRAY(produced, u64, 2);  /* [0] written, [1] refused because full */

static int copy(struct __sk_buff *skb, u32 size) {
    struct record record = {};
    if (bpf_skb_load_bytes(skb, 0, &record, sizeof(record)) < 0)
        return TC_ACT_SHOT;
    u32 slot = global_policy_events.ringbuf_output(&record, size, 0) ? 1 : 0;
    u64 *count = produced.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, 1);
    return TC_ACT_OK;
}

int copy_packet(struct __sk_buff *skb) { return copy(skb, sizeof(struct record)); }

/* The first SHORT_SIZE bytes only: a shorter record (flowlog's verdicts beside
 * its flow ends), or one of a size the consumer does not expect. */
int copy_short_packet(struct __sk_buff *skb) { return copy(skb, SHORT_SIZE); }
"""


class RecordProducer:
    def __init__(
        self, record_size: int, ring_bytes: int = 1 << 20, short_size: int | None = None
    ) -> None:
        from bcc import BPF

        self.record_size = record_size
        self.ring_bytes = ring_bytes
        self.bpf = BPF(
            text=PROGRAM.encode(),
            cflags=[
                f"-DRECORD_SIZE={record_size}",
                f"-DSHORT_SIZE={short_size or record_size // 2}",
                f"-DRING_PAGES={ring_bytes // os.sysconf('SC_PAGE_SIZE')}",
            ],
        )
        self.program = self.bpf.load_func(b"copy_packet", BPF.SCHED_CLS)
        self.short_program = self.bpf.load_func(b"copy_short_packet", BPF.SCHED_CLS)
        self.pinned: Path | None = None

    @property
    def ring_fd(self) -> int:
        return self.bpf[b"global_policy_events"].map_fd

    def pin(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        bpf_syscall.obj_pin(self.ring_fd, str(path))
        self.pinned = path

    def produce(self, records: bytes, repeat: int = 1, short: bool = False) -> None:
        """Put each record of ``records`` into the ring buffer ``repeat`` times
        (only its first ``short_size`` bytes with ``short``)."""
        program = self.short_program if short else self.program
        for start in range(0, len(records), self.record_size):
            record = records[start : start + self.record_size]
            bpf_syscall.prog_test_run(program.fd, record, repeat=repeat)

    def counts(self) -> tuple[int, int]:
        """(records written, records refused because the ring buffer was full)."""
        table = self.bpf[b"produced"]
        return int(table[table.Key(0)].value), int(table[table.Key(1)].value)

    def close(self) -> None:
        if self.pinned:
            self.pinned.unlink(missing_ok=True)
        self.bpf.cleanup()
