/**
 * `tickstream demo`: the main job end to end on this machine. Starts `serve` (in this process),
 * subscribes a websocket client, feeds the real MT5 export from ../shared/data (when present)
 * and a synthetic multi-symbol stream through `sim` processes, waits until every sink has
 * everything, and prints per-sink counts, latency percentiles and where to look.
 *
 *   tickstream demo [--synthetic-ticks N] [--symbols N] [--keep | --exit] [config flags]
 * Infrastructure must be up (`npm run demo` brings it up first). On a terminal it keeps serving
 * after the report until Ctrl-C, so the URLs it prints answer; in scripts and CI it ends.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { Registry } from 'prom-client';
import WebSocket from 'ws';
import { type CommandSpec, parseCommand } from '../bridge/args.js';
import { type Config, configKeys, type FeedGroupConfig, loadConfig, MERGED_SOURCE } from './config.js';
import { serve } from './serve.js';

const out = (line: string) => process.stdout.write(`${line}\n`);
const bin = fileURLToPath(new URL('../../bin/tickstream.js', import.meta.url));
const mt5Export = fileURLToPath(
  new URL('../../../shared/data/EURUSD_mt5_export_derived_from_histdata.csv', import.meta.url),
);

interface Feed {
  source: string;
  args: string[];
  ticks: number;
}

function runSimProcess(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'sim', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (d: Buffer) => {
      text += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(text.trim())
        : reject(new Error(`sim ${args.join(' ')} exited with ${code}: ${text}`)),
    );
  });
}

/** Quantile estimate from a prom-client histogram's buckets (linear within a bucket). */
async function histogramQuantiles(registry: Registry, name: string, qs: number[]): Promise<number[] | null> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return null;
  const values = (await metric.get()).values.filter(
    (v) => (v as { metricName?: string }).metricName === `${name}_bucket`,
  );
  const buckets = new Map<number, number>();
  for (const v of values) {
    const le = v.labels['le'] === '+Inf' ? Number.POSITIVE_INFINITY : Number(v.labels['le']);
    buckets.set(le, (buckets.get(le) ?? 0) + v.value);
  }
  const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total === 0) return null;
  return qs.map((q) => {
    const rank = q * total;
    let prevLe = 0;
    let prevCount = 0;
    for (const [le, count] of sorted) {
      if (count >= rank) {
        if (!Number.isFinite(le)) return prevLe;
        return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1, count - prevCount);
      }
      prevLe = le;
      prevCount = count;
    }
    return prevLe;
  });
}

function percentiles(sorted: Float64Array, qs: number[]): number[] {
  return qs.map((q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN);
}

const ms = (s: number) => `${s.toFixed(2)} ms`;

async function waitUntil(probe: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await probe()) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return probe();
}

export const DEMO_COMMAND = {
  name: 'demo',
  summary:
    'The main job end to end: start serve, feed the MT5 export from ../shared/data and a synthetic stream through sim, wait until Kafka, Redis, a websocket client and Postgres hold every tick, and print the counts, latency and where to look.',
  flags: {
    'synthetic-ticks': {
      type: 'number',
      integer: true,
      min: 0,
      default: 300_000,
      description: 'synthetic ticks fed (over 60 s of event time, at full speed)',
    },
    symbols: { type: 'number', integer: true, min: 1, default: 10, description: 'synthetic symbols' },
    keep: {
      type: 'boolean',
      description: 'keep serving after the report until Ctrl-C (the default on a terminal)',
    },
    exit: {
      type: 'boolean',
      description: 'stop serving right after the report (the default without a terminal)',
    },
  },
  configFlags: configKeys(),
  examples: [
    'npm run demo    # or, with the infrastructure up: tickstream demo --synthetic-ticks 1000000 --exit',
  ],
} as const satisfies CommandSpec;

export async function demoMain(argv: string[]): Promise<number> {
  const parsed = parseCommand(DEMO_COMMAND, argv);
  if (!parsed) return 0;
  const loaded: Config = loadConfig({
    ...(parsed.configFile ? { file: parsed.configFile } : {}),
    flags: parsed.config,
  });
  const total = parsed.flags['synthetic-ticks'];
  const symbolCount = parsed.flags.symbols;
  const keep =
    parsed.flags.keep || (!parsed.flags.exit && process.stdout.isTTY === true && !process.env['CI']);
  const runId = new Date().toISOString().replace(/[-:]/g, '').slice(0, 15).replace('T', '-');
  const mt5Source = `demo-mt5-${runId}`;
  const synth = `demo-synth-${runId}`;
  // The export's times are a broker server clock of UTC+2 (../shared/data/README.md).
  const config: Config = {
    ...loaded,
    // The synthetic terminal's server clock is UTC.
    sourceTimeZones: {
      ...loaded.sourceTimeZones,
      [mt5Source]: '+2',
      [synth]: 'UTC',
      ...Object.fromEntries(demoFeedGroup(runId).members.map((m) => [m.source, 'UTC'])),
    },
    // The report is read by a person: its log lines are readable too, unless JSON was asked for.
    logFormat: loaded.logFormat === 'auto' ? 'pretty' : loaded.logFormat,
    // The demo's own websocket client shares this process's event loop with the bridge: a
    // larger allowance keeps it from being treated as a slow consumer under the full-speed flood.
    wsMaxBackpressureBytes: Math.max(loaded.wsMaxBackpressureBytes, 64 << 20),
    feedGroups: [...loaded.feedGroups, demoFeedGroup(runId)],
  };

  out(
    `demo: starting serve (ingress :${config.ingressPort}, http :${config.httpPort}, Kafka ${config.kafkaBrokers})`,
  );
  const running = await serve(config);
  const http = `http://${config.httpHost}:${running.httpPort}`;
  const redis = new Redis(config.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  const db = new pg.Client({ connectionString: config.postgresUrl });
  try {
    await redis.connect();
    await db.connect();

    // A websocket subscriber to everything, measuring bridge receipt → client delivery.
    const latencies: number[] = [];
    const wsTicks = new Map<string, number>();
    const wsSkipped = new Map<string, number>();
    const ws = new WebSocket(`ws://${config.httpHost}:${running.httpPort}/ws`);
    ws.on('message', (data) => {
      const now = performance.timeOrigin + performance.now();
      const m = JSON.parse(data.toString()) as {
        type: string;
        source?: string;
        rt?: number;
        skipped?: number;
        ticks?: unknown[];
      };
      if (m.type !== 'ticks' || !m.source || !m.ticks) return;
      wsTicks.set(m.source, (wsTicks.get(m.source) ?? 0) + m.ticks.length);
      // Conflated (slow-consumer policy): the ticks left out are counted by the bridge.
      if (m.skipped) wsSkipped.set(m.source, (wsSkipped.get(m.source) ?? 0) + m.skipped);
      for (let i = 0; i < m.ticks.length; i++) latencies.push(now - (m.rt ?? now));
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => {
        ws.send(JSON.stringify({ op: 'subscribe', channels: ['*'] }));
        resolve();
      });
      ws.once('error', reject);
    });

    const feeds: Feed[] = [];
    const port = String(running.ingressPort);
    if (existsSync(mt5Export)) {
      feeds.push({
        source: mt5Source,
        args: ['--file', mt5Export, '--source', mt5Source, '--server-utc-offset', '2', '--port', port],
        ticks: 9_336,
      });
    } else {
      out(`demo: ${mt5Export} not found: feeding only the synthetic stream`);
    }
    const durationS = 60;
    feeds.push({
      source: synth,
      args: [
        '--synthetic',
        '--speed',
        'max',
        '--symbols',
        String(symbolCount),
        '--rate',
        String(Math.ceil(total / durationS)),
        '--duration',
        String(durationS),
        '--source',
        synth,
        '--port',
        port,
      ],
      ticks: Math.ceil(total / durationS) * durationS,
    });
    const started = performance.now();
    out(`demo: feeding ${feeds.map((f) => f.source).join(' and ')} through sim at full speed`);
    for (const line of await Promise.all(feeds.map((f) => runSimProcess(f.args)))) out(`  ${line}`);
    const ackedS = (performance.now() - started) / 1000;
    const expected = feeds.reduce((n, f) => n + f.ticks, 0);

    const committed = async () => {
      const m =
        (await running.registry.getSingleMetric('tickstream_ticks_committed_total')?.get())?.values ?? [];
      return m
        .filter((v) => feeds.some((f) => f.source === v.labels['source']))
        .reduce((n, v) => n + v.value, 0);
    };
    const redisCount = async () => {
      let n = 0;
      for (const f of feeds) {
        const keys = await redis.keys(`${config.redisKeyPrefix}:ticks:${f.source}:*`);
        // entries-added, not XLEN: MAXLEN ~ trims long streams.
        for (const k of keys) {
          const info = (await redis.xinfo('STREAM', k)) as unknown[];
          n += Number(info[info.indexOf('entries-added') + 1]);
        }
      }
      return n;
    };
    const pgCount = async () => {
      try {
        const r = await db.query(
          `select count(*)::float8 as n from ${config.postgresSchema}.ticks where source = any($1)`,
          [feeds.map((f) => f.source)],
        );
        return Number(r.rows[0].n);
      } catch {
        return 0;
      }
    };
    const sum = (m: Map<string, number>) => feeds.reduce((n, f) => n + (m.get(f.source) ?? 0), 0);
    const wsCount = async () => sum(wsTicks) + sum(wsSkipped);
    await waitUntil(async () => (await pgCount()) >= expected && (await wsCount()) >= expected, 120_000);
    const allS = (performance.now() - started) / 1000;

    const counts: [string, number][] = [
      ['kafka (committed, ACKed)', await committed()],
      ['redis streams', await redisCount()],
      [
        `websocket client (delivered${sum(wsSkipped) ? ` + ${sum(wsSkipped)} conflated` : ''})`,
        await wsCount(),
      ],
      ['postgres ticks', await pgCount()],
    ];
    const qs = [0.5, 0.99, 0.999];
    const sortedWs = Float64Array.from(latencies).sort();
    const kafka = await histogramQuantiles(
      running.registry,
      'tickstream_receipt_to_kafka_commit_seconds',
      qs,
    );
    const redisLat = await histogramQuantiles(running.registry, 'tickstream_receipt_to_redis_seconds', qs);

    out('');
    out(
      `demo: ${expected} ticks from ${feeds.length} sources; all ACKed after ${ackedS.toFixed(1)} s (${(expected / ackedS).toFixed(0)} ticks/s through the bridge into Kafka); every sink complete after ${allS.toFixed(1)} s`,
    );
    out('');
    out('| sink | ticks | expected | |');
    out('|---|---:|---:|---|');
    let missing = 0;
    for (const [name, n] of counts) {
      out(`| ${name} | ${n} | ${expected} | ${n === expected ? 'ok' : n < expected ? 'MISSING' : 'EXTRA'} |`);
      if (n !== expected) missing++;
    }
    out('');
    out('latency from bridge receipt (p50 / p99 / p99.9), under this full-speed flood mostly queueing');
    out('(`npm run bench` measures it at fixed rates):');
    if (kafka)
      out(
        `  → Kafka commit     ${kafka.map((s) => ms(s * 1000)).join(' / ')}   (estimated from the histogram buckets)`,
      );
    if (redisLat)
      out(
        `  → Redis XADD reply ${redisLat.map((s) => ms(s * 1000)).join(' / ')}   (estimated from the histogram buckets)`,
      );
    if (sortedWs.length)
      out(
        `  → websocket client ${percentiles(sortedWs, qs).map(ms).join(' / ')}   (measured by the client, ${sortedWs.length} ticks)`,
      );
    const feedOk = await demoMergedFeed(config, running.ingressPort, http, demoFeedGroup(runId));
    out('');
    out('where to look:');
    out(`  status page   ${http}/          metrics ${http}/metrics   readiness ${http}/readyz`);
    out(
      `  kafka         topic ${config.ticksTopic} (bars ${config.barsTopic}, resume state ${config.sourcesTopic}) on ${config.kafkaBrokers}`,
    );
    out(
      `  redis         redis-cli --scan --pattern '${config.redisKeyPrefix}:*${runId}*'   (ticks, quote, bars:1m)`,
    );
    out(
      `  postgres      psql ${config.postgresUrl} -c "select symbol, count(*), min(time), max(time) from ${config.postgresSchema}.ticks where source like 'demo-%${runId}' group by 1"`,
    );
    out(
      `  websockets    ws://${config.httpHost}:${running.httpPort}/ws  → {"op":"subscribe","channels":["EURUSD"]}`,
    );
    ws.close();
    if (keep) {
      out(
        '\ndemo: still serving, so the addresses above answer; Ctrl-C to stop (--exit ends right after the report)',
      );
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
    } else {
      out(
        '\ndemo: stopping serve now, so the addresses above stop answering. To keep it running: tickstream demo --keep, or tickstream serve',
      );
    }
    return missing || !feedOk ? 1 : 0;
  } finally {
    redis.disconnect();
    await db.end().catch(() => undefined);
    await running.stop('demo finished');
  }
}

/** The demo's feed group: two synthetic terminals carrying one symbol, failover, short timings. */
function demoFeedGroup(runId: string): FeedGroupConfig {
  return {
    symbol: `DEMO-${runId}`,
    policy: 'failover',
    members: [
      { source: `demo-feed-a-${runId}`, symbol: 'SYN001' },
      { source: `demo-feed-b-${runId}`, symbol: 'SYN001' },
    ],
    stallMs: 1000,
    maxLagMs: 2000,
    holdMs: 3000,
    dedupWindowMs: 60_000,
  };
}

interface FeedStatus {
  symbol: string;
  active: string | null;
  why: string;
}

/**
 * The merged feed with one failover: two real-time sims carry the group's symbol, the primary's
 * sim is killed (-9) after two seconds, and the merged stream follows the secondary.
 */
async function demoMergedFeed(
  config: Config,
  ingressPort: number,
  http: string,
  group: FeedGroupConfig,
): Promise<boolean> {
  const [primary, secondary] = group.members.map((m) => m.source) as [string, string];
  const feedStatus = async () =>
    ((await (await fetch(`${http}/status`)).json()) as { feeds: FeedStatus[] }).feeds.find(
      (f) => f.symbol === group.symbol,
    );
  const sim = (source: string) =>
    spawn(
      process.execPath,
      [
        bin,
        'sim',
        '--synthetic',
        '--symbols',
        '1',
        '--rate',
        '100',
        '--duration',
        '6',
        '--source',
        source,
        '--port',
        String(ingressPort),
      ],
      { stdio: 'ignore' },
    );
  out('');
  out(`demo: merged feed ${group.symbol} (failover) over ${primary} (primary) and ${secondary}`);
  const a = sim(primary);
  const aExited = new Promise((resolve) => a.once('exit', resolve));
  if (!(await waitUntil(async () => (await feedStatus())?.active === primary, 20_000))) {
    a.kill('SIGKILL');
    out(`  the merged feed never followed ${primary}: see the log`);
    return false;
  }
  const b = sim(secondary);
  const bExited = new Promise((resolve) => b.once('exit', resolve));
  await new Promise((r) => setTimeout(r, 2000));
  const killedAt = performance.now();
  a.kill('SIGKILL');
  await aExited;
  out(`  killed the primary's sim (kill -9) after 2 s`);
  const switched = await waitUntil(async () => (await feedStatus())?.active === secondary, 10_000);
  const now = await feedStatus();
  out(
    switched
      ? `  the merged feed now follows ${secondary} (${now?.why}), ${((performance.now() - killedAt) / 1000).toFixed(1)} s after the kill (within its stallMs ${group.stallMs} ms + polling)`
      : `  the merged feed did NOT switch to ${secondary}: ${JSON.stringify(now)}`,
  );
  await bExited;
  out(
    `  merged stream: Kafka ${config.mergedTicksTopic} (with the switch decision), Redis ${config.redisKeyPrefix}:ticks:${MERGED_SOURCE}:${group.symbol}, websocket channel ${MERGED_SOURCE}:${group.symbol}, Postgres ticks_merged`,
  );
  return switched;
}
