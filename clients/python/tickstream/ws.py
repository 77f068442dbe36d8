"""The websocket client (``websockets``, asyncio): subscribe, reconnect with capped backoff and
jitter, and optionally resume after the last ``(source, seq)`` seen.

The server's messages are described in docs/websocket.md. ``TickClient.messages()`` yields them
as dicts, with each ``ticks``/``snapshot`` message's ticks turned into ``Tick`` objects (binary
``?format=flatbuffers`` frames become ``{"type": "ticks", ...}`` dicts the same way), plus two
messages of the client's own: ``{"type": "connected", "attempt": n, "resumed": bool}`` after
each (re)connection, and ``{"type": "disconnected", "code": c, "reason": r, "retry_in_s": s}``
when a connection ends and the client will reconnect.

Deduplication (on by default): per source and symbol, ticks at or below the highest seq
already delivered are dropped, so the snapshot repeated after a reconnect, or a tick a
restarted bridge publishes again, is not delivered twice. Slow-consumer notices (``ticks``
messages with ``"conflated": true`` and ``skipped``) are always passed on.

Resume (``resume=True``): on a reconnect the client sends
``{"op":"resume","channels":[...],"after":{SOURCE: SEQ}}`` with the highest seq seen per
source, so a server that supports it sends what was missed from the journal. A server that
answers the resume with an ``error`` is sent a plain ``subscribe`` instead (live only: ticks of
the gap are not sent), and ``messages()`` yields ``{"type": "resume_refused", "message": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import AsyncIterator, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatusCode

from .records import decode_tick_record
from .ticks import Tick


class AuthError(RuntimeError):
    """The server refused the token (HTTP 401): retrying with the same token cannot help."""


def _tick(source: str, symbol: str, t: dict) -> Tick:
    return Tick(
        source=source,
        seq=int(t["seq"]),
        symbol=symbol,
        utc_msc=int(t["time"]),
        server_time_msc=int(t["tsrv"]),
        bid=float(t["bid"]),
        ask=float(t["ask"]),
        last=float(t["last"]),
        volume=int(t["vol"]),
        volume_real=float(t["volr"]),
        flags=int(t["flags"]),
    )


class TickClient:
    """A reconnecting websocket client of one tickstream server.

    ``url``: ``ws://HOST:PORT/ws``; ``token``: sent as ``?token=`` when given;
    ``format``: ``"json"`` or ``"flatbuffers"`` (binary tick frames, decoded here);
    backoff: from ``min_backoff_s`` doubling to ``max_backoff_s``, each wait drawn uniformly
    from [half, all] of it (jitter), reset once a connection has delivered a message;
    ``max_queue``: messages read ahead of the consumer at most (each may hold thousands of
    ticks): past it the socket is not read, so the server sees a slow consumer and conflates
    (docs/websocket.md) instead of this process buffering without bound.
    """

    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        *,
        token: Optional[str] = None,
        format: str = "json",
        resume: bool = False,
        dedupe: bool = True,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_queue: int = 32,
    ) -> None:
        if format not in ("json", "flatbuffers"):
            raise ValueError(f'format must be "json" or "flatbuffers", not {format!r}')
        if not channels:
            raise ValueError('subscribe to at least one channel ("*", "EURUSD" or "source:EURUSD")')
        self.channels: List[str] = list(channels)
        self.resume = resume
        self.dedupe = dedupe
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_queue = max_queue
        self.connections = 0
        # Highest seq delivered per (source, symbol) and per source (what resume sends).
        self.last_seq: Dict[Tuple[str, str], int] = {}
        self.last_seq_by_source: Dict[str, int] = {}
        self._url = self._with_query(url, token, format)
        self._ws = None
        self._closed = False
        self._closing: Optional[asyncio.Future] = None
        self._wake: Optional[asyncio.Event] = None  # set by close() to end a backoff wait

    @staticmethod
    def _with_query(url: str, token: Optional[str], format: str) -> str:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        if token is not None:
            query["token"] = token
        if format == "flatbuffers":
            query["format"] = "flatbuffers"
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def close(self) -> None:
        """Starts closing: ``messages()`` yields nothing more and ends once the server has
        answered the close; no reconnect follows. Safe to call from inside the ``async for``."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        if self._ws is not None and self._closing is None:
            # Not awaited here: the close handshake needs messages() to keep reading (the
            # library stops reading while its queue of unread messages is full).
            self._closing = asyncio.ensure_future(self._ws.close())

    def _keep(self, source: str, symbol: str, ticks: List[Tick]) -> List[Tick]:
        key = (source, symbol)
        last = self.last_seq.get(key, 0)
        if self.dedupe:
            ticks = [t for t in ticks if t.seq > last]
        for t in ticks:
            if t.seq > last:
                last = t.seq
        if ticks:
            self.last_seq[key] = last
            if last > self.last_seq_by_source.get(source, 0):
                self.last_seq_by_source[source] = last
        return ticks

    def _first_message(self, resumed: bool) -> str:
        if resumed:
            return json.dumps({"op": "resume", "channels": self.channels, "after": self.last_seq_by_source})
        return json.dumps({"op": "subscribe", "channels": self.channels})

    async def messages(self) -> AsyncIterator[dict]:
        """Server messages (see the module doc) until ``close()``; reconnects by itself."""
        failures = 0
        while not self._closed:
            resumed = self.resume and bool(self.last_seq_by_source)
            try:
                # max_size=None: one message can carry thousands of ticks.
                async with websockets.connect(self._url, max_size=None, max_queue=self.max_queue, open_timeout=10) as ws:
                    self._ws = ws
                    self.connections += 1
                    await ws.send(self._first_message(resumed))
                    yield {"type": "connected", "attempt": self.connections, "resumed": resumed}
                    async for raw in ws:
                        if self._closed:
                            continue  # closing: drain what is on the way until the server's close
                        failures = 0
                        if isinstance(raw, bytes):
                            # One TickRecord per source and symbol slice; grouped anyway.
                            by_symbol: Dict[str, List[Tick]] = {}
                            for t in decode_tick_record(raw).ticks():
                                by_symbol.setdefault(t.symbol, []).append(t)
                            for symbol, group in by_symbol.items():
                                ticks = self._keep(group[0].source, symbol, group)
                                if ticks:
                                    yield {"type": "ticks", "source": ticks[0].source, "symbol": symbol, "ticks": ticks}
                            continue
                        m = json.loads(raw)
                        kind = m.get("type")
                        if kind == "error" and resumed and m.get("code") == "ERR_FRAME_PAYLOAD":
                            # This server has no resume: subscribe live instead.
                            resumed = False
                            await ws.send(self._first_message(False))
                            yield {"type": "resume_refused", "message": m.get("message", "")}
                            continue
                        if kind in ("ticks", "snapshot"):
                            ticks = self._keep(
                                m["source"], m["symbol"], [_tick(m["source"], m["symbol"], t) for t in m["ticks"]]
                            )
                            if not ticks and not m.get("conflated"):
                                continue  # every tick already delivered (a repeated snapshot)
                            m["ticks"] = ticks  # a conflated message keeps its `skipped` count
                        yield m
                    code, reason = ws.close_code, ws.close_reason
            except InvalidStatusCode as err:
                if err.status_code == 401:
                    raise AuthError("the server refused the token (401): pass a token from serve's --ws-tokens") from err
                code, reason = None, f"HTTP {err.status_code} on connect"
            except (ConnectionClosed, InvalidHandshake, OSError, asyncio.TimeoutError) as err:
                code, reason = getattr(err, "code", None), str(err) or type(err).__name__
            finally:
                self._ws = None
            if self._closed:
                if self._closing is not None:
                    await self._closing
                return
            delay = min(self.max_backoff_s, self.min_backoff_s * (2**failures))
            delay = random.uniform(delay / 2, delay)
            failures += 1
            self._wake = asyncio.Event()
            yield {"type": "disconnected", "code": code, "reason": reason, "retry_in_s": delay}
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def ticks(self) -> AsyncIterator[Tick]:
        """Only the ticks (live and snapshot), deduplicated as configured."""
        async for m in self.messages():
            if m["type"] in ("ticks", "snapshot"):
                for t in m["ticks"]:
                    yield t


__all__ = ["AuthError", "TickClient"]
