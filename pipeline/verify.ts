/**
 * `tickstream verify`: the auditor. Reads the whole tick journal (`read_committed`) and the
 * Postgres `ticks` table and reports, per source: ticks, first/last seq, holes and duplicates in
 * the journal, and Postgres rows missing from or extra to the journal (and duplicated there).
 * Exit code 0 only when every source is whole: seqs 1..last each exactly once in the journal,
 * in order, and Postgres equal to it.
 *
 *   tickstream verify [--source ID] [--no-postgres] [--wait-postgres SECONDS] [--json] [config flags]
 * `--wait-postgres` re-checks Postgres until it has caught up with the journal or the time is
 * up (the loader trails the journal by design).
 */
import pg from 'pg';
import { type CommandSpec, parseCommand } from '../bridge/args.js';
import { decodeTickRecord } from '../codecs/flat-record.js';
import { readJournal } from '../sinks/kafka/reader.js';
import { quoteIdent } from '../sinks/postgres/migrate.js';
import { type Config, configKeys, loadConfig } from './config.js';

/** Seqs seen per source, as a growable count array indexed by seq. */
class SeqCounts {
  counts = new Uint8Array(1024);
  max = 0;
  total = 0;
  outOfOrder = 0;
  #last = 0;

  add(seq: number): void {
    if (seq >= this.counts.length) {
      const grown = new Uint8Array(Math.max(seq + 1, this.counts.length * 2));
      grown.set(this.counts);
      this.counts = grown;
    }
    if (seq <= this.#last) this.outOfOrder++;
    this.#last = seq;
    const c = this.counts[seq] as number;
    if (c < 255) this.counts[seq] = c + 1;
    if (seq > this.max) this.max = seq;
    this.total++;
  }
}

export interface SourceReport {
  source: string;
  journalTicks: number;
  firstSeq: number | null;
  lastSeq: number | null;
  holes: number;
  /** First few missing seq ranges, "a-b". */
  holeRanges: string[];
  duplicates: number;
  outOfOrder: number;
  postgresRows: number | null;
  postgresDuplicates: number | null;
  missingFromPostgres: number | null;
  extraInPostgres: number | null;
  ok: boolean;
}

function holesOf(c: SeqCounts): {
  holes: number;
  ranges: string[];
  duplicates: number;
  first: number | null;
} {
  let holes = 0;
  let duplicates = 0;
  let first: number | null = null;
  const ranges: string[] = [];
  let start = 0;
  for (let s = 1; s <= c.max + 1; s++) {
    const n = s <= c.max ? (c.counts[s] as number) : 1;
    if (n > 0 && first === null && s <= c.max) first = s;
    if (n > 1) duplicates += n - 1;
    if (n === 0 && start === 0) start = s;
    if (n > 0 && start !== 0) {
      holes += s - start;
      if (ranges.length < 5) ranges.push(start === s - 1 ? `${start}` : `${start}-${s - 1}`);
      start = 0;
    }
  }
  return { holes, ranges, duplicates, first };
}

export async function readJournalSeqs(config: Config, only?: string): Promise<Map<string, SeqCounts>> {
  const bySource = new Map<string, SeqCounts>();
  await readJournal({
    brokers: config.kafkaBrokers,
    topic: config.ticksTopic,
    onMessages: (messages) => {
      for (const m of messages) {
        if (only && m.key !== only) continue;
        const batch = decodeTickRecord(m.value);
        let c = bySource.get(batch.source);
        if (!c) {
          c = new SeqCounts();
          bySource.set(batch.source, c);
        }
        for (let i = 0; i < batch.length; i++) c.add(batch.seq[i] as number);
      }
    },
  });
  return bySource;
}

async function postgresCompare(
  db: pg.Client,
  schema: string,
  source: string,
  journal: SeqCounts,
): Promise<{ rows: number; duplicates: number; missing: number; extra: number }> {
  const { rows } = await db.query<{ seq: string; n: string }>(
    `select seq::text, count(*)::text as n from ${quoteIdent(schema)}.ticks where source = $1 group by seq`,
    [source],
  );
  let total = 0;
  let duplicates = 0;
  let extra = 0;
  const seen = new Uint8Array(journal.max + 1);
  for (const r of rows) {
    const seq = Number(r.seq);
    const n = Number(r.n);
    total += n;
    duplicates += n - 1;
    if (seq > journal.max || (journal.counts[seq] as number) === 0) extra++;
    else seen[seq] = 1;
  }
  let missing = 0;
  for (let s = 1; s <= journal.max; s++) if ((journal.counts[s] as number) > 0 && seen[s] === 0) missing++;
  return { rows: total, duplicates, missing, extra };
}

export async function verify(
  config: Config,
  options: { source?: string; postgres: boolean; waitPostgresS: number },
): Promise<SourceReport[]> {
  const journal = await readJournalSeqs(config, options.source);
  let db: pg.Client | null = null;
  const pgSources = new Set<string>();
  if (options.postgres) {
    db = new pg.Client({ connectionString: config.postgresUrl });
    await db.connect();
    const { rows } = await db
      .query<{ source: string }>(`select distinct source from ${quoteIdent(config.postgresSchema)}.ticks`)
      .catch(() => ({ rows: [] as { source: string }[] }));
    for (const r of rows) if (!options.source || r.source === options.source) pgSources.add(r.source);
  }
  try {
    const reports: SourceReport[] = [];
    for (const source of [...new Set([...journal.keys(), ...pgSources])].sort()) {
      const c = journal.get(source) ?? new SeqCounts();
      const h = holesOf(c);
      let p: Awaited<ReturnType<typeof postgresCompare>> | null = null;
      if (db) {
        const end = Date.now() + options.waitPostgresS * 1000;
        for (;;) {
          p = await postgresCompare(db, config.postgresSchema, source, c);
          if (p.missing === 0 || Date.now() >= end) break;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      const ok =
        c.total > 0 &&
        h.holes === 0 &&
        h.duplicates === 0 &&
        c.outOfOrder === 0 &&
        h.first === 1 &&
        (p === null || (p.missing === 0 && p.extra === 0 && p.duplicates === 0));
      reports.push({
        source,
        journalTicks: c.total,
        firstSeq: h.first,
        lastSeq: c.total ? c.max : null,
        holes: h.holes,
        holeRanges: h.ranges,
        duplicates: h.duplicates,
        outOfOrder: c.outOfOrder,
        postgresRows: p?.rows ?? null,
        postgresDuplicates: p?.duplicates ?? null,
        missingFromPostgres: p?.missing ?? null,
        extraInPostgres: p?.extra ?? null,
        ok,
      });
    }
    return reports;
  } finally {
    await db?.end();
  }
}

export const VERIFY_COMMAND = {
  name: 'verify',
  summary:
    'Audit the journal (read_committed) and Postgres per source: holes, duplicates and out-of-order seqs, rows missing or extra. Exit 1 when a source is not whole.',
  flags: {
    source: { type: 'string', value: 'ID', description: 'audit one source only' },
    'no-postgres': { type: 'boolean', description: 'audit the journal only' },
    'wait-postgres': {
      type: 'number',
      min: 0,
      default: 0,
      value: 'S',
      description: 'wait up to S seconds for the loader to catch up before comparing',
    },
    json: { type: 'boolean', description: 'print the reports as JSON' },
  },
  configFlags: configKeys(),
  examples: ['tickstream verify --source terminal1 --wait-postgres 30'],
} as const satisfies CommandSpec;

export async function verifyMain(argv: string[]): Promise<number> {
  const parsed = parseCommand(VERIFY_COMMAND, argv);
  if (!parsed) return 0;
  const { source, 'no-postgres': noPg, 'wait-postgres': wait, json } = parsed.flags;
  const config = loadConfig({
    ...(parsed.configFile ? { file: parsed.configFile } : {}),
    flags: parsed.config,
  });
  const reports = await verify(config, {
    ...(source ? { source } : {}),
    postgres: !noPg,
    waitPostgresS: wait,
  });
  const out = (line: string) => process.stdout.write(`${line}\n`);
  if (json) out(JSON.stringify(reports, null, 2));
  else {
    out(
      `journal ${config.ticksTopic} on ${config.kafkaBrokers} (read_committed)${noPg ? '' : `, Postgres ${config.postgresSchema}.ticks`}`,
    );
    out(
      '| source | ticks | seqs | holes | dup | out of order | pg rows | pg missing | pg extra | pg dup | |',
    );
    out('|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|');
    const dash = (v: number | null) => (v === null ? '-' : String(v));
    for (const r of reports)
      out(
        `| ${r.source} | ${r.journalTicks} | ${r.firstSeq ?? '-'}..${r.lastSeq ?? '-'} | ${r.holes}${r.holeRanges.length ? ` (${r.holeRanges.join(', ')})` : ''} | ${r.duplicates} | ${r.outOfOrder} | ${dash(r.postgresRows)} | ${dash(r.missingFromPostgres)} | ${dash(r.extraInPostgres)} | ${dash(r.postgresDuplicates)} | ${r.ok ? 'ok' : 'WRONG'} |`,
      );
  }
  const bad = reports.filter((r) => !r.ok).length;
  out(
    reports.length === 0
      ? 'no ticks found: nothing to verify (check --ticks-topic and --kafka-brokers)'
      : bad
        ? `${bad} of ${reports.length} source(s) are not whole: see the rows marked WRONG`
        : `all ${reports.length} source(s) whole: every seq exactly once in the journal${noPg ? '' : ' and in Postgres'}`,
  );
  return reports.length === 0 || bad ? 1 : 0;
}
