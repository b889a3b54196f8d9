"""Reading flow-log files for the map: rotated and gzipped backups, bad lines, time ranges."""

from __future__ import annotations

import calendar
import gzip

import orjson

from flowlog.flowmap.graph import MapOptions
from flowlog.flowmap.local_files import read_flow_logs
from flowlog.flowmap.tally import FlowTally
from tests.flowmap.lines import CLIENT, FRONTEND, summary, verdict, write_lines


def tally_of(paths, **time_range) -> tuple[FlowTally, object]:
    tally = FlowTally(MapOptions().outside_networks())
    return tally, read_flow_logs(paths, tally, **time_range)


def flows(tally: FlowTally) -> int:
    return sum(counts.attempts for _, counts in tally.observations())


def lines_bytes(lines: list[dict]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def test_the_live_file_and_its_rotated_and_gzipped_backups(tmp_path):
    gzipped = tmp_path / "network-policy-agent-2026-11-22T04-00-00.000.log.gz"
    gzipped.write_bytes(gzip.compress(lines_bytes([verdict(CLIENT, FRONTEND, 80)] * 3)))
    plain = write_lines(
        tmp_path / "network-policy-agent-2026-11-22T04-30-00.000.log",
        [verdict(CLIENT, FRONTEND, 80)] * 2,
    )
    live = write_lines(tmp_path / "network-policy-agent.log", [verdict(CLIENT, FRONTEND, 80)])
    tally, report = tally_of([gzipped, plain, live])
    assert flows(tally) == 6
    assert (report.lines_read, report.bad_lines, report.damaged_files) == (6, 0, [])


def test_a_backup_being_compressed_is_read_once(tmp_path):
    # While lumberjack gzips a backup both files exist, and a glob names both.
    plain = write_lines(
        tmp_path / "network-policy-agent-2026-11-22T04-30-00.000.log",
        [verdict(CLIENT, FRONTEND, 80)] * 4,
    )
    half = plain.with_name(plain.name + ".gz")
    half.write_bytes(gzip.compress(plain.read_bytes())[:20])
    tally, report = tally_of([plain, half])
    assert flows(tally) == 4
    assert report.damaged_files == []


def test_bad_lines_are_counted_skipped_and_the_first_named(tmp_path):
    good = verdict(CLIENT, FRONTEND, 80)
    no_verdict = {key: value for key, value in good.items() if key != "Verdict"}
    no_port = {key: value for key, value in good.items() if key != "Dest Port"}
    nobody = {k: v for k, v in good.items() if not k.startswith(("Src", "Dest")) or "Port" in k}
    path = tmp_path / "network-policy-agent.log"
    path.write_bytes(
        lines_bytes([good])
        + b"\n"  # a blank line is nothing to report
        + b"not json at all\n"
        + b"[1, 2, 3]\n"
        + lines_bytes(
            [
                no_verdict,
                no_port,
                good | {"Dest Port": "80"},
                nobody,
                summary(CLIENT, FRONTEND, 80, "ACCEPT", 2) | {"Flows Started": "two"},
                good,
            ]
        )
        + b'{"level":"info","timestamp":"2026-11-22T0'  # a line still being written
    )
    tally, report = tally_of([path])
    assert flows(tally) == 2
    assert report.bad_lines == 8
    assert report.first_bad_line == f"{path}:3"


def test_an_unfinished_gzip_backup_gives_what_it_has(tmp_path):
    whole = gzip.compress(lines_bytes([verdict(CLIENT, FRONTEND, 80)] * 5000))
    path = tmp_path / "network-policy-agent-2026-11-22T04-00-00.000.log.gz"
    path.write_bytes(whole[: len(whole) // 2])
    tally, report = tally_of([path])
    assert 0 < flows(tally) < 5000
    [damaged] = report.damaged_files
    assert damaged.startswith(f"{path}: ")


def test_only_lines_in_the_time_range(tmp_path):
    stamps = [f"2026-11-22T05:{minute:02d}:00.000Z" for minute in range(10)]
    path = write_lines(
        tmp_path / "network-policy-agent.log",
        [verdict(CLIENT, FRONTEND, 80, stamp=stamp) for stamp in stamps],
    )
    five_past = calendar.timegm((2026, 11, 22, 5, 5, 0)) * 1000
    tally, report = tally_of([path], since_ms=five_past, until_ms=five_past + 120_000)
    assert flows(tally) == 3  # 05:05, 05:06 and 05:07
    assert (report.lines_read, report.out_of_range) == (10, 7)
