// The three-broker KRaft cluster of ops/kafka.sh (own ports and state dir): journal topics with
// replication factor 3 and min.insync.replicas 2. While three simulated terminals stream, the
// leader of the ticks topic's partition 0 is killed with kill -9: commits (and so ACKs) pause for
// the election, then go on; the node comes back, catches up, and another leader is killed.
// `tickstream verify` then finds every source whole in Kafka and in Postgres.
// The longest pause between two commits around each kill is printed (docs/scaling.md quotes it).
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import RdKafka from '@confluentinc/kafka-javascript';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { samples, scrape } from '../helpers/http-probes.js';
import { readJournalTicks } from '../helpers/independent.js';
import {
  captured,
  freePorts,
  isolatedNames,
  type Names,
  removeNames,
  repoRoot,
  runCli,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  verifyArgs,
  waitFor,
} from '../helpers/procs.js';

const run = promisify(execFile);
/** How long the sims stream: both rounds (kill, failover, restart, catch-up) fit in it. */
const SIM_SECONDS = 120;
const dir = mkdtempSync(join(tmpdir(), 'ts-cluster-'));
let ports: number[] = [];
let env: NodeJS.ProcessEnv = {};
let brokers = '';
const names: Names = isolatedNames('cluster');

const cluster = (cmd: string) =>
  run('bash', [`${repoRoot}ops/kafka.sh`, 'cluster', cmd], { env, timeout: 150_000 });

const t0 = Date.now();
const say = (line: string) =>
  process.stdout.write(`[cluster +${((Date.now() - t0) / 1000).toFixed(1)} s] ${line}\n`);

function pidOf(node: number): number {
  return Number(readFileSync(join(dir, `node-${node}`, 'broker.pid'), 'utf8').trim());
}

beforeAll(async () => {
  const free = await freePorts(6);
  ports = free.slice(0, 3);
  env = {
    ...process.env,
    KAFKA_CLUSTER_PORTS: ports.join(','),
    KAFKA_CLUSTER_CONTROLLER_PORTS: free.slice(3).join(','),
    KAFKA_CLUSTER_DIR: dir,
  };
  brokers = ports.map((p) => `127.0.0.1:${p}`).join(',');
  await cluster('up');
  const { stdout } = await cluster('status');
  for (const [i, port] of ports.entries())
    expect(stdout).toMatch(new RegExp(`^node ${i + 1} port ${port} pid \\d+ rss_mb \\d+$`, 'm'));
}, 180_000);

/** `cluster status` output; it exits 3 when a node is down. */
async function status(): Promise<string> {
  try {
    return (await cluster('status')).stdout;
  } catch (err) {
    return (err as { stdout?: string }).stdout ?? '';
  }
}

afterAll(async () => {
  await cluster('down').catch(() => undefined);
  await removeNames([names], brokers).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

interface PartitionView {
  leader: number;
  isr: number[];
}

async function describe(topics: string[]): Promise<Map<string, PartitionView[]>> {
  const admin = RdKafka.AdminClient.create({ 'metadata.broker.list': brokers });
  try {
    const described = await new Promise<RdKafka.TopicDescription[]>((resolve, reject) =>
      admin.describeTopics(topics, { timeout: 10_000 }, (err, d) => (err ? reject(err) : resolve(d))),
    );
    return new Map(
      described.map((t) => [
        t.name,
        t.partitions.map((p) => ({ leader: p.leader?.id ?? -1, isr: p.isr.map((n) => n.id) })),
      ]),
    );
  } finally {
    admin.disconnect();
  }
}

async function describeTicks(): Promise<PartitionView[]> {
  return (await describe([names.ticksTopic])).get(names.ticksTopic) ?? [];
}

/**
 * Every topic a commit writes to: the journal topics and the coordinator's transaction log. A
 * node just restarted may be in the ticks topic's ISR before it caught up on another topic; a
 * second kill then would leave that one partition below min.insync.replicas.
 */
const committedTopics = () => [names.ticksTopic, names.barsTopic, names.sourcesTopic, '__transaction_state'];

/** Partitions of those topics whose ISR is not all three nodes: "topic/partition [isr]". */
async function underReplicated(): Promise<string[]> {
  const out: string[] = [];
  for (const [topic, partitions] of await describe(committedTopics()))
    for (const [i, p] of partitions.entries())
      if (p.isr.length < 3) out.push(`${topic}/${i} [${p.isr.join(',')}]`);
  return out;
}

/** Commits seen on serve's /metrics, sampled every 100 ms: [ms since start, count]. */
function watchCommits(serve: ServeProcess) {
  const seen: [number, number][] = [];
  const t0 = performance.now();
  let on = true;
  const loop = (async () => {
    while (on) {
      const text = await scrape(serve.httpPort).catch(() => '');
      const n = samples(text, 'tickstream_journal_transactions_total', 'outcome')['committed'];
      if (n !== undefined) seen.push([performance.now() - t0, n]);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    now: () => performance.now() - t0,
    last: () => seen.at(-1)?.[1] ?? 0,
    /** The longest time without a new commit between `from` and `to` (ms since start). */
    longestPause(from: number, to: number): number {
      let longest = 0;
      let since = from;
      let count = seen.find(([t]) => t >= from)?.[1] ?? 0;
      for (const [t, n] of seen) {
        if (t < from || t > to) continue;
        if (n > count) {
          longest = Math.max(longest, t - since);
          since = t;
          count = n;
        }
      }
      return Math.max(longest, Math.min(to, this.now()) - since);
    },
    stop: async () => {
      on = false;
      await loop;
    },
  };
}

/** What a failed wait prints: the nodes, the partitions' leaders and ISRs, serve's last words. */
async function diagnosis(serve: ServeProcess): Promise<string> {
  const partitions = await describe(committedTopics()).then(
    (v) => JSON.stringify(Object.fromEntries(v)),
    (err: Error) => `(describe failed: ${err.message})`,
  );
  return `\n${await status()}partitions: ${partitions}\nserve (last 4000 chars):\n${serve.output().slice(-4000)}`;
}

it('kill -9 of the partition leader, twice, while three sims stream: commits resume, every source whole', async () => {
  const serve = await startServe(
    serveArgs(names, [
      '--kafka-brokers',
      brokers,
      '--topic-replication-factor',
      '3',
      '--topic-min-insync-replicas',
      '2',
    ]),
  );
  const commits = watchCommits(serve);
  try {
    const view = await describeTicks();
    expect(view.length).toBe(3);
    for (const p of view) expect(p.isr.length, 'replicas in sync at the start').toBe(3);

    const sources = ['cl1', 'cl2', 'cl3'];
    const sims = sources.map((source, i) =>
      runSim(
        [
          '--synthetic',
          '--symbols',
          '3',
          '--rate',
          '600',
          '--duration',
          String(SIM_SECONDS),
          '--seed',
          String(11 + i),
          '--source',
          source,
          '--port',
          String(serve.ingressPort),
        ],
        (SIM_SECONDS + 90) * 1000,
      ),
    );
    // The rounds must end while the sims still stream: commits need ticks.
    let simsEnded = false;
    void Promise.all(sims).then(() => {
      simsEnded = true;
    });
    const pauses: number[] = [];
    let killed = 0;
    for (const round of [1, 2]) {
      // Commits flow before the kill.
      // Up to 60 s: in CI another test file runs beside the three broker JVMs on the 2 cores.
      const before = commits.last();
      const since = commits.now();
      expect(simsEnded, `the sims (${SIM_SECONDS} s) ended before round ${round}`).toBe(false);
      if (!(await waitFor(() => commits.last() > before + 20, 60_000)))
        expect.fail(
          `commits before the kill: ${commits.last() - before} in ${Math.round(commits.now() - since)} ms${await diagnosis(serve)}`,
        );
      // The leader of a partition, and in round 2 another node than the one killed first (the
      // restarted node may lead its preferred partition again: then another partition's leader).
      const leaders = await describeTicks();
      const target = leaders.findIndex((p) => p.leader > 0 && p.leader !== killed);
      expect(target, 'a partition led by a node not killed yet').toBeGreaterThanOrEqual(0);
      const leader = leaders[target]?.leader ?? -1;
      killed = leader;
      const at = commits.now();
      say(
        `round ${round}: kill -9 node ${leader} (leader of partition ${target}) after ${commits.last()} commits`,
      );
      const count = commits.last();
      process.kill(pidOf(leader), 'SIGKILL');
      expect(
        await waitFor(
          async () => (await status()).includes(`node ${leader} port ${ports[leader - 1]} down`),
          10_000,
        ),
      ).toBe(true);
      if (!(await waitFor(() => simsEnded || commits.last() > count + 20, 90_000)) || simsEnded)
        expect.fail(
          `commits go on after node ${leader} was killed: ${commits.last() - count} in ${Math.round(commits.now() - at)} ms${simsEnded ? ' (the sims ended meanwhile)' : ''}${await diagnosis(serve)}`,
        );
      pauses.push(commits.longestPause(at, commits.now()));
      say(`round ${round}: commits resumed; longest pause ${Math.round(pauses.at(-1) ?? 0)} ms`);
      // Back, and in sync again, before the next kill (min.insync.replicas 2 of 3).
      await cluster('up');
      let behind: string[] = [];
      const caughtUp = async () => {
        behind = await underReplicated().catch((err: Error) => [`(describe failed: ${err.message})`]);
        return behind.length === 0;
      };
      expect(
        await waitFor(caughtUp, 90_000),
        `node ${leader} back in every ISR; not yet: ${behind.join(' ')}`,
      ).toBe(true);
      say(`round ${round}: node ${leader} restarted and in sync`);
    }
    say(
      `failover: longest pause between commits after each leader kill: ${pauses.map((p) => `${Math.round(p)} ms`).join(', ')}`,
    );
    const results = await Promise.all(sims);
    for (const r of results) expect(r.code, r.output).toBe(0);
    const total = results.reduce((a, r) => a + captured(r.output), 0);
    const journal = await readJournalTicks(names.ticksTopic, { expected: total, idleMs: 5000, brokers });
    expect(journal.length).toBe(total);

    const verify = await runCli([...verifyArgs(names, 120), '--kafka-brokers', brokers], {}, 180_000);
    expect(verify.code, `verify said:\n${verify.output}`).toBe(0);
    expect(verify.output).toContain(`all ${sources.length} source(s) whole`);
  } finally {
    await commits.stop();
    await serve.stop();
  }
}, 420_000);
