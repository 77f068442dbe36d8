// Issue 18's target table (bench/targets.ts) judged from hand-made bench runs, in-process:
// which part or level decides each target, and "not measured" when it did not run.
import { describe, expect, it } from 'vitest';
import type { BenchRun, Comparison, E2eLevel } from '../../bench/report.js';
import { evaluateTargets, status } from '../../bench/targets.js';

const machine = { cpus: 2, cpu_model: 'test', memory_gb: 1, node: 'v20', platform: 'linux-x64' };

function level(target: number | 'max', over: Partial<E2eLevel> = {}): E2eLevel {
  const sent = target === 'max' ? 1_000_000 : target * 60;
  return {
    label: target === 'max' ? 'max' : `${target / 1000}k`,
    target_ticks_per_s: target,
    sent,
    duration_s: 60,
    achieved_ticks_per_s: target === 'max' ? 400_000 : target,
    zero_loss: true,
    counts: { expected: sent, kafka: sent, redis: sent, ws: sent, postgres: sent },
    drain_s: { kafka: 0, redis: 0.2, ws: 0.3, postgres: 3 },
    sink_ticks_per_s: {
      kafka: target === 'max' ? 400_000 : target,
      redis: target === 'max' ? 400_000 : target,
      ws: target === 'max' ? 400_000 : target,
      postgres: 1,
    },
    latency_ms: {},
    cpu_s: { sim: 1 },
    cpu_pct: { bridge: 8, sim: 5 },
    peak_rss_mb: { bridge: 150 },
    bridge_vmhwm_mb: 160,
    bridge_cpu_us_per_tick: 1.2,
    ...over,
  };
}

function comparison(name: string, ratio: number): Comparison {
  return {
    name,
    ours: { label: 'ours', value: ratio * 100, unit: 'x/s' },
    native: { label: 'native', value: 100, unit: 'x/s' },
    ratio_to_native: ratio,
    settings: {},
  };
}

const hdr = (p99: number, p999: number) => ({ p50: p99 / 2, p99, p999, max: p999, n: 150_000 });

function run(levels: E2eLevel[], sinks: Comparison[]): BenchRun {
  return {
    started_at: 'now',
    machine,
    micro: [],
    sinks,
    e2e: { levels, e2e_ticks_per_s: 300_000, duration_s_per_level: 60 },
    notes: [],
  };
}

const byName = (r: BenchRun) => Object.fromEntries(evaluateTargets(r, false).map((t) => [t.name, t]));

describe('issue 18 targets', () => {
  it('meets every target when every figure is within its goal', () => {
    const r = run(
      [
        level(10_000, { latency_ms: { ws: hdr(0.8, 2.5), kafka_ack: hdr(8, 9) } }),
        level(200_000),
        level(300_000),
        level('max'),
      ],
      [comparison('ws: fan-out', 0.93), comparison('postgres: binary COPY', 0.97)],
    );
    const targets = evaluateTargets(r, false);
    expect(targets).toHaveLength(8);
    expect(targets.map(status)).toEqual(Array(8).fill('met'));
  });

  it('misses what is past its goal: Postgres late, p99.9 too high, RSS at max, CPU per tick', () => {
    const t = byName(
      run(
        [
          level(10_000, {
            latency_ms: { ws: hdr(0.8, 3.5), kafka_ack: hdr(12, 20) },
            cpu_pct: { bridge: 11 },
          }),
          level(200_000, { bridge_cpu_us_per_tick: 1.6 }),
          level(300_000, { drain_s: { kafka: 0, redis: 0.2, ws: 0.3, postgres: 6 } }),
          level('max', { peak_rss_mb: { bridge: 120 }, bridge_vmhwm_mb: 201 }),
        ],
        [comparison('ws: fan-out', 0.89), comparison('postgres: binary COPY', 0.94)],
      ),
    );
    for (const target of Object.values(t)) expect(status(target), target.name).toBe('MISSED');
    expect(t['bridge RSS, any load including overload']?.measured).toMatch(/^201 MB .*highest at max/);
  });

  it("states the native tools' limits for the throughput target", () => {
    const pg = comparison('postgres: binary COPY', 1.1);
    pg.native = { label: 'psql \\copy (binary file)', value: 200_000, unit: 'rows/s' };
    const redis = comparison('redis: XADD ticks', 0.9);
    redis.native = { label: 'redis-benchmark 400k XADD/s', value: 400_000, unit: 'XADD/s' };
    const t = byName(run([level(300_000)], [pg, redis]));
    const measured = t['e2e, all four sinks complete, zero loss, 60 s sustained']?.measured;
    // 18M rows at 200k rows/s: 90 s, 30 s past the 60 s run; 300k of 400k XADD/s: 75 %.
    expect(measured).toMatch(/rows take it 90 s with nothing else running, 30 s after the last ACK/);
    expect(measured).toMatch(/redis-benchmark 400\.0k\/s on its one thread: 75 % of a core/);
  });

  it('says "not measured" for the parts and levels a run did not have', () => {
    const quick = run(
      [level(10_000, { latency_ms: {} }), level(300_000, { sent: 900_000, duration_s: 3 })],
      [],
    );
    const t = evaluateTargets(quick, true);
    expect(t.map(status)).toEqual([
      'not measured', // 300k offered for 3 s only
      'not measured', // no ws latency
      'not measured', // no per-tick ACK latency
      'not measured', // sinks did not run
      'not measured',
      'met', // RSS over the levels that ran
      'not measured', // no 200k level
      'met',
    ]);
    expect(t[0]?.measured).toMatch(/offered for 3 s, not 60/);
    const noE2e: BenchRun = { started_at: 'now', machine, micro: [], sinks: [], notes: [] };
    expect(evaluateTargets(noE2e, false).every((x) => x.met === null)).toBe(true);
  });
});
