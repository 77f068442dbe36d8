// Reading the project's alert rules and the metric names their PromQL uses, without a YAML or
// PromQL library: alerts.yml is written in one fixed style (checked by promtool), and a metric
// name is whatever identifier is left once strings, label matchers, ranges, grouping clauses,
// function calls and keywords are taken out.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { repoRoot } from '../helpers/procs.js';

export const alertsFile = `${repoRoot}ops/prometheus/alerts.yml`;
export const alertTestsFile = `${repoRoot}ops/prometheus/alerts.test.yml`;

export interface AlertRule {
  alert: string;
  expr: string;
  /** The `for:` duration as written, or null when the rule fires at once. */
  for: string | null;
  severity: string | null;
  summary: string | null;
}

/** The rules of alerts.yml: `expr:` on one line or as a folded block (`expr: >`). */
export function readAlertRules(text = readFileSync(alertsFile, 'utf8')): AlertRule[] {
  return text
    .split(/^\s*- alert: /m)
    .slice(1)
    .map((chunk) => {
      const lines = chunk.split('\n');
      const alert = (lines[0] ?? '').trim();
      let expr = '';
      const i = lines.findIndex((l) => /^\s*expr:/.test(l));
      const first = lines[i]?.replace(/^\s*expr:\s*/, '') ?? '';
      if (first === '>' || first === '|') {
        const indent = (lines[i] ?? '').search(/\S/);
        for (const l of lines.slice(i + 1)) {
          if (l.trim() !== '' && l.search(/\S/) <= indent) break;
          expr += ` ${l.trim()}`;
        }
      } else expr = first;
      const field = (re: RegExp) => re.exec(chunk)?.[1] ?? null;
      return {
        alert,
        expr: expr.trim(),
        for: field(/^\s*for: (\S+)/m),
        severity: field(/severity: (\w+)/),
        summary: field(/summary: "(.*)"/),
      };
    });
}

const keywords = new Set([
  'and',
  'or',
  'unless',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'offset',
  'inf',
  'nan',
]);

/** Metric names a PromQL expression reads (Grafana's $__rate_interval and the like removed). */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\$\w+/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = bare.slice(m.index + m[0].length).trimStart();
    if (after.startsWith('(') || keywords.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names];
}

/** The metric families a /metrics text declares (`# TYPE name type`), with their types. */
export function metricFamilies(exposition: string): Map<string, string> {
  const families = new Map<string, string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) families.set(m[1]!, m[2]!);
  return families;
}

/**
 * Series that come from other scrapes, not from `serve`: `up` is written by Prometheus for every
 * target, node_filesystem_* by node_exporter (job "node" in prometheus.yml).
 */
export const externalMetrics: Record<string, string> = {
  up: 'Prometheus, per scrape target',
  node_filesystem_avail_bytes: 'node_exporter',
  node_filesystem_size_bytes: 'node_exporter',
};

/** Whether `name` is a family of `families` or one of a histogram's _bucket/_sum/_count series. */
export function exposes(families: Map<string, string>, name: string): boolean {
  if (families.has(name)) return true;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  return m !== null && ['histogram', 'summary'].includes(families.get(m[1]!) ?? '');
}

/** The path of a Debian binary (promtool, prometheus, chromium), or null when it is not installed. */
export function which(binary: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${binary}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}
