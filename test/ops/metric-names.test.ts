// Every metric an alert rule or a dashboard query reads exists on a real `serve`'s /metrics: a
// renamed metric would otherwise leave a rule that never fires and an empty panel. A short sim
// with one lost frame runs first, so labelled series (per source, gaps, resends) are there too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tickstreamDashboard } from '../../ops/grafana/dashboard.js';
import {
  isolatedNames,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';
import { exposes, externalMetrics, metricFamilies, metricNames, readAlertRules } from './promql.js';

const n = isolatedNames('opsmetrics');
let serve: ServeProcess;
let families: Map<string, string>;

beforeAll(async () => {
  // A feed group over the sim's source, so the merged-feed metrics are there too.
  const feedGroups = [
    { symbol: 'SYN', policy: 'failover', members: [{ source: 'opsmetrics', symbol: 'SYN001' }] },
  ];
  serve = await startServe(serveArgs(n, ['--feed-groups', JSON.stringify(feedGroups)]));
  const sim = await runSim([
    '--synthetic',
    '--symbols',
    '2',
    '--rate',
    '2000',
    '--duration',
    '2',
    '--source',
    'opsmetrics',
    '--drop-frame',
    '3',
    '--port',
    String(serve.ingressPort),
  ]);
  expect(sim.code, sim.output).toBe(0);
  const metrics = () => fetch(`http://127.0.0.1:${serve.httpPort}/metrics`).then((r) => r.text());
  // The loader registers its metrics in the background once Postgres answers.
  expect(await waitFor(async () => (await metrics()).includes('tickstream_loader_rows_total{'))).toBe(true);
  families = metricFamilies(await metrics());
});

afterAll(async () => {
  await serve?.stop();
  await removeNames([n]);
});

function missing(exprs: { where: string; expr: string }[]): string[] {
  return exprs.flatMap(({ where, expr }) =>
    metricNames(expr)
      .filter((name) => !exposes(families, name) && !(name in externalMetrics))
      .map((name) => `${where}: ${name}`),
  );
}

describe('metric names used by operators exist on /metrics', () => {
  it('the sim produced the series the rules and panels expect', () => {
    expect(families.get('tickstream_seq_gaps_total')).toBe('counter');
    expect(families.get('tickstream_receipt_to_kafka_commit_seconds')).toBe('histogram');
  });

  it('in every alert rule', () => {
    const rules = readAlertRules();
    expect(rules.length).toBeGreaterThan(0);
    expect(missing(rules.map((r) => ({ where: r.alert, expr: r.expr })))).toEqual([]);
  });

  it('in every dashboard query', () => {
    const exprs = tickstreamDashboard().panels.flatMap((p) =>
      ((p['targets'] as { expr: string }[] | undefined) ?? []).map((t) => ({
        where: String(p['title']),
        expr: t.expr,
      })),
    );
    expect(exprs.length).toBeGreaterThan(30);
    expect(missing(exprs)).toEqual([]);
  });

  it('the name extraction sees a misspelt metric (the check can fail)', () => {
    expect(
      missing([{ where: 'probe', expr: 'rate(tickstream_tick_received_total{source="a"}[5m]) > 0' }]),
    ).toEqual(['probe: tickstream_tick_received_total']);
  });
});
