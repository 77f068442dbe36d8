"""tickstream: read the MT5 ticks that a tickstream bridge captured.

* ``tickstream.records``: decode Kafka record values (FlatBuffers ``TickRecord``, ``BarRecord``).
* ``tickstream.journal``: read the Kafka journal (``read_committed``), by source and seq range.
* ``tickstream.ws``: the websocket client (subscribe, reconnect with backoff, resume).
* ``tickstream.redis_streams``: read the Redis tick and bar streams and the latest quotes.

Only ``records`` is imported here; the other modules import their client library
(confluent-kafka, websockets, redis) when you import them.
"""

from .records import RecordError, TickColumns, decode_bar, decode_tick_record, decode_ticks
from .ticks import Bar, Tick, utc_iso

__version__ = "0.1.0"

__all__ = ["Bar", "RecordError", "Tick", "TickColumns", "decode_bar", "decode_tick_record", "decode_ticks", "utc_iso"]
