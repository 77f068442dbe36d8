"""Every committed tick of the Kafka journal (read_committed), or one source's seq range.

    PYTHONPATH=clients/python python3 clients/python/examples/kafka_ticks.py [TOPIC [SOURCE FROM_SEQ TO_SEQ]]

TICKSTREAM_KAFKA_BROKERS (default 127.0.0.1:9092); TOPIC defaults to mt5.ticks.
"""

import os
import sys

from tickstream import utc_iso
from tickstream.journal import read_ticks

topic = sys.argv[1] if len(sys.argv) > 1 else "mt5.ticks"
brokers = os.environ.get("TICKSTREAM_KAFKA_BROKERS", "127.0.0.1:9092")
source = sys.argv[2] if len(sys.argv) > 2 else None
from_seq = int(sys.argv[3]) if len(sys.argv) > 3 else 1
to_seq = int(sys.argv[4]) if len(sys.argv) > 4 else None

for t in read_ticks(topic, brokers, source=source, from_seq=from_seq, to_seq=to_seq):
    print(t.source, t.seq, t.symbol, utc_iso(t.utc_msc), t.bid, t.ask)
