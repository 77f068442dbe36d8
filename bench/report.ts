/**
 * Bench results: one JSON document per run under bench/results/, a Markdown table for the
 * terminal and the README, an SVG chart of the end-to-end sweep, and the regression check
 * against a saved baseline.
 */
import { cpus, totalmem } from 'node:os';

export interface MicroResult {
  group: string;
  name: string;
  ops_per_s: number;
  ticks_per_s: number;
  mean_us: number;
  rme_pct: number;
  samples: number;
}

export interface Comparison {
  name: string;
  ours: { label: string; value: number; unit: string };
  native: { label: string; value: number; unit: string };
  ratio_to_native: number;
  settings: Record<string, string | number | boolean>;
  peers?: { label: string; value: number; unit: string; ratio_ours_to_peer: number }[];
  note?: string;
}

/** Latency from bridge receipt to one sink, in milliseconds. */
export interface E2eLatency {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** Observations: ticks (HDR in the websocket client) or batches (bridge histograms). */
  n: number;
  min?: number;
  /** How it was measured: an HDR histogram per tick, or a bucket estimate. */
  method?: string;
  /** Bucket estimates: observations past the top finite bucket (their quantiles show as the bound). */
  above_top_ms?: { bound: number; count: number };
  share_within_2ms?: number;
  share_within_20ms?: number;
}

/** One offered load of the end-to-end sweep. Fields marked optional are absent in older results. */
export interface E2eLevel {
  label?: string;
  source?: string;
  target_ticks_per_s: number | 'max';
  /** Ticks the sim captured and had ACKed. */
  sent: number;
  /** The sim's own time from connect to its last ACK. */
  duration_s?: number;
  achieved_ticks_per_s: number;
  zero_loss: boolean;
  /** expected, kafka, redis, ws, postgres. */
  counts: Record<string, number>;
  /** Seconds after the sim's last ACK until each sink held every tick (null: never). */
  drain_s?: Record<string, number | null>;
  /** Per sink: ticks ÷ (sending time + its catch-up after the last ACK): the rate it kept up with. */
  sink_ticks_per_s?: Record<string, number>;
  /** kafka, redis, ws_publish (bridge histograms), ws (client). */
  latency_ms: Record<string, E2eLatency>;
  /** CPU seconds over the sending window, per process (bridge, sim, ws_client, shared servers, machine). */
  cpu_s: Record<string, number>;
  /** The same as % of one core. */
  cpu_pct?: Record<string, number>;
  peak_rss_mb: Record<string, number>;
  bridge_vmhwm_mb?: number;
  /** Bridge utime+stime over the whole level (sending and every sink's catch-up) ÷ ticks, µs. */
  bridge_cpu_us_per_tick?: number;
  diagnostics?: Record<string, number>;
  notes?: string[];
}

/** A target of the e2e sweep alone (results before issue 18; now `BenchRun.targets`). */
export interface E2eTarget {
  name: string;
  target: string;
  measured: string;
  /** null: this run did not measure it. */
  met: boolean | null;
}

/** One row of issue 18's target table, from every part that ran (bench/targets.ts). */
export interface Target extends E2eTarget {
  /** The figure issue 18 started from, for the before/after table. */
  before: string;
}

/** `tickstream replay --speed max` to one target, beside the same sink's live figure. */
export interface ReplayFigure {
  target: string;
  ticks: number;
  /** Best round. */
  ticks_per_s: number;
  rounds: number[];
  live?: { label: string; ticks_per_s: number };
}

export interface BenchRun {
  started_at: string;
  machine: { cpus: number; cpu_model: string; memory_gb: number; node: string; platform: string };
  micro: MicroResult[];
  sinks: Comparison[];
  e2e?: {
    levels: E2eLevel[];
    /** The highest achieved rate of a level with zero loss in every sink. */
    e2e_ticks_per_s: number;
    /** The longest paced level's nominal duration (each level has its own duration_s). */
    duration_s_per_level: number;
    targets?: E2eTarget[];
    method?: Record<string, string>;
    notes?: string[];
  };
  replay?: { figures: ReplayFigure[]; method: Record<string, string> };
  /** Issue 18's targets, each met, missed or not measured by this run. */
  targets?: Target[];
  notes: string[];
}

export function machineInfo(): BenchRun['machine'] {
  return {
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model ?? 'unknown',
    memory_gb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

export const fmt = (n: number): string =>
  !Number.isFinite(n)
    ? String(n)
    : n >= 1e6
      ? `${(n / 1e6).toFixed(2)} M`
      : n >= 1e3
        ? `${(n / 1e3).toFixed(1)} k`
        : n.toFixed(n < 10 ? 2 : 0);

export function markdown(run: BenchRun): string {
  const lines: string[] = [];
  const m = run.machine;
  lines.push(
    `Machine: ${m.cpus} × ${m.cpu_model}, ${m.memory_gb} GiB, Node ${m.node}; run ${run.started_at}`,
    '',
  );
  if (run.micro.length) {
    lines.push('| micro benchmark | ticks/s | ops/s | mean | ±% |', '|---|---:|---:|---:|---:|');
    for (const r of run.micro) {
      lines.push(
        `| ${r.group}: ${r.name} | ${fmt(r.ticks_per_s)} | ${fmt(r.ops_per_s)} | ${r.mean_us.toFixed(1)} µs | ${r.rme_pct.toFixed(1)} |`,
      );
    }
    lines.push('');
  }
  if (run.sinks.length) {
    lines.push(
      '| sink | ours | native | ratio | peers (ours ÷ peer) | settings |',
      '|---|---:|---:|---:|---|---|',
    );
    for (const c of run.sinks) {
      const peers = (c.peers ?? [])
        .map((p) => `${p.label} ${fmt(p.value)} ${p.unit} (×${p.ratio_ours_to_peer.toFixed(2)})`)
        .join('; ');
      const settings = Object.entries(c.settings)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ');
      lines.push(
        `| ${c.name} | ${c.ours.label} ${fmt(c.ours.value)} ${c.ours.unit} | ${c.native.label} ${fmt(c.native.value)} ${c.native.unit} | **${c.ratio_to_native.toFixed(2)}** | ${peers} | ${settings} |`,
      );
    }
    lines.push('');
  }
  if (run.e2e) {
    lines.push(
      '| e2e load | achieved ticks/s | ticks (s) | zero loss | → Kafka ack p50/p99/p99.9/max (ms)⁴ | → Redis p50/p99/p99.9/max (ms)¹ | → ws client p50/p99/p99.9/max (ms)² | CPU % bridge / sim / ws client / machine³ | peak RSS bridge / sim / ws client |',
    );
    lines.push('|---|---:|---:|---|---|---|---|---|---|');
    const num = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(0));
    const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
    const lat = (l: E2eLevel, k: string) => {
      const x = l.latency_ms[k];
      if (!x) return '–';
      const max = x.above_top_ms ? `>${ms(x.above_top_ms.bound)}` : ms(x.max);
      return `${ms(x.p50)} / ${ms(x.p99)} / ${ms(x.p999)} / ${max}`;
    };
    const loss = (l: E2eLevel) => {
      if (l.zero_loss) {
        const late = Object.entries(l.drain_s ?? {})
          .filter(([, v]) => v !== null && v !== undefined && v > 2)
          .map(([k, v]) => `${k} +${v?.toFixed(0)} s`);
        return late.length ? `yes (complete: ${late.join(', ')})` : 'yes';
      }
      const expected = l.counts['expected'] ?? l.sent;
      const short = Object.entries(l.counts)
        .filter(([k, v]) => k !== 'expected' && v !== expected)
        .map(([k, v]) => `${k} ${v}`);
      return `**no**${short.length ? ` (${short.join(', ')} of ${expected})` : ''}`;
    };
    for (const l of run.e2e.levels) {
      const cpu = l.cpu_pct ?? {};
      lines.push(
        `| ${l.target_ticks_per_s === 'max' ? 'max' : `${fmt(l.target_ticks_per_s)}/s`} | ${fmt(l.achieved_ticks_per_s)} | ${fmt(l.sent)}${l.duration_s !== undefined ? ` (${l.duration_s.toFixed(1)} s)` : ''} | ${loss(l)} | ${l.latency_ms['kafka_ack'] ? lat(l, 'kafka_ack') : `${lat(l, 'kafka')}¹`} | ${lat(l, 'redis')} | ${lat(l, 'ws')} | ${l.cpu_pct ? `${num(cpu['bridge'])} / ${num(cpu['sim'])} / ${num(cpu['ws_client'])} / ${num(cpu['machine'])}` : `${(l.cpu_s['bridge'] ?? 0).toFixed(1)} s`} | ${num(l.peak_rss_mb['bridge'])} / ${num(l.peak_rss_mb['sim'])} / ${num(l.peak_rss_mb['ws_client'])} MB |`,
      );
    }
    lines.push(
      '',
      "¹ estimated from the bridge's Prometheus histogram buckets (delta over the level, one observation per batch); ² measured per tick by a separate websocket client process (HDR histogram); ³ % of one core over the sending window, machine = all cores (includes other users of the machine); ⁴ send → ACK per tick in the sim (HDR histogram): an upper bound of receipt → ACK, it adds the loopback hop both ways (¹ where a run has only the bucket estimate).",
      '',
      `Highest zero-loss load: **${fmt(run.e2e.e2e_ticks_per_s)} ticks/s**`,
      '',
    );
    // Results from before issue 18 kept their targets here.
    if (!run.targets && run.e2e.targets?.length) {
      lines.push('| target | goal | measured | |', '|---|---|---|---|');
      for (const t of run.e2e.targets)
        lines.push(
          `| ${t.name} | ${t.target} | ${t.measured} | ${t.met === null ? 'not measured' : t.met ? 'met' : '**missed**'} |`,
        );
      lines.push('');
    }
    for (const n of run.e2e.notes ?? []) lines.push(`- ${n}`);
    for (const l of run.e2e.levels)
      for (const n of l.notes ?? []) lines.push(`- e2e ${l.label ?? l.target_ticks_per_s}: ${n}`);
  }
  if (run.replay) {
    lines.push(
      '| replay --speed max to | ticks | ticks/s (best) | rounds | live sink, same run |',
      '|---|---:|---:|---|---|',
    );
    for (const f of run.replay.figures)
      lines.push(
        `| ${f.target} | ${fmt(f.ticks)} | ${fmt(f.ticks_per_s)} | ${f.rounds.map(fmt).join(', ')} | ${f.live ? `${f.live.label} ${fmt(f.live.ticks_per_s)} ticks/s` : '–'} |`,
      );
    lines.push('');
    for (const [k, v] of Object.entries(run.replay.method)) lines.push(`- replay ${k}: ${v}`);
    lines.push('');
  }
  if (run.targets?.length) {
    lines.push('| issue 18 target | goal | before (issue 18) | measured | status |', '|---|---|---|---|---|');
    for (const t of run.targets)
      lines.push(
        `| ${t.name} | ${t.target} | ${t.before} | ${t.measured} | ${t.met === null ? 'not measured' : t.met ? 'met' : '**MISSED**'} |`,
      );
    lines.push('');
  }
  for (const n of run.notes) lines.push(`- ${n}`);
  return lines.join('\n');
}

/**
 * A two-panel SVG: achieved throughput per offered load (red where a sink lost ticks), and p99
 * latency from bridge receipt to the websocket client, the Kafka ack and Redis (log scale: the
 * levels span microseconds to seconds).
 */
export function chart(run: BenchRun): string {
  const levels = run.e2e?.levels ?? [];
  const w = 820;
  const h = 320;
  const pad = 50;
  const panelW = (w - 3 * pad) / 2;
  const plotH = h - 2 * pad - 20;
  const base = h - pad;
  const label = (l: E2eLevel | undefined) =>
    l?.target_ticks_per_s === 'max' ? 'max' : `${fmt(Number(l?.target_ticks_per_s))}/s`;
  const parts: string[] = [];

  // Throughput.
  const tput = levels.map((l) => l.achieved_ticks_per_s);
  const top = Math.max(1e-9, ...tput.filter(Number.isFinite));
  const bw = panelW / Math.max(1, levels.length) - 8;
  parts.push(
    `<text x="${pad}" y="20" font-size="13" font-weight="bold">achieved ticks/s per offered load</text>`,
  );
  levels.forEach((l, i) => {
    const v = tput[i] ?? 0;
    const bh = Number.isFinite(v) ? (plotH * v) / top : 0;
    const x = pad + i * (bw + 8);
    parts.push(
      `<rect x="${x}" y="${base - bh}" width="${bw}" height="${bh}" fill="${l.zero_loss ? '#4878d0' : '#d65f5f'}"/>`,
      `<text x="${x + bw / 2}" y="${base - bh - 4}" font-size="10" text-anchor="middle">${fmt(v)}</text>`,
      `<text x="${x + bw / 2}" y="${base + 14}" font-size="10" text-anchor="middle">${label(l)}</text>`,
    );
  });
  parts.push(
    `<line x1="${pad}" y1="${base}" x2="${pad + panelW}" y2="${base}" stroke="#333"/>`,
    `<text x="${pad}" y="${base + 28}" font-size="10" fill="#d65f5f">red: a sink lost ticks</text>`,
  );

  // p99 latency, log scale from 0.01 ms.
  const series = [
    { key: 'ws', name: 'ws client', color: '#ee854a' },
    { key: 'kafka', name: 'Kafka ack', color: '#6acc64' },
    { key: 'redis', name: 'Redis*', color: '#956cb4' },
  ];
  const x0 = 2 * pad + panelW;
  // Kafka: per tick from the sim where the run has it, else the bucket estimate.
  const p99 = (l: E2eLevel, k: string) =>
    (k === 'kafka' ? (l.latency_ms['kafka_ack'] ?? l.latency_ms[k]) : l.latency_ms[k])?.p99 ?? Number.NaN;
  const all = levels.flatMap((l) => series.map((s) => p99(l, s.key))).filter((v) => v > 0);
  const lo = 0.01;
  const hi = Math.max(1, ...all);
  const y = (v: number) => (v <= lo ? 0 : (plotH * Math.log10(v / lo)) / Math.log10(hi / lo));
  const gw = panelW / Math.max(1, levels.length);
  const sw = (gw - 10) / series.length;
  parts.push(
    `<text x="${x0}" y="20" font-size="13" font-weight="bold">p99 from bridge receipt (ms, log scale)</text>`,
  );
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    parts.push(
      `<line x1="${x0}" y1="${base - y(d)}" x2="${x0 + panelW}" y2="${base - y(d)}" stroke="#ddd"/>`,
      `<text x="${x0 - 4}" y="${base - y(d) + 3}" font-size="9" text-anchor="end">${d >= 1 ? d.toFixed(0) : d}</text>`,
    );
  }
  levels.forEach((l, i) => {
    series.forEach((s, j) => {
      const v = p99(l, s.key);
      if (!Number.isFinite(v)) return;
      const bh = y(v);
      const x = x0 + i * gw + j * sw;
      parts.push(
        `<rect x="${x}" y="${base - bh}" width="${sw - 1}" height="${bh}" fill="${s.color}"/>`,
        `<text x="${x + sw / 2}" y="${base - bh - 3}" font-size="8" text-anchor="middle">${v >= 10 ? v.toFixed(0) : v.toFixed(1)}</text>`,
      );
    });
    parts.push(
      `<text x="${x0 + i * gw + (gw - 10) / 2}" y="${base + 14}" font-size="10" text-anchor="middle">${label(l)}</text>`,
    );
  });
  parts.push(`<line x1="${x0}" y1="${base}" x2="${x0 + panelW}" y2="${base}" stroke="#333"/>`);
  series.forEach((s, j) => {
    parts.push(
      `<rect x="${x0 + j * 90}" y="${base + 22}" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${x0 + j * 90 + 14}" y="${base + 31}" font-size="10">${s.name}</text>`,
    );
  });

  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    ...parts,
    `<text x="${pad}" y="${h - 6}" font-size="10">${run.machine.cpus} cores, Node ${run.machine.node}, ${run.started_at}; Kafka ack: send → ACK per tick in the sim; * estimated from the bridge's histogram buckets; ws client measured per tick</text>`,
    '</svg>',
  ].join('\n');
}

/** Flags every figure that got slower than the baseline by more than `threshold` (0.2 = 20%). */
export function regressions(run: BenchRun, baseline: BenchRun, threshold: number): string[] {
  const found: string[] = [];
  const base = new Map(baseline.micro.map((r) => [`${r.group}: ${r.name}`, r.ticks_per_s]));
  for (const r of run.micro) {
    const b = base.get(`${r.group}: ${r.name}`);
    if (b && r.ticks_per_s < b * (1 - threshold)) {
      found.push(
        `${r.group}: ${r.name}: ${fmt(r.ticks_per_s)} ticks/s vs baseline ${fmt(b)} (${((r.ticks_per_s / b - 1) * 100).toFixed(0)}%)`,
      );
    }
  }
  const sinks = new Map(baseline.sinks.map((c) => [c.name, c.ratio_to_native]));
  for (const c of run.sinks) {
    const b = sinks.get(c.name);
    if (b && c.ratio_to_native < b * (1 - threshold)) {
      found.push(`${c.name}: ratio to native ${c.ratio_to_native.toFixed(2)} vs baseline ${b.toFixed(2)}`);
    }
  }
  if (run.e2e && baseline.e2e && run.e2e.e2e_ticks_per_s < baseline.e2e.e2e_ticks_per_s * (1 - threshold)) {
    found.push(
      `e2e: ${fmt(run.e2e.e2e_ticks_per_s)} ticks/s vs baseline ${fmt(baseline.e2e.e2e_ticks_per_s)}`,
    );
  }
  return found;
}
