// The provisioned Grafana dashboard is what ops/grafana/dashboard.ts generates, has the shape
// Grafana's dashboard model needs, and every query is valid PromQL (parsed by promtool as a
// recording rule, with Grafana's variables replaced by values).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { datasource, tickstreamDashboard } from '../../ops/grafana/dashboard.js';
import { repoRoot } from '../helpers/procs.js';
import { which } from './promql.js';

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: { refId: string; expr: string; datasource: { uid: string } }[];
}

const provisioned = JSON.parse(
  readFileSync(`${repoRoot}ops/grafana/dashboards/tickstream.json`, 'utf8'),
) as ReturnType<typeof tickstreamDashboard>;
const panels = provisioned.panels as unknown as Panel[];
const queries = panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
const dir = mkdtempSync(join(tmpdir(), 'tickstream-dashboard-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ops/grafana', () => {
  it('the provisioned JSON is what the generator makes (regenerate: see ops/grafana/dashboard.ts)', () => {
    expect(provisioned).toEqual(tickstreamDashboard());
  });

  it('has a schema version, a uid and panels with unique ids, a data source, targets and a place on the grid', () => {
    expect(provisioned.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(provisioned.uid).toBe('tickstream');
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      const { h, w, x, y } = p.gridPos;
      expect([h, w, x, y].every(Number.isInteger), p.title).toBe(true);
      expect(x + w, p.title).toBeLessThanOrEqual(24);
      if (p.type === 'row') continue;
      expect(['timeseries', 'stat'], p.title).toContain(p.type);
      expect(p.datasource, p.title).toEqual(datasource);
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      const refIds = p.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, p.title).toBe(refIds.length);
      for (const t of p.targets!) expect(t.datasource.uid, p.title).toBe(datasource.uid);
    }
  });

  it('no two panels overlap on the grid', () => {
    const cells = new Map<string, string>();
    for (const p of panels)
      for (let dy = 0; dy < p.gridPos.h; dy++)
        for (let dx = 0; dx < p.gridPos.w; dx++) {
          const key = `${p.gridPos.x + dx},${p.gridPos.y + dy}`;
          expect(cells.get(key), `${p.title} overlaps ${cells.get(key)}`).toBeUndefined();
          cells.set(key, p.title);
        }
  });

  it('the data source provisioning names the uid the panels use, the dashboard provider the folder it is mounted at', () => {
    const ds = readFileSync(`${repoRoot}ops/grafana/provisioning/datasources/prometheus.yml`, 'utf8');
    expect(ds).toContain(`uid: ${datasource.uid}`);
    expect(ds).toContain('type: prometheus');
    const provider = readFileSync(`${repoRoot}ops/grafana/provisioning/dashboards/tickstream.yml`, 'utf8');
    expect(provider).toMatch(/type: file/);
    expect(provider).toMatch(/path: \/var\/lib\/grafana\/dashboards\/tickstream/);
  });

  it.skipIf(!which('promtool'))(
    'every query is valid PromQL (promtool; skipped when it is not installed)',
    () => {
      const file = join(dir, 'dashboard-queries.yml');
      const exprs = queries.map((q) =>
        q.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '1h').replaceAll('$instance', '.*'),
      );
      writeFileSync(
        file,
        `groups:\n  - name: dashboard\n    rules:\n${exprs
          .map((e, i) => `      - record: dashboard:query${i}\n        expr: ${JSON.stringify(e)}\n`)
          .join('')}`,
      );
      const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toContain(`SUCCESS: ${queries.length} rules found`);
    },
  );
});
