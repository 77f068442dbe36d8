// Hostile websocket and HTTP clients and poison ticks (issue 20), against real `tickstream serve`
// processes over loopback, while an honest terminal streams into the same bridge:
//
//   W  honest `sim` + websocket messages that once killed serve (`null`), channel floods,
//      snapshot paging, HEAD/405/404, a tick dated 2999 and one going backwards in time, prices
//      of ±1e308, then a bounded fuzz of the websocket and HTTP surface; at the end the honest
//      source is whole in Kafka and Postgres (`tickstream verify`), serve is alive and its RSS
//      back within a margin.
//   S  the state limits: sources, (source, symbol) pairs, metric labels, idle sources forgotten;
//      Redis unreachable, so the bars it drops are counted; an injected exception in a websocket
//      handler (TICKSTREAM_FAIL_AT=ws-message) closes only that client.
import net from 'node:net';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ErrorCode } from '../../codecs/errors.js';
import { gauge, healthz, samples, scrape } from '../helpers/http-probes.js';
import {
  captured,
  isolatedNames,
  type Names,
  REDIS_URL,
  removeNames,
  runCli,
  runSim,
  type ServeProcess,
  type SimResult,
  serveArgs,
  startServe,
  verifyArgs,
  waitFor,
} from '../helpers/procs.js';
import { RawEa } from '../helpers/raw-ea.js';

const LOOPBACK = '127.0.0.1';
const redis = new Redis(REDIS_URL, { lazyConnect: true });
const cleanups: Names[] = [];
const serves: ServeProcess[] = [];

async function startInstance(
  tag: string,
  extra: string[],
  env: Record<string, string> = {},
): Promise<{ names: Names; serve: ServeProcess }> {
  const names = isolatedNames(tag);
  cleanups.push(names);
  const serve = await startServe(serveArgs(names, extra), env);
  serves.push(serve);
  return { names, serve };
}

beforeAll(async () => {
  await redis.connect();
});
afterAll(async () => {
  // Processes we started, by pid. A clean SIGTERM exit also says none of them crashed.
  const codes = await Promise.all(serves.map((s) => s.stop()));
  await removeNames(cleanups);
  await redis.quit();
  const failed = serves.filter((_, i) => codes[i] !== 0);
  expect(
    codes.every((c) => c === 0),
    `serve exit codes ${codes.join(', ')}; a failed one said:\n${failed.map((s) => s.output().slice(-2500)).join('\n---\n')}`,
  ).toBe(true);
}, 60_000);

// ---------------------------------------------------------------------------------------------
// Probes

async function status(httpPort: number): Promise<{ rssMb: number; sources: { source: string }[] }> {
  const res = await fetch(`http://${LOOPBACK}:${httpPort}/status`, { signal: AbortSignal.timeout(5000) });
  return (await res.json()) as { rssMb: number; sources: { source: string }[] };
}

const alive = (s: ServeProcess) => s.child.exitCode === null && s.child.signalCode === null;

async function expectServing(s: ServeProcess): Promise<void> {
  expect(alive(s), s.output()).toBe(true);
  expect(await healthz(s.httpPort)).toBe(200);
}

/** A websocket client that keeps every text message, parsed. */
class WsProbe {
  readonly ws: WebSocket;
  readonly messages: Record<string, unknown>[] = [];
  closed: { code: number; reason: string } | null = null;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data, isBinary) => {
      if (!isBinary) this.messages.push(JSON.parse(data.toString()) as Record<string, unknown>);
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
    ws.on('error', () => undefined); // a refused or reset connection shows in `closed`
  }

  static async open(httpPort: number): Promise<WsProbe> {
    const ws = new WebSocket(`ws://${LOOPBACK}:${httpPort}/ws`);
    const probe = new WsProbe(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return probe;
  }

  send(data: string | Buffer, binary = false): void {
    this.ws.send(data, { binary });
  }

  /** The first message (from index `from` on) that `pred` accepts, waiting up to 10 s. */
  async next(pred: (m: Record<string, unknown>) => boolean, from = 0): Promise<Record<string, unknown>> {
    let found: Record<string, unknown> | undefined;
    await waitFor(() => {
      found = this.messages.slice(from).find(pred);
      return found !== undefined || this.closed !== null;
    }, 10_000);
    if (!found)
      throw new Error(`no such message; got ${JSON.stringify(this.messages.slice(from)).slice(0, 500)}`);
    return found;
  }

  close(): void {
    this.ws.terminate();
  }
}

/**
 * Raw HTTP/1.1 on one connection: each request is written once the answer to the one before
 * has come (uWS closes a connection that pipelines behind an answer still being computed), and
 * the bytes received are returned per request. Waits for `until` after each write.
 */
async function rawHttp(
  httpPort: number,
  requests: string[],
  until: (got: string) => boolean,
): Promise<{ answers: string[]; closed: boolean }> {
  const socket = net.connect(httpPort, LOOPBACK);
  let got = '';
  let closed = false;
  socket.on('data', (d: Buffer) => {
    got += d.toString('latin1');
  });
  socket.on('error', () => undefined);
  socket.on('close', () => {
    closed = true;
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const answers: string[] = [];
  for (const request of requests) {
    got = '';
    socket.write(request);
    await waitFor(() => closed || until(got), 5000);
    answers.push(got);
  }
  socket.destroy();
  return { answers, closed };
}

// ---------------------------------------------------------------------------------------------

describe('instance W: hostile websocket/HTTP clients and poison ticks while an honest terminal streams', () => {
  let W: { names: Names; serve: ServeProcess };
  let honest: Promise<SimResult>;
  let rssBeforeMb = 0;

  beforeAll(async () => {
    W = await startInstance('hostilews', [
      '--ws-max-channels-per-client',
      '100',
      '--ws-snapshots-per-turn',
      '1',
    ]);
    honest = runSim(
      [
        '--synthetic',
        '--symbols',
        '2',
        '--rate',
        '4000',
        '--duration',
        '30',
        '--speed',
        '1',
        '--seed',
        '11',
        '--source',
        'honest',
        '--port',
        String(W.serve.ingressPort),
      ],
      90_000,
    );
    const streaming = await waitFor(async () => {
      const received = samples(await scrape(W.serve.httpPort), 'tickstream_ticks_received_total', 'source');
      return (received['honest'] ?? 0) > 0;
    }, 20_000);
    expect(streaming, 'the honest terminal never started streaming').toBe(true);
    rssBeforeMb = (await status(W.serve.httpPort)).rssMb;
  });

  it('20.1 a websocket message `null` (text and binary), and other shapes that are not messages: an error reply, the client and serve go on', async () => {
    const c = await WsProbe.open(W.serve.httpPort);
    const bad = [
      ['null', false],
      ['null', true],
      ['[]', false],
      ['42', true],
      ['"subscribe"', false],
      ['{"op":"subscribe"}', false],
      ['{"op":"subscribe","channels":null}', false],
      ['{"op":"subscribe","channels":[1,{}]}', false],
      ['{"op":"subscribe","channels":[""]}', false],
      [`{"op":"subscribe","channels":["${'x'.repeat(200)}"]}`, false],
      ['{"op":"nope","channels":[]}', false],
      ['{"__proto__":{"op":"subscribe"},"channels":["*"]}', false],
      ['not json', false],
    ] as const;
    for (const [text, binary] of bad) c.send(text, binary);
    await waitFor(() => c.messages.length >= bad.length || c.closed !== null, 10_000);
    expect(c.closed).toBeNull();
    expect(c.messages.length).toBe(bad.length);
    for (const m of c.messages) {
      expect(m['type']).toBe('error');
      expect(m['code']).toBe(ErrorCode.FRAME_PAYLOAD);
      expect(String(m['message'])).toContain('{"op":"subscribe","channels":["EURUSD"]}');
    }
    // Still a working client: it subscribes and gets the honest source's ticks.
    const from = c.messages.length;
    c.send(JSON.stringify({ op: 'subscribe', channels: ['*'] }));
    expect((await c.next((m) => m['type'] === 'subscribed', from))['total']).toBe(1);
    await c.next((m) => m['type'] === 'ticks' && m['source'] === 'honest', from);
    c.close();
    const refused = samples(await scrape(W.serve.httpPort), 'tickstream_ws_refused_messages_total', 'reason');
    expect((refused['shape'] ?? 0) + (refused['not_json'] ?? 0)).toBeGreaterThanOrEqual(bad.length);
    await expectServing(W.serve);
  });

  it('20.3 channels per client are limited: a subscribe past the limit is refused whole with ERR_LIMIT; replies never echo the whole list', async () => {
    const c = await WsProbe.open(W.serve.httpPort);
    const names = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `${tag}${i}`);
    c.send(JSON.stringify({ op: 'subscribe', channels: names(150, 'A') }));
    const refusal = await c.next((m) => m['type'] === 'error');
    expect(refusal['code']).toBe(ErrorCode.LIMIT);
    expect(String(refusal['message'])).toMatch(/limit of 100 per client \(you hold 0\)/);

    let from = c.messages.length;
    c.send(JSON.stringify({ op: 'subscribe', channels: names(99, 'B') }));
    expect((await c.next((m) => m['type'] === 'subscribed', from))['total']).toBe(99);
    from = c.messages.length;
    c.send(JSON.stringify({ op: 'subscribe', channels: ['one-more'] }));
    const reply = await c.next((m) => m['type'] === 'subscribed', from);
    // The reply names this message's channels, not the 100 the client holds.
    expect(reply).toEqual({ type: 'subscribed', channels: ['one-more'], total: 100 });
    from = c.messages.length;
    c.send(JSON.stringify({ op: 'subscribe', channels: ['past-the-limit'] }));
    expect((await c.next((m) => m['type'] === 'error', from))['code']).toBe(ErrorCode.LIMIT);
    from = c.messages.length;
    c.send(JSON.stringify({ op: 'unsubscribe', channels: ['one-more', 'never-held'] }));
    expect(await c.next((m) => m['type'] === 'unsubscribed', from)).toEqual({
      type: 'unsubscribed',
      channels: ['one-more', 'never-held'],
      total: 99,
    });
    const text = await scrape(W.serve.httpPort);
    expect(samples(text, 'tickstream_ws_refused_messages_total', 'reason')['channel_limit']).toBe(2);
    expect(gauge(text, 'tickstream_ws_max_channels_per_client')).toBe(100);
    c.close();
    await expectServing(W.serve);
  });

  it('20.3 snapshots go out a few per event-loop turn (here 1): a subscribe to * still gets one per known pair', async () => {
    const c = await WsProbe.open(W.serve.httpPort);
    c.send(JSON.stringify({ op: 'subscribe', channels: ['*', 'SYN001', 'honest:SYN002'] }));
    await waitFor(() => c.messages.filter((m) => m['type'] === 'snapshot').length >= 2, 10_000);
    const pairs = c.messages
      .filter((m) => m['type'] === 'snapshot')
      .map((m) => `${m['source']}:${m['symbol']}`);
    // Each pair once, though three channels of the message match it.
    expect(new Set(pairs).size).toBe(pairs.length);
    expect(pairs).toEqual(expect.arrayContaining(['honest:SYN001', 'honest:SYN002']));
    c.close();
    await expectServing(W.serve);
  });

  it('20.8 HEAD sends no body, other methods on a route get 405 with Allow, unknown routes 404', async () => {
    // HEAD then GET on one keep-alive connection: a body after HEAD's headers would be read as
    // the start of the next response. The pause after HEAD's headers lets such a body arrive.
    let headersSeenAt = 0;
    const { answers } = await rawHttp(
      W.serve.httpPort,
      ['HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'],
      (got) => {
        if (!got.includes('\r\n\r\n')) {
          headersSeenAt = 0; // (also for the next request: `got` starts empty)
          return false;
        }
        headersSeenAt ||= Date.now();
        return Date.now() - headersSeenAt > 300;
      },
    );
    const [head, get] = answers as [string, string];
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(head.toLowerCase()).toContain('content-length: 3\r\n');
    expect(head.endsWith('\r\n\r\n'), `bytes after HEAD's headers: ${JSON.stringify(head)}`).toBe(true);
    expect(get).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(get.endsWith('\r\n\r\nok\n')).toBe(true);

    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const res = await fetch(`http://${LOOPBACK}:${W.serve.httpPort}/metrics`, {
        method,
        signal: AbortSignal.timeout(5000),
      });
      expect(res.status, method).toBe(405);
      expect(res.headers.get('allow')).toBe('GET, HEAD');
    }
    const missing = await fetch(`http://${LOOPBACK}:${W.serve.httpPort}/nope`, {
      signal: AbortSignal.timeout(5000),
    });
    expect(missing.status).toBe(404);
    const headMissing = await fetch(`http://${LOOPBACK}:${W.serve.httpPort}/nope`, {
      method: 'HEAD',
      signal: AbortSignal.timeout(5000),
    });
    expect(headMissing.status).toBe(404);
    await expectServing(W.serve);
  });

  it('20.5 a tick dated 2999 is journaled but kept out of Redis and the websockets; later ticks and one going backwards in time still reach Redis', async () => {
    const probe = await WsProbe.open(W.serve.httpPort);
    probe.send(JSON.stringify({ op: 'subscribe', channels: ['clock:EURUSD'] }));
    await probe.next((m) => m['type'] === 'subscribed');
    const { ea, nextSeq } = await RawEa.open(W.serve.ingressPort, 'clock', ['EURUSD']);
    expect(nextSeq).toBe(1);
    const now = Date.now();
    const future = Date.UTC(2999, 5, 1);
    const times = [now - 2000, future, now - 1000, now - 1500, now];
    for (const [i, msc] of times.entries()) ea.ticks(1, i + 1, [{ msc }]);
    expect(await ea.acked(times.length), 'every tick is journaled and ACKed').toBe(true);
    ea.close();

    const key = `${W.names.redisPrefix}:ticks:clock:EURUSD`;
    expect(await waitFor(async () => (await redis.xlen(key)) >= 4, 10_000)).toBe(true);
    const entries = await redis.xrange(key, '-', '+');
    const seqOf = (fields: string[]) => Number(fields[fields.indexOf('s') + 1]);
    expect(entries.map(([, f]) => seqOf(f))).toEqual([1, 3, 4, 5]);
    // Seq 4 went back in time: stored under the stream's last ms instead of refused.
    expect(entries.map(([id]) => id)).toEqual([
      `${now - 2000}-1`,
      `${now - 1000}-3`,
      `${now - 1000}-4`,
      `${now}-5`,
    ]);
    const wsSeqs = () =>
      probe.messages
        .filter((m) => m['type'] === 'ticks')
        .flatMap((m) => (m['ticks'] as { seq: number }[]).map((t) => t.seq));
    await waitFor(() => wsSeqs().length >= 4, 10_000);
    expect(wsSeqs()).toEqual([1, 3, 4, 5]);
    probe.close();

    const text = await scrape(W.serve.httpPort);
    expect(samples(text, 'tickstream_ticks_out_of_time_window_total', 'source')['clock']).toBe(1);
    expect(W.serve.output()).toContain('ticks outside the time window');
    expect(W.serve.output()).toContain('2999-06-01T00:00:00.000Z');
    await expectServing(W.serve);
  });

  it('20.9 bid 1e308 / ask −1e308 and bid = ask = 1e308 are refused with ERR_TICK_VALUE naming the bound', async () => {
    for (const [i, t] of [
      { bid: 1e308, ask: -1e308 },
      { bid: 1e308, ask: 1e308 },
    ].entries()) {
      const { ea, nextSeq } = await RawEa.open(W.serve.ingressPort, `price${i}`, ['EURUSD']);
      ea.ticks(1, nextSeq, [{ msc: Date.now(), ...t }]);
      const err = await ea.error();
      expect(err?.code).toBe(ErrorCode.TICK_VALUE);
      expect(err?.message).toMatch(/not a finite number below 1000000000000000 in magnitude/);
      ea.close();
    }
    await expectServing(W.serve);
  });

  it('fuzz (fast-check, bounded to 20 s): random JSON values and shapes on a websocket, random methods and paths over HTTP; serve stays up', async () => {
    const methods = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'BREW', 'get'];
    const paths = [
      '/',
      '/metrics',
      '/healthz',
      '/readyz',
      '/status',
      '/ws',
      '/nope',
      '//',
      '/%00',
      '/healthz/',
    ];
    const c = await WsProbe.open(W.serve.httpPort);
    const deadline = Date.now() + 20_000;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().map((v) => JSON.stringify(v)),
          fc
            .record({ op: fc.constantFrom('subscribe', 'unsubscribe', 'x'), channels: fc.jsonValue() })
            .map((v) => JSON.stringify(v)),
          fc.string({ maxLength: 300 }),
        ),
        fc.boolean(),
        fc.constantFrom(...methods),
        fc.oneof(fc.constantFrom(...paths), fc.webPath()),
        async (text, binary, method, path) => {
          if (Date.now() > deadline) return;
          c.send(text, binary);
          const { answers, closed } = await rawHttp(
            W.serve.httpPort,
            [`${method} ${path.startsWith('/') ? path : `/${path}`} HTTP/1.1\r\nHost: x\r\n\r\n`],
            (got) => got.includes('\r\n\r\n'),
          );
          // uWS's parser closes on a method it does not know (`BREW`, lowercase `get`) without an answer.
          if (!closed || answers[0]) expect(answers[0]).toMatch(/^HTTP\/1\.1 (200|404|405|503) /);
        },
      ),
      { numRuns: 300, seed: 20, interruptAfterTimeLimit: 20_000 },
    );
    expect(c.closed, 'the fuzzed client was never closed: every bad message got an error reply').toBeNull();
    c.close();
    const handlerErrors = samples(
      await scrape(W.serve.httpPort),
      'tickstream_ws_handler_errors_total',
      'handler',
    );
    expect(handlerErrors).toEqual({});
    await expectServing(W.serve);
  }, 60_000);

  it('the honest terminal is whole in Kafka and Postgres (tickstream verify), serve alive, RSS back within 128 MB', async () => {
    const sim = await honest;
    expect(sim.code, sim.output).toBe(0);
    const n = captured(sim.output);
    expect(n).toBe(120_000);
    expect(sim.output).toMatch(/reconnects 0,/);
    const verify = await runCli([...verifyArgs(W.names), '--json'], {}, 120_000);
    const reports = JSON.parse(
      verify.output.slice(verify.output.indexOf('[\n'), verify.output.lastIndexOf(']') + 1),
    ) as {
      source: string;
      journalTicks: number;
      firstSeq: number;
      lastSeq: number;
      holes: number;
      postgresRows: number;
      parkedInPostgres: number;
      ok: boolean;
    }[];
    const bySource = new Map(reports.map((r) => [r.source, r]));
    expect(bySource.get('honest'), verify.output).toMatchObject({
      journalTicks: n,
      firstSeq: 1,
      lastSeq: n,
      holes: 0,
      postgresRows: n,
      ok: true,
    });
    // The clock source's five ticks are all journaled, the 2999 one included; the loader parks
    // that one (outside its time window, counted) instead of making a partition for year 2999.
    expect(bySource.get('clock'), verify.output).toMatchObject({
      journalTicks: 5,
      firstSeq: 1,
      lastSeq: 5,
      holes: 0,
      postgresRows: 4,
      parkedInPostgres: 1,
    });
    await expectServing(W.serve);
    const rssAfterMb = (await status(W.serve.httpPort)).rssMb;
    // The baseline is taken before the honest terminal's 120,000 ticks went through (heap, decode
    // worker and socket buffers grow with that alone, 50–66 MB measured); what this catches is
    // growth per hostile message, like the 175 MB a 100,000-channel subscribe once cost.
    expect(rssAfterMb, `RSS ${rssBeforeMb.toFixed(0)} MB → ${rssAfterMb.toFixed(0)} MB`).toBeLessThan(
      rssBeforeMb + 128,
    );
  }, 150_000);
});

// ---------------------------------------------------------------------------------------------

describe('instance S: bounded state (sources, symbols, metric labels, forgetting) and counted bar drops', () => {
  let S: { names: Names; serve: ServeProcess };
  const open: RawEa[] = [];

  beforeAll(async () => {
    S = await startInstance(
      'hostilestate',
      [
        '--max-sources',
        '3',
        '--max-symbols',
        '4',
        '--metrics-max-source-labels',
        '2',
        '--source-forget-after-ms',
        '1500',
        // Nothing listens there: the live view drops, and counts, what it cannot write.
        '--redis-url',
        'redis://127.0.0.1:1',
      ],
      // The first websocket message's handler throws (pipeline/faults.ts).
      { TICKSTREAM_FAIL_AT: 'ws-message' },
    );
  });
  afterAll(() => {
    for (const ea of open) ea.close();
  });

  /** Opens a source and has one tick of its first symbol ACKed. */
  async function streaming(source: string, symbols: string[]): Promise<{ ea: RawEa; nextSeq: number }> {
    const { ea, nextSeq } = await RawEa.open(S.serve.ingressPort, source, symbols);
    open.push(ea);
    ea.ticks(1, nextSeq, [{ msc: Date.now() }]);
    expect(await ea.acked(nextSeq), `${source}: no ACK`).toBe(true);
    return { ea, nextSeq: nextSeq + 1 };
  }

  it('20.4 a 4th source over --max-sources 3 is refused with ERR_LIMIT; a 5th pair over --max-symbols 4 too', async () => {
    const s1 = await streaming('s1', ['A', 'B', 'C']);
    await streaming('s2', ['A']);
    await streaming('s3', ['A']);
    const s4 = await RawEa.open(S.serve.ingressPort, 's4', ['A']).catch((err: Error) => err);
    const refused = s4 instanceof Error ? s4.message : (await s4.ea.error())?.message;
    expect(refused).toMatch(/holds live state for 3 sources already \(maxSources\)/);

    s1.ea.ticks(2, s1.nextSeq, [{ msc: Date.now() }]); // the 4th pair: admitted
    expect(await s1.ea.acked(s1.nextSeq)).toBe(true);
    s1.ea.ticks(3, s1.nextSeq + 1, [{ msc: Date.now() }]); // the 5th: refused
    const err = await s1.ea.error();
    expect(err?.code).toBe(ErrorCode.LIMIT);
    expect(err?.message).toMatch(/4 \(source, symbol\) pairs already \(maxSymbols\): symbol C of source s1/);

    const text = await scrape(S.serve.httpPort);
    expect(samples(text, 'tickstream_state_limit_refusals_total', 'what')).toEqual({
      sources: 1,
      symbols: 1,
    });
    expect(gauge(text, 'tickstream_symbols_known')).toBe(4);
    // The first two sources have a label of their own, the third counts under _other.
    const received = samples(text, 'tickstream_ticks_received_total', 'source');
    expect(received).toEqual({ s1: 2, s2: 1, _other: 1 });
    await expectServing(S.serve);
  });

  it('20.4 idle sources are forgotten after --source-forget-after-ms: /status and /metrics shrink, a new source is accepted', async () => {
    for (const ea of open.splice(0)) ea.close();
    expect(
      await waitFor(
        async () => gauge(await scrape(S.serve.httpPort), 'tickstream_sources_known') === 0,
        15_000,
      ),
    ).toBe(true);
    const text = await scrape(S.serve.httpPort);
    expect(gauge(text, 'tickstream_sources_forgotten_total')).toBe(3);
    expect(gauge(text, 'tickstream_symbols_known')).toBe(0);
    expect(samples(text, 'tickstream_source_last_tick_age_seconds', 'source')).toEqual({});
    expect((await status(S.serve.httpPort)).sources).toEqual([]);
    // Its resume state is kept: s1 goes on from its next seq, not from 1.
    const again = await streaming('s1', ['A']);
    expect(again.nextSeq).toBe(4);
    await streaming('s4', ['A']);
    await expectServing(S.serve);
  });

  it("20.1 an exception in one websocket client's handler closes that client with 1011 and a reason; serve and the other clients go on", async () => {
    const other = await WsProbe.open(S.serve.httpPort);
    const victim = await WsProbe.open(S.serve.httpPort);
    victim.send(JSON.stringify({ op: 'subscribe', channels: ['*'] })); // the injected throw
    expect(await waitFor(() => victim.closed !== null, 10_000)).toBe(true);
    expect(victim.closed).toEqual({ code: 1011, reason: 'internal error in the message handler: reconnect' });
    expect(S.serve.output()).toContain('fail point ws-message hit');
    expect(S.serve.output()).toContain('unexpected exception in a client handler');
    other.send(JSON.stringify({ op: 'subscribe', channels: ['*'] }));
    expect((await other.next((m) => m['type'] === 'subscribed'))['total']).toBe(1);
    other.close();
    const errors = samples(await scrape(S.serve.httpPort), 'tickstream_ws_handler_errors_total', 'handler');
    expect(errors).toEqual({ message: 1 });
    await expectServing(S.serve);
  });

  it('issue 12.4: bars the Redis sink drops while Redis is down are counted and logged', async () => {
    const { ea, nextSeq } = await RawEa.open(S.serve.ingressPort, 'bars', ['A']);
    open.push(ea);
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    // Three minutes: the first two close when a later minute's tick arrives.
    ea.ticks(1, nextSeq, [{ msc: minute - 120_000 }, { msc: minute - 60_000 }, { msc: minute }]);
    expect(await ea.acked(nextSeq + 2)).toBe(true);
    expect(
      await waitFor(async () => {
        const dropped = samples(
          await scrape(S.serve.httpPort),
          'tickstream_redis_dropped_bars_total',
          'reason',
        );
        return (dropped['not_connected'] ?? 0) >= 2;
      }, 10_000),
    ).toBe(true);
    expect(S.serve.output()).toContain('bars not written to Redis');
    await expectServing(S.serve);
  });
});
