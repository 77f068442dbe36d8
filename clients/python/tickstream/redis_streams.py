"""Reading tickstream's Redis live view with redis-py (keys written by ``sinks/redis.ts``).

Keys (``PREFIX`` is serve's ``--redis-key-prefix``, default ``mt5``):

* ``PREFIX:ticks:SOURCE:SYMBOL``: stream, one entry per tick, ID ``<utc ms>-<seq>``, fields
  ``b`` bid, ``a`` ask, ``l`` last, ``v`` volume, ``vr`` volume_real, ``f`` flags,
  ``t`` server time ms, ``s`` seq. Trimmed to about ``--redis-stream-max-len`` entries.
* ``PREFIX:quote:SOURCE:SYMBOL``: hash, the newest tick (``bid ask last time server_time_msc
  seq flags``).
* ``PREFIX:bars:1m:SOURCE:SYMBOL``: stream of closed bars, ID ``<start ms>-<last seq>``, fields
  ``o h l c`` (bid OHLC), ``n`` tick count, ``sa`` mean spread, ``v`` volume.

An entry's ID ms is the tick's UTC time, except when a source's time went backwards: the tick
is then stored under the stream's greatest ms so far (IDs must grow), and ``utc_msc`` of the
``Tick`` read back is that ms. Redis is a live view: while it is down ticks are dropped (counted
by serve), so read Kafka or Postgres when you need every tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import redis

from .ticks import Tick

DEFAULT_PREFIX = "mt5"
PAGE = 10_000


def tick_stream_key(source: str, symbol: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:ticks:{source}:{symbol}"


def quote_key(source: str, symbol: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:quote:{source}:{symbol}"


def bar_stream_key(source: str, symbol: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:bars:1m:{source}:{symbol}"


@dataclass(frozen=True)
class RedisBar:
    """A closed 1-minute bar as the Redis bar stream holds it."""

    source: str
    symbol: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    tick_count: int
    spread_avg: float
    volume: float
    last_seq: int


def _s(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else v


def _id(entry_id) -> Tuple[int, int]:
    ms, seq = _s(entry_id).split("-", 1)
    return int(ms), int(seq)


def _tick(source: str, symbol: str, entry_id, fields: Dict) -> Tick:
    f = {_s(k): _s(v) for k, v in fields.items()}
    ms, _ = _id(entry_id)
    return Tick(
        source=source,
        seq=int(f["s"]),
        symbol=symbol,
        utc_msc=ms,
        server_time_msc=int(f["t"]),
        bid=float(f["b"]),
        ask=float(f["a"]),
        last=float(f["l"]),
        volume=int(f["v"]),
        volume_real=float(f["vr"]),
        flags=int(f["f"]),
    )


def list_tick_streams(r: redis.Redis, prefix: str = DEFAULT_PREFIX) -> List[Tuple[str, str]]:
    """The ``(source, symbol)`` pairs that have a tick stream (SCAN, never KEYS)."""
    head = f"{prefix}:ticks:"
    out = []
    for key in r.scan_iter(match=f"{head}*", count=1000, _type="stream"):
        rest = _s(key)[len(head) :]
        source, _, symbol = rest.partition(":")  # source ids never hold ':'
        out.append((source, symbol))
    return sorted(out)


def read_ticks(
    r: redis.Redis,
    source: str,
    symbol: str,
    prefix: str = DEFAULT_PREFIX,
    start: str = "-",
    end: str = "+",
) -> List[Tick]:
    """The ticks a stream holds between entry IDs `start` and `end` (inclusive), oldest first,
    read with XRANGE in pages."""
    key = tick_stream_key(source, symbol, prefix)
    out: List[Tick] = []
    lo = start
    while True:
        page = r.xrange(key, min=lo, max=end, count=PAGE)
        out.extend(_tick(source, symbol, eid, fields) for eid, fields in page)
        if len(page) < PAGE:
            return out
        lo = "(" + _s(page[-1][0])  # exclusive start after the last entry read


def follow_ticks(
    r: redis.Redis,
    pairs: Sequence[Tuple[str, str]],
    prefix: str = DEFAULT_PREFIX,
    after: Optional[Dict[Tuple[str, str], str]] = None,
    block_ms: int = 5000,
) -> Iterator[Tick]:
    """New ticks of the `pairs` ``(source, symbol)`` as they come (XREAD BLOCK), after the entry
    IDs in `after` (default: only ticks added from now on, ``$``). Yields nothing while idle; stop
    by breaking out of the loop."""
    ids = {tick_stream_key(s, y, prefix): (after or {}).get((s, y), "$") for s, y in pairs}
    names = {tick_stream_key(s, y, prefix): (s, y) for s, y in pairs}
    while True:
        reply = r.xread(ids, count=PAGE, block=block_ms) or []
        for key, entries in reply:
            k = _s(key)
            source, symbol = names[k]
            for eid, fields in entries:
                ids[k] = _s(eid)
                yield _tick(source, symbol, eid, fields)


@dataclass(frozen=True)
class Quote:
    """The newest tick of a source and symbol as the quote hash holds it (no volumes)."""

    source: str
    symbol: str
    seq: int
    utc_msc: int
    server_time_msc: int
    bid: float
    ask: float
    last: float
    flags: int


def read_quote(r: redis.Redis, source: str, symbol: str, prefix: str = DEFAULT_PREFIX) -> Optional[Quote]:
    """The newest tick of a source and symbol (the quote hash), or None when there is none."""
    h = {_s(k): _s(v) for k, v in r.hgetall(quote_key(source, symbol, prefix)).items()}
    if not h:
        return None
    return Quote(
        source=source,
        symbol=symbol,
        seq=int(h["seq"]),
        utc_msc=int(h["time"]),
        server_time_msc=int(h["server_time_msc"]),
        bid=float(h["bid"]),
        ask=float(h["ask"]),
        last=float(h["last"]),
        flags=int(h["flags"]),
    )


def read_bars(r: redis.Redis, source: str, symbol: str, prefix: str = DEFAULT_PREFIX) -> List[RedisBar]:
    """Every bar the bar stream of a source and symbol holds, oldest first."""
    key = bar_stream_key(source, symbol, prefix)
    out: List[RedisBar] = []
    lo = "-"
    while True:
        page = r.xrange(key, min=lo, max="+", count=PAGE)
        for eid, fields in page:
            f = {_s(k): _s(v) for k, v in fields.items()}
            start_ms, last_seq = _id(eid)
            out.append(
                RedisBar(
                    source=source,
                    symbol=symbol,
                    start_ms=start_ms,
                    open=float(f["o"]),
                    high=float(f["h"]),
                    low=float(f["l"]),
                    close=float(f["c"]),
                    tick_count=int(f["n"]),
                    spread_avg=float(f["sa"]),
                    volume=float(f["v"]),
                    last_seq=last_seq,
                )
            )
        if len(page) < PAGE:
            return out
        lo = "(" + _s(page[-1][0])


__all__ = [
    "DEFAULT_PREFIX",
    "Quote",
    "RedisBar",
    "bar_stream_key",
    "follow_ticks",
    "list_tick_streams",
    "quote_key",
    "read_bars",
    "read_quote",
    "read_ticks",
    "tick_stream_key",
]
