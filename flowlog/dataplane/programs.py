"""Compiling and loading the tc programs with bcc (in a child process), and their pins.

Pin layout under ``--bpf-pin-dir`` (default ``/sys/fs/bpf/flowlog``)::

    progs/handle_ingress   traffic into pods (on each veth's tc egress hook)
    progs/handle_egress    traffic out of pods (on each veth's tc ingress hook)
    maps/endpoints         ifindex -> struct endpoint
    maps/ingress_rules     LPM trie struct rule_key -> struct rule_value
    maps/egress_rules      the same, for traffic out of pods
    maps/conntrack         LRU struct flow_key -> struct flow_state
    maps/policy_events     RINGBUF of struct flow_event (the agent's)
    maps/tap_events        RINGBUF of struct flow_event (flowlog ebpf events)
    maps/ringbuf_lost      PERCPU_ARRAY u64: events the ring buffers could not take
    maps/settings          ARRAY of __u32 switches (SETTING_* slots)
    maps/pod_names         endpoint_id -> struct object_name (for other processes)
    maps/policy_names      policy_id -> struct object_name

A new load replaces every pin but ``maps/conntrack``, which bcc opens again
when its key and value sizes still match, so that flows established under a
previous agent (one that stopped with ``--keep-programs``) stay established.
Events that agent's programs left unread in the old ``maps/policy_events``
are counted as lost by the new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from flowlog import bpf_syscall
from flowlog.config import ConfigError
from flowlog.dataplane import maps, privileges, program_cache
from flowlog.dataplane.bpf_map import BpfMap
from flowlog.dataplane.policy import EGRESS, INGRESS
from flowlog.records import LAYOUTS
from flowlog.sources._ringbuf import drain

PROGRAM_SOURCE = "tc_policy.c"
INGRESS_PROGRAM = "handle_ingress"
EGRESS_PROGRAM = "handle_egress"
PROGRAMS = (INGRESS_PROGRAM, EGRESS_PROGRAM)
MAP_NAMES = (
    "endpoints",
    "ingress_rules",
    "egress_rules",
    "conntrack",
    "policy_events",
    "tap_events",
    "ringbuf_lost",
    "settings",
    "pod_names",
    "policy_names",
)
RINGBUF_MAP = "policy_events"
TAP_MAP = "tap_events"
CONNTRACK_MAP = "conntrack"
CONNTRACK_ENTRIES = 262144
TAP_SIZE = 256 * 1024
BPF_FS_TYPE = "bpf"
SYSTEM_BPF_FS = Path("/sys/fs/bpf")

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)


def bpf_source_dir() -> Path:
    """``$FLOWLOG_BPF_DIR``, else the repository's ``bpf/`` next to the package."""
    configured = os.environ.get("FLOWLOG_BPF_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "bpf"


@dataclass(frozen=True)
class PinLayout:
    root: Path

    @property
    def progs(self) -> Path:
        return self.root / "progs"

    @property
    def maps(self) -> Path:
        return self.root / "maps"

    def prog(self, name: str) -> Path:
        return self.progs / name

    def map(self, name: str) -> Path:
        return self.maps / name

    def exists(self) -> bool:
        return self.progs.is_dir() or self.maps.is_dir()

    def remove(self) -> None:
        """Unpin everything flowlog pinned here (the kernel frees what nothing else holds)."""
        for directory, names in ((self.progs, PROGRAMS), (self.maps, MAP_NAMES)):
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
            with contextlib.suppress(FileNotFoundError, OSError):
                directory.rmdir()
        with contextlib.suppress(FileNotFoundError, OSError):
            self.root.rmdir()


def check_bpf_filesystem(path: Path) -> None:
    """Raise ConfigError unless ``path`` lies on a mounted BPF filesystem."""
    target = str(path.resolve())
    best, fstype = "", ""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _, mount_point, kind = line.split()[:3]
            inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, fstype = mount_point, kind
    if fstype != BPF_FS_TYPE:
        raise ConfigError(
            f"--bpf-pin-dir {path}: not on a BPF filesystem "
            "(mount one with: mount -t bpf bpffs /sys/fs/bpf)"
        )


def bpf_filesystem_mount_point(pin_dir: Path) -> Path:
    """Where to mount a BPF filesystem for ``pin_dir``.

    ``/sys/fs/bpf`` when the pin directory is under it, because that is where
    every BPF tool (bpftool, the AWS agent, Cilium) looks; otherwise the pin
    directory itself, so that nothing but our own pins is covered.
    """
    resolved = pin_dir.resolve()
    if resolved == SYSTEM_BPF_FS or SYSTEM_BPF_FS in resolved.parents:
        return SYSTEM_BPF_FS
    return resolved


def ensure_bpf_filesystem(pin_dir: Path) -> None:
    """Make sure ``pin_dir`` lies on a BPF filesystem, mounting one when allowed to.

    Inside a container whose node did not mount bpffs, or under ``ip netns
    exec`` (which gives its command a fresh ``/sys``), there is none. As
    Cilium's agent does, a process holding CAP_SYS_ADMIN mounts one itself;
    without it the error says how to mount it. A filesystem mounted here is
    left mounted on exit: pins kept with ``--keep-programs`` live in it.
    """
    try:
        check_bpf_filesystem(pin_dir)
        return
    except ConfigError:
        if not privileges.holds(privileges.CAP_SYS_ADMIN):
            raise
    mount_point = bpf_filesystem_mount_point(pin_dir)
    mount_point.mkdir(parents=True, exist_ok=True)
    # Mode 0700, as systemd mounts it: pinned maps hold other pods' traffic.
    if _libc.mount(b"bpffs", bytes(mount_point), b"bpf", 0, b"mode=0700") != 0:
        error = ctypes.get_errno()
        raise ConfigError(
            f"--bpf-pin-dir {pin_dir}: not on a BPF filesystem, and mounting one on "
            f"{mount_point} failed: {os.strerror(error)}"
        )
    log.info(
        "mounted a BPF filesystem on %s: --bpf-pin-dir %s was not on one", mount_point, pin_dir
    )
    check_bpf_filesystem(pin_dir)


def check_ringbuf_size(size: int) -> None:
    if size < mmap.PAGESIZE or size & (size - 1):
        raise ConfigError(
            f"--ringbuf-size: expected a power of two of at least {mmap.PAGESIZE}, got {size}"
        )


def _drop_incompatible_conntrack(path: Path) -> None:
    """Remove a pinned conntrack another flowlog version left with another layout."""
    if not path.exists():
        return
    fd = bpf_syscall.obj_get(str(path))
    try:
        info = bpf_syscall.map_info(fd)
    finally:
        os.close(fd)
    expected = (
        ctypes.sizeof(maps.FlowKey),
        ctypes.sizeof(maps.FlowState),
        CONNTRACK_ENTRIES,
    )
    if (info.key_size, info.value_size, info.max_entries) != expected:
        path.unlink()


def _compile_flags(ringbuf_size: int) -> list[str]:
    """What the compile depends on besides the sources (and where conntrack is pinned)."""
    return [
        f"-I{bpf_source_dir()}",
        f"-DRINGBUF_PAGES={ringbuf_size // mmap.PAGESIZE}",
        f"-DTAP_PAGES={TAP_SIZE // mmap.PAGESIZE}",
        f"-DCONNTRACK_ENTRIES={CONNTRACK_ENTRIES}",
    ]


def cache_file(cache_dir: Path, ringbuf_size: int) -> Path:
    """Where the compile for these sources and settings is kept."""
    sources = sorted(bpf_source_dir().glob("*.[ch]"))
    return (
        cache_dir
        / f"programs-{program_cache.cache_key(sources, _compile_flags(ringbuf_size))}.json"
    )


def compile_and_pin(pins: PinLayout, ringbuf_size: int, cache_dir: Path | None = None) -> None:
    """Compile and load the programs with bcc, then pin them and every map, and
    keep the compile in ``cache_dir`` for the next start.

    Run by ``python -m flowlog.dataplane.loader`` in a child process: bcc's
    compiler (clang and LLVM) leaves well over 100 MB behind in the process
    that used it, which the agent does not need to carry for the rest of its
    life. The pins are how the programs reach the agent.
    """
    import bcc  # here only: loading it maps clang and LLVM into the process

    cflags = [*_compile_flags(ringbuf_size), f'-DCONNTRACK_PIN="{pins.map(CONNTRACK_MAP)}"']
    source = bpf_source_dir() / PROGRAM_SOURCE
    loaded = bcc.BPF(src_file=str(source).encode(), cflags=cflags)
    for name in PROGRAMS:
        _replace_pin(loaded.load_func(name.encode(), bcc.BPF.SCHED_CLS).fd, pins.prog(name))
    for name in MAP_NAMES:
        if name != CONNTRACK_MAP:  # bcc pinned it, or opened the one already there
            _replace_pin(loaded[name.encode()].map_fd, pins.map(name))
    if cache_dir is not None:
        try:
            program_cache.record(
                cache_file(cache_dir, ringbuf_size),
                {name: loaded.dump_func(name.encode()) for name in PROGRAMS},
                {name: loaded[name.encode()].map_fd for name in MAP_NAMES},
            )
        except OSError as error:  # a read-only cache costs the next start a compile
            print(f"cannot keep the compiled programs in {cache_dir}: {error}", file=sys.stderr)
    loaded.cleanup()


def _load_cached(pins: PinLayout, ringbuf_size: int, cache_dir: Path) -> bool:
    """Load and pin the programs from the cache, without a compiler; False if it cannot."""
    reuse = {}
    conntrack = open_pinned(pins.map(CONNTRACK_MAP))
    if conntrack is not None:
        reuse[CONNTRACK_MAP] = conntrack  # established flows carry on
    loaded = program_cache.load(cache_file(cache_dir, ringbuf_size), reuse)
    if loaded is None:
        if conntrack is not None:
            os.close(conntrack)
        return False
    program_fds, map_fds = loaded
    for name, fd in program_fds.items():
        _replace_pin(fd, pins.prog(name))
        os.close(fd)
    for name, fd in map_fds.items():
        if name not in reuse:
            _replace_pin(fd, pins.map(name))
        os.close(fd)
    return True


class LoadedPrograms:
    """The programs and maps of one load, open in this process through their pins."""

    def __init__(self, pins: PinLayout, ringbuf_size: int, cache_dir: Path | None = None) -> None:
        check_ringbuf_size(ringbuf_size)
        ensure_bpf_filesystem(pins.root)
        pins.maps.mkdir(parents=True, exist_ok=True)
        pins.progs.mkdir(parents=True, exist_ok=True)
        _drop_incompatible_conntrack(pins.map(CONNTRACK_MAP))
        self.compiled = not (cache_dir and _load_cached(pins, ringbuf_size, cache_dir))
        if self.compiled:
            argv = [sys.executable, "-m", "flowlog.dataplane.loader", str(pins.root)]
            argv += [str(ringbuf_size), str(cache_dir or "")]
            loader = subprocess.run(argv, capture_output=True, text=True)
            if loader.returncode != 0:
                lines = loader.stderr.strip().splitlines()
                raise RuntimeError(
                    lines[-1] if lines else f"loader exited with {loader.returncode}"
                )
        self.pins = pins
        self.ringbuf_size = ringbuf_size
        self.program_fds = {name: bpf_syscall.obj_get(str(pins.prog(name))) for name in PROGRAMS}
        self.map_fds = {name: bpf_syscall.obj_get(str(pins.map(name))) for name in MAP_NAMES}
        self.endpoints = BpfMap(self.map_fds["endpoints"], ctypes.c_uint32, maps.Endpoint)
        self.rules = {
            direction: BpfMap(self.map_fds[name], maps.RuleKey, maps.RuleValue)
            for direction, name in ((INGRESS, "ingress_rules"), (EGRESS, "egress_rules"))
        }
        self.conntrack = BpfMap(self.map_fds[CONNTRACK_MAP], maps.FlowKey, maps.FlowState)
        self.settings = BpfMap(self.map_fds["settings"], ctypes.c_uint32, ctypes.c_uint32)
        self.pod_names = BpfMap(self.map_fds["pod_names"], ctypes.c_uint32, maps.ObjectName)
        self.policy_names = BpfMap(self.map_fds["policy_names"], ctypes.c_uint32, maps.ObjectName)
        self.lost = BpfMap(
            self.map_fds["ringbuf_lost"], ctypes.c_uint32, ctypes.c_uint64, per_cpu=True
        )

    def close(self) -> None:
        """Close this process's references; pinned and attached objects live on."""
        for fd in (*self.program_fds.values(), *self.map_fds.values()):
            os.close(fd)


def open_pinned(path: Path) -> int | None:
    """A new fd of the object pinned at ``path``, or None if nothing is pinned there."""
    try:
        return bpf_syscall.obj_get(str(path))
    except OSError:
        return None


def unread_events(ringbuf_fd: int) -> int:
    """Events waiting in a ring buffer of ours, between its consumer and producer."""
    page = mmap.PAGESIZE
    size = bpf_syscall.map_info(ringbuf_fd).max_entries
    with (
        mmap.mmap(ringbuf_fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0) as consumer_page,
        mmap.mmap(ringbuf_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page) as rest,
    ):
        (consumer,) = struct.unpack_from("<Q", consumer_page)
        (producer,) = struct.unpack_from("<Q", rest)
        data = memoryview(rest)[page:]
        try:
            return drain(data, consumer, producer, None, LAYOUTS["flowlog"].sizes)[0]
        finally:
            data.release()


def _replace_pin(fd: int, path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    bpf_syscall.obj_pin(fd, str(path))
