/**
 * `tickstream verify`: the auditor. Reads the whole tick journal (`read_committed`) and the
 * Postgres `ticks` table and reports, per source: ticks, first/last seq, holes and duplicates in
 * the journal, and Postgres rows missing from or extra to the journal (and duplicated there).
 * Exit code 0 only when every source is whole: seqs 1..last each exactly once in the journal,
 * in order, and Postgres equal to it.
 *
 * Real journals are long and retention deletes their start: a source is audited from its first
 * retained record, and the seqs before it are reported as removed by retention, apart from
 * holes. Seqs are held as ranges (seq-ranges.ts) and Postgres is compared as ranges computed by
 * Postgres itself, so memory follows the number of holes, not of ticks.
 *
 *   tickstream verify [--source ID] [--no-postgres] [--wait-postgres SECONDS] [--json] [config flags]
 * `--wait-postgres` re-checks Postgres until it has caught up with the journal or the time is
 * up (the loader trails the journal by design).
 */
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { type CommandSpec, parseCommand } from '../bridge/args.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { decodeTickRecord } from '../codecs/flat-record.js';
import { readJournal } from '../sinks/kafka/reader.js';
import { quoteIdent } from '../sinks/postgres/migrate.js';
import { type Config, configKeys, kafkaSecurityOf, loadConfig } from './config.js';
import { SeqRanges } from './seq-ranges.js';

export interface SourceReport {
  source: string;
  journalTicks: number;
  firstSeq: number | null;
  lastSeq: number | null;
  /**
   * Seqs before the first retained one, in a partition whose start Kafka retention deleted:
   * gone with the log's start, not holes. The audit starts at the first retained record.
   */
  removedByRetention: number;
  holes: number;
  /** First few missing seq ranges, "a-b". */
  holeRanges: string[];
  duplicates: number;
  outOfOrder: number;
  postgresRows: number | null;
  postgresDuplicates: number | null;
  missingFromPostgres: number | null;
  extraInPostgres: number | null;
  /** Rows for seqs before the journal's first retained one (the journal's retention is shorter). */
  olderThanJournalInPostgres: number | null;
  /** Journal seqs the loader set aside in ticks_parked instead of loading (not counted missing). */
  parkedInPostgres: number | null;
  ok: boolean;
}

interface JournalSource {
  seqs: SeqRanges;
  partition: number;
}

export async function readJournalSeqs(
  config: Config,
  only?: string,
): Promise<{ sources: Map<string, JournalSource>; logStart: Map<number, number> }> {
  const sources = new Map<string, JournalSource>();
  const logStart = new Map<number, number>();
  await readJournal({
    brokers: config.kafkaBrokers,
    security: kafkaSecurityOf(config),
    topic: config.ticksTopic,
    onPartitions: (partitions) => {
      for (const p of partitions) logStart.set(p.partition, p.low);
    },
    onMessages: (messages) => {
      for (const m of messages) {
        if (only && m.key !== only) continue;
        const batch = decodeTickRecord(m.value);
        let s = sources.get(batch.source);
        if (!s) {
          s = { seqs: new SeqRanges(), partition: m.partition };
          sources.set(batch.source, s);
        }
        for (let i = 0; i < batch.length; i++) s.seqs.add(batch.seq[i] as number);
      }
    },
  });
  return { sources, logStart };
}

/** Distinct seqs of `sql` (one `seq` column) as ranges, computed by Postgres: islands of runs. */
/** What Postgres holds of one source: rows, distinct seqs, and the seqs as ranges. */
interface PostgresSeqs {
  rows: number;
  distinct: number;
  seqs: SeqRanges;
  parked: SeqRanges;
}

/** Rows per source in Postgres, loaded or parked: what the wait for the loader watches. */
async function postgresCounts(
  db: pg.Client,
  schema: string,
  hasParked: boolean,
  source: string | undefined,
): Promise<Map<string, number>> {
  const s = quoteIdent(schema);
  const where = source === undefined ? '' : 'where source = $1';
  const parked = hasParked
    ? ` union all select source, sum(cardinality(seqs)) as n from ${s}.ticks_parked ${where} group by source`
    : '';
  const { rows } = await db.query<{ source: string; n: string }>(
    `select source, sum(n)::text as n from (select source, count(*) as n from ${s}.ticks ${where} group by source${parked}) c group by source`,
    source === undefined ? [] : [source],
  );
  return new Map(rows.map((r) => [r.source, Number(r.n)]));
}

/**
 * Every source's seqs in Postgres in one streamed pass (COPY TO, no sort: ticks has no index by
 * source since migration 005, and sorting millions of rows in SQL spills to disk); SeqRanges
 * takes them in any order and counts repeats. `source` narrows it to one.
 */
async function postgresSeqs(
  db: pg.Client,
  schema: string,
  hasParked: boolean,
  source: string | undefined,
): Promise<Map<string, PostgresSeqs>> {
  const s = quoteIdent(schema);
  const out = new Map<string, PostgresSeqs>();
  const entry = (src: string): PostgresSeqs => {
    let e = out.get(src);
    if (!e) {
      e = { rows: 0, distinct: 0, seqs: new SeqRanges(), parked: new SeqRanges() };
      out.set(src, e);
    }
    return e;
  };
  // The source travels as hex (COPY's text escapes never meet it); one decode per source.
  const where = source === undefined ? '' : `where source = ${quoteLiteral(source)}`;
  const bySourceHex = new Map<string, PostgresSeqs>();
  let rest = '';
  const onLine = (line: string) => {
    const tab = line.indexOf('\t');
    const hex = line.slice(0, tab);
    let e = bySourceHex.get(hex);
    if (!e) {
      e = entry(Buffer.from(hex, 'hex').toString('utf8'));
      bySourceHex.set(hex, e);
    }
    e.seqs.add(Number(line.slice(tab + 1)));
  };
  const stream = db.query(
    copyTo(`copy (select encode(convert_to(source, 'UTF8'), 'hex'), seq from ${s}.ticks ${where}) to stdout`),
  );
  stream.setEncoding('utf8');
  for await (const chunk of stream as AsyncIterable<string>) {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  }
  if (rest) onLine(rest);
  for (const e of out.values()) {
    e.rows = e.seqs.total;
    e.distinct = e.seqs.total - e.seqs.duplicates;
  }
  if (hasParked) {
    const { rows } = await db.query<{ source: string; lo: string; hi: string }>(
      `select source, min(seq)::text as lo, max(seq)::text as hi from (select source, seq, seq - row_number() over (partition by source order by seq) as g from (select distinct source, unnest(seqs) as seq from ${s}.ticks_parked ${where}) d) x group by source, g order by source, min(seq)`,
    );
    for (const r of rows) entry(r.source).parked.push(Number(r.lo), Number(r.hi));
  }
  return out;
}

/** A string as an SQL literal (COPY takes no parameters). */
function quoteLiteral(v: string): string {
  return `'${v.replaceAll("'", "''")}'`;
}

interface PostgresSide {
  rows: number;
  duplicates: number;
  missing: number;
  extra: number;
  older: number;
  parked: number;
}

function postgresCompare(
  pgSeqs: PostgresSeqs | undefined,
  journal: SeqRanges,
  auditFrom: number,
): PostgresSide {
  const inPg = pgSeqs?.seqs ?? new SeqRanges();
  const both = journal.intersect(inPg).size();
  const parkedOnly = journal.intersect(pgSeqs?.parked ?? new SeqRanges());
  const parked = parkedOnly.size() - parkedOnly.intersect(inPg).size();
  const older = auditFrom > 1 ? inPg.intersect(SeqRanges.of(1, auditFrom - 1)).size() : 0;
  return {
    rows: pgSeqs?.rows ?? 0,
    duplicates: (pgSeqs?.rows ?? 0) - (pgSeqs?.distinct ?? 0),
    missing: journal.size() - both - parked,
    extra: inPg.size() - both - older,
    older,
    parked,
  };
}

export async function verify(
  config: Config,
  options: { source?: string; postgres: boolean; waitPostgresS: number },
): Promise<SourceReport[]> {
  const journal = await readJournalSeqs(config, options.source);
  let db: pg.Client | null = null;
  let hasParked = false;
  if (options.postgres) {
    db = new pg.Client({ connectionString: config.postgresUrl });
    await db.connect();
    const s = quoteIdent(config.postgresSchema);
    const { rows: tables } = await db.query<{ ticks: string | null; parked: string | null }>(
      'select to_regclass($1)::text as ticks, to_regclass($2)::text as parked',
      [`${s}.ticks`, `${s}.ticks_parked`],
    );
    if (!tables[0]?.ticks) {
      await db.end();
      throw new TickstreamError(
        ErrorCode.POSTGRES,
        `Postgres schema ${config.postgresSchema} has no ticks table: no loader ever ran against it. Check --postgres-schema, or use --no-postgres`,
      );
    }
    hasParked = Boolean(tables[0]?.parked);
  }
  // Per source: its journal seqs and where the audit starts (seqs before the first retained one
  // went with the log's start when retention moved it).
  const audit = (source: string) => {
    const j = journal.sources.get(source);
    const seqs = j?.seqs ?? new SeqRanges();
    const first = seqs.min;
    const retained = j !== undefined && (journal.logStart.get(j.partition) ?? 0) > 0;
    return {
      seqs,
      first,
      removedByRetention: retained && first !== null ? first - 1 : 0,
      auditFrom: first === null ? 1 : retained ? first : 1,
    };
  };
  try {
    let inPg = new Map<string, PostgresSeqs>();
    if (db) {
      const end = Date.now() + options.waitPostgresS * 1000;
      // While the loader catches up only rows are counted (one cheap pass); the seqs are
      // compared once, when the counts say it is all there or the wait is over.
      for (;;) {
        const loaded = await postgresCounts(db, config.postgresSchema, hasParked, options.source);
        const behind = [...journal.sources].some(([source, j]) => (loaded.get(source) ?? 0) < j.seqs.size());
        if (!behind || Date.now() >= end) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      inPg = await postgresSeqs(db, config.postgresSchema, hasParked, options.source);
    }
    const reports: SourceReport[] = [];
    for (const source of [...new Set([...journal.sources.keys(), ...inPg.keys()])].sort()) {
      const { seqs, first, removedByRetention, auditFrom } = audit(source);
      const h = seqs.holes(auditFrom);
      const p = db ? postgresCompare(inPg.get(source), seqs, auditFrom) : null;
      const ok =
        seqs.total > 0 &&
        h.count === 0 &&
        seqs.duplicates === 0 &&
        seqs.outOfOrder === 0 &&
        (p === null || (p.missing === 0 && p.extra === 0 && p.duplicates === 0 && p.parked === 0));
      reports.push({
        source,
        journalTicks: seqs.total,
        firstSeq: first,
        lastSeq: seqs.max,
        removedByRetention,
        holes: h.count,
        holeRanges: h.ranges,
        duplicates: seqs.duplicates,
        outOfOrder: seqs.outOfOrder,
        postgresRows: p?.rows ?? null,
        postgresDuplicates: p?.duplicates ?? null,
        missingFromPostgres: p?.missing ?? null,
        extraInPostgres: p?.extra ?? null,
        olderThanJournalInPostgres: p?.older ?? null,
        parkedInPostgres: p?.parked ?? null,
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
      '| source | ticks | seqs | removed by retention | holes | dup | out of order | pg rows | pg missing | pg parked | pg extra | pg older than journal | pg dup | |',
    );
    out('|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
    const dash = (v: number | null) => (v === null ? '-' : String(v));
    for (const r of reports)
      out(
        `| ${r.source} | ${r.journalTicks} | ${r.firstSeq ?? '-'}..${r.lastSeq ?? '-'} | ${r.removedByRetention} | ${r.holes}${r.holeRanges.length ? ` (${r.holeRanges.join(', ')})` : ''} | ${r.duplicates} | ${r.outOfOrder} | ${dash(r.postgresRows)} | ${dash(r.missingFromPostgres)} | ${dash(r.parkedInPostgres)} | ${dash(r.extraInPostgres)} | ${dash(r.olderThanJournalInPostgres)} | ${dash(r.postgresDuplicates)} | ${r.ok ? 'ok' : 'WRONG'} |`,
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
