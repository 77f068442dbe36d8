"""Unit tests of TickClient's resume rules against a scripted websocket server in this process
(a stand-in for serve's websocket protocol, docs/websocket.md): where it resumes from after a
cut between two messages of one batch, what it drops of a catch-up, how it answers a failed
resume (ERR_KAFKA then close 1013) and a refused one (ERR_LIMIT, ERR_CONFIG).

    PYTHONPATH=clients/python python3 -m unittest discover -s clients/python/tests
"""

import asyncio
import json
import unittest

import websockets

from tickstream.ws import TickClient


def _ticks(source, symbol, seqs, resumed=False):
    m = {
        "type": "ticks",
        "source": source,
        "symbol": symbol,
        "rt": 0 if resumed else 1,
        "ticks": [
            {"seq": s, "time": 1000 + s, "tsrv": 2000 + s, "bid": 1.0, "ask": 1.1, "last": 0, "vol": 0, "volr": 0, "flags": 6}
            for s in seqs
        ],
    }
    if resumed:
        m["resumed"] = True
    return json.dumps(m)


def _subscribed():
    return json.dumps({"type": "subscribed", "channels": ["*"], "total": 1})


class ScriptedServer:
    """Runs connection i's script on the i-th connection; records each connection's first message."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.hellos = []

    async def __aenter__(self):
        async def handler(ws, path=None):
            i = len(self.hellos)
            self.hellos.append(json.loads(await ws.recv()))
            await self.scripts[i](ws)

        self._server = await websockets.serve(handler, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        await self._server.wait_closed()


async def _collect(client, until):
    """Every message of the client until `until(messages)` holds (bounded in time)."""
    out = []

    async def run():
        async for m in client.messages():
            out.append(m)
            if until(out):
                await client.close()

    await asyncio.wait_for(run(), 20)
    return out


def _seqs(messages, symbol):
    return [t.seq for m in messages if m["type"] == "ticks" and m["symbol"] == symbol for t in m["ticks"]]


class ResumeTest(unittest.IsolatedAsyncioTestCase):
    async def test_cut_inside_a_batch_resumes_below_its_hole_and_again_after_a_failed_resume(self):
        async def first(ws):
            await ws.send(_subscribed())
            # Batch 1: seqs 1-3 as A [1, 3] then B [2]; batch 2 (4-6): A [4, 6], cut before B [5].
            for m in (_ticks("s", "A", [1, 3]), _ticks("s", "B", [2]), _ticks("s", "A", [4, 6])):
                await ws.send(m)
            await ws.close(1011, "cut")

        async def second(ws):
            await ws.send(_subscribed())
            await ws.send(_ticks("s", "A", [4, 6], resumed=True))  # had them: dropped
            await ws.send(_ticks("s", "B", [5], resumed=True))
            await ws.send(json.dumps({"type": "error", "code": "ERR_KAFKA", "message": "the journal stalled"}))
            await ws.close(1013, "resume failed: reconnect and resume again")

        async def third(ws):
            await ws.send(_subscribed())
            await ws.send(_ticks("s", "A", [7], resumed=True))
            await ws.send(json.dumps({"type": "resumed", "sources": {"s": 7}}))
            await ws.send(_ticks("s", "A", [8]))
            await ws.wait_closed()

        async with ScriptedServer([first, second, third]) as server:
            client = TickClient(server.url, ["*"], resume=True, min_backoff_s=0.01, max_backoff_s=0.05)
            got = await _collect(client, lambda out: 8 in _seqs(out, "A"))
        subscribe = {"op": "subscribe", "channels": ["*"]}
        # The highest seq seen was 6, but 5 was missing: resume after 3, both times.
        resume = {"op": "resume", "channels": ["*"], "after": {"s": 3}}
        self.assertEqual(server.hellos, [subscribe, resume, resume])
        self.assertEqual(_seqs(got, "A"), [1, 3, 4, 6, 7, 8])
        self.assertEqual(_seqs(got, "B"), [2, 5])
        self.assertEqual([m["resumed"] for m in got if m["type"] == "connected"], [False, True, True])
        self.assertEqual([m["code"] for m in got if m["type"] == "disconnected"], [1011, 1013])
        self.assertEqual([m["code"] for m in got if m["type"] == "error"], ["ERR_KAFKA"])
        self.assertEqual([m.get("resumed", False) for m in got if m["type"] == "ticks"], [False] * 3 + [True] * 2 + [False])
        self.assertEqual(client.position, {"s": 7})

    async def test_a_refused_resume_is_retried_when_busy_and_turns_live_without_a_journal(self):
        async def first(ws):
            await ws.send(_subscribed())
            await ws.send(_ticks("s", "A", [1]))
            await ws.send(_ticks("s", "A", [2]))
            await ws.close(1011, "cut")

        def refuse(code):
            async def script(ws):
                await ws.send(json.dumps({"type": "error", "code": code, "message": "refused"}))
                if code == "ERR_CONFIG":
                    self.assertEqual(json.loads(await ws.recv()), {"op": "subscribe", "channels": ["*"]})
                    await ws.send(_subscribed())
                    snapshot = json.loads(_ticks("s", "A", [2]))
                    snapshot["type"] = "snapshot"
                    await ws.send(json.dumps(snapshot))  # delivered already: dropped
                    await ws.send(_ticks("s", "A", [3]))
                await ws.wait_closed()

            return script

        async with ScriptedServer([first, refuse("ERR_LIMIT"), refuse("ERR_CONFIG")]) as server:
            client = TickClient(server.url, ["*"], resume=True, min_backoff_s=0.01, max_backoff_s=0.05)
            got = await _collect(client, lambda out: 3 in _seqs(out, "A"))
        self.assertEqual([h["op"] for h in server.hellos], ["subscribe", "resume", "resume"])
        self.assertEqual(server.hellos[1]["after"], {"s": 1})
        self.assertEqual([m["code"] for m in got if m["type"] == "resume_refused"], ["ERR_LIMIT", "ERR_CONFIG"])
        self.assertEqual(_seqs(got, "A"), [1, 2, 3])
        self.assertEqual([m for m in got if m["type"] == "snapshot"], [])


if __name__ == "__main__":
    unittest.main()
