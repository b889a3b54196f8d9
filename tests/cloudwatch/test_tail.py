"""Reading the flow log as a queue: order, complete lines, rotation, gzip, checkpoints."""

from __future__ import annotations

import fnmatch
import gzip
import os
from pathlib import Path

import orjson

from flowlog.cloudwatch.checkpoint import (
    Checkpoint,
    checkpoint_path_for,
    read_checkpoint,
    write_checkpoint,
)
from flowlog.cloudwatch.limits import MAX_MESSAGE_BYTES
from flowlog.cloudwatch.tail import FlowLogTail, count_lines, fingerprint_of
from flowlog.logfile import backup_name
from tests.cloudwatch.conftest import metric_delta
from tests.cloudwatch.flow_lines import lines, text

BACKUP_MS = 1_795_000_000_000


def backup(live: Path, minute: int, content: bytes, compressed: bool = False) -> Path:
    path = live.parent / backup_name(live, BACKUP_MS + minute * 60_000)
    if compressed:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return path


def rotate(live: Path, minute: int) -> Path:
    """Rename the live file to a backup, as the writer does (the new live file comes later)."""
    target = live.parent / backup_name(live, BACKUP_MS + minute * 60_000)
    os.rename(live, target)
    return target


def gzip_backup(path: Path) -> Path:
    """Compress a backup beside it and remove the plain one, as the writer does."""
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return target


def read_all(tail: FlowLogTail) -> bytes:
    data = b""
    while block := tail.read_block():
        data += block.data
    return data


def test_backups_are_read_oldest_first_then_the_live_file(log_path: Path) -> None:
    parts = [text(lines(3, first_number=10 * i)) for i in range(4)]
    backup(log_path, 2, parts[1])
    backup(log_path, 1, parts[0], compressed=True)
    backup(log_path, 3, parts[2], compressed=True)
    log_path.write_bytes(parts[3])
    assert read_all(FlowLogTail(log_path, None)) == b"".join(parts)


def test_only_complete_lines_are_read_from_the_live_file(log_path: Path) -> None:
    first, second = lines(2)
    log_path.write_bytes(f"{first}\n{second[:40]}".encode())
    tail = FlowLogTail(log_path, None)
    assert read_all(tail) == f"{first}\n".encode()
    with log_path.open("ab") as live:
        live.write(f"{second[40:]}\n".encode())
    assert read_all(tail) == f"{second}\n".encode()


def test_a_backup_ending_without_a_newline_still_gives_its_last_line(log_path: Path) -> None:
    first, second = lines(2)
    path = backup(log_path, 1, f"{first}\n{second}".encode())
    tail = FlowLogTail(log_path, None)
    blocks = [tail.read_block(), tail.read_block()]
    assert tail.read_block() is None
    assert [block.data for block in blocks] == [f"{first}\n".encode(), f"{second}\n".encode()]
    assert blocks[-1].end == path.stat().st_size


def test_blocks_are_bounded_and_cut_at_line_ends(log_path: Path) -> None:
    content = text(lines(1000))
    log_path.write_bytes(content)
    tail = FlowLogTail(log_path, None, block_bytes=10_000)
    sizes = []
    data = b""
    while block := tail.read_block():
        sizes.append(len(block.data))
        assert block.data.endswith(b"\n") and block.end == block.start + len(block.data)
        data += block.data
    assert data == content
    assert max(sizes) <= 10_000


def test_a_line_longer_than_a_block_is_cut_and_the_rest_skipped(log_path: Path) -> None:
    before, after = lines(2)
    huge = "x" * (3 * MAX_MESSAGE_BYTES)
    log_path.write_bytes(f"{before}\n{huge}\n{after}\n".encode())
    tail = FlowLogTail(log_path, None, block_bytes=MAX_MESSAGE_BYTES + 10)
    blocks = []
    while block := tail.read_block():
        blocks.append(block)
    data = b"".join(block.data for block in blocks)
    assert data.split(b"\n")[0] == before.encode()
    assert data.split(b"\n")[1] == b"x" * (MAX_MESSAGE_BYTES + 1)  # the builder truncates it
    assert data.split(b"\n")[2] == after.encode()
    assert blocks[-1].end == log_path.stat().st_size


def test_measuring_the_backlog_does_not_disturb_reading_a_compressed_file(
    log_path: Path,
) -> None:
    content = text(lines(20_000))  # far more than the decompressor buffers at once
    backup(log_path, 1, content, compressed=True)
    tail = FlowLogTail(log_path, None, block_bytes=256 << 10)
    data = b""
    while block := tail.read_block():
        data += block.data
        assert tail.unread_bytes() == len(content) - len(data)
    assert data == content


def test_fingerprints_survive_rename_and_gzip(log_path: Path) -> None:
    log_path.write_bytes(text(lines(5)))
    original = fingerprint_of(log_path)
    renamed = rotate(log_path, 1)
    assert fingerprint_of(renamed) == original
    assert fingerprint_of(gzip_backup(renamed)) == original
    log_path.write_bytes(text(lines(5, first_number=5)))
    assert fingerprint_of(log_path) != original


def test_a_file_without_a_complete_first_line_has_no_fingerprint_yet(log_path: Path) -> None:
    log_path.write_bytes(b'{"level":"info"')
    assert fingerprint_of(log_path) is None


def test_the_live_file_is_read_to_its_end_after_rotation(log_path: Path) -> None:
    old = lines(4)
    log_path.write_bytes(text(old[:2]))
    tail = FlowLogTail(log_path, None)
    assert read_all(tail) == text(old[:2])
    with log_path.open("ab") as live:
        live.write(text(old[2:]))  # written just before the rename, not read yet
    gzip_backup(rotate(log_path, 1))  # and compressed before the reader looks again
    new = lines(3, first_number=100)
    log_path.write_bytes(text(new))
    assert read_all(tail) == text(old[2:]) + text(new)


def test_files_rotated_unseen_are_read_in_the_order_they_were_written(log_path: Path) -> None:
    tail = FlowLogTail(log_path, None)
    parts = [lines(3, first_number=10 * i) for i in range(5)]
    log_path.write_bytes(text(parts[0]))
    assert read_all(tail) == text(parts[0])
    # Four rotations while the reader looks elsewhere; some backups compressed.
    for minute, part in enumerate(parts[1:], start=1):
        rotated = rotate(log_path, minute)
        if minute % 2:
            gzip_backup(rotated)
        log_path.write_bytes(text(part))
    assert tail.end_position() is not None  # a listing before reading, as the exporter does
    assert read_all(tail) == b"".join(text(part) for part in parts[1:])


def test_reading_resumes_after_the_checkpoint_in_a_renamed_and_gzipped_file(
    log_path: Path,
) -> None:
    old = lines(6)
    log_path.write_bytes(text(old))
    offset = len(text(old[:4]))
    checkpoint = Checkpoint(log_path.name, fingerprint_of(log_path) or "", offset)
    gzip_backup(rotate(log_path, 1))
    new = lines(2, first_number=100)
    log_path.write_bytes(text(new))
    tail = FlowLogTail(log_path, checkpoint)
    assert read_all(tail) == text(old[4:]) + text(new)
    assert tail.start is not None and tail.start.offset == offset


def test_files_before_the_checkpointed_one_are_not_read_again(log_path: Path) -> None:
    first = backup(log_path, 1, text(lines(3)))
    second_lines = lines(3, first_number=10)
    second = backup(log_path, 2, text(second_lines))
    log_path.write_bytes(text(lines(2, first_number=20)))
    checkpoint = Checkpoint(second.name, fingerprint_of(second) or "", len(text(second_lines[:1])))
    data = read_all(FlowLogTail(log_path, checkpoint))
    assert data == text(second_lines[1:]) + log_path.read_bytes()
    assert first.exists()


def test_a_checkpointed_file_that_is_gone_is_reported_and_newer_files_read(
    log_path: Path, caplog
) -> None:
    files_lost = metric_delta("flowlog_cloudwatch_files_lost_total")
    older = backup(log_path, 1, text(lines(3)))
    newer = backup(log_path, 3, text(lines(3, first_number=10)))
    log_path.write_bytes(text(lines(2, first_number=20)))
    gone = backup_name(log_path, BACKUP_MS + 2 * 60_000)
    data = read_all(FlowLogTail(log_path, Checkpoint(gone, "0123456789abcdef", 100)))
    assert data == newer.read_bytes() + log_path.read_bytes()
    assert older.exists()
    assert files_lost() == 1
    assert [r.getMessage() for r in caplog.records if "is gone" in r.getMessage()]


def test_before_delete_counts_the_lines_not_read_yet(log_path: Path) -> None:
    first = backup(log_path, 1, text(lines(7)), compressed=True)
    second = backup(log_path, 2, text(lines(11, first_number=10)))
    log_path.write_bytes(text(lines(2, first_number=30)))
    tail = FlowLogTail(log_path, None, block_bytes=1000)
    assert tail.read_block() is not None  # the first backup is being read
    assert tail.before_delete(first) == 0  # it stays readable through its descriptor
    assert tail.before_delete(second) == 11
    second.unlink()
    data = read_all(tail)
    assert b'"Src Port":10,' not in data  # nothing of the deleted file
    assert data.endswith(log_path.read_bytes())


def test_count_lines_counts_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"a\nb\nc")
    assert count_lines(path) == 3
    compressed = tmp_path / "y.log.gz"
    compressed.write_bytes(gzip.compress(b"a\nb\n"))
    assert count_lines(compressed) == 2


def test_end_position_is_the_end_of_the_complete_lines(log_path: Path) -> None:
    backup(log_path, 1, text(lines(3)))
    complete = text(lines(2, first_number=10))
    log_path.write_bytes(complete + b'{"level":"in')
    position = FlowLogTail(log_path, None).end_position()
    assert position is not None
    assert (position.file.path, position.offset) == (log_path, len(complete))


def test_checkpoint_round_trip_is_atomic_and_outside_the_flow_log_globs(log_path: Path) -> None:
    path = checkpoint_path_for(log_path)
    assert path.parent == log_path.parent
    assert not fnmatch.fnmatch(path.name, "network-policy-agent*.log")
    assert not fnmatch.fnmatch(path.name, "*.log.gz")
    checkpoint = Checkpoint("network-policy-agent.log", "5f2b0c9d41e6a7b3", 1234, "/g", "s")
    write_checkpoint(path, checkpoint)
    assert read_checkpoint(path) == checkpoint
    assert sorted(p.name for p in log_path.parent.iterdir()) == [path.name]
    document = orjson.loads(path.read_bytes())
    assert document["offset"] == 1234 and document["updated"].endswith("Z")


def test_an_unreadable_checkpoint_is_ignored(log_path: Path) -> None:
    path = checkpoint_path_for(log_path)
    path.write_bytes(b"{not json")
    assert read_checkpoint(path) is None
    assert read_checkpoint(log_path.parent / "absent.json") is None
