"""Test aid for test/clients/python.test.ts: runs tickstream.ws.TickClient and prints one JSON
line per tick (with its message's type as `kind` and its `resumed` flag) and per other message (connected, subscribed, disconnected, …) until its stdin
closes."""

import asyncio
import json
import sys

from tickstream.ws import TickClient


async def main(url: str, fmt: str, resume: bool) -> None:
    client = TickClient(url, ["*"], format=fmt, resume=resume, min_backoff_s=0.2, max_backoff_s=1.0)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    stdin_closed.add_done_callback(lambda _: loop.create_task(client.close()))

    def out(obj) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async for m in client.messages():
        if m["type"] in ("ticks", "snapshot"):
            for t in m["ticks"]:
                out({"type": "tick", "kind": m["type"], "resumed": m.get("resumed", False), **t.__dict__})
        else:
            out({k: v for k, v in m.items() if k != "ticks"})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "resume"))
