// A real Prometheus (the Debian binary) with the project's alert rules scrapes a real `serve`
// whose journal is a private Kafka broker: stopping the broker fires TickstreamJournalNotReady
// in /api/v1/alerts, starting it again resolves the alert, and killing serve fires
// TickstreamDown. The rules are a copy of alerts.yml with every `for:` cut to 2 s, scraped and
// evaluated every second, so each step takes seconds rather than minutes.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type Instance, ownKafka } from '../helpers/instances.js';
import {
  freePorts,
  isolatedNames,
  removeNames,
  type ServeProcess,
  serveArgs,
  startCli,
  startServe,
  waitFor,
} from '../helpers/procs.js';
import { alertsFile, which } from './promql.js';

const prometheusBin = which('prometheus');
const dir = mkdtempSync(join(tmpdir(), 'tickstream-prometheus-'));
const n = isolatedNames('opsprom');
let kafka: Instance | null = null;
let serve: ServeProcess | null = null;
let prometheus: ChildProcess | null = null;
let sim: ReturnType<typeof startCli> | null = null;
let prometheusLog = '';

afterAll(async () => {
  sim?.child.kill('SIGKILL');
  if (prometheus?.exitCode === null) {
    const exited = new Promise((r) => prometheus?.once('exit', r));
    prometheus.kill('SIGTERM');
    await exited;
  }
  await serve?.stop('SIGKILL');
  await kafka?.destroy();
  // The topics lived on the private broker, gone with it; Redis keys and the schema remain.
  await removeNames([n]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

interface Alert {
  labels: Record<string, string>;
  state: 'pending' | 'firing';
}

async function alertState(port: number, name: string): Promise<Alert['state'] | 'inactive'> {
  const body = (await (await fetch(`http://127.0.0.1:${port}/api/v1/alerts`)).json()) as {
    data: { alerts: Alert[] };
  };
  return body.data.alerts.find((a) => a.labels['alertname'] === name)?.state ?? 'inactive';
}

async function query(port: number, promql: string): Promise<string | null> {
  const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await r.json()) as { data: { result: { value: [number, string] }[] } };
  return body.data.result[0]?.value[1] ?? null;
}

describe.skipIf(!prometheusBin)(
  prometheusBin
    ? 'Prometheus with the project rules, scraping serve'
    : 'Prometheus (SKIPPED: not installed; `npm run setup` installs the Debian prometheus package)',
  () => {
    it('the broker stops: TickstreamJournalNotReady fires; it returns: the alert resolves; serve dies: TickstreamDown fires', async () => {
      const [kafkaPort, controllerPort, promPort] = (await freePorts(3)) as [number, number, number];
      kafka = ownKafka(kafkaPort, controllerPort);
      await kafka.start();
      serve = await startServe(
        serveArgs(n, ['--kafka-brokers', kafka.url, '--loader-enabled', 'false', '--redis-enabled', 'false']),
      );

      writeFileSync(
        join(dir, 'alerts.yml'),
        readFileSync(alertsFile, 'utf8').replace(/^(\s+)for: \S+$/gm, '$1for: 2s'),
      );
      writeFileSync(
        join(dir, 'prometheus.yml'),
        [
          'global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }',
          'rule_files: [alerts.yml]',
          'scrape_configs:',
          '  - job_name: tickstream',
          `    static_configs: [{ targets: ["127.0.0.1:${serve.httpPort}"] }]`,
          '',
        ].join('\n'),
      );
      prometheus = spawn(
        prometheusBin!,
        [
          `--config.file=${join(dir, 'prometheus.yml')}`,
          `--storage.tsdb.path=${join(dir, 'data')}`,
          `--web.listen-address=127.0.0.1:${promPort}`,
          '--log.level=warn',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      prometheus.stderr?.on('data', (d: Buffer) => {
        prometheusLog += d.toString();
      });
      const why = () =>
        `prometheus said:\n${prometheusLog.slice(-2000)}\nserve said:\n${serve?.output().slice(-2000)}`;
      const scraped = await waitFor(async () => {
        try {
          return (await query(promPort, 'tickstream_ready')) === '1';
        } catch {
          return false; // not listening yet
        }
      }, 30_000);
      expect(scraped, why()).toBe(true);
      expect(await alertState(promPort, 'TickstreamJournalNotReady')).toBe('inactive');

      // The journal notices a dead broker through a transaction that does not commit: keep ticks coming.
      sim = startCli([
        'sim',
        '--synthetic',
        '--symbols',
        '2',
        '--rate',
        '200',
        '--duration',
        '600',
        '--source',
        'opsprom',
        '--port',
        String(serve.ingressPort),
      ]);
      expect(
        await waitFor(async () => Number(await query(promPort, 'sum(tickstream_ticks_committed_total)')) > 0),
      ).toBe(true);

      await kafka.stop();
      expect(
        await waitFor(
          async () => (await alertState(promPort, 'TickstreamJournalNotReady')) === 'firing',
          60_000,
        ),
        why(),
      ).toBe(true);

      await kafka.start();
      expect(
        await waitFor(
          async () => (await alertState(promPort, 'TickstreamJournalNotReady')) === 'inactive',
          90_000,
        ),
        why(),
      ).toBe(true);
      expect(await query(promPort, 'tickstream_ready')).toBe('1');

      // A crash, what TickstreamDown is for (and no wait on an orderly shutdown).
      sim.child.kill('SIGKILL');
      await serve.stop('SIGKILL');
      expect(
        await waitFor(async () => (await alertState(promPort, 'TickstreamDown')) === 'firing', 30_000),
        why(),
      ).toBe(true);
    }, 240_000);
  },
);
