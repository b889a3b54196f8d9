"""A restart with the same programs loads them from the cache, without the compiler."""

from __future__ import annotations

import socket

import pytest

from flowlog import bpf_syscall
from flowlog.dataplane.programs import INGRESS_PROGRAM, cache_file
from tests.dataplane.conftest import (
    loaded_dataplane,
    new_pin_dir,
    peer,
    policy_document,
    write_policy,
)
from tests.support import frames
from tests.support.frames import TC_ACT_OK, TC_ACT_SHOT, TCP_SYN

pytestmark = pytest.mark.bpf


def verdicts(topology, dataplane, client, backend) -> list[int]:
    """The ingress program's verdicts on a SYN to an allowed port, then to another."""
    fd = bpf_syscall.obj_get(str(dataplane.pins.prog(INGRESS_PROGRAM)))
    try:
        results = []
        for port in (6379, 80):
            frame = frames.ipv4(
                client.ipv4, backend.ipv4, socket.IPPROTO_TCP, frames.tcp(40000, port, TCP_SYN)
            )
            results.append(
                topology.node.call(lambda f=frame: frames.run_program(fd, f, backend.ifindex))
            )
        return results
    finally:
        import os

        os.close(fd)


def test_the_second_load_comes_from_the_cache_and_enforces_the_same(topology, policy_dir, tmp_path):
    client = topology.add_pod("client", "stars")
    backend = topology.add_pod("backend", "stars")
    write_policy(
        policy_dir,
        "backend.yaml",
        policy_document(
            "backend-policy",
            [("stars", "backend")],
            isolation=["Ingress"],
            ingress=[peer(f"{client.ipv4}/32", {"port": 6379})],
        ),
    )
    cache = tmp_path / "cache"
    settings = {"policy_dir": str(policy_dir), "program_cache_dir": str(cache)}
    seen = []
    for _ in range(2):
        pins = new_pin_dir()
        with loaded_dataplane(topology, pins, **settings) as dataplane:
            seen.append(
                (dataplane._programs.compiled, verdicts(topology, dataplane, client, backend))
            )
    assert seen == [(True, [TC_ACT_OK, TC_ACT_SHOT]), (False, [TC_ACT_OK, TC_ACT_SHOT])]
    assert list(cache.glob("programs-*.json")) == [cache_file(cache, 64 * 1024)]


def test_a_cache_record_that_does_not_load_means_a_compile(topology, policy_dir, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache_file(cache, 64 * 1024).write_text('{"format": 1, "maps": [], "programs": {"x": "AAAA"}}')
    with loaded_dataplane(topology, new_pin_dir(), program_cache_dir=str(cache)) as dataplane:
        assert dataplane._programs.compiled
    assert b'"maps":[{' in cache_file(cache, 64 * 1024).read_bytes()  # written anew
