/**
 * The pipeline's own Prometheus metrics (each sink registers its own on the same registry,
 * where its work happens). Names are listed in the README's metrics table.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

const latencyBuckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export function createPipelineMetrics(registry: Registry = new Registry()) {
  const registers = [registry];
  return {
    registry,
    ticksReceived: new Counter({
      name: 'tickstream_ticks_received_total',
      help: 'Ticks accepted from sources (next contiguous seq)',
      labelNames: ['source'],
      registers,
    }),
    ticksDecoded: new Counter({
      name: 'tickstream_ticks_decoded_total',
      help: 'Ticks decoded by the worker pool',
      registers,
    }),
    ticksCommitted: new Counter({
      name: 'tickstream_ticks_committed_total',
      help: 'Ticks committed to the Kafka journal and ACKed',
      labelNames: ['source'],
      registers,
    }),
    duplicates: new Counter({
      name: 'tickstream_duplicate_ticks_total',
      help: 'Ticks dropped because their seq was already accepted',
      labelNames: ['source'],
      registers,
    }),
    clockMismatches: new Counter({
      name: 'tickstream_clock_mismatches_total',
      help: "Times a terminal's reported server-time offset contradicted the configured time-zone rule (the source is refused)",
      labelNames: ['source'],
      registers,
    }),
    clockOffsetChanges: new Counter({
      name: 'tickstream_clock_offset_changes_total',
      help: 'Times the offset reported by the terminal of a source without a time-zone rule changed (a DST switch)',
      labelNames: ['source'],
      registers,
    }),
    gaps: new Counter({
      name: 'tickstream_seq_gaps_total',
      help: 'Frames whose first seq was past the next expected one',
      labelNames: ['source'],
      registers,
    }),
    resends: new Counter({
      name: 'tickstream_resends_total',
      help: 'RESEND requests sent to sources',
      registers,
    }),
    rejectedFrames: new Counter({
      name: 'tickstream_rejected_frames_total',
      help: 'Frames or connections rejected, by error code',
      labelNames: ['code'],
      registers,
    }),
    connections: new Gauge({
      name: 'tickstream_ingress_connections',
      help: 'Open EA connections',
      registers,
    }),
    sources: new Gauge({
      name: 'tickstream_sources_connected',
      help: 'Sources with a live session',
      registers,
    }),
    lastTickAge: new Gauge({
      name: 'tickstream_source_last_tick_age_seconds',
      help: 'Seconds since the newest accepted tick of each source',
      labelNames: ['source'],
      registers,
    }),
    queuedTicks: new Gauge({
      name: 'tickstream_queued_ticks',
      help: 'Ticks accepted but not yet committed to Kafka',
      registers,
    }),
    queuedTicksLimit: new Gauge({
      name: 'tickstream_queued_ticks_limit',
      help: 'Configured maxQueuedTicks',
      registers,
    }),
    decodeBatchTicks: new Histogram({
      name: 'tickstream_decode_batch_ticks',
      help: 'Ticks per decode task',
      buckets: [1, 10, 100, 1000, 4096, 8192, 16384, 65536],
      registers,
    }),
    receiptToCommit: new Histogram({
      name: 'tickstream_receipt_to_kafka_commit_seconds',
      help: 'Bridge receipt of a tick to its Kafka transaction commit',
      buckets: latencyBuckets,
      registers,
    }),
    lateBarTicks: new Gauge({
      name: 'tickstream_bar_late_ticks',
      help: 'Ticks that came for a 1-minute bar already closed',
      registers,
    }),
    barsClosed: new Counter({
      name: 'tickstream_bars_closed_total',
      help: '1-minute bars closed',
      registers,
    }),
    ticksOutOfWindow: new Counter({
      name: 'tickstream_ticks_out_of_time_window_total',
      help: 'Ticks journaled but held out of Redis, websockets and bars: their time is outside the window around the bridge and source clocks',
      labelNames: ['source'],
      registers,
    }),
    stateRefusals: new Counter({
      name: 'tickstream_state_limit_refusals_total',
      help: 'Sources or (source, symbol) pairs refused with ERR_LIMIT because the bridge holds maxSources / maxSymbols already',
      labelNames: ['what'],
      registers,
    }),
    sourcesKnown: new Gauge({
      name: 'tickstream_sources_known',
      help: 'Sources with live state (seen within sourceForgetAfterMs); limit maxSources',
      registers,
    }),
    symbolsKnown: new Gauge({
      name: 'tickstream_symbols_known',
      help: '(source, symbol) pairs with live state; limit maxSymbols',
      registers,
    }),
    sourcesForgotten: new Counter({
      name: 'tickstream_sources_forgotten_total',
      help: 'Sources whose live state was dropped after sourceForgetAfterMs without a session or a tick',
      registers,
    }),
    journalAppendFailures: new Counter({
      name: 'tickstream_journal_append_failures_total',
      help: 'Journal appends that failed (their ticks stay un-ACKed and are resent; failed bars are lost and logged)',
      labelNames: ['what'],
      registers,
    }),
    ready: new Gauge({
      name: 'tickstream_ready',
      help: '1 when the journal accepts writes (/readyz)',
      registers,
    }),
  };
}

export type PipelineMetrics = ReturnType<typeof createPipelineMetrics>;
