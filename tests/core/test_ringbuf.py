"""Reading a real ring buffer: records that cross its end, records of a foreign size."""

import mmap
import socket

import numpy as np
import pytest

from flowlog import metrics
from flowlog.records import FLOW_END, FLOW_EVENT, LAYOUTS
from flowlog.sources.ringbuf import RingBuffer
from tests.core.test_records import aws_v4_record

pytestmark = pytest.mark.bpf

RECORD_SIZE = LAYOUTS["aws-v4"].size  # 32 bytes, 40 with the header: not a divisor of a page


@pytest.fixture
def one_page_ring():
    from tests.support.ringbuf_producer import RecordProducer

    producer = RecordProducer(RECORD_SIZE, ring_bytes=mmap.PAGESIZE)
    ring = RingBuffer(producer.ring_fd, producer.ring_bytes, LAYOUTS["aws-v4"])
    try:
        yield producer, ring
    finally:
        ring.close()
        producer.close()


def record(port: int) -> bytes:
    """A record whose fields say which it is, so a piece out of place shows. (Its
    bytes are also the test packet: a destination port of 80 keeps them from
    starting like an IPv4 frame, which the kernel would check.)"""
    return aws_v4_record(
        f"10.0.{port // 256}.{port % 256}", port, "10.1.0.2", 80, 6, 1, port % 1500, 0, 2
    )


def decoded(port: int) -> tuple:
    return (f"10.0.{port // 256}.{port % 256}", port, "10.1.0.2", 80, port % 1500)


def drain(ring: RingBuffer) -> list[tuple]:
    received = []
    while (batch := ring.read()) is not None:
        for event in batch.events:
            received.append(
                (
                    socket.inet_ntoa(bytes(event["src_ip"][12:])),
                    int(event["src_port"]),
                    socket.inet_ntoa(bytes(event["dest_ip"][12:])),
                    int(event["dest_port"]),
                    int(event["packet_size"]),
                )
            )
    return received


def rejected() -> float:
    return metrics.RECORDS_REJECTED.labels(reason="unexpected_size")._value.get()


def test_records_crossing_the_end_arrive_whole_and_in_order(one_page_ring):
    producer, ring = one_page_ring
    received, sent = [], []
    # 60 rounds of 50 records: the ring buffer (102 records long) wraps 29
    # times, each time with the end falling inside a record at another offset.
    for round_ in range(60):
        ports = [round_ * 100 + i for i in range(50)]
        producer.produce(b"".join(record(port) for port in ports))
        sent += map(decoded, ports)
        received += drain(ring)
    assert producer.counts() == (3000, 0)
    assert received == sent


def test_records_of_another_size_are_skipped_and_counted(one_page_ring):
    producer, ring = one_page_ring
    before = rejected()
    received, sent, halves = [], [], 0
    for round_ in range(40):
        ports = [round_ * 100 + i for i in range(30)]
        for index, port in enumerate(ports):
            producer.produce(record(port))
            if index % 7 == round_ % 7:  # a short record somewhere in every run
                producer.produce(record(6000), short=True)
                halves += 1
        sent += map(decoded, ports)
        received += drain(ring)
    assert producer.counts() == (len(sent) + halves, 0)
    assert received == sent
    assert rejected() - before == halves


def test_verdicts_and_flow_ends_of_one_ring_arrive_in_order_as_one_dtype():
    from tests.support.ringbuf_producer import RecordProducer

    size, short = FLOW_END.itemsize, FLOW_EVENT.itemsize
    producer = RecordProducer(size, ring_bytes=mmap.PAGESIZE, short_size=short)
    ring = RingBuffer(producer.ring_fd, producer.ring_bytes, LAYOUTS["flowlog"])
    try:
        sent, received = [], []
        for round_ in range(40):
            for index in range(20):
                event = np.zeros(1, FLOW_END)
                port = round_ * 100 + index
                is_end = (index + round_) % 3 == 0
                event["verdict"], event["dest_port"] = (2 if is_end else 1), 80
                event["src_port"], event["bytes_sent"] = port, port * 10
                # Byte 12 of a packet is the EtherType: keep it from looking like IPv4.
                event["src_ip"][0, 0] = 0xAA
                producer.produce(event.tobytes(), short=not is_end)
                sent.append((port, port * 10 if is_end else 0))
            while (batch := ring.read()) is not None:
                assert batch.events.dtype == FLOW_END
                ports, sent_bytes = batch.events["src_port"], batch.events["bytes_sent"]
                received += zip(ports.tolist(), sent_bytes.tolist(), strict=True)
        assert producer.counts() == (len(sent), 0)
        assert received == sent
    finally:
        ring.close()
        producer.close()
