"""Counting flow-log lines as they stream past: one tally per distinct observation.

An observation is everything a line says about who talked to whom and what
was decided, without the parts that differ from flow to flow (source port,
time, sizes): the two ends' keys, port, protocol, verdict, direction, the
local pod and the policy. A million lines between a few hundred pods make a
few tens of thousands of observations, so memory follows the number of
distinct conversations, not the number of lines. Working out which pod or
network each end is happens afterwards, once per observation
(``flowlog.flowmap.graph``).

One kind of conversation has no such bound: outside addresses, such as the
clients of a public service, can each be new. When the tally holds more than
``max_observations``, ends known only by an address that no observation shows
to be a pod's or a node's are replaced by their outside network (the one the
map groups them by), and the observations that become the same are merged;
if that is not enough, all but the busiest networks become ``world``. From
then on each new observation is merged so as it comes.

The hot path builds a plain tuple in ``Observation``'s field order and
updates a list of counters; the values of a new observation are shared with the
observations before it, so thousands of them naming a namespace hold its name once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flowlog.flowmap.endpoints import WORLD, OutsideNetworks, is_named
from flowlog.flowmap.observation import (
    DECIDED,
    DEST_IP,
    DEST_NAMESPACE,
    DEST_NODE,
    DEST_PORT,
    EXPIRED,
    NO_SIZES,
    OBSERVED_KEYS,
    PROTO,
    SIZE_KEYS,
    SRC_IP,
    SRC_NAMESPACE,
    SRC_NODE,
    SUMMARY_MESSAGE,
    VERDICT,
    Observation,
)

# About 80 MB: many more observations than hundreds of pods make among themselves.
MAX_OBSERVATIONS = 100_000
# Outside networks kept apart when there are too many: many more than a map draws.
KEPT_NETWORKS = 1000


@dataclass(frozen=True)
class Counts:
    """What the lines of one observation add up to."""

    verdicts: int  # per-verdict lines (ACCEPT, DENY)
    flows_started: int  # from summary lines
    packets_sent: int  # from Src to Dest
    bytes_sent: int
    packets_received: int
    bytes_received: int
    first_seen: str  # times as the flow log writes them, which sort as text
    last_seen: str
    has_sizes: bool  # some line carried packet and byte counts

    @property
    def attempts(self) -> int:
        """Flows (summaries) or verdicts (per-verdict lines) this observation stands for."""
        return self.verdicts + self.flows_started


# Positions in a tally's list of counters.
VERDICTS, FLOWS, PACKETS_SENT, BYTES_SENT, PACKETS_RECEIVED, BYTES_RECEIVED = range(6)
FIRST_SEEN, LAST_SEEN, HAS_SIZES = 6, 7, 8


class FlowTally:
    """Observations and their counts, fed line by line or by Insights result rows."""

    def __init__(self, networks: OutsideNetworks, max_observations: int = MAX_OBSERVATIONS) -> None:
        self.networks = networks
        self.max_observations = max_observations
        self._tallies: dict[tuple, list] = {}
        self.undecided_lines = 0  # verdicts neither ACCEPT, DENY nor a flow's end (UNKNOWN)
        self.merged_addresses = False  # some outside addresses were merged into networks
        # Each value of the observations once: thousands of them name the same namespace.
        self._shared: dict = {}
        self._pods_and_nodes: set[str] = set()  # addresses, as the last merge found them
        self._kept_networks: frozenset[str] | None = None  # the rest merged into world

    def __len__(self) -> int:
        return len(self._tallies)

    def add_line(self, line: Any) -> bool:
        """Count one decoded flow-log line. False, and nothing counted, for anything that
        is not one: not an object, a key every line has missing, a value of the wrong type."""
        try:
            key = tuple(map(line.get, OBSERVED_KEYS))
            stamp = line["timestamp"]
        except (AttributeError, KeyError, TypeError):
            return False
        verdict = key[VERDICT]
        if type(stamp) is not str or type(key[DEST_PORT]) is not int:
            return False
        if verdict is None or key[PROTO] is None:
            return False
        # Each end needs an address, a namespace (pod or workload) or a node name.
        if key[SRC_IP] is None and key[SRC_NAMESPACE] is None and key[SRC_NODE] is None:
            return False
        if key[DEST_IP] is None and key[DEST_NAMESPACE] is None and key[DEST_NODE] is None:
            return False
        verdicts = flows = 0
        first = last = stamp
        sizes = NO_SIZES
        if key[0] == SUMMARY_MESSAGE:
            flows = line.get("Flows Started")
            first, last = line.get("Start Time", stamp), line.get("End Time", stamp)
            sizes = tuple(line.get(name, 0) for name in SIZE_KEYS)
        elif verdict in DECIDED:
            verdicts = 1
        elif verdict == EXPIRED:
            first = line.get("Start Time", stamp)
            sizes = tuple(line.get(name, 0) for name in SIZE_KEYS)
        else:
            self.undecided_lines += 1
            return True
        if type(first) is not str or type(last) is not str or type(flows) is not int:
            return False
        if sizes is not NO_SIZES and not all(type(size) is int for size in sizes):
            return False
        self._count(key, verdicts, flows, sizes, first, last, sizes is not NO_SIZES)
        return True

    def add_query_row(self, row: Mapping[str, str]) -> int:
        """Count one row of ``flowlog.flowmap.cloudwatch.EDGE_QUERY``'s result; the lines
        it stands for. ValueError for a count or port that is not a number."""
        lines = _integer(row.get("lines"))
        key = list(map(row.get, OBSERVED_KEYS))
        key[DEST_PORT] = _integer(key[DEST_PORT])
        verdict = key[VERDICT]
        summary = key[0] == SUMMARY_MESSAGE
        if not summary and verdict not in DECIDED and verdict != EXPIRED:
            self.undecided_lines += lines
            return lines
        verdicts = lines if verdict in DECIDED and not summary else 0
        sizes = tuple(_integer(row.get(column)) for column in QUERY_SIZE_COLUMNS)
        has_sizes = any(column in row for column in QUERY_SIZE_COLUMNS)
        first = _iso_time(row.get("firstSeen", ""))
        last = _iso_time(row.get("lastSeen", ""))
        flows = _integer(row.get("flowsStarted"))
        self._count(tuple(key), verdicts, flows, sizes, first, last, has_sizes)
        return lines

    def _count(
        self,
        key: tuple,
        verdicts: int,
        flows: int,
        sizes: tuple[int, ...],
        first: str,
        last: str,
        has_sizes: bool,
    ) -> None:
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= self.max_observations:
                self._merge_outside_addresses()
            if self.merged_addresses:  # from then on, as each new observation comes
                self._pods_and_nodes.update(self._named_addresses_of(key))
                key = self._merged(key)
                tally = self._tallies.get(key)
        if tally is None:
            key = tuple(map(self._shared.setdefault, key, key))
            tally = self._tallies[key] = [0, 0, 0, 0, 0, 0, first, last, False]
        _add(tally, verdicts, flows, *sizes, first, last, has_sizes)

    def _merge_outside_addresses(self) -> None:
        """Outside addresses into their networks; if that is not enough, all but the
        busiest networks into ``world``."""
        self._pods_and_nodes = self._named_addresses()
        self._kept_networks = None
        self._merge_all()
        if len(self._tallies) > self.max_observations // 2:
            self._kept_networks = self._busiest_networks()
            self._merge_all()
        if len(self._tallies) > self.max_observations // 2:
            # Conversations among pods and nodes: nothing to merge, room to grow.
            self.max_observations = 2 * len(self._tallies)
        self._shared.clear()  # it holds every address merged away
        self.merged_addresses = True

    def _named_addresses(self) -> set[str]:
        return {address for key in self._tallies for address in self._named_addresses_of(key)}

    @staticmethod
    def _named_addresses_of(key: tuple) -> Iterator[str]:
        """The addresses of the ends ``key`` names as a pod or a node."""
        for source, field in ((True, SRC_IP), (False, DEST_IP)):
            if key[field] is not None and is_named(key, source):
                yield key[field]

    def _outside_ends(self, key: tuple) -> Iterator[int]:
        """The fields of ``key`` holding an outside address (or network)."""
        for source, field in ((True, SRC_IP), (False, DEST_IP)):
            address = key[field]
            if (
                address is not None
                and address not in self._pods_and_nodes
                and not is_named(key, source)
            ):
                yield field

    def _merged(self, key: tuple) -> tuple:
        merged = list(key)
        for field in self._outside_ends(key):
            network = self.networks.network_of(key[field])
            if self._kept_networks is not None and network not in self._kept_networks:
                network = WORLD
            merged[field] = network
        return tuple(merged)

    def _merge_all(self) -> None:
        tallies, self._tallies = self._tallies, {}
        for key, tally in tallies.items():
            merged = self._merged(key)
            into = self._tallies.get(merged)
            if into is None:
                self._tallies[merged] = tally
            else:
                _add(into, *tally)

    def _busiest_networks(self) -> frozenset[str]:
        attempts: Counter[str] = Counter()
        for key, tally in self._tallies.items():
            for field in self._outside_ends(key):
                attempts[key[field]] += tally[VERDICTS] + tally[FLOWS]
        return frozenset(network for network, _ in attempts.most_common(KEPT_NETWORKS))

    def observations(self) -> Iterator[tuple[Observation, Counts]]:
        for key, tally in self._tallies.items():
            yield Observation._make(key), Counts(*tally)


def _add(
    tally: list,
    verdicts: int,
    flows: int,
    packets_sent: int,
    bytes_sent: int,
    packets_received: int,
    bytes_received: int,
    first: str,
    last: str,
    has_sizes: bool,
) -> None:
    tally[VERDICTS] += verdicts
    tally[FLOWS] += flows
    tally[PACKETS_SENT] += packets_sent
    tally[BYTES_SENT] += bytes_sent
    tally[PACKETS_RECEIVED] += packets_received
    tally[BYTES_RECEIVED] += bytes_received
    if first < tally[FIRST_SEEN]:
        tally[FIRST_SEEN] = first
    if last > tally[LAST_SEEN]:
        tally[LAST_SEEN] = last
    if has_sizes:
        tally[HAS_SIZES] = True


# The edge query's sums of SIZE_KEYS, in that order.
QUERY_SIZE_COLUMNS = ("packetsSent", "bytesSent", "packetsReceived", "bytesReceived")


def _integer(text: str | None) -> int:
    """Insights prints sums and counts as text, sometimes with a fraction."""
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        return int(float(text))


def _iso_time(text: str) -> str:
    """Insights' ``2026-11-22 05:00:00.123`` as the flow log writes it, so both sort together."""
    if len(text) == 23 and text[10] == " ":
        return f"{text[:10]}T{text[11:]}Z"
    return text
