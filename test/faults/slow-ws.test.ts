// Slow websocket consumers: 90 `ws` clients that read, and 10 raw TCP sockets that complete the
// upgrade, subscribe to everything and then never read (a `ws` client keeps draining its socket,
// so it is never slow). The readers must keep getting every tick while a terminal streams in real
// time; the slow ones are conflated (the default policy) or disconnected
// (`--ws-slow-consumer-policy disconnect`), and the bridge's memory stays bounded.
// The raw clients speak RFC 6455 by hand and share no code with the server.
//
// The feed is paced (`--speed 1`, RATE ticks/s): at `--speed max` a terminal hands the bridge
// batches of up to ~65k ticks, several MB of JSON per client sent in one go, and 90 readers in one
// test process cannot take 90 times that at the bridge's full speed: they would rightly be slow
// consumers themselves. The readers run in worker threads for the same reason.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import {
  captured,
  isolatedNames,
  type Names,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';

const READERS = 90;
const SLOW = 10;
/**
 * `--ws-max-backpressure-bytes`: about 0.9 s of one client's stream at RATE. A reader whose
 * thread the loaded CI machine did not run for longer is rightly conflated: with 256 KiB at
 * 10k ticks/s (~0.2 s) and with 512 KiB at 10k ticks/s (~0.45 s, four readers of one thread on a
 * clean-clone run) that happened. With the default 1 MiB the 90 readers may hold 90 MB of it,
 * past the phase-2 RSS allowance below.
 */
const LIMIT = 512 * 1024;
/**
 * Ticks/s of each sim. The phases keep their tick counts (and so the bytes that fill the slow
 * sockets) at half the rate: a reader thread may pause twice as long before it falls LIMIT behind.
 */
const RATE = 5000;
const SYMBOLS = 5;
/** Readers must have every tick this long after the sim has its last ACK. */
const READER_LAG_MS = 10_000;

const cleanups: Names[] = [];

afterAll(() => removeNames(cleanups));

/** A synthetic terminal streaming `rate` ticks/s over 5 symbols in real time for `seconds`. */
function simArgs(source: string, port: number, rate: number, seconds: number, seed: number): string[] {
  return [
    '--synthetic',
    '--symbols',
    String(SYMBOLS),
    '--rate',
    String(rate),
    '--duration',
    String(seconds),
    '--speed',
    '1',
    '--seed',
    String(seed),
    '--source',
    source,
    '--port',
    String(port),
  ];
}

interface TickMsg {
  type: string;
  source?: string;
  symbol?: string;
  conflated?: boolean;
  skipped?: number;
  ticks?: { seq: number }[];
}

/**
 * The readers run in worker threads (`READER_THREADS` of them, 30 `ws` clients each), so that
 * they are not one thread competing for the CPU with the bridge, the sim, Kafka and whatever else
 * the machine runs: the readers must not be the slow consumers themselves. Each keeps a bitmap of
 * the seqs it got per source. One reader parses every message as JSON; the others read the seqs
 * straight off the bytes (about three times cheaper).
 */
const READER_THREADS = 3;
const READER_WORKER = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const WebSocket = require(workerData.wsPath);
const SEQ = Buffer.from('"seq":');
const HEAD = /^\{"type":"ticks","source":"([^"\\]*)","symbol":"([^"\\]*)"/;

function add(t, source, symbol, conflated, seqs) {
  if (conflated) t.conflatedMessages++;
  let s = t.sources.get(source);
  if (!s) {
    s = { bits: new Uint8Array(1 << 16), count: 0, dups: 0 };
    t.sources.set(source, s);
  }
  const key = source + ':' + symbol;
  let last = t.lastSeq.get(key) || 0;
  for (const seq of seqs) {
    if (seq >= s.bits.length) {
      const bigger = new Uint8Array(Math.max(seq + 1, s.bits.length * 2));
      bigger.set(s.bits);
      s.bits = bigger;
    }
    if (s.bits[seq]) s.dups++;
    else {
      s.bits[seq] = 1;
      s.count++;
    }
    if (seq > last) last = seq;
  }
  t.lastSeq.set(key, last);
}

function scan(data, t) {
  const head = data.toString('latin1', 0, Math.min(data.length, 256));
  const m = HEAD.exec(head);
  if (!m) return; // subscribed, snapshot, bar
  const start = data.indexOf('"ticks":[');
  const conflated = head.slice(0, start).includes('"conflated":true');
  const seqs = [];
  for (let p = data.indexOf(SEQ, start); p >= 0; p = data.indexOf(SEQ, p)) {
    p += SEQ.length;
    let v = 0;
    for (let b = data[p]; b >= 48 && b <= 57; b = data[++p]) v = v * 10 + b - 48;
    seqs.push(v);
  }
  add(t, m[1], m[2], conflated, seqs);
}

function parse(data, t) {
  const m = JSON.parse(data.toString('utf8'));
  if (m.type === 'ticks') add(t, m.source, m.symbol, m.conflated === true, m.ticks.map((x) => x.seq));
}

function whole(s, n) {
  if (!s || s.count !== n || s.dups !== 0) return false;
  for (let i = 1; i <= n; i++) if (!s.bits[i]) return false;
  return true;
}

const readers = [];
let subscribed = 0;
for (let i = 0; i < workerData.count; i++) {
  const t = { sources: new Map(), lastSeq: new Map(), conflatedMessages: 0, closed: null };
  const read = workerData.parseFirst && i === 0 ? parse : scan;
  const ws = new WebSocket('ws://127.0.0.1:' + workerData.port + '/ws', { perMessageDeflate: false });
  let isSubscribed = false;
  ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', channels: ['*'] })));
  ws.on('message', (data) => {
    if (!isSubscribed && data.includes('"type":"subscribed"')) {
      isSubscribed = true;
      if (++subscribed === workerData.count) parentPort.postMessage({ type: 'ready' });
    }
    read(data, t);
  });
  ws.on('error', (err) => parentPort.postMessage({ type: 'error', message: String(err) }));
  ws.on('close', (code) => {
    t.closed = code;
  });
  readers.push(t);
}

parentPort.on('message', (m) => {
  if (m.type !== 'report') return;
  parentPort.postMessage({
    type: 'report',
    id: m.id,
    readers: readers.map((t) => {
      const s = t.sources.get(m.source);
      return {
        got: s ? s.count : 0,
        dups: s ? s.dups : 0,
        whole: m.check ? whole(s, m.n) : false,
        conflatedMessages: t.conflatedMessages,
        closed: t.closed,
        lastSeq: [...t.lastSeq],
      };
    }),
  });
});
`;

interface ReaderReport {
  /** Distinct seqs of the source asked about. */
  got: number;
  dups: number;
  /** Every seq 1..n exactly once (when asked to check). */
  whole: boolean;
  conflatedMessages: number;
  closed: number | null;
  /** Newest seq per source:symbol. */
  lastSeq: [string, number][];
}

/** `count` `ws` readers subscribed to `*`, spread over `READER_THREADS` worker threads. */
function readerPool(port: number, count: number) {
  const wsPath = createRequire(import.meta.url).resolve('ws');
  const workers = Array.from(
    { length: READER_THREADS },
    (_, w) =>
      new Worker(READER_WORKER, {
        eval: true,
        workerData: {
          wsPath,
          port,
          count: Math.floor(count / READER_THREADS) + (w < count % READER_THREADS ? 1 : 0),
          parseFirst: w === 0,
        },
      }),
  );
  const ready = Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((resolve, reject) => {
          w.on('message', (m: { type: string; message?: string }) => {
            if (m.type === 'ready') resolve();
            if (m.type === 'error') reject(new Error(`reader: ${m.message}`));
          });
          w.once('error', reject);
        }),
    ),
  ).then(() => undefined);
  let nextId = 0;
  const ask = (w: Worker, source: string, n: number, check: boolean) =>
    new Promise<ReaderReport[]>((resolve) => {
      const id = nextId++;
      const on = (m: { type: string; id?: number; readers?: ReaderReport[] }) => {
        if (m.type !== 'report' || m.id !== id) return;
        w.off('message', on);
        resolve(m.readers ?? []);
      };
      w.on('message', on);
      w.postMessage({ type: 'report', id, source, n, check });
    });
  return {
    ready,
    /** Every reader's tally of `source`; `check` also tests seqs 1..n. */
    report: async (source: string, n: number, check = false) =>
      (await Promise.all(workers.map((w) => ask(w, source, n, check)))).flat(),
    close: () => Promise.all(workers.map((w) => w.terminate())),
  };
}
type ReaderPool = ReturnType<typeof readerPool>;

interface Frame {
  opcode: number;
  payload: Buffer;
}

/** Unmasked server frames off the front of `buf` (RFC 6455 §5.2); returns the rest. */
function parseFrames(buf: Buffer, out: Frame[]): Buffer {
  let off = 0;
  for (;;) {
    if (buf.length - off < 2) break;
    const b0 = buf[off] as number;
    const b1 = buf[off + 1] as number;
    if (b1 & 0x80) throw new Error('server frames must not be masked');
    let len = b1 & 0x7f;
    let head = 2;
    if (len === 126) {
      if (buf.length - off < 4) break;
      len = buf.readUInt16BE(off + 2);
      head = 4;
    } else if (len === 127) {
      if (buf.length - off < 10) break;
      len = Number(buf.readBigUInt64BE(off + 2));
      head = 10;
    }
    if (buf.length - off < head + len) break;
    if (!(b0 & 0x80)) throw new Error('fragmented frame: not expected from this server');
    out.push({ opcode: b0 & 0x0f, payload: Buffer.from(buf.subarray(off + head, off + head + len)) });
    off += head + len;
  }
  return buf.subarray(off);
}

/** One masked client text frame (RFC 6455 §5.3); the masking is done here. */
function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text, 'utf8');
  if (payload.length >= 126) throw new Error('keep control messages short');
  const mask = randomBytes(4);
  const frame = Buffer.alloc(2 + 4 + payload.length);
  frame[0] = 0x81; // FIN, text
  frame[1] = 0x80 | payload.length; // MASK bit, 7-bit length
  mask.copy(frame, 2);
  for (let i = 0; i < payload.length; i++) frame[6 + i] = (payload[i] as number) ^ (mask[i % 4] as number);
  return frame;
}

/**
 * A raw TCP websocket client: HTTP upgrade by hand, one masked subscribe frame, waits for the
 * `subscribed` reply, then pauses and never reads again until `resume()`.
 */
function slowClient(port: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  const key = randomBytes(16).toString('base64');
  const expectedAccept = createHash('sha1')
    .update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
    .digest('base64');
  let buf: Buffer = Buffer.alloc(0);
  let upgraded = false;
  let paused = false;
  let ended = false;
  let bytes = 0;
  /** Tick messages, each parsed once as it arrives. */
  const messages: TickMsg[] = [];
  /** Newest seq per source:symbol so far. */
  const newest = new Map<string, number>();
  let subscribed = false;
  let close: { code: number; reason: string } | null = null;
  let onFrames: (() => void) | null = null;
  let onEnd: (() => void) | null = null;
  let fail: (err: Error) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    fail = reject;
    socket.once('connect', () => {
      socket.write(
        'GET /ws HTTP/1.1\r\n' +
          `Host: 127.0.0.1:${port}\r\n` +
          'Upgrade: websocket\r\n' +
          'Connection: Upgrade\r\n' +
          `Sec-WebSocket-Key: ${key}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 4);
        const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head)?.[1];
        if (!head.startsWith('HTTP/1.1 101') || accept !== expectedAccept) {
          reject(new Error(`upgrade refused or a wrong accept key:\n${head}`));
          socket.destroy();
          return;
        }
        upgraded = true;
        socket.write(maskedTextFrame(JSON.stringify({ op: 'subscribe', channels: ['*'] })));
      }
      const frames: Frame[] = [];
      try {
        buf = parseFrames(buf, frames);
      } catch (err) {
        reject(err as Error);
        socket.destroy();
        return;
      }
      for (const f of frames) {
        if (f.opcode === 8) close = closePayload(f.payload);
        if (f.opcode !== 1) continue;
        const m = JSON.parse(f.payload.toString('utf8')) as TickMsg;
        if (m.type === 'subscribed') subscribed = true;
        if (m.type !== 'ticks') continue;
        messages.push(m);
        for (const t of m.ticks ?? []) newest.set(`${m.source}:${m.symbol}`, t.seq);
      }
      if (!paused && subscribed) {
        // From here on nothing is read: the kernel buffers fill up, then the server's.
        paused = true;
        socket.pause();
        resolve();
      }
      onFrames?.();
    });
    socket.once('error', reject);
  });
  socket.on('error', () => {}); // a reset after a policy close is one of the outcomes looked at
  socket.on('close', () => {
    ended = true;
    onEnd?.();
    fail(new Error('socket closed before subscribing'));
  });
  return {
    socket,
    ready,
    messages,
    newest,
    close: () => close,
    ended: () => ended,
    bytes: () => bytes,
    /** Reads again; resolves true once `until()` holds, false at the socket's end or the timeout. */
    resume(until: () => boolean, timeoutMs: number): Promise<boolean> {
      return new Promise((resolve) => {
        const done = (ok: boolean) => {
          clearTimeout(timer);
          onFrames = null;
          onEnd = null;
          resolve(ok);
        };
        const timer = setTimeout(() => done(false), timeoutMs);
        onFrames = () => {
          if (until()) done(true);
        };
        onEnd = () => done(until());
        if (until() || ended) done(until());
        else socket.resume();
      });
    },
  };
}
type SlowClient = ReturnType<typeof slowClient>;

/** A close frame's code and reason (RFC 6455 §5.5.1). */
function closePayload(payload: Buffer): { code: number; reason: string } {
  return {
    code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005,
    reason: payload.subarray(2).toString('utf8'),
  };
}

async function metrics(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

async function metric(port: number, name: string): Promise<number> {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(await metrics(port));
  if (!m) throw new Error(`no ${name} in /metrics`);
  return Number(m[1]);
}

async function wsMetrics(port: number): Promise<string> {
  return (await metrics(port))
    .split('\n')
    .filter((l) => l.startsWith('tickstream_ws_') && !l.includes('_bucket'))
    .join('; ');
}

/** VmRSS of a process in MB, sampled every 50 ms; `mark()` starts a new phase, `peaks` per phase. */
function rssSampler(pid: number) {
  const read = () => {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  };
  const start = read();
  const peaks: number[] = [start];
  const timer = setInterval(() => {
    try {
      peaks[peaks.length - 1] = Math.max(peaks[peaks.length - 1] as number, read());
    } catch {
      // the process is gone
    }
  }, 50);
  return {
    start,
    peaks,
    mark: () => peaks.push(read()),
    stop: () => clearInterval(timer),
  };
}

interface Setup {
  serve: ServeProcess;
  readers: ReaderPool;
  slow: SlowClient[];
}

/** Starts serve and connects every client; `into` holds them at once, so teardown finds them on failure. */
async function startAll(names: Names, extra: string[], into: Partial<Setup>): Promise<Setup> {
  into.serve = await startServe(serveArgs(names, ['--ws-max-backpressure-bytes', String(LIMIT), ...extra]));
  const port = into.serve.httpPort;
  into.readers = readerPool(port, READERS);
  into.slow = Array.from({ length: SLOW }, () => slowClient(port));
  await Promise.all([into.readers.ready, ...into.slow.map((c) => c.ready)]);
  expect(await metric(port, 'tickstream_ws_clients')).toBe(READERS + SLOW);
  return into as Setup;
}

async function teardown(s: Partial<Setup>): Promise<void> {
  for (const c of s.slow ?? []) c.socket.destroy();
  await s.readers?.close();
  if (s.serve) expect(await s.serve.stop()).toBe(0);
}

/**
 * Streams one sim run and checks that every reader got every seq 1..N of it (N from the sim's
 * summary) once, none conflated, none closed, within READER_LAG_MS of the sim's end.
 */
async function streamToReaders(s: Setup, source: string, rate: number, seconds: number, seed: number) {
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  const sim = await runSim(simArgs(source, s.serve.ingressPort, rate, seconds, seed));
  const cpu = process.cpuUsage(cpu0);
  const cpuPct = Math.round(((cpu.user + cpu.system) / 1000 / (Date.now() - t0)) * 100);
  expect(sim.code, sim.output).toBe(0);
  const simEnd = Date.now();
  const n = captured(sim.output);
  expect(n).toBe(Math.round((rate * seconds) / SYMBOLS) * SYMBOLS);
  const inTime = await waitFor(
    async () => (await s.readers.report(source, n)).every((r) => r.got >= n),
    READER_LAG_MS,
  );
  const lagMs = Date.now() - simEnd;
  const readers = await s.readers.report(source, n, true);
  const short = readers
    .map((r, i) => ({ reader: i, ...r, lastSeq: undefined }))
    .filter((r) => !r.whole || r.conflatedMessages || r.closed !== null);
  expect(
    short,
    `readers without every tick of ${source} (${n}) ${READER_LAG_MS} ms after the sim ended ` +
      `(test process CPU ${cpuPct}% while it ran); ` +
      `sim: ${sim.output.trim()}; ${await wsMetrics(s.serve.httpPort)}`,
  ).toEqual([]);
  expect(inTime).toBe(true);
  expect(readers.length).toBe(READERS);
  return { n, lagMs, cpuPct, sim: sim.output.trim(), newest: new Map((readers[0] as ReaderReport).lastSeq) };
}

describe('slow websocket consumers, policy conflate (the default)', () => {
  const names = isolatedNames('slowws_c');
  cleanups.push(names);
  const parts: Partial<Setup> = {};
  afterAll(() => teardown(parts), 60_000);

  it('readers get every tick; each slow socket ends with the newest tick per symbol and a true skip count; RSS stays bounded', async () => {
    const s = await startAll(names, [], parts);
    const rss = rssSampler(s.serve.child.pid as number);
    let warm: Awaited<ReturnType<typeof streamToReaders>>;
    let main: Awaited<ReturnType<typeof streamToReaders>>;
    try {
      // Phase 1 fills the slow sockets' kernel buffers (about 4 MB each on loopback) and then the
      // server's per-client buffers up to the limit.
      warm = await streamToReaders(s, 'warm', RATE, 10, 11);
      rss.mark();
      // Phase 2: 11.5 MB more per client; kept for the 10 slow ones that would be 115 MB more.
      main = await streamToReaders(s, 'main', RATE, 20, 12);
    } finally {
      rss.stop();
    }
    const start = rss.start;
    const [phase1, phase2] = rss.peaks as [number, number];
    const conflated = await metric(s.serve.httpPort, 'tickstream_ws_conflated_ticks_total');
    console.log(
      `conflate: ${warm.n} + ${main.n} ticks; readers whole ${warm.lagMs} / ${main.lagMs} ms after ` +
        `each sim (test process CPU ${warm.cpuPct}% / ${main.cpuPct}%); ` +
        `serve VmRSS at start ${start.toFixed(0)} MB, phase-1 peak ${phase1.toFixed(0)} MB, ` +
        `phase-2 peak ${phase2.toFixed(0)} MB; tickstream_ws_conflated_ticks_total ${conflated}\n` +
        `  sims: ${warm.sim} | ${main.sim}`,
    );
    expect(conflated).toBeGreaterThan(0);
    expect(phase2, 'serve VmRSS (MB) in phase 2 against the phase-1 peak + 60 MB').toBeLessThan(phase1 + 60);

    // The slow sockets read again: first their backlog, then, held back for them, the newest tick
    // of every symbol, marked conflated, with the number of ticks they never got.
    const newest = new Map([...warm.newest, ...main.newest]);
    expect(newest.size).toBe(2 * SYMBOLS);
    const resumed = await Promise.all(
      s.slow.map((c) => c.resume(() => [...newest].every(([k, seq]) => c.newest.get(k) === seq), 20_000)),
    );
    const summary = s.slow.map((c) => {
      const per = new Map<string, { delivered: number; skipped: number }>();
      const prev = new Map<string, number>();
      let ordered = true;
      let conflatedMessages = 0;
      for (const m of c.messages) {
        const p = per.get(m.source as string) ?? { delivered: 0, skipped: 0 };
        per.set(m.source as string, p);
        p.delivered += m.ticks?.length ?? 0;
        if (m.conflated) {
          conflatedMessages++;
          p.skipped += m.skipped ?? 0;
        }
        const k = `${m.source}:${m.symbol}`;
        for (const t of m.ticks ?? []) {
          if (t.seq <= (prev.get(k) ?? 0)) ordered = false;
          prev.set(k, t.seq);
        }
      }
      return {
        ended: c.ended(),
        mb: Math.round(c.bytes() / 1e5) / 10,
        ordered,
        conflatedMessages,
        warm: per.get('warm') ?? { delivered: 0, skipped: 0 },
        main: per.get('main') ?? { delivered: 0, skipped: 0 },
      };
    });
    console.log(`conflate: slow sockets once they read again: ${JSON.stringify(summary)}`);
    expect(resumed, 'every slow socket ends with the newest tick of every symbol').toEqual(
      s.slow.map(() => true),
    );
    for (const c of summary) {
      expect(c.ended, 'conflated, not disconnected').toBe(false);
      expect(c.ordered, 'per symbol, seqs only go up').toBe(true);
      expect(c.conflatedMessages).toBeGreaterThan(0);
      expect(c.main.delivered).toBeLessThan(main.n);
      // Each tick was either delivered or counted in a `skipped`, once.
      expect({ warm: c.warm.delivered + c.warm.skipped, main: c.main.delivered + c.main.skipped }).toEqual({
        warm: warm.n,
        main: main.n,
      });
    }
  }, 120_000);
});

describe('slow websocket consumers, policy disconnect', () => {
  const names = isolatedNames('slowws_d');
  cleanups.push(names);
  const parts: Partial<Setup> = {};
  afterAll(() => teardown(parts), 60_000);

  it('readers get every tick; the slow sockets are closed with 1008 and a reason', async () => {
    const s = await startAll(names, ['--ws-slow-consumer-policy', 'disconnect'], parts);
    const run = await streamToReaders(s, 'disc', RATE, 12, 21);
    const disconnects = await metric(s.serve.httpPort, 'tickstream_ws_slow_disconnects_total');
    const clients = await metric(s.serve.httpPort, 'tickstream_ws_clients');
    // Reading again, each slow socket drains its backlog and then meets the close frame (or,
    // had the server given up on delivering it, the end of the stream).
    const closed = await Promise.all(s.slow.map((c) => c.resume(() => c.close() !== null, 20_000)));
    await waitFor(() => s.slow.every((c) => c.ended()), 5000);
    const outcome = s.slow.map((c) => ({
      close: c.close(),
      ended: c.ended(),
      mb: Math.round(c.bytes() / 1e5) / 10,
    }));
    console.log(
      `disconnect: ${run.n} ticks, readers whole ${run.lagMs} ms after the sim ` +
        `(test process CPU ${run.cpuPct}%); ` +
        `tickstream_ws_slow_disconnects_total ${disconnects}, clients left ${clients}; ` +
        `slow sockets: ${JSON.stringify(outcome)}\n  sim: ${run.sim}`,
    );
    expect(disconnects).toBe(SLOW);
    expect(clients).toBe(READERS);
    expect(closed, 'a close frame reached every slow socket').toEqual(s.slow.map(() => true));
    for (const o of outcome) {
      expect(o.close?.code).toBe(1008);
      expect(o.close?.reason).toMatch(/slow/);
      expect(o.ended, 'the server closed the connection after its close frame').toBe(true);
    }
  }, 120_000);
});
