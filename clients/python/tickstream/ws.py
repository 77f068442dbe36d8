"""The websocket client (``websockets``, asyncio): subscribe, reconnect with capped backoff and
jitter, and optionally resume after the last ``(source, seq)`` seen.

The server's messages are described in docs/websocket.md. ``TickClient.messages()`` yields them
as dicts, with each ``ticks``/``snapshot`` message's ticks turned into ``Tick`` objects (binary
``?format=flatbuffers`` frames become ``{"type": "ticks", ...}`` dicts the same way), plus
messages of the client's own: ``{"type": "connected", "attempt": n, "resumed": bool}`` after
each (re)connection (``resumed``: it asked to resume), ``{"type": "disconnected", "code": c,
"reason": r, "retry_in_s": s}`` when a connection ends and the client will reconnect, and
``{"type": "resume_refused", "code": ..., "message": ...}`` (below).

Deduplication (on by default): per source and symbol, ticks at or below the highest seq
already delivered are dropped, so the snapshot repeated after a reconnect, a resume's catch-up
overlapping what arrived, or a tick a restarted bridge publishes again, is not delivered twice.
Slow-consumer notices (``ticks`` messages with ``"conflated": true`` and ``skipped``) are always
passed on.

Resume (``resume=True``): on a reconnect the client sends
``{"op":"resume","channels":[...],"after":{SOURCE: SEQ}}`` with ``position``: per source, the
seq below which every tick of the channels was delivered. That is not simply the highest seq
seen: the server sends a batch as one message per symbol, so the seqs of a batch's symbols
interleave and a cut between two of its messages leaves holes below the highest. A message that
starts above every seq seen of its source closes the batch before it, so ``position`` moves to
that highest seq then (the rule of docs/websocket.md and ``@tickstream/client``; it holds for
any subset of symbols, which the server sends in the same order). The server answers
``subscribed``, the missed ticks from the journal (``"resumed": true``), ``{"type": "resumed",
"sources": {...}}``, then live ticks; nothing is lost or repeated. A resume that fails on the
way (``error`` ``ERR_LIMIT`` or ``ERR_KAFKA``, then close 1013) is passed on, and the client
reconnects and resumes again from where it got to. A resume refused before ``subscribed``
(nothing is subscribed then): ``ERR_LIMIT`` (the server's journal sessions are all busy) is
retried the same way, after the backoff; any other code (a server without a journal reader) is
answered by a plain ``subscribe`` (live only: the gap's ticks are not sent) and ``messages()``
yields ``resume_refused`` first. Sources first seen after a cut have no position: their ticks
sent while disconnected are not caught up.
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

    ``position``: per source, the seq up to which every tick of the channels was delivered (the
    ``after`` of a resume); ``last_seq``: per ``(source, symbol)``, the highest seq delivered.
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
        # Highest seq delivered per (source, symbol): what arrives again is dropped.
        self.last_seq: Dict[Tuple[str, str], int] = {}
        # Per source: the highest seq seen, and the seq up to which every tick of the channels
        # was delivered (what a resume sends as ``after``; see the module doc).
        self._source_max: Dict[str, int] = {}
        self.position: Dict[str, int] = {}
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

    def _track(self, source: str, symbol: str, ticks: List[Tick], moves_position: bool = True) -> List[Tick]:
        """The ticks not delivered before (all of them without dedupe); records what arrived."""
        if not ticks:
            return ticks
        top = max(t.seq for t in ticks)
        if moves_position:
            seen = self._source_max.get(source)
            # A message starting above every seq seen of its source closes the batch before it.
            if seen is None:
                self.position[source] = ticks[0].seq - 1
            elif ticks[0].seq > seen:
                self.position[source] = seen
            if seen is None or top > seen:
                self._source_max[source] = top
        key = (source, symbol)
        last = self.last_seq.get(key, 0)
        fresh = [t for t in ticks if t.seq > last] if self.dedupe else ticks
        if top > last:
            self.last_seq[key] = top
        return fresh

    def _hello(self, resuming: bool) -> str:
        if resuming:
            return json.dumps({"op": "resume", "channels": self.channels, "after": self.position})
        return json.dumps({"op": "subscribe", "channels": self.channels})

    async def messages(self) -> AsyncIterator[dict]:
        """Server messages (see the module doc) until ``close()``; reconnects by itself."""
        failures = 0
        while not self._closed:
            resuming = self.resume and bool(self.position)
            refused = False  # the resume was refused before `subscribed`: nothing is subscribed
            awaiting = resuming  # until `subscribed` (or a refusal) answers the resume
            catching_up = False  # between `subscribed` and `resumed`: journal ticks
            try:
                # max_size=None: one message can carry thousands of ticks.
                async with websockets.connect(self._url, max_size=None, max_queue=self.max_queue, open_timeout=10) as ws:
                    self._ws = ws
                    self.connections += 1
                    await ws.send(self._hello(resuming))
                    yield {"type": "connected", "attempt": self.connections, "resumed": resuming}
                    async for raw in ws:
                        if self._closed:
                            continue  # closing: drain what is on the way until the server's close
                        if isinstance(raw, bytes):
                            failures = 0
                            # One TickRecord per source and symbol slice; grouped anyway.
                            by_symbol: Dict[str, List[Tick]] = {}
                            for t in decode_tick_record(raw).ticks():
                                by_symbol.setdefault(t.symbol, []).append(t)
                            for symbol, group in by_symbol.items():
                                source = group[0].source
                                ticks = self._track(source, symbol, group)
                                if ticks:
                                    yield {"type": "ticks", "source": source, "symbol": symbol, "resumed": catching_up, "ticks": ticks}
                            continue
                        m = json.loads(raw)
                        kind = m.get("type")
                        if kind == "error" and awaiting:
                            awaiting = False
                            yield {"type": "resume_refused", "code": m.get("code"), "message": m.get("message", "")}
                            if m.get("code") == "ERR_LIMIT":
                                # The server's journal sessions are busy: reconnect after the backoff.
                                refused = True
                                break
                            # No journal reader on this server: live only.
                            resuming = False
                            await ws.send(self._hello(False))
                            continue
                        failures = 0
                        if kind == "subscribed":
                            awaiting = False
                            catching_up = resuming
                        elif kind == "resumed":
                            catching_up = False
                        elif kind == "ticks":
                            source, symbol = m["source"], m["symbol"]
                            ticks = self._track(source, symbol, [_tick(source, symbol, t) for t in m["ticks"]])
                            if not ticks and not m.get("conflated"):
                                continue  # every tick already delivered
                            m["ticks"] = ticks  # a conflated message keeps its `skipped` count
                        elif kind == "snapshot":
                            # The newest tick of a pair, not a run of ticks: no resume position.
                            source, symbol = m["source"], m["symbol"]
                            ticks = self._track(source, symbol, [_tick(source, symbol, t) for t in m["ticks"]], False)
                            if not ticks:
                                continue  # a snapshot repeated after a reconnect
                            m["ticks"] = ticks
                        yield m
                    if refused:
                        code, reason = None, "resume refused: the server's journal sessions are busy"
                    else:
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
        """Only the ticks (live, resumed and snapshot), deduplicated as configured."""
        async for m in self.messages():
            if m["type"] in ("ticks", "snapshot"):
                for t in m["ticks"]:
                    yield t


__all__ = ["AuthError", "TickClient"]
