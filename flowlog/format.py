"""JSON flow-log lines for a whole batch of events at once.

A line is the concatenation of a few *fields*, each one chosen per event from
a table of ready-made byte strings: ``{"level":"info","timestamp":"…","Src
IP":"`` (by millisecond), the source address (by address), ``","Src
Port":38971,"Dest IP":"`` (by port), and so on. Building a line is then a
matter of copying table rows, which numpy does for a whole batch in one call
per field, with no Python code running per event:

* every table row is left-padded with NUL bytes to the table's width;
* fields are written right to left, each as a ``width``-byte window that ends
  exactly where the field ends in the output. The padding of a window lands
  on bytes that belong to earlier fields of the same line, which are written
  afterwards and overwrite it.

That holds while no padding reaches back past the start of its own line; a
batch where it would (an extremely long pod name next to an event without
one, say) is formatted by the slower route of copying padded rows and
deleting the NUL bytes, which gives the same bytes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import orjson

from flowlog.records import (
    DIRECTION_NAMES,
    PROTOCOL_NAMES,
    TIER_NAMES,
    UNKNOWN,
    V4_MAPPED_PREFIX,
    VERDICT_NAMES,
    FlowBatch,
)

PORT_VALUES = 1 << 16
# Packet sizes below this come from a ready-made table; larger ones (GSO
# super-packets) are rare and formatted per batch.
SIZE_TABLE_VALUES = 1 << 16


class Attribution(Protocol):
    """Names behind the ids in an event, kept by the data plane."""

    endpoints: Mapping[int, tuple[str, str]]  # endpoint_id -> (pod, namespace)
    policies: Mapping[int, tuple[str, str]]  # policy_id -> (policy, namespace)
    version: int  # changes whenever an entry is added


class Table:
    """Byte strings as rows of a NUL-left-padded 2-D array, with their lengths."""

    def __init__(self, rows: np.ndarray, lengths: np.ndarray) -> None:
        self.rows = rows  # uint8, shape (count, width)
        self.lengths = lengths  # int64, shape (count,)
        self.width = rows.shape[1]
        # The rows as one-dimensional ``width``-byte items: numpy copies those
        # several times faster than rows of a 2-D array.
        self.items = rows.view(np.dtype((np.void, self.width))).ravel() if self.width else rows

    @classmethod
    def of(cls, strings: Sequence[bytes], width: int = 0) -> Table:
        width = max([width, *map(len, strings)])
        padded = b"".join(s.rjust(width, b"\0") for s in strings)
        rows = np.frombuffer(padded, np.uint8).reshape(len(strings), width)
        return cls(rows, np.fromiter(map(len, strings), np.int64, len(strings)))

    @classmethod
    def numbers(cls, prefix: bytes, count: int, suffix: bytes = b"") -> Table:
        """``prefix + str(n) + suffix`` for every n below ``count``, built without a
        Python object per row."""
        numbers = np.arange(count)
        digits = np.ones(count, np.int64)
        for power in range(1, len(str(count - 1))):
            digits += numbers >= 10**power
        end = len(prefix) + int(digits.max()) + len(suffix)
        rows = np.zeros((count, end), np.uint8)
        rows[:, end - len(suffix) :] = np.frombuffer(suffix, np.uint8)
        last_digit = end - len(suffix) - 1
        for place in range(int(digits.max())):
            has = digits > place
            rows[has, last_digit - place] = ord("0") + numbers[has] // 10**place % 10
        for width in np.unique(digits).tolist():
            start = last_digit + 1 - width - len(prefix)
            rows[digits == width, start : start + len(prefix)] = np.frombuffer(prefix, np.uint8)
        return cls(rows, len(prefix) + digits + len(suffix))

    def extended(self, strings: Sequence[bytes]) -> Table:
        """This table with more rows after it (numbered from ``len(self.lengths)``)."""
        extra = Table.of(strings, width=self.width)
        rows = self.rows
        if extra.width > self.width:
            rows = np.pad(rows, ((0, 0), (extra.width - self.width, 0)))
        return Table(
            np.concatenate([rows, extra.rows]), np.concatenate([self.lengths, extra.lengths])
        )


def json_string(text: str) -> bytes:
    return orjson.dumps(text)


# --- the parts of a line that never change --------------------------------------

HEAD = b'{"level":"info","timestamp":"'
AFTER_TIMESTAMP = b'","logger":"ebpf-client","msg":"Flow Info: ","Src IP":"'
# ::ffff:0:0/96 read as the third little-endian 32-bit word of an address.
V4_MAPPED_WORD = int.from_bytes(V4_MAPPED_PREFIX[8:], "little")
TIMESTAMP_OFFSET = len(HEAD)  # readers find the timestamp here in every line
POD_KEYS = (b"Pod", b"Namespace")
POLICY_KEYS = (b"Policy", b"Policy Namespace")
LINE_END = b"}\n"

_PROTOCOL_CLASSES = [*PROTOCOL_NAMES.items(), (None, UNKNOWN)]
_VERDICT_CLASSES = [*VERDICT_NAMES.items(), (None, UNKNOWN)]
_TIER_CLASSES = [*TIER_NAMES.items(), (None, UNKNOWN)]


def _class_index(classes: list[tuple[int | None, str]]) -> np.ndarray:
    """Maps every u8 code to the position of its class; unknown codes to the last."""
    index = np.full(256, len(classes) - 1, np.int64)
    for position, (code, _) in enumerate(classes):
        if code is not None:
            index[code] = position
    return index


_PROTOCOL_INDEX = _class_index(_PROTOCOL_CLASSES)
_VERDICT_INDEX = _class_index(_VERDICT_CLASSES)
_TIER_INDEX = _class_index(_TIER_CLASSES)


def _verdict_table() -> Table:
    """``,"Proto":…,"Verdict":…,"Direction":…,"Tier":…`` for every combination."""
    rows = [
        b',"Proto":%s,"Verdict":%s,"Direction":%s,"Tier":%s'
        % (json_string(proto), json_string(verdict), json_string(direction), json_string(tier))
        for _, proto in _PROTOCOL_CLASSES
        for _, verdict in _VERDICT_CLASSES
        for direction in DIRECTION_NAMES.values()
        for _, tier in _TIER_CLASSES
    ]
    return Table.of(rows)


def _timestamp(epoch_ms: int) -> bytes:
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%03dZ" % millis


class AddressBook:
    """The text of every IPv4 address seen lately, as a table, and each event's row in it.

    The addresses one node sees are a small set, so a batch is resolved with
    two direct-mapped slots per address (two multiplicative hashes, which
    scatter the neighbouring addresses of a subnet) and one comparison: no
    sort, no Python code per event. Only addresses that are new, or that share
    both slots with other addresses, take a slower path.
    """

    MAX_KNOWN = 1 << 16
    EMPTY = -1

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._address_of_row = np.zeros(0, np.uint32)
        self._slots = (np.full(1 << 16, self.EMPTY, np.intp), np.full(1 << 16, self.EMPTY, np.intp))
        self._row_of: dict[int, int] = {}
        self.table = Table.of([])

    @staticmethod
    def _slot_keys(addresses: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        addresses = np.asarray(addresses, np.uint32)
        return (
            (addresses * np.uint32(0x9E3779B1)) >> np.uint32(16),
            (addresses * np.uint32(0x85EBCA77)) >> np.uint32(16),
        )

    def rows(self, addresses: np.ndarray) -> np.ndarray:
        """Row of each address (host-order uint32) in ``self.table``."""
        rows = np.full(len(addresses), self.EMPTY, np.intp)
        unresolved = np.ones(len(addresses), bool)
        if self._row_of:
            for slots, keys in zip(self._slots, self._slot_keys(addresses), strict=True):
                candidates = slots[keys]
                hit = unresolved & (self._address_of_row[candidates] == addresses)
                hit &= candidates != self.EMPTY
                rows[hit] = candidates[hit]
                unresolved &= ~hit
        if unresolved.any():
            self._resolve_slowly(addresses, rows, unresolved)
        return rows

    def _resolve_slowly(self, addresses: np.ndarray, rows: np.ndarray, unresolved: np.ndarray):
        unique, inverse = np.unique(addresses[unresolved], return_inverse=True)
        if len(self._row_of) + len(unique) > self.MAX_KNOWN:
            self._clear()
            self._resolve_slowly(addresses, rows, np.ones(len(addresses), bool))
            return
        unique_rows, new_texts = [], []
        for address in unique.tolist():
            row = self._row_of.get(address)
            if row is None:
                row = self._row_of[address] = len(self._row_of)
                new_texts.append(socket.inet_ntoa(address.to_bytes(4, "big")).encode())
                for slots, key in zip(self._slots, self._slot_keys(address), strict=True):
                    if slots[key] == self.EMPTY:
                        slots[key] = row
            unique_rows.append(row)
        if new_texts:
            self._address_of_row = np.fromiter(self._row_of, np.uint32, len(self._row_of))
            self.table = self.table.extended(new_texts)
        rows[unresolved] = np.array(unique_rows, np.intp)[inverse]


class FlowFormatter:
    """Turns a FlowBatch into the bytes of its flow-log lines."""

    def __init__(self, node_name: str, attribution: Attribution | None = None) -> None:
        self.attribution = attribution
        self._addresses = AddressBook()
        self._src_port = Table.numbers(b'","Src Port":', PORT_VALUES, b',"Dest IP":"')
        self._dest_port = Table.numbers(b'","Dest Port":', PORT_VALUES)
        self._verdict = _verdict_table()
        self._node = b',"Node":' + json_string(node_name)
        self._size = Table.numbers(b',"Packet Size":', SIZE_TABLE_VALUES, self._node)
        self._names_version: int | None = None
        self._pods = _id_table({}, POD_KEYS)
        self._policies = _id_table({}, POLICY_KEYS, suffix=LINE_END)
        self._buffer = np.empty(0, np.uint8)
        self._last_second = -1
        self._second_text = b""

    # --- per-batch tables ---------------------------------------------------

    def _heads(self, epoch_ms: np.ndarray) -> tuple[Table, np.ndarray]:
        unique, rows = np.unique(epoch_ms, return_inverse=True)
        heads = []
        for ms in unique.tolist():
            second, millis = divmod(ms, 1000)
            if second != self._last_second:
                self._last_second = second
                self._second_text = _timestamp(second * 1000)[:-5]
            heads.append(b"%s%s.%03dZ%s" % (HEAD, self._second_text, millis, AFTER_TIMESTAMP))
        return Table.of(heads), rows

    def _address_rows(self, src: np.ndarray, dest: np.ndarray) -> tuple[Table, np.ndarray]:
        """One table of address texts for both columns, and each event's two rows."""
        both = np.concatenate([src, dest]).view("<u4")
        if ((both[:, 0] | both[:, 1]) == 0).all() and (both[:, 2] == V4_MAPPED_WORD).all():
            rows = self._addresses.rows(both[:, 3].byteswap())
            return self._addresses.table, rows.reshape(2, -1)
        keyed = both.view(np.dtype((np.void, 16))).ravel()
        unique, rows = np.unique(keyed, return_inverse=True)
        table = Table.of([_address_text(bytes(address)) for address in unique])
        return table, rows.reshape(2, -1)

    def _packet_sizes(self, sizes: np.ndarray) -> tuple[Table, np.ndarray]:
        large = sizes >= SIZE_TABLE_VALUES
        if not large.any():
            return self._size, sizes.astype(np.intp)
        unique, extra_rows = np.unique(sizes[large], return_inverse=True)
        table = self._size.extended(
            [b',"Packet Size":%d%s' % (size, self._node) for size in unique.tolist()]
        )
        rows = sizes.astype(np.intp)
        rows[large] = SIZE_TABLE_VALUES + extra_rows
        return table, rows

    def _refresh_names(self) -> None:
        names = self.attribution
        if names is None or names.version == self._names_version:
            return
        self._names_version = names.version
        self._pods = _id_table(names.endpoints, POD_KEYS)
        self._policies = _id_table(names.policies, POLICY_KEYS, suffix=LINE_END)

    # --- the batch ------------------------------------------------------------

    def format(self, batch: FlowBatch) -> bytes:
        return bytes(self.format_view(batch))

    def format_view(self, batch: FlowBatch) -> memoryview:
        """The lines of ``batch``, valid until the next call (the buffer is reused)."""
        if len(batch) == 0:
            return memoryview(b"")
        self._refresh_names()
        events = batch.events
        heads, head_rows = self._heads(batch.epoch_ms)
        addresses, (src_rows, dest_rows) = self._address_rows(events["src_ip"], events["dest_ip"])
        sizes, size_rows = self._packet_sizes(events["packet_size"])
        verdict_rows = (
            (
                _PROTOCOL_INDEX[events["protocol"]] * len(_VERDICT_CLASSES)
                + _VERDICT_INDEX[events["verdict"]]
            )
            * len(DIRECTION_NAMES)
            + (events["is_egress"] != 0)
        ) * len(_TIER_CLASSES) + _TIER_INDEX[events["tier"]]
        fields = [
            (heads, head_rows),
            (addresses, src_rows),
            (self._src_port, events["src_port"].astype(np.intp)),
            (addresses, dest_rows),
            (self._dest_port, events["dest_port"].astype(np.intp)),
            (self._verdict, verdict_rows),
            (sizes, size_rows),
            (self._pods, _known_ids(events["endpoint_id"], len(self._pods.lengths))),
            (self._policies, _known_ids(events["policy_id"], len(self._policies.lengths))),
        ]
        return self._concatenate_rows(fields)

    def _output(self, size: int) -> np.ndarray:
        # One buffer, grown as needed and reused: fresh memory for every batch
        # would cost a page fault per 4 KiB.
        if len(self._buffer) < size:
            self._buffer = np.empty(max(size, 2 * len(self._buffer)), np.uint8)
        return self._buffer[:size]

    def _concatenate_rows(self, fields: list[tuple[Table, np.ndarray]]) -> memoryview:
        lengths = [table.lengths[rows] for table, rows in fields]
        line_lengths = np.sum(lengths, axis=0)
        line_starts = np.cumsum(line_lengths) - line_lengths
        field_ends = []
        end = line_starts
        for (table, _), length in zip(fields, lengths, strict=True):
            end = end + length
            # The window of this field starts ``width`` bytes before its end; it must
            # not reach back into the previous line.
            if table.width and (end - table.width < line_starts).any():
                return memoryview(_concatenate_by_deleting_padding(fields))
            field_ends.append(end)
        out = self._output(int(end[-1]))
        for (table, rows), field_end in reversed(list(zip(fields, field_ends, strict=True))):
            if table.width == 0:
                continue
            # Every ``width``-byte window of the output, one starting at each byte.
            windows = np.ndarray(
                buffer=out,
                dtype=table.items.dtype,
                shape=(len(out) - table.width + 1,),
                strides=(1,),
            )
            windows[field_end - table.width] = table.items[rows]
        return memoryview(out)


def _address_text(address: bytes) -> bytes:
    if address[:12] == V4_MAPPED_PREFIX:
        return socket.inet_ntoa(address[12:]).encode()
    return socket.inet_ntop(socket.AF_INET6, address).encode()


def _id_table(
    names: Mapping[int, tuple[str, str]], keys: tuple[bytes, bytes], suffix: bytes = b""
) -> Table:
    """Row ``id`` holds the two keys for that id; row 0 and unassigned ids hold neither."""
    rows = [suffix] * (max(names, default=0) + 1)
    for ident, (name, namespace) in names.items():
        rows[ident] = b',"%s":%s,"%s":%s%s' % (
            keys[0],
            json_string(name),
            keys[1],
            json_string(namespace),
            suffix,
        )
    return Table.of(rows)


def _known_ids(ids: np.ndarray, count: int) -> np.ndarray:
    """Ids the tables know; anything else (stale, foreign) formats as unknown."""
    return np.where(ids < count, ids, 0).astype(np.intp)


def _concatenate_by_deleting_padding(fields: list[tuple[Table, np.ndarray]]) -> bytes:
    padded = np.concatenate([table.rows[rows] for table, rows in fields], axis=1)
    return padded.tobytes().translate(None, b"\0")
