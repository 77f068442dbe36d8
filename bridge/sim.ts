/**
 * `tickstream sim`: a simulated terminal + EA. Its "terminal history" is an MT5 export, a
 * Dukascopy/HistData/TrueFX CSV or a seeded synthetic stream; it polls that history like the
 * EA's timer (TickCapture) and streams it to the bridge with BridgeClient — the same
 * handshake, credit, ACK, RESEND, reconnect and resume paths a real EA takes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { createServerClock } from '../codecs/server-clock.js';
import { parseTickFile, TICK_FILE_FORMATS, type TickFileFormat } from '../codecs/tick-file.js';
import { type CommandSpec, parseCommand } from './args.js';
import { type BridgeAddress, BridgeClient, type ClientStats, type SimSymbol } from './client.js';

export interface SimOptions {
  /** The bridges of a pool, tried in turn (one address: a single bridge). */
  bridges: BridgeAddress[];
  source: string;
  secret: string;
  symbols: SimSymbol[];
  /** Server clock rule of the simulated terminal (for HELLO/HEARTBEAT and UTC-based files). */
  serverTz: string;
  /** 'max', or a multiple of recorded speed. */
  speed: number | 'max';
  structSize: 60 | 52;
  maxBufferedTicks: number;
  tls?: { ca?: string; rejectUnauthorized: boolean };
  restartAfterAcked?: number;
  /** Test aid: the n-th TICKS frame is lost once (the bridge must ask for a RESEND). */
  dropFrame?: number;
  /** The EA's InpMaxFrameBytes: TICKS payloads at most this big, two of them in flight at most. */
  maxFrameBytes?: number;
  /** A slow terminal: the first history read of each symbol blocks the simulated EA this long. */
  historyDelayMs?: number;
  onProgress?: (s: ClientStats, total: number) => void;
  /** Bench aid: told of every frame sent and every ACK (see `AckLatency`). */
  ackLatency?: AckLatency;
}

export interface SimSummary extends ClientStats {
  total: number;
  elapsedS: number;
  ticksPerS: number;
}

/** Reads a tick file into one symbol's history in server time. */
export function symbolFromFile(
  path: string,
  options: { format?: TickFileFormat; symbol?: string; serverTz: string },
): SimSymbol {
  const file = parseTickFile(readFileSync(path), options.format ? { format: options.format } : {});
  const clock = createServerClock(options.serverTz);
  const times =
    file.timeBasis === 'server'
      ? file.timeMsc.subarray(0, file.length)
      : file.timeMsc.subarray(0, file.length).map((t) => clock.toServer(t));
  // An export has no symbol in it: take the file name's first all-capitals part (EURUSD_…).
  const parts = basename(path).split(/[_.\s-]+/);
  const name = options.symbol ?? parts.find((p) => /^[A-Z][A-Z0-9]{2,}$/.test(p)) ?? parts[0] ?? 'SYMBOL';
  return {
    name,
    digits: 5,
    times,
    bid: file.bid.subarray(0, file.length),
    ask: file.ask.subarray(0, file.length),
    last: file.last.subarray(0, file.length),
    volume: file.volume.subarray(0, file.length),
    volumeReal: file.volumeReal.subarray(0, file.length),
    flags: file.flags.subarray(0, file.length),
  };
}

/** A seeded random walk: `symbols` symbols, `rate` ticks/s in all, `durationS` seconds of history. */
export function syntheticSymbols(
  symbols: number,
  rate: number,
  durationS: number,
  seed: number,
  startMs: number,
): SimSymbol[] {
  let s = seed >>> 0 || 1;
  const random = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const perSymbol = Math.max(1, Math.round((rate * durationS) / symbols));
  const stepMs = (durationS * 1000) / perSymbol;
  return Array.from({ length: symbols }, (_, k) => {
    const n = perSymbol;
    const sym: SimSymbol = {
      name: `SYN${String(k + 1).padStart(3, '0')}`,
      digits: 5,
      times: new Float64Array(n),
      bid: new Float64Array(n),
      ask: new Float64Array(n),
      last: new Float64Array(n),
      volume: new Float64Array(n),
      volumeReal: new Float64Array(n),
      flags: new Uint32Array(n),
    };
    let price = 1 + k / 10;
    for (let i = 0; i < n; i++) {
      // Several ticks in one millisecond now and then, as real feeds have.
      sym.times[i] = Math.floor(startMs + i * stepMs);
      const move = (random() - 0.5) * 1e-4;
      price = Math.max(1e-4, price + move);
      sym.bid[i] = Math.round(price * 1e5) / 1e5;
      sym.ask[i] = Math.round((price + 1e-4 + random() * 1e-4) * 1e5) / 1e5;
      sym.flags[i] = move >= 0 ? 6 : 2;
    }
    return sym;
  });
}

type Histogram = ReturnType<typeof import('hdr-histogram-js')['build']>;

/** Send → ACK latency over a run, in milliseconds (`--latency-out`). */
export interface AckLatencySummary {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  min: number;
  /** Ticks: every tick counts once. */
  n: number;
  method: string;
}

/**
 * Latency from sending a tick to the ACK that covers it, per tick, for the bench: each frame's
 * send time waits in a queue until ACKs cover its seqs, then every tick of it is recorded (µs,
 * HDR histogram, 3 significant digits). A tick counts from its first sending; a resend does not
 * reset it. It is an upper bound of the bridge's receipt → ACK: it adds the loopback hop both
 * ways and this process's event loop. hdr-histogram-js is a dev dependency, so it is loaded
 * only when asked for (`AckLatency.create`).
 */
export class AckLatency {
  readonly #hist: Histogram;
  /** Frames sent and not yet fully ACKed: first seq, ticks, performance.now() at sending. */
  readonly #first: number[] = [];
  readonly #count: number[] = [];
  readonly #at: number[] = [];
  #head = 0;
  #highestSent = 0;

  private constructor(hist: Histogram) {
    this.#hist = hist;
  }

  static async create(): Promise<AckLatency> {
    const hdr = (await import('hdr-histogram-js')).default;
    return new AckLatency(hdr.build({ lowestDiscernibleValue: 1, numberOfSignificantValueDigits: 3 }));
  }

  sent(first: number, count: number): void {
    const last = first + count - 1;
    if (last <= this.#highestSent) return;
    const from = Math.max(first, this.#highestSent + 1);
    this.#first.push(from);
    this.#count.push(last - from + 1);
    this.#at.push(performance.now());
    this.#highestSent = last;
  }

  acked(ackedSeq: number): void {
    const now = performance.now();
    while (this.#head < this.#first.length) {
      const first = this.#first[this.#head] as number;
      if (first > ackedSeq) break;
      const count = this.#count[this.#head] as number;
      const covered = Math.min(count, ackedSeq - first + 1);
      const us = Math.max(0, Math.round((now - (this.#at[this.#head] as number)) * 1000));
      this.#hist.recordValueWithCount(us, covered);
      if (covered < count) {
        this.#first[this.#head] = first + covered;
        this.#count[this.#head] = count - covered;
        break;
      }
      this.#head++;
    }
    // Drop what is done now and then, so the queue stays the size of what is in flight.
    if (this.#head > 4096 && this.#head * 2 > this.#first.length) {
      this.#first.splice(0, this.#head);
      this.#count.splice(0, this.#head);
      this.#at.splice(0, this.#head);
      this.#head = 0;
    }
  }

  summary(): AckLatencySummary {
    const h = this.#hist;
    const ms = (us: number) => us / 1000;
    return {
      p50: ms(h.getValueAtPercentile(50)),
      p99: ms(h.getValueAtPercentile(99)),
      p999: ms(h.getValueAtPercentile(99.9)),
      max: ms(h.maxValue),
      min: ms(h.totalCount ? h.minNonZeroValue : 0),
      n: h.totalCount,
      method:
        'sim: send → ACK per tick (HDR); an upper bound of bridge receipt → ACK (adds the loopback hop both ways)',
    };
  }
}

export async function runSim(o: SimOptions): Promise<SimSummary> {
  const clock = createServerClock(o.serverTz);
  const first = Math.min(
    ...o.symbols.map((s) => (s.times.length ? (s.times[0] as number) : Number.POSITIVE_INFINITY)),
  );
  const started = Date.now();
  const latency = o.ackLatency;
  const client = new BridgeClient({
    bridges: o.bridges,
    source: o.source,
    secret: o.secret,
    symbols: o.symbols,
    structSize: o.structSize,
    terminalBuild: 4755,
    serverOffsetMs: (utc) => clock.offsetAt(utc),
    now:
      o.speed === 'max'
        ? () => Number.POSITIVE_INFINITY
        : () => first + (Date.now() - started) * (o.speed as number),
    maxBufferedTicks: o.maxBufferedTicks,
    pollIntervalMs: 10,
    ...(o.tls ? { tls: o.tls } : {}),
    ...(o.restartAfterAcked !== undefined ? { restartAfterAcked: o.restartAfterAcked } : {}),
    ...(o.dropFrame !== undefined ? { dropFrame: o.dropFrame } : {}),
    ...(o.maxFrameBytes !== undefined ? { maxFrameBytes: o.maxFrameBytes } : {}),
    ...(o.historyDelayMs !== undefined ? { historyDelayMs: o.historyDelayMs } : {}),
    onProgress: (s) => o.onProgress?.(s, client.total),
    ...(latency
      ? {
          onSent: (first: number, n: number) => latency.sent(first, n),
          onAcked: (seq: number) => latency.acked(seq),
        }
      : {}),
  });
  const stats = await client.run();
  const elapsedS = (Date.now() - started) / 1000;
  return { ...stats, total: client.total, elapsedS, ticksPerS: stats.sent / Math.max(elapsedS, 1e-3) };
}

export const SIM_COMMAND = {
  name: 'sim',
  summary:
    'Stream an MT5 export, a CSV or a synthetic feed to the bridge as an EA would: the same handshake, credit, ACK, RESEND, reconnect and resume paths.',
  flags: {
    file: {
      type: 'string',
      value: 'PATH',
      description: 'tick file to stream (MT5 export UTF-8/UTF-16LE, Dukascopy, HistData, TrueFX)',
    },
    format: {
      type: 'string',
      choices: TICK_FILE_FORMATS,
      description: 'format of --file (detected when left out)',
    },
    symbol: {
      type: 'string',
      value: 'NAME',
      description: "symbol of --file (default: the file name's first capitals)",
    },
    synthetic: { type: 'boolean', description: 'stream a seeded random walk instead of a file' },
    symbols: { type: 'number', integer: true, min: 1, default: 10, description: 'synthetic: symbols' },
    rate: {
      type: 'number',
      min: 0.001,
      default: 1000,
      description: 'synthetic: ticks per second over all symbols',
    },
    duration: {
      type: 'number',
      min: 0.001,
      default: 10,
      value: 'S',
      description: 'synthetic: seconds of ticks',
    },
    seed: { type: 'number', integer: true, default: 1, description: 'synthetic: random seed' },
    speed: {
      type: 'string',
      value: 'max|N',
      description:
        'max: as fast as credit allows; N: N × the recorded spacing (default 1 with --synthetic, max with --file)',
    },
    source: { type: 'string', default: 'sim', value: 'ID', description: 'source id sent in HELLO' },
    'server-tz': {
      type: 'string',
      value: 'ZONE',
      description: "the terminal's server time zone rule (Europe/Athens, +2, UTC; default UTC)",
    },
    'server-utc-offset': {
      type: 'number',
      value: 'HOURS',
      description:
        'the terminal server clock as a fixed UTC offset (instead of --server-tz; negative: --server-utc-offset=-5)',
    },
    host: { type: 'string', default: '127.0.0.1', description: 'bridge host' },
    port: { type: 'number', integer: true, min: 1, default: 5555, description: 'bridge EA ingress port' },
    bridge: {
      type: 'string',
      value: 'LIST',
      description:
        'a pool of bridges, host:port,host:port (instead of --host/--port): each reconnect tries the next one, with backoff',
    },
    secret: { type: 'string', default: '', description: "the source's HMAC secret" },
    'struct-size': {
      type: 'string',
      choices: ['60', '52'],
      default: '60',
      description: 'MqlTick layout sent',
    },
    buffer: {
      type: 'number',
      integer: true,
      min: 1,
      default: 200_000,
      description: 'un-ACKed ticks the terminal keeps (capture pauses when full)',
    },
    tls: { type: 'boolean', description: 'connect with TLS' },
    ca: {
      type: 'string',
      value: 'FILE',
      description: 'PEM CA that signed the bridge certificate (with --tls)',
    },
    insecure: { type: 'boolean', description: 'with --tls: accept any certificate (tests only)' },
    'restart-after': {
      type: 'number',
      integer: true,
      min: 1,
      description: 'forget everything once N ticks are ACKed (an EA restart), resume from HELLO_ACK',
    },
    'drop-frame': {
      type: 'number',
      integer: true,
      min: 1,
      description: 'test aid: the N-th TICKS frame is lost once, so the bridge sends RESEND',
    },
    progress: {
      type: 'boolean',
      description: 'draw a progress bar on stderr (default: when stderr is a terminal)',
    },
    'max-frame-bytes': {
      type: 'number',
      integer: true,
      min: 74,
      value: 'B',
      description:
        "cap TICKS payloads at B bytes and keep two such frames un-ACKed at most, like the EA's InpMaxFrameBytes (default: the bridge's limits only)",
    },
    'history-delay-ms': {
      type: 'number',
      integer: true,
      min: 0,
      default: 0,
      description:
        "a slow terminal: the first history read of each symbol blocks N ms, before the first connection, as the EA's warm-up does",
    },
    'latency-out': {
      type: 'string',
      value: 'FILE',
      description:
        'bench aid: write send → ACK latency per tick (p50, p99, p99.9, max in ms, n ticks) to FILE as JSON at the end (needs the dev dependencies)',
    },
    'dry-run': { type: 'boolean', description: 'print what would be sent and exit' },
  },
  examples: [
    'tickstream sim --synthetic --symbols 5 --rate 2000 --duration 30',
    'tickstream sim --file EURUSD_ticks.csv --server-tz Europe/Athens --source terminal1 --secret change-me-please',
  ],
} as const satisfies CommandSpec;

/** The CLI entry; returns the exit code. */
export async function simMain(argv: string[]): Promise<number> {
  const parsed = parseCommand(SIM_COMMAND, argv);
  if (!parsed) return 0;
  const flags = parsed.flags;
  const offset = flags['server-utc-offset'];
  const serverTz =
    offset !== undefined ? `${offset >= 0 ? '+' : ''}${offset}` : (flags['server-tz'] ?? 'UTC');
  const clock = createServerClock(serverTz);
  let symbols: SimSymbol[];
  if (flags.file) {
    const format = flags.format as TickFileFormat | undefined;
    symbols = [
      symbolFromFile(flags.file, {
        serverTz,
        ...(format ? { format } : {}),
        ...(flags.symbol ? { symbol: flags.symbol } : {}),
      }),
    ];
  } else if (flags.synthetic) {
    symbols = syntheticSymbols(
      flags.symbols,
      flags.rate,
      flags.duration,
      flags.seed,
      clock.toServer(Date.now()),
    );
  } else {
    throw new TickstreamError(
      ErrorCode.USAGE,
      "give --file PATH or --synthetic. Run 'tickstream sim --help' for the flags it takes.",
    );
  }
  const total = symbols.reduce((n, s) => n + s.times.length, 0);
  if (flags['dry-run']) {
    let lo = Number.POSITIVE_INFINITY;
    let hi = Number.NEGATIVE_INFINITY;
    for (const s of symbols) {
      if (!s.times.length) continue;
      lo = Math.min(lo, clock.toUtc(s.times[0] as number));
      hi = Math.max(hi, clock.toUtc(s.times[s.times.length - 1] as number));
    }
    process.stdout.write(
      `${total} ticks in ${symbols.length} symbol(s) (${symbols.map((s) => s.name).join(', ')}), UTC ${new Date(lo).toISOString()} … ${new Date(hi).toISOString()} (server time ${serverTz})\n`,
    );
    return 0;
  }
  // A synthetic feed with a rate and a duration lasts that long unless asked otherwise.
  const speedFlag = flags.speed ?? (flags.file ? 'max' : '1');
  const speed = speedFlag === 'max' ? 'max' : Number(speedFlag);
  if (speed !== 'max' && !(speed > 0))
    throw new TickstreamError(
      ErrorCode.USAGE,
      `--speed must be max or a positive number, got '${speedFlag}'`,
    );
  const progress = flags.progress || process.stderr.isTTY === true;
  let lastDraw = 0;
  const latencyOut = flags['latency-out'];
  const ackLatency = latencyOut ? await AckLatency.create() : undefined;
  const summary = await runSim({
    bridges: flags.bridge ? parseBridgeList(flags.bridge) : [{ host: flags.host, port: flags.port }],
    source: flags.source,
    secret: flags.secret,
    symbols,
    serverTz,
    speed,
    structSize: flags['struct-size'] === '52' ? 52 : 60,
    maxBufferedTicks: flags.buffer,
    ...(flags.tls
      ? {
          tls: {
            ...(flags.ca ? { ca: readFileSync(flags.ca, 'utf8') } : {}),
            rejectUnauthorized: !flags.insecure,
          },
        }
      : {}),
    ...(flags['restart-after'] !== undefined ? { restartAfterAcked: flags['restart-after'] } : {}),
    ...(flags['drop-frame'] !== undefined ? { dropFrame: flags['drop-frame'] } : {}),
    ...(flags['max-frame-bytes'] !== undefined ? { maxFrameBytes: flags['max-frame-bytes'] } : {}),
    ...(flags['history-delay-ms'] ? { historyDelayMs: flags['history-delay-ms'] } : {}),
    ...(ackLatency ? { ackLatency } : {}),
    onProgress: (s, t) => {
      if (!progress || Date.now() - lastDraw < 200) return;
      lastDraw = Date.now();
      const width = 30;
      const done = Math.min(width, Math.round((s.lastAckedSeq / Math.max(t, 1)) * width));
      process.stderr.write(
        `\r[${'#'.repeat(done)}${'.'.repeat(width - done)}] sent ${s.sent} acked ${s.lastAckedSeq}/${t} reconnects ${s.reconnects}   `,
      );
    },
  });
  if (progress) process.stderr.write('\n');
  if (latencyOut && ackLatency) writeFileSync(latencyOut, JSON.stringify(ackLatency.summary()));
  process.stdout.write(
    `sim ${flags.source}: ${summary.total} ticks captured and ACKed in ${summary.elapsedS.toFixed(1)} s (${Math.round(summary.ticksPerS)} ticks/s sent), ` +
      `sent ${summary.sent}, resent ${summary.resent}, reconnects ${summary.reconnects}, restarts ${summary.restarts}, last ACK seq ${summary.lastAckedSeq}\n`,
  );
  return 0;
}

/** `host:port,host:port` (IPv6 hosts in brackets: [::1]:5555). */
export function parseBridgeList(list: string): BridgeAddress[] {
  return list.split(',').map((item) => {
    const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(item.trim());
    const port = Number(m?.[2]);
    if (!m || !(port >= 1 && port <= 65_535))
      throw new TickstreamError(
        ErrorCode.USAGE,
        `--bridge takes host:port,host:port; '${item}' is not host:port (e.g. --bridge 10.0.0.5:5555,10.0.0.6:5555)`,
      );
    return { host: m[1] as string, port };
  });
}
