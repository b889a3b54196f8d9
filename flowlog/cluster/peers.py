"""Both ends of every flow named: addresses to the pods and nodes that held them, by time.

Several sources claim addresses for identities: the Kubernetes API (every
pod's IPs, and its node's address), the VPC CNI's checkpoint (this node's
pods), and the PolicyEndpoints being enforced (their pods' IPs). Where they
disagree the API wins, then the checkpoint, then the PolicyEndpoints.

Pod IPs are reused, so each address keeps leases: an identity valid from a
time until a time. An event is named by the lease that covers its own time,
never by whoever holds the address when the event is read. A pod that goes
away keeps its addresses for ``grace_seconds`` (events of its last moments
are still in flight); a pod that takes an address over starts its lease when
the previous holder went away, or when it was seen taking it.

``resolve`` names a whole batch in C (``_addresses.AddressMap``); everything
else here runs per change, not per event. Identities are numbered from 1 and
never renumbered, so an id in flight always means what it meant.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

import numpy as np

from flowlog.cluster._addresses import AddressMap
from flowlog.format import DEST, SRC, json_string
from flowlog.records import FLOW_END, V4_MAPPED_PREFIX, FlowBatch

POD, NODE = "pod", "node"
# Sources of claims, strongest first.
API, CHECKPOINT, POLICY = "api", "checkpoint", "policy"
SOURCE_RANK = {API: 0, CHECKPOINT: 1, POLICY: 2}
DEFAULT_GRACE_SECONDS = 60.0
FOREVER = 2**62
_SRC_OFFSET = FLOW_END.fields["src_ip"][1]
_DEST_OFFSET = FLOW_END.fields["dest_ip"][1]


@dataclass(frozen=True)
class Identity:
    """What an address belongs to: a pod (with its namespace and owner workload) or a node."""

    kind: str  # POD or NODE
    name: str
    namespace: str = ""
    workload: str = ""  # "deployment/frontend", "pod/<name>" for a bare pod; "" unknown

    def keys(self, end: str) -> bytes:
        """The flow-log keys naming this identity at one end (SRC or DEST)."""
        if self.kind == NODE:
            return b',"%s Node":%s' % (end.encode(), json_string(self.name))
        text = b',"%s Pod":%s,"%s Namespace":%s' % (
            end.encode(),
            json_string(self.name),
            end.encode(),
            json_string(self.namespace),
        )
        if self.workload:
            text += b',"%s Workload":%s' % (end.encode(), json_string(self.workload))
        return text


@dataclass(frozen=True)
class Lease:
    id: int
    from_ms: int
    until_ms: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.id, self.from_ms, self.until_ms)


@dataclass
class _Claim:
    id: int
    since_ms: int
    released_ms: int | None = None


@dataclass
class _Address:
    # (source, owner) -> claim; owner tells apart the pods claiming one node address
    claims: dict[tuple[str, str], _Claim] = field(default_factory=dict)
    current: Lease | None = None
    previous: Lease | None = None


def address_bytes(address: str | bytes) -> bytes:
    """An address as the 16 bytes events carry (IPv4 as ::ffff:a.b.c.d)."""
    if isinstance(address, bytes):
        return address
    parsed = ipaddress.ip_address(address)
    if parsed.version == 4:
        return V4_MAPPED_PREFIX + parsed.packed
    return parsed.packed


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Peers:
    """The identities of addresses over time, and each batch's two ends resolved."""

    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.grace_ms = int(grace_seconds * 1000)
        self._map = AddressMap()
        self._addresses: dict[bytes, _Address] = {}
        self._ids: dict[Identity, int] = {}
        self._identities: list[Identity | None] = [None]  # id 0: nobody
        self.version = 0  # changes whenever an identity is numbered
        self._src_ids = np.zeros(0, np.int32)
        self._dest_ids = np.zeros(0, np.int32)

    # --- what the sources say --------------------------------------------------

    def claim(
        self,
        source: str,
        owner: str,
        address: str | bytes,
        identity: Identity,
        at_ms: int | None = None,
    ) -> None:
        """``owner`` (a pod's uid, say) says ``address`` belongs to ``identity``."""
        key = address_bytes(address)
        entry = self._addresses.setdefault(key, _Address())
        ident = self._number(identity)
        at = now_ms() if at_ms is None else at_ms
        claim = entry.claims.get((source, owner))
        if claim is not None and claim.id == ident and claim.released_ms is None:
            return
        entry.claims[(source, owner)] = _Claim(ident, at)
        self._update(key, entry, at)

    def release(
        self, source: str, owner: str, address: str | bytes, at_ms: int | None = None
    ) -> None:
        """``owner`` no longer claims ``address`` (its pod is gone, say)."""
        key = address_bytes(address)
        entry = self._addresses.get(key)
        claim = entry.claims.get((source, owner)) if entry else None
        if entry is None or claim is None or claim.released_ms is not None:
            return
        at = now_ms() if at_ms is None else at_ms
        claim.released_ms = at
        self._update(key, entry, at)

    def replace_claims(
        self, source: str, claims: dict[tuple[str, bytes], Identity], at_ms: int | None = None
    ) -> None:
        """Make ``claims`` ((owner, address) -> identity) all that ``source`` claims."""
        for owner, address in self.claims(source).keys() - claims.keys():
            self.release(source, owner, address, at_ms)
        for (owner, address), identity in claims.items():
            self.claim(source, owner, address, identity, at_ms)

    def claims(self, source: str) -> dict[tuple[str, bytes], Identity]:
        """The live claims of ``source``: (owner, address) -> identity."""
        return {
            (owner, key): self._identities[claim.id]
            for key, entry in self._addresses.items()
            for (claim_source, owner), claim in entry.claims.items()
            if claim_source == source and claim.released_ms is None
        }

    def expire(self, at_ms: int | None = None) -> int:
        """Forget addresses nobody has claimed for longer than the grace period."""
        at = now_ms() if at_ms is None else at_ms
        gone = [
            key
            for key, entry in self._addresses.items()
            if all(
                c.released_ms is not None and c.released_ms + 2 * self.grace_ms < at
                for c in entry.claims.values()
            )
        ]
        for key in gone:
            del self._addresses[key]
            self._map.discard(key)
        return len(gone)

    # --- leases ------------------------------------------------------------------

    def _holder(self, entry: _Address) -> _Claim | None:
        """The claim that names the address now: live ones first, by source, newest."""
        live = [(s, c) for (s, _), c in entry.claims.items() if c.released_ms is None]
        if live:
            return min(live, key=lambda sc: (SOURCE_RANK[sc[0]], -sc[1].since_ms))[1]
        released = [c for c in entry.claims.values() if c.released_ms is not None]
        return max(released, key=lambda c: c.released_ms or 0, default=None)

    def _update(self, key: bytes, entry: _Address, at: int) -> None:
        holder = self._holder(entry)
        if holder is None:
            return
        live = holder.released_ms is None
        until = FOREVER if live else holder.released_ms + self.grace_ms
        current = entry.current
        if current is not None and current.id == holder.id:
            entry.current = Lease(current.id, current.from_ms, until)
        elif current is None:
            entry.current = Lease(holder.id, 0 if live else holder.since_ms, until)
        else:
            # Someone else holds the address now. The earlier lease ends when its
            # holder went away (its release, before the grace period), or now.
            gone = current.until_ms - self.grace_ms if current.until_ms < FOREVER else at
            handover = max(current.from_ms, min(at, gone))
            entry.previous = Lease(current.id, current.from_ms, handover)
            entry.current = Lease(holder.id, handover, until)
        self._map.set(
            key,
            entry.current.as_tuple(),
            entry.previous.as_tuple() if entry.previous else None,
        )

    def leases(self, address: str | bytes) -> tuple[Lease | None, Lease | None]:
        """(current, previous) of an address, for people and tests."""
        entry = self._addresses.get(address_bytes(address))
        return (entry.current, entry.previous) if entry else (None, None)

    @property
    def numbered(self) -> int:
        """Identities numbered so far (ids 1 to this)."""
        return len(self._identities) - 1

    @property
    def addresses(self) -> int:
        return len(self._addresses)

    def identity(self, ident: int) -> Identity | None:
        return self._identities[ident] if 0 < ident < len(self._identities) else None

    # --- ids and their text ----------------------------------------------------

    def _number(self, identity: Identity) -> int:
        ident = self._ids.get(identity)
        if ident is None:
            ident = self._ids[identity] = len(self._identities)
            self._identities.append(identity)
            self.version += 1
        return ident

    def rows(self, end: str) -> list[bytes]:
        assert end in (SRC, DEST)
        return [b""] + [identity.keys(end) for identity in self._identities[1:] if identity]

    # --- per batch --------------------------------------------------------------

    def resolve(self, batch: FlowBatch) -> tuple[np.ndarray, np.ndarray]:
        """Each event's source and destination peer ids (int32; 0 unknown), valid
        until the next call."""
        count = len(batch)
        if len(self._src_ids) < count:
            self._src_ids = np.zeros(max(count, 2 * len(self._src_ids)), np.int32)
            self._dest_ids = np.zeros(len(self._src_ids), np.int32)
        src, dest = self._src_ids[:count], self._dest_ids[:count]
        self._map.resolve(
            np.ascontiguousarray(batch.events),
            _SRC_OFFSET,
            _DEST_OFFSET,
            np.ascontiguousarray(batch.epoch_ms, np.int64),
            src,
            dest,
        )
        return src, dest
