"""Rotation with lumberjack's names and limits; lines never split; full disks survived."""

import gzip
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from flowlog.logfile import RotatingLogFile, backup_name, list_backups

BACKUP_NAME = re.compile(
    r"^network-policy-agent-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log(\.gz)?$"
)


def lines(count: int, start: int = 0, width: int = 100) -> bytes:
    return b"".join(
        b'{"n":%08d,"pad":"%s"}\n' % (i, b"x" * (width - 24)) for i in range(start, start + count)
    )


def all_lines(directory: Path) -> list[bytes]:
    """Every line in the live file and its backups, oldest first."""
    live = directory / "network-policy-agent.log"
    out = []
    for backup in list_backups(live):
        opener = gzip.open if backup.compressed else open
        with opener(backup.path, "rb") as f:
            out += f.read().splitlines()
    return out + live.read_bytes().splitlines()


def writer(tmp_path: Path, **kwargs) -> RotatingLogFile:
    options = {"max_bytes": 10_000, "max_backups": 0, "max_age_days": 0, "compress": False}
    return RotatingLogFile(tmp_path / "network-policy-agent.log", **(options | kwargs))


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_backup_names_follow_lumberjack():
    live = Path("/var/log/aws-routed-eni/network-policy-agent.log")
    ms = 1786115045000  # 2026-08-07T15:04:05.000Z
    assert backup_name(live, ms) == "network-policy-agent-2026-08-07T15-04-05.000.log"
    assert backup_name(live, ms + 7) == "network-policy-agent-2026-08-07T15-04-05.007.log"


def test_rotates_before_a_write_would_pass_the_limit_and_never_splits_lines(tmp_path):
    log = writer(tmp_path)
    for block in range(30):
        assert log.write(lines(7, block * 7), 7)
    log.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) > 2
    for path in files:
        assert path.stat().st_size <= 10_000
        assert path.read_bytes().endswith(b"\n")
        assert BACKUP_NAME.match(path.name) or path.name == "network-policy-agent.log"
    assert all_lines(tmp_path) == lines(210).splitlines()


def test_the_fluent_bit_glob_matches_the_live_file_and_plain_backups(tmp_path):
    import fnmatch

    log = writer(tmp_path, max_bytes=1000)
    log.write(lines(25), 25)
    log.close()
    names = [p.name for p in tmp_path.iterdir()]
    assert all(fnmatch.fnmatch(name, "network-policy-agent*.log") for name in names)


def test_backups_are_gzipped_off_the_writer_and_read_back_whole(tmp_path):
    log = writer(tmp_path, compress=True)
    for block in range(30):
        log.write(lines(7, block * 7), 7)
    log.wait_housekeeping()
    log.close()
    backups = list_backups(tmp_path / "network-policy-agent.log")
    assert backups and all(b.compressed for b in backups)
    assert not list(tmp_path.glob("*.tmp"))
    assert all_lines(tmp_path) == lines(210).splitlines()


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_compressed_backups_are_standard_gzip_that_zcat_and_python_read(tmp_path, level):
    log = writer(tmp_path, max_bytes=200_000, compress=True, compress_level=level)
    written = b""
    for block in range(12):
        chunk = lines(500, block * 500, width=150)
        log.write(chunk, 500)
        written += chunk
    log.wait_housekeeping()
    log.close()
    backups = list_backups(tmp_path / "network-policy-agent.log")
    assert len(backups) >= 3 and all(b.compressed for b in backups)
    live = (tmp_path / "network-policy-agent.log").read_bytes()
    python_read = b"".join(gzip.decompress(b.path.read_bytes()) for b in backups)
    zcat = subprocess.run(
        ["zcat", *(str(b.path) for b in backups)], capture_output=True, check=True
    )
    assert python_read + live == zcat.stdout + live == written
    assert sum(b.path.stat().st_size for b in backups) < len(python_read) / 4  # it compressed


def test_keeps_only_the_newest_backups(tmp_path):
    log = writer(tmp_path, max_bytes=1000, max_backups=3)
    for block in range(40):
        log.write(lines(3, block * 3), 3)
    log.wait_housekeeping()
    log.close()
    backups = list_backups(tmp_path / "network-policy-agent.log")
    assert len(backups) == 3
    # What is left is the newest: the last lines written, in order, without gaps.
    kept = all_lines(tmp_path)
    assert kept == lines(120).splitlines()[-len(kept) :]


def test_deletes_backups_older_than_the_age_limit_and_says_so_first(tmp_path):
    live = tmp_path / "network-policy-agent.log"
    old = tmp_path / backup_name(live, (int(time.time()) - 40 * 86400) * 1000)
    recent = tmp_path / backup_name(live, (int(time.time()) - 2 * 86400) * 1000)
    old.write_bytes(lines(1))
    recent.write_bytes(lines(1))
    deleted = []
    log = writer(tmp_path, max_bytes=500, max_age_days=30, before_delete=deleted.append)
    log.write(lines(10), 10)  # forces a rotation, which tidies up
    log.wait_housekeeping()
    log.close()
    assert deleted == [old]
    assert not old.exists() and recent.exists()


def test_a_restart_appends_to_the_live_file(tmp_path):
    first = writer(tmp_path, max_bytes=100_000)
    first.write(lines(5), 5)
    first.close()
    second = writer(tmp_path, max_bytes=100_000)
    second.write(lines(5, 5), 5)
    second.close()
    assert (tmp_path / "network-policy-agent.log").read_bytes() == lines(10)


def test_a_restart_continues_filling_the_live_file_up_to_the_limit(tmp_path):
    first = writer(tmp_path, max_bytes=1000)
    first.write(lines(9), 9)
    first.close()
    second = writer(tmp_path, max_bytes=1000)
    second.write(lines(2, 9), 2)  # the first line fills the file to the limit
    second.close()
    assert (tmp_path / "network-policy-agent.log").read_bytes() == lines(1, 10)
    (backup,) = list_backups(tmp_path / "network-policy-agent.log")
    assert backup.path.read_bytes() == lines(10)


def test_a_line_longer_than_the_limit_still_gets_written(tmp_path):
    log = writer(tmp_path, max_bytes=50)
    block = lines(1, width=30) + lines(1, 1, width=200) + lines(1, 2, width=30)
    assert log.write(block, 3)
    log.close()
    assert all_lines(tmp_path) == block.splitlines()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB filesystem that fills up."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.root
def test_a_full_disk_drops_whole_lines_counts_them_and_recovers(tiny_disk):
    log = RotatingLogFile(
        tiny_disk / "network-policy-agent.log",
        max_bytes=10**9,
        max_backups=0,
        max_age_days=0,
        compress=False,
    )
    dropped_before = metric("flowlog_lines_dropped_total", reason="ENOSPC")
    written = 0
    for block in range(100):
        if log.write(lines(50, block * 50), 50):
            written += 50
    dropped = metric("flowlog_lines_dropped_total", reason="ENOSPC") - dropped_before
    assert written + dropped == 5000 and dropped > 0
    content = (tiny_disk / "network-policy-agent.log").read_bytes()
    assert content.endswith(b"\n") and len(content.splitlines()) == written  # no torn line
    (tiny_disk / "network-policy-agent.log").unlink()
    log.close()
    recovered = RotatingLogFile(tiny_disk / "network-policy-agent.log", max_bytes=10**9)
    assert recovered.write(lines(10), 10)
    recovered.close()
