/**
 * `npm run bench`: micro benchmarks (tinybench), each sink against its native tool in the same
 * run, and the end-to-end load sweep; prints a table, writes bench/results/<time>.json,
 * bench/results/latest.{json,md,svg}.
 *
 *   node dist/bench/run.js [--only micro,sinks,e2e,replay] [--quick] [--compare [FILE]] [--threshold 0.2]
 *                          [--save-baseline]
 * `--compare` runs nothing: it checks bench/results/latest.json against the saved baseline
 * (bench/baseline.json) and exits 1 when a figure slowed down past the threshold.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { type CommandSpec, parseCommand } from '../bridge/args.js';
import {
  type BenchRun,
  type Comparison,
  chart,
  type MicroResult,
  machineInfo,
  markdown,
  regressions,
} from './report.js';
import { evaluateTargets, targetLines } from './targets.js';
import type { MicroBench } from './types.js';

const here = new URL('.', import.meta.url);
/** Results live in the source tree's bench/results, also when running from dist/bench. */
const resultsDir = fileURLToPath(
  new URL(here.pathname.includes('/dist/') ? '../../bench/results/' : './results/', here),
);
const baselineFile = fileURLToPath(new URL('../baseline.json', `file://${resultsDir}`));

/** Micro benchmark modules, mirroring the source tree. */
const microModules = [
  './codecs/frame.js',
  './codecs/files.js',
  './codecs/flat-record.js',
  './codecs/pg-copy.js',
  './codecs/live-views.js',
  './pipeline/decode-pool.js',
  './client/decode.js',
];
/** Sink comparisons: each exports `compare(options): Promise<Comparison[]>`. */
const sinkModules = [
  './sinks/redis.js',
  './sinks/postgres.js',
  './sinks/kafka.js',
  './sinks/ws.js',
  './sinks/history.js',
];

const log = (line: string) => process.stderr.write(`${line}\n`);

async function runMicro(quick: boolean, notes: string[]): Promise<MicroResult[]> {
  const benches: MicroBench[] = [];
  for (const path of microModules) {
    try {
      const mod = (await import(new URL(path, here).href)) as { benches: () => Promise<MicroBench[]> };
      benches.push(...(await mod.benches()));
    } catch (err) {
      notes.push(`micro ${path} not run: ${(err as Error).message}`);
    }
  }
  const results: MicroResult[] = [];
  for (const b of benches) {
    await b.beforeAll?.();
    const bench = new Bench({ time: quick ? 300 : 1500, warmupTime: quick ? 100 : 300 });
    bench.add(b.name, b.fn);
    await bench.run();
    await b.afterAll?.();
    const r = bench.tasks[0]?.result;
    if (r?.state !== 'completed') {
      notes.push(`micro ${b.name}: ${r && 'error' in r ? String(r.error) : 'did not complete'}`);
      continue;
    }
    const ops = r.throughput.mean;
    results.push({
      group: b.group,
      name: b.name,
      ops_per_s: ops,
      ticks_per_s: ops * b.ticksPerOp,
      mean_us: r.latency.mean * 1000,
      rme_pct: r.latency.rme,
      samples: r.latency.samplesCount,
    });
    log(`micro  ${b.group}: ${b.name}: ${(ops * b.ticksPerOp).toFixed(0)} ticks/s`);
  }
  return results;
}

async function runSinks(quick: boolean, notes: string[]): Promise<Comparison[]> {
  const out: Comparison[] = [];
  for (const path of sinkModules) {
    try {
      const mod = (await import(new URL(path, here).href)) as {
        compare: (o: { quick: boolean }) => Promise<Comparison[]>;
      };
      for (const c of await mod.compare({ quick })) {
        out.push(c);
        log(
          `sinks  ${c.name}: ours ${c.ours.value.toFixed(0)} ${c.ours.unit}, native ${c.native.value.toFixed(0)} ${c.native.unit}, ratio ${c.ratio_to_native.toFixed(2)}`,
        );
      }
    } catch (err) {
      notes.push(`sinks ${path} not run: ${(err as Error).message}`);
    }
  }
  return out;
}

const BENCH_COMMAND = {
  name: 'bench',
  invocation: 'npm run bench --',
  summary:
    'The bench suite: micro benchmarks (tinybench), each sink against its native tool, and the end-to-end load sweep. Writes bench/results/latest.{json,md,svg}.',
  flags: {
    only: {
      type: 'string',
      default: 'micro,sinks,e2e,replay',
      description: 'parts to run, comma-separated',
    },
    quick: { type: 'boolean', description: 'short runs (a smoke test of the suite, not figures to quote)' },
    'save-baseline': { type: 'boolean', description: 'also save this run as bench/baseline.json' },
    compare: {
      type: 'boolean',
      description: 'compare a saved run (FILE, default latest.json) with the baseline; exit 1 on a slowdown',
    },
    threshold: {
      type: 'number',
      min: 0,
      default: 0.2,
      description: 'with --compare: the slowdown allowed (0.2 = 20 %)',
    },
  },
  positionals: {
    usage: '[FILE]',
    description: 'with --compare: the run to compare (default bench/results/latest.json)',
  },
  examples: ['npm run bench -- --only micro,sinks', 'npm run bench -- --compare --threshold 0.3'],
} as const satisfies CommandSpec;

async function main(argv: string[]): Promise<number> {
  const parsed = parseCommand(BENCH_COMMAND, argv);
  if (!parsed) return 0;
  const { flags } = parsed;
  const threshold = flags.threshold;
  mkdirSync(resultsDir, { recursive: true });

  if (flags.compare) {
    const file = parsed.positionals[0] ?? `${resultsDir}latest.json`;
    if (!existsSync(baselineFile)) {
      log(`no baseline at ${baselineFile}: run \`npm run bench -- --save-baseline\` first`);
      return 2;
    }
    const run = JSON.parse(readFileSync(file, 'utf8')) as BenchRun;
    const baseline = JSON.parse(readFileSync(baselineFile, 'utf8')) as BenchRun;
    const found = regressions(run, baseline, threshold);
    for (const f of found) log(`SLOWER  ${f}`);
    log(
      found.length
        ? `${found.length} regression(s) beyond ${threshold * 100}%`
        : `no regression beyond ${threshold * 100}% against ${baselineFile}`,
    );
    return found.length ? 1 : 0;
  }

  const only = new Set(flags.only.split(','));
  const { quick } = flags;
  const run: BenchRun = {
    started_at: new Date().toISOString(),
    machine: machineInfo(),
    micro: [],
    sinks: [],
    notes: [],
  };
  if (only.has('micro')) run.micro = await runMicro(quick, run.notes);
  if (only.has('sinks')) run.sinks = await runSinks(quick, run.notes);
  if (only.has('e2e')) {
    try {
      const { runE2e } = (await import(new URL('./e2e.js', here).href)) as {
        runE2e: (o: { quick: boolean }) => Promise<BenchRun['e2e']>;
      };
      const e2e = await runE2e({ quick });
      if (e2e) run.e2e = e2e;
    } catch (err) {
      run.notes.push(`e2e not run: ${(err as Error).message}`);
    }
  }
  if (only.has('replay')) {
    try {
      const { runReplayBench } = (await import(new URL('./pipeline/replay.js', here).href)) as {
        runReplayBench: (o: { quick: boolean; sinks: BenchRun['sinks'] }) => Promise<BenchRun['replay']>;
      };
      run.replay = await runReplayBench({ quick, sinks: run.sinks });
      for (const f of run.replay?.figures ?? [])
        log(
          `replay ${f.target}: ${f.ticks_per_s.toFixed(0)} ticks/s${f.live ? `, live ${f.live.ticks_per_s.toFixed(0)}` : ''}`,
        );
    } catch (err) {
      run.notes.push(`replay not run: ${(err as Error).message}`);
    }
  }
  run.targets = evaluateTargets(run, quick);
  const table = markdown(run);
  process.stdout.write(`${table}\n`);
  log(`\nissue 18 targets${quick ? ' (--quick: short levels, figures not to quote)' : ''}:`);
  for (const line of targetLines(run.targets)) log(`  ${line}`);
  const stamp = run.started_at.replace(/[:.]/g, '-');
  writeFileSync(`${resultsDir}${stamp}.json`, JSON.stringify(run, null, 2));
  writeFileSync(`${resultsDir}latest.json`, JSON.stringify(run, null, 2));
  writeFileSync(`${resultsDir}latest.md`, `${table}\n`);
  if (run.e2e) writeFileSync(`${resultsDir}latest.svg`, chart(run));
  if (flags['save-baseline']) writeFileSync(baselineFile, JSON.stringify(run, null, 2));
  log(`results: ${resultsDir}latest.json (and .md${run.e2e ? ', .svg' : ''})`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
