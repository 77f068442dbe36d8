/**
 * The Grafana dashboard of `tickstream serve`, as code. Written as plain objects in Grafana's
 * dashboard JSON model (schemaVersion 39) rather than with @grafana/grafana-foundation-sdk: one
 * file, no dependency, and test/ops/dashboard.test.ts checks its structure and that every query
 * names a metric a real serve exposes.
 *
 * Regenerate the provisioned file after a change:
 *   npm run build && node dist/ops/grafana/dashboard.js > ops/grafana/dashboards/tickstream.json \
 *     && npx biome format --write ops/grafana/dashboards/tickstream.json
 */
import { pathToFileURL } from 'node:url';

/** The data source provisioned by ops/grafana/provisioning/datasources/prometheus.yml. */
export const datasource = { type: 'prometheus', uid: 'tickstream-prometheus' } as const;

/** Every query is narrowed to the instances picked in the dashboard's `instance` variable. */
const sel = 'instance=~"$instance"';
const rate = (metric: string, extra = '') => `rate(${metric}{${sel}${extra}}[$__rate_interval])`;
const quantile = (q: number, histogram: string) =>
  `histogram_quantile(${q}, sum by (le) (${rate(`${histogram}_bucket`)}))`;

interface Target {
  expr: string;
  legend: string;
}
interface PanelSpec {
  title: string;
  description: string;
  unit: string;
  targets: Target[];
  /** 'stat' for a current value, else a time series. */
  type?: 'timeseries' | 'stat';
  width?: number;
}

const rows: { title: string; panels: PanelSpec[] }[] = [
  {
    title: 'Health',
    panels: [
      {
        title: 'Journal ready',
        description: '1 while the Kafka journal commits (/readyz). 0: sources get no ACKs.',
        unit: 'none',
        type: 'stat',
        width: 6,
        targets: [{ expr: `min(tickstream_ready{${sel}})`, legend: 'ready' }],
      },
      {
        title: 'Redis connected',
        description: '1 while the Redis live view is connected; while 0 its ticks are dropped and counted.',
        unit: 'none',
        type: 'stat',
        width: 6,
        targets: [{ expr: `min(tickstream_redis_connected{${sel}})`, legend: 'redis' }],
      },
      {
        title: 'Sources connected',
        description: 'Sources with a live session, and open EA connections.',
        unit: 'none',
        type: 'stat',
        width: 6,
        targets: [
          { expr: `sum(tickstream_sources_connected{${sel}})`, legend: 'sources' },
          { expr: `sum(tickstream_ingress_connections{${sel}})`, legend: 'connections' },
        ],
      },
      {
        title: 'Websocket clients',
        description: 'Connected websocket clients.',
        unit: 'none',
        type: 'stat',
        width: 6,
        targets: [{ expr: `sum(tickstream_ws_clients{${sel}})`, legend: 'clients' }],
      },
    ],
  },
  {
    title: 'Throughput',
    panels: [
      {
        title: 'Ticks received per source',
        description: 'Ticks accepted from each source (next contiguous seq).',
        unit: 'ops',
        targets: [
          { expr: `sum by (source) (${rate('tickstream_ticks_received_total')})`, legend: '{{source}}' },
        ],
      },
      {
        title: 'Ticks written per sink',
        description:
          'Kafka: committed and ACKed. Redis: stream entries. Websockets: ticks sent. Postgres: rows COPYed.',
        unit: 'ops',
        targets: [
          { expr: `sum(${rate('tickstream_ticks_committed_total')})`, legend: 'kafka' },
          { expr: `sum(${rate('tickstream_redis_ticks_written_total')})`, legend: 'redis' },
          { expr: `sum(${rate('tickstream_ws_ticks_sent_total')})`, legend: 'websockets' },
          {
            expr: `sum by (table) (${rate('tickstream_loader_rows_total')})`,
            legend: 'postgres {{table}}',
          },
        ],
      },
    ],
  },
  {
    title: 'Latency',
    panels: [
      {
        title: 'Receipt → Kafka commit (ACK)',
        description: 'Bridge receipt of a tick to the commit of its Kafka transaction: the ACK latency.',
        unit: 's',
        targets: [0.5, 0.99, 0.999].map((q) => ({
          expr: quantile(q, 'tickstream_receipt_to_kafka_commit_seconds'),
          legend: `p${q * 100}`,
        })),
      },
      {
        title: 'Receipt → Redis and websocket publish',
        description: 'Bridge receipt to the Redis write and to the websocket publish (the live views).',
        unit: 's',
        targets: [
          { expr: quantile(0.5, 'tickstream_receipt_to_redis_seconds'), legend: 'redis p50' },
          { expr: quantile(0.99, 'tickstream_receipt_to_redis_seconds'), legend: 'redis p99' },
          { expr: quantile(0.5, 'tickstream_receipt_to_ws_publish_seconds'), legend: 'websockets p50' },
          { expr: quantile(0.99, 'tickstream_receipt_to_ws_publish_seconds'), legend: 'websockets p99' },
        ],
      },
    ],
  },
  {
    title: 'Queues and drops',
    panels: [
      {
        title: 'Uncommitted ticks vs maxQueuedTicks',
        description: 'At the limit the bridge stops reading terminals (credit) until Kafka commits.',
        unit: 'none',
        width: 8,
        targets: [
          { expr: `sum(tickstream_queued_ticks{${sel}})`, legend: 'queued' },
          { expr: `max(tickstream_queued_ticks_limit{${sel}})`, legend: 'limit' },
        ],
      },
      {
        title: 'Journal bytes vs maxJournalQueuedBytes',
        description: 'Bytes produced but not yet committed to Kafka.',
        unit: 'bytes',
        width: 8,
        targets: [
          { expr: `sum(tickstream_journal_queued_bytes{${sel}})`, legend: 'queued' },
          { expr: `max(tickstream_journal_queued_bytes_limit{${sel}})`, legend: 'limit' },
        ],
      },
      {
        title: 'Redis queue vs redisMaxQueuedTicks',
        description: 'Ticks waiting for Redis; over the limit they are dropped and counted.',
        unit: 'none',
        width: 8,
        targets: [
          { expr: `sum(tickstream_redis_queued_ticks{${sel}})`, legend: 'queued' },
          { expr: `max(tickstream_redis_queued_ticks_limit{${sel}})`, legend: 'limit' },
        ],
      },
      {
        title: 'Drops and refusals',
        description:
          'Redis drops (never caught up), resent ticks dropped as duplicates, frames refused by error code.',
        unit: 'ops',
        targets: [
          { expr: `sum(${rate('tickstream_redis_dropped_ticks_total')})`, legend: 'redis dropped' },
          {
            expr: `sum(${rate('tickstream_redis_duplicates_refused_total')})`,
            legend: 'redis duplicates refused',
          },
          {
            expr: `sum by (source) (${rate('tickstream_duplicate_ticks_total')})`,
            legend: 'duplicates {{source}}',
          },
          {
            expr: `sum by (code) (${rate('tickstream_rejected_frames_total')})`,
            legend: 'rejected {{code}}',
          },
        ],
      },
      {
        title: 'Seq gaps and resends',
        description: 'Frames that skipped seqs (each answered by a RESEND), and RESENDs sent.',
        unit: 'ops',
        targets: [
          { expr: `sum by (source) (${rate('tickstream_seq_gaps_total')})`, legend: 'gaps {{source}}' },
          { expr: `sum(${rate('tickstream_resends_total')})`, legend: 'resends' },
        ],
      },
    ],
  },
  {
    title: 'Sources',
    panels: [
      {
        title: 'Last tick age per source',
        description: 'Seconds since the newest accepted tick (a stalled terminal, or a closed market).',
        unit: 's',
        targets: [
          { expr: `max by (source) (tickstream_source_last_tick_age_seconds{${sel}})`, legend: '{{source}}' },
        ],
      },
      {
        title: 'Clock mismatches and offset changes',
        description:
          'Mismatches: a terminal contradicted its time-zone rule and was refused. Changes: a DST switch of a terminal without a rule.',
        unit: 'none',
        targets: [
          {
            expr: `sum by (source) (increase(tickstream_clock_mismatches_total{${sel}}[$__range]))`,
            legend: 'mismatch {{source}}',
          },
          {
            expr: `sum by (source) (increase(tickstream_clock_offset_changes_total{${sel}}[$__range]))`,
            legend: 'offset change {{source}}',
          },
        ],
      },
    ],
  },
  {
    title: 'Kafka journal and Postgres loader',
    panels: [
      {
        title: 'Kafka transaction time',
        description: 'One journal transaction (produce + commit), and transactions per second.',
        unit: 's',
        targets: [
          { expr: quantile(0.5, 'tickstream_journal_transaction_seconds'), legend: 'p50' },
          { expr: quantile(0.99, 'tickstream_journal_transaction_seconds'), legend: 'p99' },
        ],
      },
      {
        title: 'Journal records and transactions',
        description: 'Records and transactions committed to Kafka per second.',
        unit: 'ops',
        targets: [
          { expr: `sum(${rate('tickstream_journal_records_total')})`, legend: 'records' },
          { expr: `sum(${rate('tickstream_journal_transactions_total')})`, legend: 'transactions' },
        ],
      },
      {
        title: 'Loader lag',
        description: 'Age of the newest record loaded into Postgres, by its Kafka timestamp.',
        unit: 's',
        targets: [{ expr: `max(tickstream_loader_lag_seconds{${sel}})`, legend: 'lag' }],
      },
      {
        title: 'Loader transactions, COPY time and errors',
        description: 'COPY + offset transactions by outcome, their p99, and Postgres errors (retried).',
        unit: 'ops',
        targets: [
          {
            expr: `sum by (outcome) (${rate('tickstream_loader_transactions_total')})`,
            legend: '{{outcome}}',
          },
          { expr: `sum(${rate('tickstream_loader_errors_total')})`, legend: 'errors' },
          { expr: quantile(0.99, 'tickstream_loader_copy_seconds'), legend: 'COPY p99 (s)' },
        ],
      },
    ],
  },
  {
    title: 'Websockets',
    panels: [
      {
        title: 'Websocket ticks sent and conflated',
        description:
          'Ticks sent to clients, and ticks replaced by a newer quote for a slow client (conflation).',
        unit: 'ops',
        targets: [
          { expr: `sum(${rate('tickstream_ws_ticks_sent_total')})`, legend: 'sent' },
          { expr: `sum(${rate('tickstream_ws_conflated_ticks_total')})`, legend: 'conflated' },
          { expr: `sum(${rate('tickstream_ws_messages_sent_total')})`, legend: 'messages' },
        ],
      },
      {
        title: 'Websocket clients and disconnects',
        description: 'Connected clients, clients disconnected for reading too slowly, refused tokens.',
        unit: 'none',
        targets: [
          { expr: `sum(tickstream_ws_clients{${sel}})`, legend: 'clients' },
          {
            expr: `sum(increase(tickstream_ws_slow_disconnects_total{${sel}}[$__rate_interval]))`,
            legend: 'slow disconnects',
          },
          {
            expr: `sum(increase(tickstream_ws_auth_failures_total{${sel}}[$__rate_interval]))`,
            legend: 'auth failures',
          },
        ],
      },
    ],
  },
  {
    title: 'Process',
    panels: [
      {
        title: 'CPU',
        description: 'CPU seconds per second of the serve process (1 = one core).',
        unit: 'percentunit',
        width: 8,
        targets: [
          { expr: `sum(${rate('tickstream_process_cpu_user_seconds_total')})`, legend: 'user' },
          { expr: `sum(${rate('tickstream_process_cpu_system_seconds_total')})`, legend: 'system' },
        ],
      },
      {
        title: 'Memory',
        description: 'Resident set size and V8 heap in use.',
        unit: 'bytes',
        width: 8,
        targets: [
          { expr: `sum(tickstream_process_resident_memory_bytes{${sel}})`, legend: 'RSS' },
          { expr: `sum(tickstream_nodejs_heap_size_used_bytes{${sel}})`, legend: 'heap used' },
        ],
      },
      {
        title: 'GC and event loop',
        description: 'Seconds per second spent in GC by kind, and the event loop lag p99.',
        unit: 's',
        width: 8,
        targets: [
          {
            expr: `sum by (kind) (${rate('tickstream_nodejs_gc_duration_seconds_sum')})`,
            legend: 'gc {{kind}}',
          },
          { expr: `max(tickstream_nodejs_eventloop_lag_p99_seconds{${sel}})`, legend: 'event loop lag p99' },
        ],
      },
    ],
  },
];

/** Lays the rows out on Grafana's 24-column grid: graphs 8 high, stats 4, 12 wide unless a panel says. */
export function tickstreamDashboard() {
  const panels: Record<string, unknown>[] = [];
  let id = 1;
  let y = 0;
  for (const row of rows) {
    panels.push({
      id: id++,
      type: 'row',
      title: row.title,
      collapsed: false,
      gridPos: { h: 1, w: 24, x: 0, y },
    });
    y += 1;
    let x = 0;
    let lineHeight = 0;
    for (const p of row.panels) {
      const w = p.width ?? 12;
      const h = p.type === 'stat' ? 4 : 8;
      if (x + w > 24) {
        x = 0;
        y += lineHeight;
        lineHeight = 0;
      }
      lineHeight = Math.max(lineHeight, h);
      panels.push({
        id: id++,
        type: p.type ?? 'timeseries',
        title: p.title,
        description: p.description,
        datasource,
        gridPos: { h, w, x, y },
        fieldConfig: { defaults: { unit: p.unit }, overrides: [] },
        options:
          p.type === 'stat'
            ? { reduceOptions: { calcs: ['lastNotNull'] }, colorMode: 'value', graphMode: 'none' }
            : { legend: { displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'multi' } },
        targets: p.targets.map((t, i) => ({
          refId: String.fromCharCode(65 + i),
          datasource,
          expr: t.expr,
          legendFormat: t.legend,
        })),
      });
      x += w;
    }
    y += lineHeight;
  }
  return {
    uid: 'tickstream',
    title: 'tickstream',
    description: 'MT5 tick capture: sources, sinks, queues, latency, loader, websockets, process.',
    tags: ['tickstream'],
    schemaVersion: 39,
    version: 1,
    editable: true,
    timezone: 'utc',
    refresh: '10s',
    time: { from: 'now-1h', to: 'now' },
    templating: {
      list: [
        {
          name: 'instance',
          label: 'instance',
          type: 'query',
          datasource,
          query: { query: 'label_values(tickstream_ready, instance)', refId: 'instance' },
          definition: 'label_values(tickstream_ready, instance)',
          includeAll: true,
          multi: true,
          current: { text: 'All', value: '$__all' },
          refresh: 2,
        },
      ],
    },
    annotations: { list: [] },
    panels,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(`${JSON.stringify(tickstreamDashboard(), null, 2)}\n`);
}
