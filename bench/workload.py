"""Event records that look like a busy node: a few hundred pods, ephemeral ports, mostly TCP."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowlog.records import AWS_V4


def aws_v4_records(count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    records = np.zeros(count, AWS_V4)
    pods = rng.integers(0, 250, count)
    peers = rng.integers(0, 4000, count)
    records["src_ip"][:, 0] = 10
    records["src_ip"][:, 1] = 0
    records["src_ip"][:, 2] = pods // 250
    records["src_ip"][:, 3] = pods % 250 + 1
    records["dest_ip"][:, 0] = 10
    records["dest_ip"][:, 1] = 1 + peers // 62500
    records["dest_ip"][:, 2] = peers // 250 % 250
    records["dest_ip"][:, 3] = peers % 250 + 1
    records["src_port"] = rng.integers(32768, 61000, count)
    records["dest_port"] = rng.choice([80, 443, 53, 6379, 8080, 9090], count)
    records["protocol"] = rng.choice([6, 6, 6, 17, 1], count)
    records["verdict"] = rng.choice([0, 1, 1, 1], count)
    records["packet_sz"] = rng.integers(54, 1500, count)
    records["is_egress"] = rng.integers(0, 2, count)
    records["tier"] = 2
    return records


def write_aws_v4_file(path: Path, count: int) -> Path:
    path.write_bytes(aws_v4_records(count).tobytes())
    return path
