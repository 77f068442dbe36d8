"""Ticks of a symbol in a UTC range [FROM, TO) from the history API on serve's HTTP port
(GET /api/v1/ticks, JSON lines, streamed), with the standard library only. A page holds at most
LIMIT rows (default: the server's); the next page is asked for with the X-Next-Cursor header of
the page before, until a page comes without it.

    PYTHONPATH=clients/python python3 clients/python/examples/history_ticks.py SYMBOL FROM TO [LIMIT]

TICKSTREAM_HTTP_URL (default http://127.0.0.1:5001), TICKSTREAM_TOKEN (when serve has tokens).
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from tickstream import utc_iso

symbol, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
base = os.environ.get("TICKSTREAM_HTTP_URL", "http://127.0.0.1:5001")
params = {"symbol": symbol, "from": start, "to": end, "format": "jsonl"}
if len(sys.argv) > 4:
    params["limit"] = sys.argv[4]
headers = {"Authorization": f"Bearer {os.environ['TICKSTREAM_TOKEN']}"} if os.environ.get("TICKSTREAM_TOKEN") else {}


def iso(time) -> str:
    """`time` as epoch ms or as an ISO-8601 string, printed as ISO with milliseconds."""
    if isinstance(time, (int, float)):
        return utc_iso(int(time))
    return utc_iso(round(datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp() * 1000))


try:
    cursor = None
    while True:
        query = urllib.parse.urlencode({**params, "cursor": cursor} if cursor else params)
        request = urllib.request.Request(f"{base}/api/v1/ticks?{query}", headers=headers)
        with urllib.request.urlopen(request) as response:
            for line in response:  # one tick per line, read as the server streams them
                if line.strip():
                    t = json.loads(line)
                    print(t["source"], t["seq"], symbol, iso(t["time"]), t["bid"], t["ask"])
            cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            break  # the last page
except urllib.error.HTTPError as err:
    sys.exit(f"GET /api/v1/ticks: {err.code} {err.read().decode()}")
