/**
 * The end-to-end load sweep: `tickstream sim` → `tickstream serve` → every sink, as separate
 * processes on loopback, at fixed offered loads and as fast as possible.
 *
 * - serve: `node bin/tickstream.js serve` with private names (topics `bench.e2e_<hex>.*`, Redis
 *   prefix `bench:e2e_<hex>`, Postgres schema `bench_e2e_<hex>`, its own loader group and
 *   transactional id), ports 0, product defaults otherwise. Everything it created is removed at
 *   the end (topics and group with the rdkafka AdminClient, Redis keys by prefix, the schema).
 * - per level: `tickstream sim --synthetic --symbols 10 --rate R --duration D --speed 1` (paced in
 *   real time) or `--speed max` with a fixed tick count; each level is its own source id, so
 *   every sink can be counted per level.
 * - zero loss: after the sim reports "N ticks captured and ACKed", wait (bounded; longer while
 *   counts still move) until Kafka (tickstream_ticks_committed_total{source}), Redis (sum of
 *   XINFO STREAM entries-added over `<prefix>:ticks:<source>:*`: XLEN is trimmed by MAXLEN ~),
 *   the websocket client and Postgres (`count(*) … where source = $1`) each hold N; the level
 *   is zero-loss only if all four equal N. The websocket client also checks that the sum of the
 *   seqs it got is 1+…+N (no tick twice, none missing).
 * - latency from bridge receipt (`rt`, stamped once per decode batch at its first frame):
 *   → websocket client: measured outside the bridge by a separate client process (the `ws`
 *     package), now − rt per tick into an HDR histogram (same host, both clocks are
 *     performance.timeOrigin + performance.now());
 *   → Kafka ack / Redis reply / ws publish: the bridge's own Prometheus histograms, the delta of
 *     bucket counts over the level, quantiles interpolated inside buckets (estimates; one
 *     observation per journal append or Redis segment, not per tick).
 * - send → Kafka ACK per tick (`latency_ms.kafka_ack`): the sim's `--latency-out` (bridge/sim.ts
 *   AckLatency); an upper bound of receipt → ACK, as it adds the loopback hop both ways.
 * - CPU and RSS: /proc/<pid>/stat (utime+stime) and /proc/<pid>/status (VmRSS, VmHWM) of serve,
 *   sim and the websocket client every 250 ms, plus the shared Kafka broker, Redis and Postgres
 *   processes and the whole machine (these also carry other users' work). CPU% is of one core,
 *   over the sending window (from the sim's connect to its last ACK); peak RSS over the level;
 *   the bridge's CPU per tick over the whole level (its catch-up included).
 * - processes, names, clean-up, /metrics and /proc reads: bench/harness.ts (shared with test/).
 *   Issue 18's targets are judged from the whole run afterwards (bench/targets.ts).
 *
 * Environment knobs (all optional): BENCH_E2E_LEVELS=1k,max runs only those levels;
 * BENCH_E2E_CPU_PROF=<dir> runs serve under `node --cpu-prof` (profile written when it exits);
 * BENCH_E2E_SERVE_ARGS="--decode-threads 2" adds serve flags.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import hdr from 'hdr-histogram-js';
import { Redis } from 'ioredis';
import pg from 'pg';
import WebSocket from 'ws';
import type { AckLatencySummary } from '../bridge/sim.js';
import {
  fetchMetrics,
  isolatedNames,
  KAFKA_BROKERS,
  type Metrics,
  machineBusyS,
  type Names,
  POSTGRES_URL,
  type ProcSample,
  REDIS_URL,
  readProc,
  removeNames,
  repoRoot,
  type ServeProcess,
  startCli,
  startServe,
  stopChild,
} from './harness.js';
import type { BenchRun, E2eLatency, E2eLevel } from './report.js';

const here = import.meta.url;
const SYMBOLS = 10;
const SAMPLE_MS = 250;

const log = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const nowMs = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------------------------
// Levels

interface Plan {
  label: string;
  target: number | 'max';
  /** Synthetic history: rate × duration ticks. */
  rate: number;
  durationS: number;
  speed: 'paced' | 'max';
}

function plans(quick: boolean): Plan[] {
  const paced = (label: string, rate: number, durationS: number): Plan => ({
    label,
    target: rate,
    rate,
    durationS,
    speed: 'paced',
  });
  // Issue 18's targets read: 10k (latency, CPU), 200k (CPU per tick), 300k for 60 s (throughput),
  // and every level for the bridge's peak RSS.
  const all = quick
    ? [
        paced('1k', 1000, 5),
        paced('10k', 10_000, 5),
        paced('100k', 100_000, 5),
        paced('200k', 200_000, 3),
        paced('300k', 300_000, 3),
        // 300k ticks as fast as the pipeline takes them.
        { label: 'max', target: 'max', rate: 300_000, durationS: 1, speed: 'max' } as Plan,
      ]
    : [
        paced('1k', 1000, 15),
        paced('10k', 10_000, 15),
        paced('100k', 100_000, 20),
        paced('200k', 200_000, 30),
        // The throughput target itself: 300k ticks/s offered for 60 s.
        paced('300k', 300_000, 60),
        // 6M ticks as fast as the pipeline takes them.
        { label: 'max', target: 'max', rate: 200_000, durationS: 30, speed: 'max' } as Plan,
      ];
  const only = process.env['BENCH_E2E_LEVELS'];
  return only ? all.filter((p) => only.split(',').includes(p.label)) : all;
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

function cmdline(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** The shared servers the pipeline writes to, found by their command lines (read only). */
function sharedServerPids(): Record<string, number[]> {
  const kafkaPort = KAFKA_BROKERS.split(',')[0]?.split(':')[1] ?? '9092';
  const redisPort = new URL(REDIS_URL).port || '6379';
  const out: Record<string, number[]> = { kafka_broker: [], redis: [], postgres: [] };
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = cmdline(pid);
    if (cmd.includes('kafka.Kafka') && cmd.includes(`/${kafkaPort}/`)) out['kafka_broker']?.push(Number(pid));
    else if (cmd.startsWith('redis-server') && cmd.includes(`:${redisPort}`)) out['redis']?.push(Number(pid));
    else if (cmd.startsWith('postgres') || cmd.includes('/postgres ')) out['postgres']?.push(Number(pid));
  }
  return out;
}

interface Sample {
  t: number;
  machineBusyS: number;
  procs: Map<number, ProcSample>;
}

/** Samples the named processes every 250 ms; windows give CPU seconds and peak RSS. */
class Sampler {
  readonly samples: Sample[] = [];
  readonly #pids = new Map<string, number[]>();
  #timer: NodeJS.Timeout | null = null;

  set(key: string, pids: number[]): void {
    this.#pids.set(key, pids);
  }

  start(): void {
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), SAMPLE_MS);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Takes one sample now (at the edges of a window). */
  mark(): void {
    this.#sample();
  }

  #sample(): void {
    const procs = new Map<number, ProcSample>();
    for (const pids of this.#pids.values()) {
      for (const pid of pids) {
        const s = readProc(pid);
        if (s) procs.set(pid, s);
      }
    }
    this.samples.push({ t: nowMs(), machineBusyS: machineBusyS(), procs });
    // Keep memory flat over long runs: a level never looks back further than this.
    if (this.samples.length > 20_000) this.samples.splice(0, 5_000);
  }

  /** CPU seconds per key between t0 and t1 (per pid: first and last sample of it in the window). */
  cpu(keys: string[], t0: number, t1: number): { cpuS: Record<string, number>; wallS: number } {
    const within = this.samples.filter((s) => s.t >= t0 - SAMPLE_MS / 2 && s.t <= t1 + SAMPLE_MS / 2);
    const cpuS: Record<string, number> = {};
    for (const key of keys) {
      let sum = 0;
      for (const pid of this.#pids.get(key) ?? []) {
        const seen = within.filter((s) => s.procs.has(pid));
        const a = seen[0]?.procs.get(pid);
        const b = seen[seen.length - 1]?.procs.get(pid);
        if (a && b) sum += b.cpuS - a.cpuS;
      }
      cpuS[key] = sum;
    }
    const first = within[0];
    const last = within[within.length - 1];
    if (first && last) cpuS['machine'] = last.machineBusyS - first.machineBusyS;
    return { cpuS, wallS: first && last ? Math.max(1e-3, (last.t - first.t) / 1000) : 0 };
  }

  /** Highest sampled RSS per key between t0 and t1 (sum over the key's pids). */
  peakRss(keys: string[], t0: number, t1: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.samples) {
      if (s.t < t0 || s.t > t1) continue;
      for (const key of keys) {
        let rss = 0;
        for (const pid of this.#pids.get(key) ?? []) rss += s.procs.get(pid)?.rssMb ?? 0;
        out[key] = Math.max(out[key] ?? 0, rss);
      }
    }
    return out;
  }

  /** VmHWM (peak RSS since the process started) of a key's first pid, as last sampled. */
  hwm(key: string): number {
    const pid = this.#pids.get(key)?.[0];
    if (pid === undefined) return 0;
    for (let i = this.samples.length - 1; i >= 0; i--) {
      const p = this.samples[i]?.procs.get(pid);
      if (p) return p.hwmMb;
    }
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text

/** Cumulative bucket counts of a label-less histogram, by upper bound (Infinity last). */
function buckets(m: Metrics, name: string): { le: number; count: number }[] {
  const out: { le: number; count: number }[] = [];
  const prefix = `${name}_bucket{le="`;
  for (const [k, v] of m) {
    if (!k.startsWith(prefix)) continue;
    const le = k.slice(prefix.length, k.indexOf('"', prefix.length));
    out.push({ le: le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), count: v });
  }
  return out.sort((a, b) => a.le - b.le);
}

/**
 * Quantiles of the observations made between two scrapes, interpolated linearly inside their
 * bucket (as Prometheus' histogram_quantile); seconds in, milliseconds out. A quantile in the
 * +Inf bucket is reported as the top finite bound, with `above_top_ms` saying how many were past it.
 */
function bucketLatency(before: Metrics, after: Metrics, name: string): E2eLatency | null {
  const a = buckets(after, name);
  const b = new Map(buckets(before, name).map((x) => [x.le, x.count]));
  const delta = a.map((x) => ({ le: x.le, count: x.count - (b.get(x.le) ?? 0) }));
  const total = delta[delta.length - 1]?.count ?? 0;
  if (!total) return null;
  const finite = delta.filter((x) => Number.isFinite(x.le));
  const top = finite[finite.length - 1]?.le ?? 0;
  const q = (p: number) => {
    const rank = p * total;
    let prevLe = 0;
    let prevCount = 0;
    for (const x of delta) {
      if (x.count >= rank) {
        if (!Number.isFinite(x.le)) return top * 1000;
        const inBucket = x.count - prevCount;
        const frac = inBucket > 0 ? (rank - prevCount) / inBucket : 1;
        return (prevLe + (x.le - prevLe) * frac) * 1000;
      }
      prevLe = x.le;
      prevCount = x.count;
    }
    return top * 1000;
  };
  let max = 0;
  let prev = 0;
  for (const x of delta) {
    if (x.count > prev) max = Number.isFinite(x.le) ? x.le * 1000 : top * 1000;
    prev = x.count;
  }
  const atTop = finite[finite.length - 1]?.count ?? total;
  const share = (boundS: number) => {
    const at = delta.find((x) => x.le === boundS);
    return at ? at.count / total : undefined;
  };
  const lat: E2eLatency = {
    p50: q(0.5),
    p99: q(0.99),
    p999: q(0.999),
    max,
    n: total,
    method: 'bucket estimate (bridge histogram, per batch)',
  };
  if (total > atTop) lat.above_top_ms = { bound: top * 1000, count: total - atTop };
  const s20 = share(0.02);
  if (s20 !== undefined) lat.share_within_20ms = s20;
  const s2 = share(0.002);
  if (s2 !== undefined) lat.share_within_2ms = s2;
  return lat;
}

const counter = (m: Metrics, series: string) => m.get(series) ?? 0;

// ---------------------------------------------------------------------------------------------
// The websocket client process (this file, run as `node e2e.js ws-client <url>`)

interface ClientReport {
  source: string;
  ticks: number;
  messages: number;
  seqSum: number;
  conflatedMessages: number;
  skipped: number;
  negative: number;
  latency: E2eLatency | null;
}

type ClientMessage =
  | { type: 'ready' }
  | { type: 'error'; message: string }
  | { type: 'report'; id: number; report: ClientReport };

interface PerSource {
  ticks: number;
  messages: number;
  seqSum: number;
  conflatedMessages: number;
  skipped: number;
  negative: number;
  hist: ReturnType<typeof hdr.build>;
}

function wsClientMain(url: string): void {
  const send = (m: ClientMessage) => process.send?.(m);
  const per = new Map<string, PerSource>();
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 << 20 });
  ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', channels: ['*'] })));
  ws.on('message', (data: Buffer) => {
    const at = nowMs();
    const text = data.toString('latin1');
    if (!text.startsWith('{"type":"ticks"')) {
      if (text.startsWith('{"type":"subscribed"')) send({ type: 'ready' });
      return;
    }
    // {"type":"ticks","source":"S","symbol":"X","rt":123.4[,"conflated":true,"skipped":N],"ticks":[{"seq":1,…},…]}
    const s0 = text.indexOf('"source":"') + 10;
    const source = text.slice(s0, text.indexOf('"', s0));
    const r0 = text.indexOf('"rt":', s0) + 5;
    const rt = Number(text.slice(r0, text.indexOf(',', r0)));
    let st = per.get(source);
    if (!st) {
      st = {
        ticks: 0,
        messages: 0,
        seqSum: 0,
        conflatedMessages: 0,
        skipped: 0,
        negative: 0,
        hist: hdr.build({ lowestDiscernibleValue: 1, numberOfSignificantValueDigits: 3 }),
      };
      per.set(source, st);
    }
    const k0 = text.indexOf('"ticks":[', r0);
    if (text.lastIndexOf('"conflated":true', k0) > 0) {
      st.conflatedMessages++;
      const sk = text.indexOf('"skipped":', r0) + 10;
      st.skipped += Number(text.slice(sk, text.indexOf(',', sk)));
    }
    let n = 0;
    let pos = k0;
    for (;;) {
      pos = text.indexOf('{"seq":', pos);
      if (pos < 0) break;
      pos += 7;
      let seq = 0;
      for (let c = text.charCodeAt(pos); c >= 48 && c <= 57; c = text.charCodeAt(++pos))
        seq = seq * 10 + c - 48;
      st.seqSum += seq;
      n++;
    }
    st.ticks += n;
    st.messages++;
    if (rt > 0 && n > 0) {
      let us = Math.round((at - rt) * 1000);
      if (us < 0) {
        st.negative += n;
        us = 0;
      }
      st.hist.recordValueWithCount(us, n);
    }
  });
  ws.on('error', (err) => send({ type: 'error', message: err.message }));
  ws.on('close', (code, reason) => {
    if (code !== 1000 && code !== 1001 && code !== 1005)
      send({ type: 'error', message: `websocket closed: ${code} ${reason.toString()}` });
    process.exit(0);
  });
  process.on('message', (m: { op: string; id?: number; source?: string }) => {
    if (m.op === 'close') {
      ws.close(1000);
      setTimeout(() => process.exit(0), 2000).unref();
    } else if (m.op === 'report' && m.source !== undefined) {
      const st = per.get(m.source);
      const h = st?.hist;
      const report: ClientReport = {
        source: m.source,
        ticks: st?.ticks ?? 0,
        messages: st?.messages ?? 0,
        seqSum: st?.seqSum ?? 0,
        conflatedMessages: st?.conflatedMessages ?? 0,
        skipped: st?.skipped ?? 0,
        negative: st?.negative ?? 0,
        latency:
          h && h.totalCount > 0
            ? {
                p50: h.getValueAtPercentile(50) / 1000,
                p99: h.getValueAtPercentile(99) / 1000,
                p999: h.getValueAtPercentile(99.9) / 1000,
                max: h.maxValue / 1000,
                min: h.minNonZeroValue / 1000,
                n: h.totalCount,
                method: 'HDR histogram in a separate websocket client process, per tick',
              }
            : null,
      };
      send({ type: 'report', id: m.id ?? 0, report });
    }
  });
  process.on('disconnect', () => process.exit(0));
}

/** The parent's handle on the client process. */
class WsClient {
  readonly child: ChildProcess;
  #nextId = 1;
  readonly #waiting = new Map<number, (r: ClientReport) => void>();
  readonly errors: string[] = [];
  readonly ready: Promise<void>;
  readonly exited: Promise<unknown>;

  constructor(url: string) {
    this.child = spawn(process.execPath, [fileURLToPath(here), 'ws-client', url], {
      cwd: repoRoot,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.exited = once(this.child, 'exit');
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('the websocket client did not subscribe in 10 s')),
        10_000,
      );
      this.child.on('message', (m: ClientMessage) => {
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve();
        } else if (m.type === 'error') {
          this.errors.push(m.message);
          log(`e2e: websocket client: ${m.message}`);
        } else if (m.type === 'report') {
          this.#waiting.get(m.id)?.(m.report);
          this.#waiting.delete(m.id);
        }
      });
      void this.exited.then(() => reject(new Error('the websocket client exited')));
    });
  }

  report(source: string): Promise<ClientReport> {
    const id = this.#nextId++;
    if (!this.child.connected) {
      // Gone (e.g. disconnected as a slow consumer): it holds nothing more for any source.
      return Promise.resolve({
        source,
        ticks: 0,
        messages: 0,
        seqSum: 0,
        conflatedMessages: 0,
        skipped: 0,
        negative: 0,
        latency: null,
      });
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error('the websocket client did not answer in 10 s'));
      }, 10_000);
      this.#waiting.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.child.send({ op: 'report', id, source });
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    if (this.child.connected) this.child.send({ op: 'close' });
    await stopChild(this.child, this.exited, 5000);
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

/** `tickstream serve` with the bench's private names and otherwise the product's defaults. */
function startBenchServe(n: Names): Promise<ServeProcess> {
  const args = [
    '--ingress-port',
    '0',
    '--http-port',
    '0',
    '--instance-id',
    `bench-${n.id}`,
    '--ticks-topic',
    n.ticksTopic,
    '--bars-topic',
    n.barsTopic,
    '--sources-topic',
    n.sourcesTopic,
    '--redis-key-prefix',
    n.redisPrefix,
    '--postgres-schema',
    n.schema,
    '--loader-group-id',
    n.group,
    ...(process.env['BENCH_E2E_SERVE_ARGS']?.split(/\s+/).filter(Boolean) ?? []),
  ];
  const prof = process.env['BENCH_E2E_CPU_PROF'];
  return startServe(args, {
    nodeArgs: prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : [],
    keepChars: 100_000,
  });
}

interface SimOutcome {
  code: number | null;
  output: string;
  total: number;
  elapsedS: number;
  lastAckedSeq: number;
  resent: number;
  reconnects: number;
  /** Send → ACK per tick, from the sim's `--latency-out` (null: it wrote none). */
  ackLatency: AckLatencySummary | null;
  /** Parent clock: when the process started and ended. */
  spawnedAt: number;
  exitedAt: number;
}

async function runSim(
  plan: Plan,
  source: string,
  port: number,
  seed: number,
  sampler: Sampler,
): Promise<SimOutcome> {
  const dir = mkdtempSync(join(tmpdir(), 'tsbench-sim-'));
  const latencyFile = join(dir, 'ack-latency.json');
  const spawnedAt = nowMs();
  const sim = startCli([
    'sim',
    '--synthetic',
    '--symbols',
    String(SYMBOLS),
    '--rate',
    String(plan.rate),
    '--duration',
    String(plan.durationS),
    '--seed',
    String(seed),
    '--speed',
    plan.speed === 'max' ? 'max' : '1',
    '--source',
    source,
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '--latency-out',
    latencyFile,
  ]);
  if (sim.child.pid) sampler.set('sim', [sim.child.pid]);
  // Paced levels take their duration; a max level gets ten times what 20k ticks/s would need.
  const limitMs =
    plan.speed === 'max'
      ? 60_000 + ((plan.rate * plan.durationS) / 20_000) * 1000
      : 60_000 + plan.durationS * 3000;
  const timer = setTimeout(() => sim.child.kill('SIGKILL'), limitMs);
  const code = await sim.exited;
  clearTimeout(timer);
  sampler.mark();
  const output = sim.output();
  const m =
    /: (\d+) ticks captured and ACKed in ([\d.]+) s .*?resent (\d+), reconnects (\d+).*?last ACK seq (\d+)/.exec(
      output,
    );
  let ackLatency: AckLatencySummary | null = null;
  if (existsSync(latencyFile))
    ackLatency = JSON.parse(readFileSync(latencyFile, 'utf8')) as AckLatencySummary;
  rmSync(dir, { recursive: true, force: true });
  return {
    code,
    output,
    total: Number(m?.[1] ?? 0),
    elapsedS: Number(m?.[2] ?? 0),
    resent: Number(m?.[3] ?? 0),
    reconnects: Number(m?.[4] ?? 0),
    lastAckedSeq: Number(m?.[5] ?? 0),
    ackLatency,
    spawnedAt,
    exitedAt: nowMs(),
  };
}

// ---------------------------------------------------------------------------------------------
// Sink counts

async function redisAdded(
  redis: Redis,
  prefix: string,
  source: string,
): Promise<{ added: number; xlen: number }> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}:ticks:${source}:*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  let added = 0;
  let xlen = 0;
  for (const key of keys) {
    const info = (await redis.call('XINFO', 'STREAM', key)) as unknown[];
    const at = info.indexOf('entries-added');
    const length = Number(info[info.indexOf('length') + 1] ?? 0);
    // Redis < 7 has no entries-added: the length is all there is (trimmed by MAXLEN ~).
    added += at >= 0 ? Number(info[at + 1]) : length;
    xlen += length;
  }
  return { added, xlen };
}

async function pgCount(db: pg.Client, schema: string, source: string): Promise<number> {
  try {
    const r = await db.query(`select count(*)::float8 as n from "${schema}".ticks where source = $1`, [
      source,
    ]);
    return Number(r.rows[0]?.n ?? 0);
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// One level

interface Ctx {
  serve: ServeProcess;
  client: WsClient;
  sampler: Sampler;
  redis: Redis;
  db: pg.Client;
  names: Names;
  drainCapMs: number;
  stallMs: number;
}

const PROC_KEYS = ['bridge', 'sim', 'ws_client', 'kafka_broker', 'redis', 'postgres'];
const RSS_KEYS = ['bridge', 'sim', 'ws_client', 'kafka_broker', 'redis'];

async function runLevel(ctx: Ctx, plan: Plan, seed: number): Promise<E2eLevel> {
  const { serve, client, sampler, redis, db, names } = ctx;
  const source = `e2e-${plan.label}-${names.id.slice(4)}`;
  const levelStart = nowMs();
  sampler.set('postgres', sharedServerPids()['postgres'] ?? []);
  sampler.mark();
  const before = await fetchMetrics(serve.httpPort);
  log(
    `e2e: level ${plan.label}: ${plan.speed === 'max' ? `${plan.rate * plan.durationS} ticks as fast as possible` : `${plan.rate} ticks/s for ${plan.durationS} s`} (source ${source})`,
  );
  const sim = await runSim(plan, source, serve.ingressPort, seed, sampler);
  const notes: string[] = [];
  if (sim.code !== 0 || !sim.total)
    notes.push(`sim exited with ${sim.code}: ${sim.output.trim().split('\n').slice(-3).join(' | ')}`);
  if (sim.lastAckedSeq !== sim.total)
    notes.push(`sim: last ACK seq ${sim.lastAckedSeq} ≠ ${sim.total} ticks`);
  if (sim.resent || sim.reconnects) notes.push(`sim: resent ${sim.resent}, reconnects ${sim.reconnects}`);
  const expected = sim.total;
  // The sending window: from the sim's connect (its own clock starts then) to its last ACK.
  const sendEnd = sim.exitedAt;
  const sendStart = Math.max(sim.spawnedAt, sendEnd - sim.elapsedS * 1000);

  // Wait until every sink holds `expected`, or nothing moved for `stallMs`, or the cap.
  const sinks = ['kafka', 'redis', 'ws', 'postgres'] as const;
  const counts: Record<string, number> = { expected };
  const drain: Record<string, number | null> = { kafka: null, redis: null, ws: null, postgres: null };
  let xlen = 0;
  let wsReport: ClientReport | null = null;
  let lastChange = nowMs();
  let lastSum = -1;
  // Seconds after the last ACK until each sink held everything, taken when its count was read.
  const seen = (sink: (typeof sinks)[number], value: number, readAt: number) => {
    counts[sink] = value;
    if (drain[sink] === null && value === expected) drain[sink] = Math.max(0, (readAt - sendEnd) / 1000);
  };
  counts['postgres'] = 0;
  let lastPg = nowMs();
  let after = before;
  const loaderRows0 = counter(before, 'tickstream_loader_rows_total{table="ticks"}');
  for (;;) {
    let at = nowMs();
    after = await fetchMetrics(serve.httpPort);
    seen('kafka', counter(after, `tickstream_ticks_committed_total{source="${source}"}`), at);
    at = nowMs();
    const r = await redisAdded(redis, names.redisPrefix, source);
    seen('redis', r.added, at);
    xlen = r.xlen;
    at = nowMs();
    wsReport = await client.report(source);
    seen('ws', wsReport.ticks, at);
    // count(*) over millions of rows is not free on 2 cores: ask Postgres once the loader says it
    // wrote enough rows, and otherwise only every 10 s (in case its counter and the table disagree).
    const loaderRows = counter(after, 'tickstream_loader_rows_total{table="ticks"}') - loaderRows0;
    if (counts['postgres'] !== expected && (loaderRows >= expected || nowMs() - lastPg > 10_000)) {
      at = nowMs();
      seen('postgres', await pgCount(db, names.schema, source), at);
      lastPg = nowMs();
    }
    const t = (nowMs() - sendEnd) / 1000;
    if (sinks.every((s) => counts[s] === expected)) break;
    const sum = sinks.reduce((a, s) => a + (counts[s] ?? 0), 0) + loaderRows;
    if (sum !== lastSum) {
      lastSum = sum;
      lastChange = nowMs();
    }
    if (
      nowMs() - lastChange > ctx.stallMs ||
      nowMs() - sendEnd > ctx.drainCapMs ||
      serve.child.exitCode !== null
    ) {
      notes.push(
        `sinks stopped short ${t.toFixed(0)} s after the sim ended (${nowMs() - lastChange > ctx.stallMs ? `no progress for ${ctx.stallMs / 1000} s` : 'time cap'})`,
      );
      break;
    }
    await sleep(500);
  }
  sampler.mark();
  const levelEnd = nowMs();

  const triangular = (expected * (expected + 1)) / 2;
  if (wsReport && wsReport.ticks === expected && wsReport.seqSum !== triangular)
    notes.push(`ws client: seq sum ${wsReport.seqSum} ≠ ${triangular} (duplicates or holes)`);
  if (wsReport?.negative)
    notes.push(`ws client: ${wsReport.negative} ticks seemed to arrive before rt (clock skew)`);
  const diagnostics: Record<string, number> = {
    redis_xlen_after_maxlen_trim: xlen,
    redis_dropped_metric:
      counter(after, 'tickstream_redis_dropped_ticks_total') -
      counter(before, 'tickstream_redis_dropped_ticks_total'),
    ws_conflated_metric:
      counter(after, 'tickstream_ws_conflated_ticks_total') -
      counter(before, 'tickstream_ws_conflated_ticks_total'),
    ws_conflated_messages: wsReport?.conflatedMessages ?? 0,
    ws_messages: wsReport?.messages ?? 0,
    sim_resent: sim.resent,
    sim_reconnects: sim.reconnects,
  };
  const zeroLoss = expected > 0 && sim.code === 0 && sinks.every((s) => counts[s] === expected);
  // What each sink kept up with: every tick, over the sending time plus its catch-up after.
  const sinkRate: Record<string, number> = {};
  for (const s of sinks) {
    const d = drain[s];
    if (d !== null && d !== undefined && sim.elapsedS > 0) sinkRate[s] = expected / (sim.elapsedS + d);
  }

  const latency: Record<string, E2eLatency> = {};
  const add = (key: string, l: E2eLatency | null | undefined) => {
    if (l) latency[key] = l;
  };
  if (sim.ackLatency) add('kafka_ack', { ...sim.ackLatency });
  add('kafka', bucketLatency(before, after, 'tickstream_receipt_to_kafka_commit_seconds'));
  add('redis', bucketLatency(before, after, 'tickstream_receipt_to_redis_seconds'));
  add('ws_publish', bucketLatency(before, after, 'tickstream_receipt_to_ws_publish_seconds'));
  add('ws', wsReport?.latency);

  const { cpuS, wallS } = sampler.cpu([...PROC_KEYS], sendStart, sendEnd);
  const cpuPct = Object.fromEntries(Object.entries(cpuS).map(([k, v]) => [k, (100 * v) / wallS]));
  const peak = sampler.peakRss(RSS_KEYS, levelStart, levelEnd);
  const bridgeLevelCpuS = sampler.cpu(['bridge'], levelStart, levelEnd).cpuS['bridge'] ?? 0;
  const level: E2eLevel = {
    label: plan.label,
    source,
    target_ticks_per_s: plan.target,
    sent: expected,
    duration_s: sim.elapsedS,
    achieved_ticks_per_s: sim.elapsedS > 0 ? expected / sim.elapsedS : 0,
    zero_loss: zeroLoss,
    counts,
    drain_s: drain,
    sink_ticks_per_s: sinkRate,
    latency_ms: latency,
    cpu_s: cpuS,
    cpu_pct: cpuPct,
    peak_rss_mb: peak,
    bridge_vmhwm_mb: sampler.hwm('bridge'),
    ...(expected > 0 ? { bridge_cpu_us_per_tick: (bridgeLevelCpuS * 1e6) / expected } : {}),
    diagnostics,
    notes,
  };
  printLevel(level);
  return level;
}

// ---------------------------------------------------------------------------------------------
// Output

const n0 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(0));
const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const rate = (x: number) => (x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0));

function latLine(l: E2eLatency | undefined): string {
  if (!l) return '–';
  const max = l.above_top_ms ? `>${ms(l.above_top_ms.bound)}` : ms(l.max);
  return `${ms(l.p50)} / ${ms(l.p99)} / ${ms(l.p999)} / ${max}  (n ${l.n})`;
}

function printLevel(l: E2eLevel): void {
  const c = l.counts;
  const d = l.drain_s ?? {};
  const drain = (k: string) => (d[k] === null || d[k] === undefined ? 'never' : `${d[k]?.toFixed(1)} s`);
  const lines = [
    `e2e ${l.label}: ${l.sent} ticks in ${l.duration_s?.toFixed(2)} s = ${rate(l.achieved_ticks_per_s)} ticks/s, zero loss: ${l.zero_loss ? 'yes' : 'NO'}`,
    `  counts     expected ${c['expected']} | kafka ${c['kafka']} | redis ${c['redis']} | ws client ${c['ws']} | postgres ${c['postgres']}`,
    `  complete   after the sim's last ACK: kafka ${drain('kafka')}, redis ${drain('redis')}, ws ${drain('ws')}, postgres ${drain('postgres')}` +
      `  (kept up with, ticks/s: ${['kafka', 'redis', 'ws', 'postgres'].map((k) => `${k} ${l.sink_ticks_per_s?.[k] ? rate(l.sink_ticks_per_s[k]) : '–'}`).join(', ')})`,
    '  latency from bridge receipt, ms: p50 / p99 / p99.9 / max',
    `    → Kafka ack  ${latLine(l.latency_ms['kafka_ack'])}   send → ACK in the sim, HDR, per tick (upper bound)`,
    `    → Kafka      ${latLine(l.latency_ms['kafka'])}   bucket estimate, per batch`,
    `    → Redis      ${latLine(l.latency_ms['redis'])}   bucket estimate, per batch`,
    `    → ws publish ${latLine(l.latency_ms['ws_publish'])}   bucket estimate, per batch`,
    `    → ws client  ${latLine(l.latency_ms['ws'])}   HDR, per tick`,
    `  CPU % of one core while sending: bridge ${n0(l.cpu_pct?.['bridge'])} | sim ${n0(l.cpu_pct?.['sim'])} | ws client ${n0(l.cpu_pct?.['ws_client'])} | kafka ${n0(l.cpu_pct?.['kafka_broker'])} | redis ${n0(l.cpu_pct?.['redis'])} | postgres ${n0(l.cpu_pct?.['postgres'])} | whole machine ${n0(l.cpu_pct?.['machine'])}`,
    `  bridge CPU per tick over the level: ${l.bridge_cpu_us_per_tick?.toFixed(2) ?? '–'} µs`,
    `  peak RSS MB: bridge ${n0(l.peak_rss_mb['bridge'])} (VmHWM ${n0(l.bridge_vmhwm_mb)}) | sim ${n0(l.peak_rss_mb['sim'])} | ws client ${n0(l.peak_rss_mb['ws_client'])} | kafka ${n0(l.peak_rss_mb['kafka_broker'])} | redis ${n0(l.peak_rss_mb['redis'])}`,
  ];
  const diag = Object.entries(l.diagnostics ?? {})
    .filter(([k, v]) => v && k !== 'ws_messages' && k !== 'redis_xlen_after_maxlen_trim')
    .map(([k, v]) => `${k} ${v}`);
  if (diag.length) lines.push(`  diagnostics: ${diag.join(', ')}`);
  for (const n of l.notes ?? []) lines.push(`  note: ${n}`);
  log(lines.join('\n'));
}

function summaryTable(levels: E2eLevel[]): string {
  const head =
    'level  achieved/s  ticks      s      loss  kafka ack p50/p99/max ms  redis p50/p99/max ms   ws client p50/p99/p99.9/max ms  CPU% bridge/sim/ws/machine  RSS MB bridge/sim/ws';
  const rows = levels.map((l) => {
    const k = l.latency_ms['kafka_ack'];
    const r = l.latency_ms['redis'];
    const w = l.latency_ms['ws'];
    const three = (x: E2eLatency | undefined) => (x ? `${ms(x.p50)}/${ms(x.p99)}/${ms(x.max)}` : '–');
    const four = (x: E2eLatency | undefined) =>
      x ? `${ms(x.p50)}/${ms(x.p99)}/${ms(x.p999)}/${ms(x.max)}` : '–';
    const p = l.cpu_pct ?? {};
    return [
      (l.label ?? String(l.target_ticks_per_s)).padEnd(6),
      rate(l.achieved_ticks_per_s).padStart(10),
      String(l.sent).padStart(9),
      (l.duration_s ?? 0).toFixed(1).padStart(6),
      (l.zero_loss ? 'none' : 'LOSS').padStart(5),
      three(k).padStart(24),
      three(r).padStart(22),
      four(w).padStart(31),
      `${n0(p['bridge'])}/${n0(p['sim'])}/${n0(p['ws_client'])}/${n0(p['machine'])}`.padStart(27),
      `${n0(l.peak_rss_mb['bridge'])}/${n0(l.peak_rss_mb['sim'])}/${n0(l.peak_rss_mb['ws_client'])}`.padStart(
        21,
      ),
    ].join('  ');
  });
  return [head, ...rows].join('\n');
}

// ---------------------------------------------------------------------------------------------
// The sweep

export async function runE2e(options: { quick: boolean }): Promise<BenchRun['e2e']> {
  if (!existsSync(`${repoRoot}dist/pipeline/cli.js`))
    throw new Error('tickstream is not built: npm run build');
  const names = isolatedNames('e2e', 'bench');
  const levels: E2eLevel[] = [];
  const runNotes: string[] = [];
  const sampler = new Sampler();
  let serve: ServeProcess | null = null;
  let client: WsClient | null = null;
  let redis: Redis | null = null;
  let db: pg.Client | null = null;
  const started = nowMs();
  try {
    redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
    await redis.connect();
    db = new pg.Client({ connectionString: POSTGRES_URL });
    await db.connect();
    serve = await startBenchServe(names);
    log(
      `e2e: serve pid ${serve.child.pid}, ingress :${serve.ingressPort}, http :${serve.httpPort}, names ${names.id}`,
    );
    client = new WsClient(`ws://127.0.0.1:${serve.httpPort}/ws`);
    await client.ready;
    const shared = sharedServerPids();
    sampler.set('bridge', serve.child.pid ? [serve.child.pid] : []);
    sampler.set('ws_client', client.child.pid ? [client.child.pid] : []);
    sampler.set('kafka_broker', shared['kafka_broker'] ?? []);
    sampler.set('redis', shared['redis'] ?? []);
    sampler.start();
    const ctx: Ctx = {
      serve,
      client,
      sampler,
      redis,
      db,
      names,
      drainCapMs: options.quick ? 60_000 : 180_000,
      stallMs: 20_000,
    };
    // Warm-up (not reported): topics, the loader's partition assignment, JIT.
    const warm = await runLevel(
      ctx,
      { label: 'warmup', target: 2000, rate: 2000, durationS: 2, speed: 'paced' },
      99,
    );
    if (!warm.zero_loss) runNotes.push('e2e warm-up did not reach every sink: see its lines on stderr');
    let seed = 1;
    for (const plan of plans(options.quick)) {
      if (serve.child.exitCode !== null) {
        runNotes.push(`e2e: serve exited with ${serve.child.exitCode} before level ${plan.label}`);
        break;
      }
      levels.push(await runLevel(ctx, plan, seed++));
      await sleep(1000);
    }
  } finally {
    sampler.stop();
    await client?.close().catch(() => undefined);
    for (const e of client?.errors ?? []) runNotes.push(`e2e websocket client: ${e}`);
    if (serve && serve.child.exitCode === null && serve.child.signalCode === null) {
      serve.child.kill('SIGTERM');
      const code = await Promise.race([serve.exited, sleep(30_000).then(() => 'timeout' as const)]);
      if (code === 'timeout') {
        serve.child.kill('SIGKILL');
        runNotes.push('e2e: serve did not stop within 30 s of SIGTERM (killed)');
      } else if (code !== 0) runNotes.push(`e2e: serve exited with ${code} on SIGTERM`);
    }
    redis?.disconnect();
    await db?.end().catch(() => undefined);
    const problems = await removeNames([names]).catch((err: Error) => [err.message]);
    for (const p of problems) runNotes.push(`e2e clean-up: ${p}`);
  }
  const best = levels
    .filter((l) => l.zero_loss)
    .sort((a, b) => b.achieved_ticks_per_s - a.achieved_ticks_per_s)[0];
  log('');
  log(summaryTable(levels));
  log('(Kafka ack: send → ACK per tick in the sim, HDR; Redis: estimate from the bridge histogram buckets,');
  log(' one observation per batch; ws client: HDR per tick in a separate process. Shared 2-core machine:');
  log(' other sessions add noise.)');
  log(`e2e: ${((nowMs() - started) / 1000).toFixed(0)} s in all`);
  const paced = plans(options.quick).filter((p) => p.speed === 'paced');
  return {
    levels,
    e2e_ticks_per_s: best?.achieved_ticks_per_s ?? 0,
    duration_s_per_level: Math.max(0, ...paced.map((p) => p.durationS)),
    method: {
      ws: 'now − rt per tick, HDR histogram in a separate `ws` client process (rt: bridge receipt of the batch’s first frame)',
      kafka_ack:
        'in the sim: each frame’s send time until the ACK covering its seqs, recorded per tick (HDR, µs); an upper bound of bridge receipt → Kafka commit → ACK (adds the loopback hop both ways)',
      kafka:
        'tickstream_receipt_to_kafka_commit_seconds bucket deltas over the level, interpolated (per journal append)',
      redis:
        'tickstream_receipt_to_redis_seconds bucket deltas over the level, interpolated (per Redis segment)',
      ws_publish: 'tickstream_receipt_to_ws_publish_seconds bucket deltas (per batch, inside the bridge)',
      counts:
        'kafka: tickstream_ticks_committed_total{source}; redis: XINFO STREAM entries-added summed over the source’s streams; ws: ticks the client got; postgres: count(*) where source',
      cpu: `/proc utime+stime every ${SAMPLE_MS} ms over the sending window, % of one core; machine = all cores busy, includes other users`,
      rss: `max sampled VmRSS over the level (every ${SAMPLE_MS} ms)`,
      bridge_cpu_us_per_tick:
        'bridge utime+stime over the whole level (from before the sim starts until every sink holds every tick: the loader’s catch-up included) ÷ ticks',
    },
    notes: runNotes,
  };
}

// `node dist/bench/e2e.js ws-client <url>`: the websocket client process.
if (process.argv[1] === fileURLToPath(here) && process.argv[2] === 'ws-client' && process.argv[3]) {
  wsClientMain(process.argv[3]);
}
