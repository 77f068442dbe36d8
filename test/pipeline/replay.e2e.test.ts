// `tickstream replay` against a journal a real `serve` wrote from two `sim` sources, checked
// against a consumer that shares no code with it (test/helpers/independent.ts).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JournalTick, readJournalTicks } from '../helpers/independent.js';
import {
  captured,
  freePorts,
  isolatedNames,
  removeNames,
  runCli,
  runSim,
  type ServeProcess,
  serveArgs,
  startCli,
  startServe,
  waitFor,
} from '../helpers/procs.js';

interface Row {
  source: string;
  seq: number;
  symbol: string;
  time: number;
  server_time: number;
  bid: number;
  ask: number;
  last: number;
  volume: number;
  volume_real: number;
  flags: number;
}

const COLUMNS = 'source,seq,symbol,time,server_time,bid,ask,last,volume,volume_real,flags';

const rowOf = (t: JournalTick): Row => ({
  source: t.source,
  seq: t.seq,
  symbol: t.symbol,
  time: t.utcMsc,
  server_time: t.serverMsc,
  bid: t.bid,
  ask: t.ask,
  last: t.last,
  volume: t.volume,
  volume_real: t.volumeReal,
  flags: t.flags,
});

const parseJsonl = (text: string): Row[] =>
  text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Row);

/** Rows grouped per source in output order: replay promises seq order per source only. */
function perSource(rows: readonly Row[]): Record<string, Row[]> {
  const out: Record<string, Row[]> = {};
  for (const r of rows) {
    out[r.source] ??= [];
    out[r.source]?.push(r);
  }
  return out;
}

describe('tickstream replay (real serve, sim and broker)', () => {
  const n = isolatedNames('replay');
  const dir = mkdtempSync(join(tmpdir(), 'replay-'));
  let serve: ServeProcess;
  let journal: JournalTick[] = [];
  let file = 0;

  /** Runs replay over this test's topic into a file of its own; returns the file's text. */
  async function replay(args: string[]): Promise<{ code: number | null; output: string; text: string }> {
    const out = join(dir, `out-${++file}`);
    const r = await runCli(['replay', '--ticks-topic', n.ticksTopic, '--out', out, ...args], {}, 60_000);
    return { ...r, text: r.code === 0 ? readFileSync(out, 'utf8') : '' };
  }

  beforeAll(async () => {
    serve = await startServe(serveArgs(n));
    const sim = (source: string, symbols: number, seed: number) =>
      runSim([
        '--synthetic',
        '--symbols',
        String(symbols),
        '--rate',
        '1000',
        '--duration',
        '3',
        '--seed',
        String(seed),
        '--speed',
        'max',
        '--source',
        source,
        '--port',
        String(serve.ingressPort),
      ]);
    const results = await Promise.all([sim('repa', 3, 1), sim('repb', 2, 2)]);
    for (const r of results) expect(r.code, r.output).toBe(0);
    const total = results.reduce((sum, r) => sum + captured(r.output), 0);
    journal = await readJournalTicks(n.ticksTopic, { expected: total });
    expect(journal.length).toBe(total);
  }, 180_000);

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('jsonl of everything equals the independent read: same ticks, seqs, prices and UTC times, each source in seq order', async () => {
    const r = await replay([]);
    expect(r.code, r.output).toBe(0);
    const rows = parseJsonl(r.text);
    expect(rows.length).toBe(journal.length);
    const got = perSource(rows);
    const want = perSource(journal.map(rowOf));
    expect(Object.keys(got).sort()).toEqual(['repa', 'repb']);
    for (const source of ['repa', 'repb']) {
      const mine = got[source] ?? [];
      expect(mine.map((t) => t.seq)).toEqual(mine.map((_, i) => i + 1));
      expect(mine).toEqual(want[source]);
    }
    expect(r.output).toContain(`replay: ${journal.length} ticks written from 2 source(s) (`);
  });

  it('writes the same lines to stdout, and its summary to stderr only', async () => {
    const file = await replay(['--source', 'repb']);
    const p = startCli(['replay', '--ticks-topic', n.ticksTopic, '--source', 'repb']);
    let stdout = '';
    let stderr = '';
    p.child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    p.child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    expect(await p.exited, p.output()).toBe(0);
    expect(stdout).toBe(file.text);
    const ticks = journal.filter((t) => t.source === 'repb').length;
    expect(stderr).toMatch(
      new RegExp(`replay: ${ticks} ticks written from 1 source\\(s\\) \\(repb\\) in [\\d.]+ s to stdout\\n`),
    );
    expect(stdout).not.toContain('ticks written');
  });

  it('filters by source, symbol, time range and seq range give exactly the expected subsets', async () => {
    const all = journal.map(rowOf);
    const times = all.map((t) => t.time).sort((a, b) => a - b);
    const from = times[Math.floor(times.length / 4)] as number;
    const to = times[Math.floor((3 * times.length) / 4)] as number;
    const cases: [string[], (t: Row) => boolean][] = [
      [['--source', 'repa'], (t) => t.source === 'repa'],
      [['--symbol', 'SYN002,SYN003'], (t) => t.symbol === 'SYN002' || t.symbol === 'SYN003'],
      // ISO for one end, epoch ms for the other; --from inclusive, --to exclusive.
      [['--from', new Date(from).toISOString(), '--to', String(to)], (t) => t.time >= from && t.time < to],
      [
        ['--source', 'repa', '--from-seq', '100', '--to-seq', '250'],
        (t) => t.source === 'repa' && t.seq >= 100 && t.seq <= 250,
      ],
      [
        ['--source', 'repb,repa', '--symbol', 'SYN001', '--from', String(from)],
        (t) => t.symbol === 'SYN001' && t.time >= from,
      ],
      [['--source', 'nobody'], () => false],
    ];
    for (const [args, keep] of cases) {
      const r = await replay(args);
      expect(r.code, r.output).toBe(0);
      const want = all.filter(keep);
      expect(want.length === 0 || want.length < all.length, args.join(' ')).toBe(true);
      expect(perSource(parseJsonl(r.text)), args.join(' ')).toEqual(perSource(want));
    }
    const seqs = await replay(['--source', 'repa', '--from-seq', '100', '--to-seq', '250']);
    expect(parseJsonl(seqs.text).map((t) => t.seq)).toEqual(Array.from({ length: 151 }, (_, i) => 100 + i));
  });

  it('csv has the header and the same rows as jsonl', async () => {
    const [csv, jsonl] = await Promise.all([replay(['--format', 'csv']), replay([])]);
    expect(csv.code, csv.output).toBe(0);
    const [header, ...lines] = csv.text.trimEnd().split('\n');
    expect(header).toBe(COLUMNS);
    const rows = lines.map((line) => {
      const v = line.split(',');
      return Object.fromEntries(
        COLUMNS.split(',').map((k, i) => [k, k === 'source' || k === 'symbol' ? v[i] : Number(v[i])]),
      ) as unknown as Row;
    });
    // Sources are interleaved as their partitions are read (documented), which differs between
    // two runs: compare in (source, seq) order.
    const bySourceSeq = (a: Row, b: Row) =>
      a.source === b.source ? a.seq - b.seq : a.source < b.source ? -1 : 1;
    expect(rows.sort(bySourceSeq)).toEqual(parseJsonl(jsonl.text).sort(bySourceSeq));
  });

  it('ends at the journal as it was at its start while a source keeps streaming: each source a seq prefix', async () => {
    const live = startCli([
      'sim',
      '--synthetic',
      '--symbols',
      '2',
      '--rate',
      '500',
      '--duration',
      '60',
      '--source',
      'live',
      '--port',
      String(serve.ingressPort),
    ]);
    try {
      // Wait until the live source is in the journal, then replay while it keeps coming.
      const started = await waitFor(async () => {
        const r = await runCli(['replay', '--ticks-topic', n.ticksTopic, '--source', 'live'], {}, 30_000);
        return r.code === 0 && /replay: [1-9]\d* ticks written/.test(r.output);
      }, 60_000);
      expect(started, live.output()).toBe(true);
      const r = await replay(['--source', 'live']);
      expect(r.code, r.output).toBe(0);
      const seqs = parseJsonl(r.text).map((t) => t.seq);
      expect(seqs.length).toBeGreaterThan(0);
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    } finally {
      live.child.kill('SIGTERM');
      await live.exited;
    }
  });

  it('stops with exit 0 when the reader of stdout goes away (replay | head)', async () => {
    const p = startCli(['replay', '--ticks-topic', n.ticksTopic]);
    p.child.stdout.once('data', () => p.child.stdout.destroy());
    expect(await p.exited, p.output()).toBe(0);
    expect(p.output()).toContain('to stdout (the reader closed it early)');
  });

  it('bad flags exit 2 and name the flag', async () => {
    const cases: [string[], string][] = [
      [['--from', '2024-03-02T00:00:00Z', '--to', '2024-03-01T00:00:00Z'], '--to'],
      [['--from', 'yesterday'], '--from'],
      [['--from-seq', '10'], '--from-seq'],
      [['--source', 'repa,repb', '--to-seq', '10'], '--to-seq'],
      [['--source', 'repa', '--from-seq', '20', '--to-seq', '10'], '--to-seq'],
      [['--format', 'xml'], '--format'],
      [['--target', 'kafka'], '--target'],
    ];
    for (const [args, flag] of cases) {
      const r = await runCli(['replay', '--ticks-topic', n.ticksTopic, ...args], {}, 30_000);
      expect(r.code, r.output).toBe(2);
      expect(r.output).toContain('ERR_USAGE');
      expect(r.output).toContain(flag);
    }
  });

  it('an unreachable broker is ERR_KAFKA with a message saying so', async () => {
    const [port] = await freePorts(1);
    const r = await runCli(
      ['replay', '--kafka-brokers', `127.0.0.1:${port}`, '--ticks-topic', n.ticksTopic],
      {},
      60_000,
    );
    expect(r.code, r.output).toBe(1);
    expect(r.output).toMatch(/ERR_KAFKA: cannot reach Kafka at 127\.0\.0\.1:\d+/);
  });
});
