"""The live feed over a websocket with tickstream.ws.TickClient: subscribe to a symbol and print
each tick; the client reconnects by itself (backoff with jitter). Stops after COUNT live ticks.

    PYTHONPATH=clients/python python3 clients/python/examples/ws_ticks.py EURUSD [COUNT]

TICKSTREAM_WS_URL (default ws://127.0.0.1:5001/ws), TICKSTREAM_TOKEN (when serve has --ws-tokens).
"""

import asyncio
import os
import sys

from tickstream import utc_iso
from tickstream.ws import TickClient

symbol = sys.argv[1] if len(sys.argv) > 1 else "EURUSD"
count = int(sys.argv[2]) if len(sys.argv) > 2 else None
url = os.environ.get("TICKSTREAM_WS_URL", "ws://127.0.0.1:5001/ws")


async def main() -> None:
    client = TickClient(url, [symbol], token=os.environ.get("TICKSTREAM_TOKEN"))
    seen = 0
    async for m in client.messages():
        if m["type"] == "subscribed":
            print(f"subscribed {symbol}", flush=True)
        elif m["type"] == "ticks":  # also: snapshot, bar, connected, disconnected, error
            for t in m["ticks"]:
                if count is not None and seen >= count:
                    break  # closing: messages already on the way are not printed
                print(t.source, t.seq, t.symbol, utc_iso(t.utc_msc), t.bid, t.ask)
                seen += 1
            if count is not None and seen >= count:
                await client.close()


asyncio.run(main())
