"""Decoders of tickstream's Kafka record values (and of websocket ``?format=flatbuffers`` frames).

Written against the schema ``codecs/schema/tick_batch.fbs`` with the ``flatbuffers`` runtime:

* ``TickRecord`` (topic ``mt5.ticks``, file identifier ``TSK1``): one source's ticks, columnar
  (element i of every vector is tick i).
* ``BarRecord`` (topic ``mt5.bars.1m``): one closed 1-minute bar.

Scalar vectors are little-endian arrays, read in one ``struct.unpack_from`` each. A field the
writer left at its default (FlatBuffers omits those) reads as that default, as in every
FlatBuffers reader.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List

from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

from .ticks import Bar, Tick

SCHEMA_VERSION = 1
FILE_IDENTIFIER = b"TSK1"

# vtable offsets: field i of a table is at 4 + 2 * i (fields in schema order).
_T_SCHEMA_VERSION = 4
_T_SOURCE = 6
_T_FIRST_SEQ = 8
_T_LAST_SEQ = 10
_T_SYMBOLS = 12
_T_SEQ = 14
_T_SYMBOL_INDEX = 16
_T_SERVER_TIME_MSC = 18
_T_UTC_MSC = 20
_T_BID = 22
_T_ASK = 24
_T_LAST = 26
_T_VOLUME = 28
_T_VOLUME_REAL = 30
_T_FLAGS = 32

_BAR_FIELDS = (
    # (name, vtable offset, flatbuffers type)
    ("start_ms", 10, number_types.Int64Flags),
    ("open", 12, number_types.Float64Flags),
    ("high", 14, number_types.Float64Flags),
    ("low", 16, number_types.Float64Flags),
    ("close", 18, number_types.Float64Flags),
    ("tick_count", 20, number_types.Uint32Flags),
    ("spread_min", 22, number_types.Float64Flags),
    ("spread_max", 24, number_types.Float64Flags),
    ("spread_sum", 26, number_types.Float64Flags),
    ("last_open", 28, number_types.Float64Flags),
    ("last_high", 30, number_types.Float64Flags),
    ("last_low", 32, number_types.Float64Flags),
    ("last_close", 34, number_types.Float64Flags),
    ("volume", 36, number_types.Float64Flags),
    ("last_seq", 38, number_types.Uint64Flags),
)


class RecordError(ValueError):
    """A value that is not a record this reader can decode (the message says why)."""


@dataclass
class TickColumns:
    """A decoded ``TickRecord``: one source, columns of equal length ``len(seq)``."""

    source: str
    first_seq: int
    last_seq: int
    symbols: List[str]
    seq: List[int]
    symbol_index: List[int]
    server_time_msc: List[int]
    utc_msc: List[int]
    bid: List[float]
    ask: List[float]
    last: List[float]
    volume: List[int]
    volume_real: List[float]
    flags: List[int]

    def __len__(self) -> int:
        return len(self.seq)

    def ticks(self) -> List[Tick]:
        """The rows as ``Tick`` objects, in record order (seq order)."""
        syms = self.symbols
        return [
            Tick(self.source, seq, syms[si], utc, srv, b, a, la, v, vr, f)
            for seq, si, utc, srv, b, a, la, v, vr, f in zip(
                self.seq,
                self.symbol_index,
                self.utc_msc,
                self.server_time_msc,
                self.bid,
                self.ask,
                self.last,
                self.volume,
                self.volume_real,
                self.flags,
            )
        ]


def _root(buf: bytes) -> Table:
    return Table(buf, encode.Get(packer.uoffset, buf, 0))


def _string(t: Table, slot: int) -> str:
    o = t.Offset(slot)
    return t.String(o + t.Pos).decode("utf-8") if o else ""


def _scalar(t: Table, slot: int, flags, default):
    o = t.Offset(slot)
    return t.Get(flags, o + t.Pos) if o else default


def _vector(t: Table, slot: int, code: str, size: int, n: int) -> list:
    """Vector field `slot` as a list of `n` values of struct code `code` (`size` bytes each)."""
    o = t.Offset(slot)
    if not o:
        return [0] * n
    length = t.VectorLen(o)
    if length != n:
        raise RecordError(f"TickRecord column at vtable slot {slot} holds {length} values, seq holds {n}: the record is corrupt")
    start = t.Vector(o)
    if start + n * size > len(t.Bytes):
        raise RecordError("TickRecord vector runs past the end of the value: the record is truncated")
    return list(struct.unpack_from(f"<{n}{code}", t.Bytes, start))


def is_tick_record(value: bytes) -> bool:
    """True when `value` carries the TickRecord file identifier ``TSK1``."""
    return len(value) >= 8 and bytes(value[4:8]) == FILE_IDENTIFIER


def decode_tick_record(value: bytes) -> TickColumns:
    """Decodes one Kafka record value of the ticks topic (or one binary websocket frame)."""
    buf = bytes(value)
    if not is_tick_record(buf):
        raise RecordError("not a tickstream TickRecord (file identifier TSK1 missing): is this the ticks topic?")
    try:
        return _decode_tick_record(buf)
    except (struct.error, IndexError, UnicodeDecodeError) as err:
        raise RecordError(f"TickRecord is truncated or corrupt ({err}): {len(buf)} bytes do not hold the offsets they name") from err


def _decode_tick_record(buf: bytes) -> TickColumns:
    t = _root(buf)
    version = _scalar(t, _T_SCHEMA_VERSION, number_types.Uint16Flags, 1)
    if version > SCHEMA_VERSION:
        raise RecordError(
            f"TickRecord schema version {version} is newer than this reader ({SCHEMA_VERSION}): update the tickstream package"
        )
    seq_o = t.Offset(_T_SEQ)
    n = t.VectorLen(seq_o) if seq_o else 0
    sym_o = t.Offset(_T_SYMBOLS)
    symbols: List[str] = []
    if sym_o:
        start = t.Vector(sym_o)
        for i in range(t.VectorLen(sym_o)):
            symbols.append(t.String(start + 4 * i).decode("utf-8"))
    cols = TickColumns(
        source=_string(t, _T_SOURCE),
        first_seq=_scalar(t, _T_FIRST_SEQ, number_types.Uint64Flags, 0),
        last_seq=_scalar(t, _T_LAST_SEQ, number_types.Uint64Flags, 0),
        symbols=symbols,
        seq=_vector(t, _T_SEQ, "Q", 8, n),
        symbol_index=_vector(t, _T_SYMBOL_INDEX, "H", 2, n),
        server_time_msc=_vector(t, _T_SERVER_TIME_MSC, "q", 8, n),
        utc_msc=_vector(t, _T_UTC_MSC, "q", 8, n),
        bid=_vector(t, _T_BID, "d", 8, n),
        ask=_vector(t, _T_ASK, "d", 8, n),
        last=_vector(t, _T_LAST, "d", 8, n),
        volume=_vector(t, _T_VOLUME, "Q", 8, n),
        volume_real=_vector(t, _T_VOLUME_REAL, "d", 8, n),
        flags=_vector(t, _T_FLAGS, "I", 4, n),
    )
    if n and symbols and max(cols.symbol_index) >= len(symbols):
        raise RecordError(f"TickRecord symbol index {max(cols.symbol_index)} is outside its {len(symbols)} symbols: the record is corrupt")
    return cols


def decode_ticks(value: bytes) -> List[Tick]:
    """The ticks of one TickRecord value, as ``Tick`` objects."""
    return decode_tick_record(value).ticks()


def decode_bar(value: bytes) -> Bar:
    """Decodes one Kafka record value of the bars topic."""
    buf = bytes(value)
    if len(buf) < 8:
        raise RecordError(f"a BarRecord is at least 8 bytes, this value has {len(buf)}: is this the bars topic?")
    try:
        return _decode_bar(buf)
    except (struct.error, IndexError, UnicodeDecodeError) as err:
        raise RecordError(f"BarRecord is truncated or corrupt ({err}): {len(buf)} bytes do not hold the offsets they name") from err


def _decode_bar(buf: bytes) -> Bar:
    t = _root(buf)
    version = _scalar(t, 4, number_types.Uint16Flags, 1)
    if version > SCHEMA_VERSION:
        raise RecordError(
            f"BarRecord schema version {version} is newer than this reader ({SCHEMA_VERSION}): update the tickstream package"
        )
    values = {name: _scalar(t, slot, flags, 0) for name, slot, flags in _BAR_FIELDS}
    return Bar(source=_string(t, 6), symbol=_string(t, 8), **values)


__all__ = [
    "FILE_IDENTIFIER",
    "SCHEMA_VERSION",
    "RecordError",
    "TickColumns",
    "decode_bar",
    "decode_tick_record",
    "decode_ticks",
    "is_tick_record",
]
