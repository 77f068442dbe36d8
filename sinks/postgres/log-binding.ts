/**
 * Loader offsets bound to their log. A stored `next_offset` only means something in the log it
 * was counted in: a broker whose state was wiped, or a topic deleted and re-created, starts a
 * new log under the same name at offset 0, and retention deletes the start of a log the loader
 * may not have reached. `checkBinding` decides, on every partition assignment, whether the
 * stored offset can be loaded from; when it cannot, the partition stops loading until an
 * operator re-binds it (`tickstream loader --reset-offsets`): nothing is skipped silently.
 *
 * The log identity is the Kafka topic id (KIP-516): new for every created topic, so also for
 * the same name on a fresh broker. The cluster id is not exposed by the librdkafka bindings.
 */
import { promisify } from 'node:util';
import type RdKafka from '@confluentinc/kafka-javascript';

/** What the broker says about one partition's log right now. */
export interface LogState {
  topicId: string;
  /** Log start offset: the first retained record (retention moves it forward). */
  low: number;
  /** Log end offset (high watermark). */
  high: number;
}

/** The stored offset row, or null when the group never loaded this partition. */
export interface StoredOffset {
  nextOffset: number;
  topicId: string | null;
}

export type BlockReason = 'other-log' | 'past-end' | 'before-start';

export type Binding =
  | {
      ok: true;
      /** Where loading starts. */
      offset: number;
      /** Offsets retention removed before this group ever loaded them (a first binding only). */
      lostToRetention: number;
    }
  | {
      ok: false;
      reason: BlockReason;
      /** For `before-start`: offsets deleted by retention before they were loaded. */
      lostToRetention: number;
      /** What is wrong and what to do, for the log line, /readyz and /status. */
      message: string;
    };

export function checkBinding(partition: string, stored: StoredOffset | null, log: LogState): Binding {
  const reset = `stop and decide: \`tickstream loader --reset-offsets earliest\` re-binds it to this log and prints what it loads and what it cannot recover (docs/operations.md)`;
  if (!stored) return { ok: true, offset: log.low, lostToRetention: log.low };
  if (stored.topicId !== null && stored.topicId !== log.topicId) {
    return {
      ok: false,
      reason: 'other-log',
      lostToRetention: 0,
      message: `partition ${partition}: the stored offset ${stored.nextOffset} counts in another log (topic id ${stored.topicId}); the broker now holds a new log (topic id ${log.topicId}, offsets ${log.low}..${log.high}) — the broker's state was wiped or the topic re-created. Loading stopped for this partition; ${reset}`,
    };
  }
  if (stored.nextOffset > log.high) {
    return {
      ok: false,
      reason: 'past-end',
      lostToRetention: 0,
      message: `partition ${partition}: the stored offset ${stored.nextOffset} is past the log end ${log.high} (topic id ${log.topicId}): the log was truncated or replaced. Loading stopped for this partition; ${reset}`,
    };
  }
  if (stored.nextOffset < log.low) {
    return {
      ok: false,
      reason: 'before-start',
      lostToRetention: log.low - stored.nextOffset,
      message: `partition ${partition}: the stored offset ${stored.nextOffset} is before the log start ${log.low}: retention deleted ${log.low - stored.nextOffset} offset(s) (records and transaction markers) the loader had not loaded. Loading stopped for this partition; ${reset}`,
    };
  }
  return { ok: true, offset: stored.nextOffset, lostToRetention: 0 };
}

type Client = RdKafka.KafkaConsumer;

/** The topic id as text. The typings call the field `base64str`; the binding sets `base64`. */
function topicIdText(id: RdKafka.Uuid): string {
  const runtime = id as RdKafka.Uuid & { base64?: string };
  return runtime.base64 ?? runtime.base64str ?? `${id.mostSignificantBits}:${id.leastSignificantBits}`;
}

/**
 * Topic ids of `topics` and the watermarks of each partition, read through `consumer` and an
 * admin client made from it (`AdminClient.createFrom`).
 */
export async function readLogStates(
  consumer: Client,
  admin: RdKafka.IAdminClient,
  topics: string[],
): Promise<Map<string, LogState & { topic: string; partition: number }>> {
  const described = await new Promise<RdKafka.TopicDescription[]>((resolve, reject) =>
    admin.describeTopics(topics, { timeout: 10_000 }, (err, d) => (err ? reject(err) : resolve(d))),
  );
  const out = new Map<string, LogState & { topic: string; partition: number }>();
  const query = promisify<string, number, number, RdKafka.WatermarkOffsets>(
    consumer.queryWatermarkOffsets.bind(consumer),
  );
  for (const d of described) {
    if (d.error) throw d.error;
    for (const p of d.partitions) {
      const w = await query(d.name, p.partition, 10_000);
      out.set(`${d.name}:${p.partition}`, {
        topic: d.name,
        partition: p.partition,
        topicId: topicIdText(d.topicId),
        low: w.lowOffset,
        high: w.highOffset,
      });
    }
  }
  return out;
}

export type ResetTo = 'earliest' | 'latest';

/**
 * `tickstream loader --reset-offsets earliest|latest`: re-binds every partition of `topics` for
 * `groupId` to the log the broker holds now and says, per partition, what will be loaded and
 * what cannot be recovered. `earliest` loads from where the stored offset still fits, else from
 * the first retained record (a log truncated under the stored offset: from its end, the
 * records before it were loaded); `latest` skips to the log end. The generation is bumped, so
 * a running loader is fenced and re-claims with the new binding.
 */
export async function resetOffsets(options: {
  consumer: Client;
  admin: RdKafka.IAdminClient;
  db: { query: (sql: string, params: unknown[]) => Promise<{ rows: unknown[] }> };
  groupId: string;
  topics: string[];
  to: ResetTo;
}): Promise<string[]> {
  const lines: string[] = [];
  const logs = await readLogStates(options.consumer, options.admin, options.topics);
  for (const [key, log] of [...logs].sort(([a], [b]) => a.localeCompare(b))) {
    const { rows } = (await options.db.query(
      'select next_offset::text as next_offset, topic_id from sink_offsets where consumer_group = $1 and topic = $2 and partition = $3',
      [options.groupId, log.topic, log.partition],
    )) as { rows: { next_offset: string; topic_id: string | null }[] };
    const row = rows[0];
    const stored = row ? { nextOffset: Number(row.next_offset), topicId: row.topic_id } : null;
    const binding = checkBinding(key, stored, log);
    let target: number;
    let lost: string;
    if (options.to === 'latest') {
      target = log.high;
      lost = `skips offsets ${binding.ok ? binding.offset : log.low}..${log.high - 1} of this log, never loaded`;
    } else if (binding.ok) {
      target = binding.offset;
      lost = binding.lostToRetention
        ? `${binding.lostToRetention} offset(s) deleted by retention before any load`
        : 'nothing';
    } else if (binding.reason === 'past-end') {
      target = log.high;
      lost = `offsets ${log.high}..${(stored as StoredOffset).nextOffset - 1} no longer exist in this log`;
    } else if (binding.reason === 'before-start') {
      target = log.low;
      lost = `offsets ${(stored as StoredOffset).nextOffset}..${log.low - 1} (${binding.lostToRetention}) deleted by retention before they were loaded`;
    } else {
      target = log.low;
      lost = `whatever the old log (topic id ${(stored as StoredOffset).topicId}) held after offset ${(stored as StoredOffset).nextOffset} and was not loaded; \`tickstream verify\` shows the holes per source`;
      if (log.low > 0) lost += `; and offsets 0..${log.low - 1} of the new log, deleted by retention`;
    }
    await options.db.query(
      `insert into sink_offsets (consumer_group, topic, partition, next_offset, generation, topic_id) values ($1, $2, $3, $4, 1, $5)
       on conflict (consumer_group, topic, partition) do update set next_offset = excluded.next_offset, topic_id = excluded.topic_id, generation = sink_offsets.generation + 1`,
      [options.groupId, log.topic, log.partition, target, log.topicId],
    );
    const loads =
      log.high > target ? `offsets ${target}..${log.high - 1} (${log.high - target})` : 'nothing yet';
    lines.push(
      `${key}: was ${stored ? `${stored.nextOffset} (topic id ${stored.topicId ?? 'unbound'})` : 'not loaded'}, now ${target} (topic id ${log.topicId}); loads ${loads}; cannot recover: ${lost}`,
    );
  }
  return lines;
}
