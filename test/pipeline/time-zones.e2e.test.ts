// The time-zone policy end to end (docs/operations.md#server-time-zones), on the real services:
// a source without a rule is converted with the offset its terminal reports, also after that
// offset changes at a heartbeat; a source whose terminal contradicts its configured rule is
// refused, and nothing of it is stored. Kafka is read with the independent consumer.
import { existsSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BridgeClient, type SimSymbol } from '../../bridge/client.js';
import { type JournalTick, parseMt5ExportFile, readJournalTicks } from '../helpers/independent.js';
import {
  dataDir,
  isolatedNames,
  POSTGRES_DB,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startCli,
  startServe,
  waitFor,
} from '../helpers/procs.js';

const H = 3_600_000;
const mt5File = `${dataDir}EURUSD_mt5_export_derived_from_histdata.csv`;
const haveData = existsSync(mt5File);
if (!haveData) console.warn(`SKIPPED: ../shared/data tick file not found under ${dataDir}`);

interface SourceStatus {
  source: string;
  timeZoneRule: string | null;
  timeZoneRuleFrom: 'config' | 'terminal' | null;
  reportedOffset: string | null;
  clockProblem: string | null;
}

/** One symbol's history: `utc` instants stamped with the server offset of their phase. */
function history(utc: number[], offsetMs: (i: number) => number): SimSymbol {
  const n = utc.length;
  const bid = Float64Array.from(utc, (_, i) => 1.1 + i / 1e5);
  return {
    name: 'EURUSD',
    digits: 5,
    times: Float64Array.from(utc, (t, i) => t + offsetMs(i)),
    bid,
    ask: bid.map((b) => b + 1e-4),
    last: new Float64Array(n),
    volume: new Float64Array(n),
    volumeReal: new Float64Array(n),
    flags: new Uint32Array(n).fill(6),
  };
}

describe.skipIf(!haveData)('server time zones: no rule, a contradicting rule, an offset change', () => {
  const n = isolatedNames('tz');
  const db = new pg.Client({ connectionString: POSTGRES_DB });
  let serve: ServeProcess;
  const mt5 = haveData ? parseMt5ExportFile(mt5File, 2) : [];

  const status = async (source: string) => {
    const s = (await (await fetch(`http://127.0.0.1:${serve.httpPort}/status`)).json()) as {
      sources: SourceStatus[];
    };
    return s.sources.find((x) => x.source === source);
  };
  const metric = async (line: string) => {
    const text = await (await fetch(`http://127.0.0.1:${serve.httpPort}/metrics`)).text();
    const m = new RegExp(`^${line.replace(/[{}"]/g, '\\$&')} (\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  };

  beforeAll(async () => {
    await db.connect();
    // No defaultServerTimeZone: only `wrong` has a rule, and its terminal will contradict it.
    serve = await startServe(serveArgs(n, ['--source-time-zones', 'wrong=+3']));
  }, 60_000);

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
    await db.end();
  }, 60_000);

  it('a UTC+2 terminal without a rule: Kafka and Postgres hold the right UTC times; /status shows the reported offset', async () => {
    const sim = await runSim([
      '--file',
      mt5File,
      '--source',
      'plain',
      '--server-utc-offset',
      '2',
      '--port',
      String(serve.ingressPort),
    ]);
    expect(sim.code, sim.output).toBe(0);
    const journal = (await readJournalTicks(n.ticksTopic, { expected: mt5.length })).filter(
      (t) => t.source === 'plain',
    );
    expect(journal.length).toBe(mt5.length);
    const wrongInKafka = journal.findIndex((t, i) => t.utcMsc !== mt5[i]?.utcMsc);
    expect(wrongInKafka === -1 ? null : { got: journal[wrongInKafka], want: mt5[wrongInKafka] }).toBeNull();

    const rows = async () =>
      (
        await db.query(
          `select seq::float8 as seq, (extract(epoch from time) * 1000)::float8 as t
           from "${n.schema}".ticks where source = 'plain' order by seq`,
        )
      ).rows as { seq: number; t: number }[];
    expect(await waitFor(async () => (await rows()).length >= mt5.length, 60_000)).toBe(true);
    const stored = await rows();
    expect(stored.length).toBe(mt5.length);
    const wrongInPg = stored.findIndex((r, i) => Math.round(r.t) !== mt5[i]?.utcMsc);
    expect(wrongInPg === -1 ? null : { got: stored[wrongInPg], want: mt5[wrongInPg] }).toBeNull();

    expect(await status('plain')).toMatchObject({
      timeZoneRule: 'UTC+2',
      timeZoneRuleFrom: 'terminal',
      reportedOffset: 'UTC+2',
      clockProblem: null,
    });
    expect(serve.output()).toMatch(/source plain has no time zone rule/);
  }, 120_000);

  it('a terminal that contradicts its configured rule is refused with ERR_TIME_ZONE; none of its ticks is stored', async () => {
    const sim = startCli([
      'sim',
      '--file',
      mt5File,
      '--source',
      'wrong',
      '--server-utc-offset',
      '2',
      '--port',
      String(serve.ingressPort),
    ]);
    try {
      // The EA keeps its ticks and retries (with backoff) until the rule is fixed.
      expect(
        await waitFor(
          async () => (await metric('tickstream_rejected_frames_total{code="ERR_TIME_ZONE"}')) >= 2,
        ),
      ).toBe(true);
      expect(await status('wrong')).toMatchObject({
        timeZoneRule: '+3',
        timeZoneRuleFrom: 'config',
        reportedOffset: 'UTC+2',
      });
      expect((await status('wrong'))?.clockProblem).toMatch(
        /terminal reports server time UTC\+2 but the configured rule "\+3" gives UTC\+3.*refused/,
      );
      expect(await metric('tickstream_clock_mismatches_total{source="wrong"}')).toBeGreaterThanOrEqual(2);
      expect(serve.output()).toMatch(/source wrong is refused until sourceTimeZones/);
    } finally {
      sim.child.kill();
      await sim.exited;
    }
    const journal = await readJournalTicks(n.ticksTopic, { idleMs: 1000 });
    expect(journal.filter((t) => t.source === 'wrong').length).toBe(0);
    const { rows } = await db.query(
      `select count(*)::int as n from "${n.schema}".ticks where source = 'wrong'`,
    );
    expect(rows[0].n).toBe(0);
  }, 120_000);

  it('without a rule, an offset change at a heartbeat applies to the ticks after it, in the decode worker', async () => {
    // 200 ticks stamped at UTC+2, then the terminal's clock goes to UTC+3, then 200 more.
    const t0 = Date.UTC(2024, 2, 31, 0, 0);
    const utc = Array.from({ length: 400 }, (_, i) => t0 + i * 100 + (i >= 200 ? 3_600_000 : 0));
    const symbol = history(utc, (i) => (i < 200 ? 2 * H : 3 * H));
    const firstPhaseEnd = symbol.times[199] as number;
    let offset = 2 * H;
    let until = firstPhaseEnd;
    const client = new BridgeClient({
      bridges: [{ host: '127.0.0.1', port: serve.ingressPort }],
      source: 'dst',
      secret: '',
      symbols: [symbol],
      structSize: 60,
      terminalBuild: 4755,
      serverOffsetMs: () => offset,
      now: () => until,
      maxBufferedTicks: 10_000,
      pollIntervalMs: 10,
    });
    const run = client.run();
    try {
      expect(await waitFor(() => client.stats.lastAckedSeq >= 200)).toBe(true);
      offset = 3 * H;
      expect(await waitFor(async () => (await status('dst'))?.timeZoneRule === 'UTC+3')).toBe(true);
      until = Number.POSITIVE_INFINITY;
      await run;
    } finally {
      client.stop();
    }
    expect(client.stats.lastAckedSeq).toBe(400);
    const journal: JournalTick[] = (await readJournalTicks(n.ticksTopic, { idleMs: 1000 })).filter(
      (t) => t.source === 'dst',
    );
    expect(journal.map((t) => t.seq)).toEqual(utc.map((_, i) => i + 1));
    expect(journal.map((t) => t.utcMsc)).toEqual(utc);
    expect(await metric('tickstream_clock_offset_changes_total{source="dst"}')).toBe(1);
    expect(await status('dst')).toMatchObject({ timeZoneRuleFrom: 'terminal', reportedOffset: 'UTC+3' });
  }, 120_000);
});
