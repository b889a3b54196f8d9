"""Which of the capabilities the agent needs it holds, read from ``/proc/self/status``.

Without one of them the kernel refuses a step deep inside bcc or the verifier,
and what comes back is a bare "Operation not permitted" or a verifier message
that names no capability. Reading the effective set first lets the agent say
which capability is missing, in one line, before it tries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Capability numbers from linux/capability.h.
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Requirement:
    name: str
    why: str
    # The capabilities any of which grants it. Before Linux 5.8 CAP_SYS_ADMIN
    # covered what CAP_BPF and CAP_PERFMON now do, and the kernel still accepts
    # it for them: a privileged process passes.
    granted_by: tuple[int, ...]


# What loading and attaching our tc programs takes (docker/README.md, "Users and capabilities").
TO_LOAD_PROGRAMS = (
    Requirement("CAP_BPF", "to create maps and load programs", (CAP_BPF, CAP_SYS_ADMIN)),
    Requirement("CAP_NET_ADMIN", "to load tc programs and attach them to veths", (CAP_NET_ADMIN,)),
    Requirement(
        "CAP_PERFMON",
        "for the verifier to accept the programs' pointer arithmetic",
        (CAP_PERFMON, CAP_SYS_ADMIN),
    ),
)


def effective_capabilities(status: Path = STATUS) -> int:
    """The ``CapEff`` bit mask of this process."""
    for line in status.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            return int(value, 16)
    raise RuntimeError(f"{status} has no CapEff line")


def holds(capability: int, effective: int | None = None) -> bool:
    mask = effective_capabilities() if effective is None else effective
    return bool(mask >> capability & 1)


def missing(
    requirements: tuple[Requirement, ...], effective: int | None = None
) -> list[Requirement]:
    mask = effective_capabilities() if effective is None else effective
    return [
        requirement
        for requirement in requirements
        if not any(holds(capability, mask) for capability in requirement.granted_by)
    ]


def missing_to_load_programs(effective: int | None = None) -> str | None:
    """One line naming each capability the agent lacks to load its programs, or None."""
    absent = missing(TO_LOAD_PROGRAMS, effective)
    if not absent:
        return None
    names = [requirement.name for requirement in TO_LOAD_PROGRAMS]
    needed = ", ".join(names[:-1]) + " and " + names[-1]
    what = ", ".join(f"{requirement.name} ({requirement.why})" for requirement in absent)
    plural = "ies" if len(absent) > 1 else "y"
    return (
        f"cannot load the eBPF programs: missing capabilit{plural} {what}; "
        f"the agent needs {needed} in its effective set"
    )
