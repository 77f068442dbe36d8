"""Plain value types shared by every reader in this package."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utc_iso(ms: int) -> str:
    """UTC ms since the epoch as ISO-8601 with milliseconds, ``2024-03-05T10:00:00.065Z``
    (exact: no float rounding)."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Tick:
    """One MT5 tick. ``(source, seq)`` names it everywhere (Kafka, Redis, websockets, Postgres).

    ``utc_msc``: UTC ms since the epoch (converted with the source's time-zone rule);
    ``server_time_msc``: ``MqlTick.time_msc`` as received, ms on the broker's server clock;
    ``flags``: ``MqlTick.flags``, every bit kept (2 bid, 4 ask, 8 last, 16 volume changed).
    """

    source: str
    seq: int
    symbol: str
    utc_msc: int
    server_time_msc: int
    bid: float
    ask: float
    last: float
    volume: int
    volume_real: float
    flags: int


@dataclass(frozen=True)
class Bar:
    """A closed 1-minute bar: bid OHLC, spread statistics, last-price OHLC (NaN or None when the
    minute had no trade), ``volume`` (sum of ``volume_real`` of LAST/VOLUME ticks) and the seq of
    its last tick. ``start_ms`` is the UTC start of the minute."""

    source: str
    symbol: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    tick_count: int
    spread_min: float
    spread_max: float
    spread_sum: float
    last_open: Optional[float]
    last_high: Optional[float]
    last_low: Optional[float]
    last_close: Optional[float]
    volume: float
    last_seq: int
