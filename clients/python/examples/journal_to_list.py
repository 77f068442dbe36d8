"""Read the whole Kafka journal into a plain list of ticks (no pandas), then summarise it.

    PYTHONPATH=clients/python python3 clients/python/examples/journal_to_list.py [TOPIC]

TOPIC defaults to mt5.ticks; the broker to $TICKSTREAM_KAFKA_BROKERS or 127.0.0.1:9092.
"""

import os
import sys

from tickstream.journal import read_ticks

topic = sys.argv[1] if len(sys.argv) > 1 else "mt5.ticks"
brokers = os.environ.get("TICKSTREAM_KAFKA_BROKERS", "127.0.0.1:9092")

ticks = list(read_ticks(topic, brokers))  # every committed tick, as tickstream.Tick objects
print(f"{len(ticks)} ticks in {topic}")
for source in sorted({t.source for t in ticks}):
    seqs = [t.seq for t in ticks if t.source == source]
    print(f"{source}: {len(seqs)} ticks, seq {min(seqs)}..{max(seqs)}")
