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

export interface E2eLevel {
  target_ticks_per_s: number | 'max';
  sent: number;
  achieved_ticks_per_s: number;
  zero_loss: boolean;
  counts: Record<string, number>;
  latency_ms: Record<string, { p50: number; p99: number; p999: number; max: number; n: number }>;
  cpu_s: Record<string, number>;
  peak_rss_mb: Record<string, number>;
}

export interface BenchRun {
  started_at: string;
  machine: { cpus: number; cpu_model: string; memory_gb: number; node: string; platform: string };
  micro: MicroResult[];
  sinks: Comparison[];
  e2e?: { levels: E2eLevel[]; e2e_ticks_per_s: number; duration_s_per_level: number };
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
      '| e2e load | achieved ticks/s | zero loss | p50/p99/max → Kafka ack (ms) | p50/p99/max → Redis (ms) | p50/p99/max → ws client (ms) | bridge CPU s | bridge peak RSS |',
    );
    lines.push('|---|---:|---|---|---|---|---:|---:|');
    const lat = (l: E2eLevel, k: string) => {
      const x = l.latency_ms[k];
      return x ? `${x.p50.toFixed(2)} / ${x.p99.toFixed(2)} / ${x.max.toFixed(1)}` : '–';
    };
    for (const l of run.e2e.levels) {
      lines.push(
        `| ${l.target_ticks_per_s === 'max' ? 'max' : fmt(l.target_ticks_per_s)}/s | ${fmt(l.achieved_ticks_per_s)} | ${l.zero_loss ? 'yes' : '**no**'} | ${lat(l, 'kafka')} | ${lat(l, 'redis')} | ${lat(l, 'ws')} | ${(l.cpu_s['bridge'] ?? 0).toFixed(1)} | ${(l.peak_rss_mb['bridge'] ?? 0).toFixed(0)} MB |`,
      );
    }
    lines.push('', `Highest zero-loss load: **${fmt(run.e2e.e2e_ticks_per_s)} ticks/s**`, '');
  }
  for (const n of run.notes) lines.push(`- ${n}`);
  return lines.join('\n');
}

/** A two-panel SVG: achieved throughput and p99 latency per load level. */
export function chart(run: BenchRun): string {
  const levels = run.e2e?.levels ?? [];
  const w = 720;
  const h = 300;
  const pad = 50;
  const panelW = (w - 3 * pad) / 2;
  const bars = (values: number[], x0: number, color: string, unit: string, title: string) => {
    const max = Math.max(1e-9, ...values.filter(Number.isFinite));
    const bw = panelW / Math.max(1, values.length) - 8;
    const parts = [`<text x="${x0}" y="20" font-size="13" font-weight="bold">${title}</text>`];
    values.forEach((v, i) => {
      const bh = Number.isFinite(v) ? ((h - 2 * pad) * v) / max : 0;
      const x = x0 + i * (bw + 8);
      const label =
        levels[i]?.target_ticks_per_s === 'max' ? 'max' : fmt(Number(levels[i]?.target_ticks_per_s));
      parts.push(
        `<rect x="${x}" y="${h - pad - bh}" width="${bw}" height="${bh}" fill="${color}"/>`,
        `<text x="${x + bw / 2}" y="${h - pad - bh - 4}" font-size="10" text-anchor="middle">${fmt(v)}${unit}</text>`,
        `<text x="${x + bw / 2}" y="${h - pad + 14}" font-size="10" text-anchor="middle">${label}/s</text>`,
      );
    });
    parts.push(`<line x1="${x0}" y1="${h - pad}" x2="${x0 + panelW}" y2="${h - pad}" stroke="#333"/>`);
    return parts.join('\n');
  };
  const tput = levels.map((l) => l.achieved_ticks_per_s);
  const p99 = levels.map((l) => l.latency_ms['ws']?.p99 ?? l.latency_ms['kafka']?.p99 ?? Number.NaN);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    bars(tput, pad, '#4878d0', '', 'achieved ticks/s per offered load'),
    bars(p99, 2 * pad + panelW, '#ee854a', ' ms', 'p99 receipt → websocket client (ms)'),
    `<text x="${pad}" y="${h - 10}" font-size="10">${run.machine.cpus} cores, Node ${run.machine.node}, ${run.started_at}</text>`,
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
