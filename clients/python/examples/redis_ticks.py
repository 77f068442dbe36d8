"""The ticks a Redis stream holds (PREFIX:ticks:SOURCE:SYMBOL), oldest first.

    PYTHONPATH=clients/python python3 clients/python/examples/redis_ticks.py SOURCE SYMBOL

TICKSTREAM_REDIS_URL (default redis://127.0.0.1:6379), TICKSTREAM_REDIS_KEY_PREFIX (default mt5).
"""

import os
import sys

import redis

from tickstream import utc_iso
from tickstream.redis_streams import read_ticks

source, symbol = sys.argv[1], sys.argv[2]
r = redis.Redis.from_url(os.environ.get("TICKSTREAM_REDIS_URL", "redis://127.0.0.1:6379"))
prefix = os.environ.get("TICKSTREAM_REDIS_KEY_PREFIX", "mt5")

for t in read_ticks(r, source, symbol, prefix):
    print(t.source, t.seq, t.symbol, utc_iso(t.utc_msc), t.bid, t.ask)
