"""How long a flow may go without a packet before it ends, by protocol."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np

ICMP_PROTOCOLS = (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6)


@dataclass(frozen=True)
class IdleTimeouts:
    """Seconds a flow may go without a packet before it ends, by protocol."""

    tcp: float = 300.0  # established: a reply has been seen
    tcp_half_open: float = 30.0  # no reply yet
    udp: float = 60.0
    icmp: float = 30.0
    other: float = 60.0  # SCTP and the rest

    NAMES = ("tcp", "tcp-half-open", "udp", "icmp", "other")

    def by_protocol(self) -> np.ndarray:
        """Nanoseconds by IP protocol number (TCP: the established timeout)."""
        table = np.full(256, self.other, np.float64)
        table[socket.IPPROTO_TCP] = self.tcp
        table[socket.IPPROTO_UDP] = self.udp
        table[list(ICMP_PROTOCOLS)] = self.icmp
        return (table * 1e9).astype(np.int64)


def parse_idle_timeouts(value: object) -> IdleTimeouts:
    """``tcp=300,udp=60`` (or a mapping); protocols not named keep their defaults."""
    if isinstance(value, IdleTimeouts):
        return value
    if isinstance(value, dict):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            name, sep, seconds = part.strip().partition("=")
            if not part.strip():
                continue
            if not sep:
                raise ValueError(f"expected PROTOCOL=SECONDS, got {part.strip()!r}")
            items.append((name, seconds))
    values = {}
    for name, seconds in items:
        name = str(name).strip().lower()
        if name not in IdleTimeouts.NAMES:
            raise ValueError(f"unknown protocol {name!r}: expected {', '.join(IdleTimeouts.NAMES)}")
        try:
            number = float(str(seconds).strip().removesuffix("s"))
        except ValueError:
            raise ValueError(f"{name}: expected a number of seconds, got {seconds!r}") from None
        if not 1 <= number <= 86400:
            raise ValueError(f"{name}: must be between 1 and 86400 seconds, got {number:g}")
        values[name.replace("-", "_")] = number
    return IdleTimeouts(**values)
