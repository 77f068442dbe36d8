"""Reading the Kafka journal (topics ``mt5.ticks`` and ``mt5.bars.1m``) with confluent-kafka.

The journal is written in Kafka transactions: read it ``read_committed`` (this module always
does), or ticks of aborted transactions show up. Each source's records share the key (the
source) and so one partition, in seq order.

``read_ticks`` reads every partition from its log start to its end as of the moment the read
began, without a consumer group (partitions are assigned directly, nothing is committed), and
filters by source (the record key) and seq range (the ``seq-first``/``seq-last`` headers)
before decoding. For a live tail, subscribe a confluent-kafka ``Consumer`` of your own (with
``isolation.level=read_committed``) and decode each value with ``tickstream.records``.
"""

from __future__ import annotations

import time
import uuid
from typing import Dict, Iterator, List, Optional

from confluent_kafka import Consumer, KafkaException, TopicPartition

from .records import decode_bar, decode_tick_record
from .ticks import Bar, Tick

DEFAULT_BROKERS = "127.0.0.1:9092"


class JournalError(RuntimeError):
    """The journal could not be read (the message says what to check)."""


def _consumer(brokers: str, group: Optional[str], extra: Optional[Dict[str, object]]) -> Consumer:
    config: Dict[str, object] = {
        "bootstrap.servers": brokers,
        "group.id": group or f"tickstream-py-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    }
    config.update(extra or {})
    return Consumer(config)


def _headers(msg) -> Dict[str, str]:
    return {k: (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for k, v in (msg.headers() or [])}


def _wanted(msg, source: Optional[str], from_seq: int, to_seq: Optional[int]) -> bool:
    """Whether a tick record may hold wanted ticks, from its key and headers alone."""
    if source is not None and (msg.key() or b"").decode("utf-8") != source:
        return False
    h = _headers(msg)
    first, last = h.get("seq-first"), h.get("seq-last")
    if first is None or last is None:
        return True
    return int(last) >= from_seq and (to_seq is None or int(first) <= to_seq)


def read_messages(
    topic: str,
    brokers: str = DEFAULT_BROKERS,
    idle_timeout_s: float = 10.0,
    consumer_config: Optional[Dict[str, object]] = None,
) -> Iterator[object]:
    """Every committed record of `topic` (confluent-kafka ``Message``), log start to the end
    as of the call. Raises ``JournalError`` when no progress is made for `idle_timeout_s`
    before the end (an open transaction holds the end back) or the topic does not exist."""
    consumer = _consumer(brokers, None, consumer_config)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=10)
        except KafkaException as err:
            raise JournalError(f"cannot reach Kafka at {brokers} ({err}): is the broker up?") from err
        t = meta.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            raise JournalError(f"topic {topic} does not exist on {brokers}: check the topic name (--ticks-topic)")
        high: Dict[int, int] = {}
        assignments: List[TopicPartition] = []
        for p in sorted(t.partitions):
            low, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if low < hi:
                high[p] = hi
                assignments.append(TopicPartition(topic, p, low))
        if not assignments:
            return
        consumer.assign(assignments)
        last_progress = time.monotonic()
        while True:
            batch = consumer.consume(500, timeout=0.5)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    raise JournalError(f"reading {topic}: {err}")
                last_progress = time.monotonic()
                yield msg
            # Positions move past transaction markers and aborted records too, so reaching the
            # high watermark means every committed record before it has been seen.
            positions = consumer.position([TopicPartition(topic, p) for p in high])
            if all(tp.offset >= high[tp.partition] for tp in positions):
                return
            if time.monotonic() - last_progress > idle_timeout_s:
                raise JournalError(
                    f"reading {topic} made no progress for {idle_timeout_s} s before its end: "
                    "an open transaction may be holding it (is a bridge mid-transaction?)"
                )
    finally:
        consumer.close()


def read_ticks(
    topic: str = "mt5.ticks",
    brokers: str = DEFAULT_BROKERS,
    source: Optional[str] = None,
    from_seq: int = 1,
    to_seq: Optional[int] = None,
    idle_timeout_s: float = 10.0,
) -> Iterator[Tick]:
    """Committed ticks of `topic`, optionally of one `source` and seqs ``from_seq..to_seq``
    (inclusive). Each source's ticks come in seq order; sources interleave as read."""
    for msg in read_messages(topic, brokers, idle_timeout_s):
        if not _wanted(msg, source, from_seq, to_seq):
            continue
        for tick in decode_tick_record(msg.value()).ticks():
            if tick.seq >= from_seq and (to_seq is None or tick.seq <= to_seq):
                yield tick


def read_bars(
    topic: str = "mt5.bars.1m",
    brokers: str = DEFAULT_BROKERS,
    source: Optional[str] = None,
    idle_timeout_s: float = 10.0,
) -> Iterator[Bar]:
    """Committed bars of `topic`, optionally of one `source`. A bar closed again after a bridge
    restart comes twice: the later one replaces the earlier (as in Postgres)."""
    for msg in read_messages(topic, brokers, idle_timeout_s):
        if source is not None and (msg.key() or b"").decode("utf-8") != source:
            continue
        yield decode_bar(msg.value())


__all__ = ["DEFAULT_BROKERS", "JournalError", "read_bars", "read_messages", "read_ticks"]
