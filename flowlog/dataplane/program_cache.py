"""Compiled programs kept on disk, so a restart with the same programs skips the compiler.

bcc compiles ``bpf/tc_policy.c`` with clang at every start: about a second
here, most of the agent's start-up. After a compile the loader writes what
bcc produced to the cache, keyed by a hash of everything that decides it
(the sources, the compile flags, the kernel release, bcc's version): each
program's instructions, and each map's type, sizes and flags with the file
descriptor bcc gave it. A later start with the same key creates the maps
itself, puts their new descriptors where the old ones were in the
instructions (the ``BPF_PSEUDO_MAP_FD`` loads), and loads the programs with
two bpf(2) calls, without bcc; the kernel's verifier checks them as it
checks any program. Anything unexpected (no cache, a map the record does not
know, a refused program) falls back to compiling.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import logging
import os
import struct
from pathlib import Path

import orjson

from flowlog import bpf_syscall

log = logging.getLogger(__name__)

FORMAT = 1
SCHED_CLS = 3  # BPF_PROG_TYPE_SCHED_CLS
LICENSE = "GPL"
LD_IMM64 = 0x18
PSEUDO_MAP_FD = 1
INSTRUCTION = struct.Struct("<BBhi")


def cache_key(sources: list[Path], cflags: list[str]) -> str:
    digest = hashlib.sha256(f"flowlog-programs/{FORMAT}".encode())
    for source in sorted(sources):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    digest.update("\0".join(cflags).encode())
    digest.update(os.uname().release.encode())
    digest.update(_compiler_version())
    return digest.hexdigest()[:32]


def _compiler_version() -> bytes:
    """bcc's version file, read rather than imported: importing bcc maps clang and
    LLVM (over 50 MB) into the process, which the agent must not carry."""
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        return b""
    with contextlib.suppress(OSError):
        return (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_bytes()
    return b""


def record(path: Path, programs: dict[str, bytes], map_fds: dict[str, int]) -> None:
    """Write a compile's programs and maps (their fds are the ones in the instructions)."""
    specs = []
    for name, fd in map_fds.items():
        info = bpf_syscall.map_info(fd)
        specs.append(
            {
                "name": name,
                "type": info.type,
                "key_size": info.key_size,
                "value_size": info.value_size,
                "max_entries": info.max_entries,
                "flags": info.flags,
                "compiled_fd": fd,  # the descriptor the instructions name it by
            }
        )
    document = {
        "format": FORMAT,
        "maps": specs,
        "programs": {name: base64.b64encode(code).decode() for name, code in programs.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(orjson.dumps(document))
    partial.rename(path)


def load(path: Path, reuse: dict[str, int]) -> tuple[dict[str, int], dict[str, int]] | None:
    """(program fds, map fds) from a cache record, or None to compile instead.

    ``reuse`` are maps to use as they are (the pinned conntrack), by name."""
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if document.get("format") != FORMAT:
        return None
    made: list[int] = []
    try:
        map_fds, by_compiled_fd = {}, {}
        for spec in document["maps"]:
            fd = reuse.get(spec["name"])
            if fd is None:
                fd = bpf_syscall.map_create(
                    spec["type"],
                    spec["key_size"],
                    spec["value_size"],
                    spec["max_entries"],
                    spec["flags"],
                    spec["name"],
                )
                made.append(fd)
            map_fds[spec["name"]] = fd
            by_compiled_fd[spec["compiled_fd"]] = fd
        program_fds = {}
        for name, encoded in document["programs"].items():
            code = _relocate(base64.b64decode(encoded), by_compiled_fd)
            program_fds[name] = bpf_syscall.prog_load(SCHED_CLS, code, LICENSE, name)
            made.append(program_fds[name])
    except (OSError, KeyError, TypeError, ValueError, struct.error) as error:
        log.info("compiled programs in %s not usable (%s); compiling", path, error)
        for fd in made:
            os.close(fd)
        return None
    return program_fds, map_fds


def _relocate(code: bytes, fds: dict[int, int]) -> bytes:
    """The instructions with every map descriptor replaced by its new one."""
    out = bytearray(code)
    for offset in range(0, len(code), INSTRUCTION.size):
        opcode, registers, jump, immediate = INSTRUCTION.unpack_from(code, offset)
        if opcode == LD_IMM64 and registers >> 4 == PSEUDO_MAP_FD:
            if immediate not in fds:
                raise ValueError(f"instruction {offset // 8} names an unknown map fd {immediate}")
            INSTRUCTION.pack_into(out, offset, opcode, registers, jump, fds[immediate])
    return bytes(out)
