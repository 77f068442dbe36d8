"""Ticks of a symbol in a UTC range [FROM, TO) from Postgres (docs/postgres.md), with psycopg 3.

    PYTHONPATH=clients/python python3 clients/python/examples/postgres_ticks.py SYMBOL FROM TO

FROM, TO: ISO-8601 (2024-03-05T10:00Z). TICKSTREAM_POSTGRES_URL (default
postgres://postgres@127.0.0.1:5432/tickstream), TICKSTREAM_POSTGRES_SCHEMA (default public).
"""

import os
import sys

import psycopg
from psycopg import sql

symbol, start, end = sys.argv[1], sys.argv[2], sys.argv[3]
url = os.environ.get("TICKSTREAM_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/tickstream")
schema = os.environ.get("TICKSTREAM_POSTGRES_SCHEMA", "public")

with psycopg.connect(url) as db:
    db.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema)))
    rows = db.execute(
        """select source, seq, time, bid, ask
           from ticks
           where symbol = %s and time >= %s and time < %s
           order by time, source, seq""",
        (symbol, start, end),
    )
    for source, seq, time, bid, ask in rows:
        # time is a timezone-aware datetime (UTC)
        print(source, seq, symbol, time.isoformat(timespec="milliseconds").replace("+00:00", "Z"), bid, ask)
