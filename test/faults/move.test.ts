// Sources that move between running bridges (docs/architecture.md, "Sources that move between
// bridges"): two `serve` processes share the topics (their own instance ids, so their own
// transactional ids), one sim knows both (`--bridge A,B`). The source's bridge is killed, or
// paused with SIGSTOP while a transaction is open; the source moves; exactly once is checked by
// a plain consumer that shares no code with the sinks and by `tickstream verify`.
import { afterAll, describe, expect, it } from 'vitest';
import { gauge, samples, scrape } from '../helpers/http-probes.js';
import { readJournalTicks } from '../helpers/independent.js';
import {
  captured,
  freePorts,
  isolatedNames,
  type Names,
  removeNames,
  runCli,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  verifyArgs,
  waitFor,
  withPorts,
} from '../helpers/procs.js';

const cleanups: Names[] = [];
const serves: ServeProcess[] = [];
afterAll(async () => {
  for (const s of serves) {
    s.child.kill('SIGCONT');
    await s.stop('SIGKILL');
  }
  await removeNames(cleanups);
});

/** `args` with `flag`'s value replaced. */
function setFlag(args: string[], flag: string, value: string): string[] {
  const out = [...args];
  const i = out.indexOf(flag);
  if (i < 0) out.push(flag, value);
  else out[i + 1] = value;
  return out;
}

interface Bridge {
  args: string[];
  env: Record<string, string>;
  ingress: number;
  http: number;
  proc: ServeProcess;
}

/**
 * Every transaction of the bridge stays open 6 s between its fence check and its commit; past
 * 5 s an open transaction makes the bridge report not ready (tickstream_ready 0), so a test can
 * SIGSTOP it right there.
 */
const SLOW_COMMIT = { TICKSTREAM_SLOW_AT: 'journal-commit', TICKSTREAM_SLOW_MS: '6000' };

/** Waits until the bridge is inside an open transaction (see SLOW_COMMIT), then SIGSTOPs it. */
async function stopMidTransaction(b: Bridge): Promise<void> {
  const scraped = async () => {
    try {
      return gauge(await scrape(b.http), 'tickstream_ready');
    } catch {
      return Number.NaN;
    }
  };
  expect(await waitFor(async () => (await scraped()) === 0, 60_000)).toBe(true);
  b.proc.child.kill('SIGSTOP');
}

async function startBridge(names: Names, tag: string, env: Record<string, string> = {}): Promise<Bridge> {
  const [ingress, http] = (await freePorts(2)) as [number, number];
  let args = withPorts(serveArgs(names), ingress, http);
  args = setFlag(args, '--instance-id', `${names.id}${tag}`);
  args = setFlag(args, '--heartbeat-timeout-ms', '2000');
  const proc = await startServe(args, env);
  serves.push(proc);
  return { args, env, ingress, http, proc };
}

async function restart(b: Bridge): Promise<void> {
  b.proc = await startServe(b.args, b.env);
  serves.push(b.proc);
}

async function metric(b: Bridge, name: string): Promise<number> {
  try {
    const v = gauge(await scrape(b.http), name);
    return Number.isNaN(v) ? 0 : v;
  } catch {
    return 0;
  }
}

/** Ticks of `source` the bridge has committed (0 when it does not answer). */
async function committed(b: Bridge, source: string): Promise<number> {
  try {
    return samples(await scrape(b.http), 'tickstream_ticks_committed_total', 'source')[source] ?? 0;
  } catch {
    return 0;
  }
}

/** A terminal streaming for about `seconds` (real time) to the pool, resending what was not ACKed. */
function simArgs(source: string, bridges: Bridge[], seconds: number): string[] {
  return [
    '--synthetic',
    '--symbols',
    '3',
    '--rate',
    '4000',
    '--duration',
    String(seconds),
    '--speed',
    '1',
    '--source',
    source,
    '--bridge',
    bridges.map((b) => `127.0.0.1:${b.ingress}`).join(','),
  ];
}

/** Every seq of `source` exactly once in the journal, and `verify` (journal and Postgres) whole. */
async function expectExactlyOnce(names: Names, source: string, simOutput: string): Promise<void> {
  const total = captured(simOutput);
  const journal = await readJournalTicks(names.ticksTopic, { expected: total, idleMs: 5000 });
  const seqs = journal.filter((t) => t.source === source).map((t) => t.seq);
  const seen = new Set(seqs);
  expect(seqs.length, 'ticks in Kafka (a repeat would add one)').toBe(total);
  expect(seen.size, 'distinct seqs').toBe(total);
  expect(seqs.reduce((m, q) => Math.min(m, q), Number.POSITIVE_INFINITY)).toBe(1);
  expect(seqs.reduce((m, q) => Math.max(m, q), 0)).toBe(total);
  const verify = await runCli(verifyArgs(names));
  expect(verify.code, `verify said:\n${verify.output}`).toBe(0);
  expect(verify.output).toContain('all 1 source(s) whole');
}

describe('a source moves between two running bridges', () => {
  it('kill -9 of its bridge: it resumes on the other from the journal; back on the restarted one after the other dies: still exactly once', async () => {
    const names = isolatedNames('move');
    cleanups.push(names);
    const a = await startBridge(names, 'a');
    const b = await startBridge(names, 'b');
    const sim = runSim(simArgs('mv1', [a, b], 75), 240_000);

    // Streaming through A (first in the list); then A dies with transactions in flight.
    expect(await waitFor(async () => (await committed(a, 'mv1')) > 0, 30_000)).toBe(true);
    a.proc.child.kill('SIGKILL');
    await a.proc.exited;
    const killedAt = Date.now();

    // The sim moves to B, which claims the source and resumes it where the journal stands (a
    // transaction A left open holds the claim until Kafka aborts it, or until A is back).
    expect(
      await waitFor(async () => (await metric(b, 'tickstream_source_claims_total')) === 1, 90_000),
      b.proc.output().slice(-2000),
    ).toBe(true);

    process.stderr.write(`move: the source resumed on B ${Date.now() - killedAt} ms after A's kill -9\n`);

    // A comes back (same instance id: its initTransactions aborts whatever it left open).
    // Then B dies too and is restarted at once (ending any transaction it left open): the sim
    // goes back to A, the next bridge of its list, which claims the source again.
    await restart(a);
    expect(await waitFor(async () => (await committed(b, 'mv1')) > 0, 60_000)).toBe(true);
    b.proc.child.kill('SIGKILL');
    await b.proc.exited;
    await restart(b);
    expect(
      await waitFor(async () => (await metric(a, 'tickstream_source_claims_total')) === 1, 90_000),
      a.proc.output().slice(-2000),
    ).toBe(true);
    expect(await waitFor(async () => (await committed(a, 'mv1')) > 0, 60_000)).toBe(true);

    const r = await sim;
    expect(r.code, r.output).toBe(0);
    await expectExactlyOnce(names, 'mv1', r.output);
  }, 420_000);

  it('a bridge paused (SIGSTOP) mid-transaction is fenced when it resumes: it never commits for the moved source', async () => {
    const names = isolatedNames('fence');
    cleanups.push(names);
    // A is stopped between its fence check and its commit, with more ticks accepted behind it.
    const a = await startBridge(names, 'a', SLOW_COMMIT);
    const b = await startBridge(names, 'b');
    const sim = runSim(simArgs('fz1', [a, b], 20), 180_000);
    expect(await waitFor(async () => (await committed(a, 'fz1')) > 0, 60_000)).toBe(true);
    await stopMidTransaction(a);

    // The sim hears nothing from A for its heartbeat timeout and moves to B, whose claim waits
    // for A's open transaction (it holds the sources partition's last stable offset).
    expect(await waitFor(async () => (await metric(b, 'tickstream_ingress_connections')) >= 1, 30_000)).toBe(
      true,
    );
    // While A stays stopped, B's claim cannot pass A's open transaction (unless the SIGSTOP
    // landed between two of A's transactions): give it 5 s, then let A go on.
    const claimedWhileStopped = await waitFor(
      async () => (await metric(b, 'tickstream_source_claims_total')) >= 1,
      5000,
    );
    const contAt = Date.now();
    a.proc.child.kill('SIGCONT');

    // A's pending transaction commits (it began before the claim); B resumes after it; A's
    // next transaction for the source meets B's claim: fenced, never committed, never ACKed.
    expect(
      await waitFor(async () => (await metric(b, 'tickstream_source_claims_total')) >= 1, 90_000),
      b.proc.output().slice(-2000),
    ).toBe(true);
    process.stderr.write(
      claimedWhileStopped
        ? 'fence: B claimed while A was stopped (the SIGSTOP landed between two of its transactions)\n'
        : `fence: B's claim waited for A's open transaction; it completed ${Date.now() - contAt} ms after SIGCONT\n`,
    );
    expect(
      await waitFor(async () => (await metric(a, 'tickstream_source_fenced_total')) >= 1, 60_000),
      a.proc.output().slice(-3000),
    ).toBe(true);
    const r = await sim;
    expect(r.code, r.output).toBe(0);
    await expectExactlyOnce(names, 'fz1', r.output);
    // Both bridges are still up: fencing closes a source, not the bridge.
    expect(a.proc.child.exitCode).toBeNull();
    expect(b.proc.child.exitCode).toBeNull();
  }, 420_000);

  it('a bridge paused past transaction.timeout.ms: Kafka aborts its transaction, the source moves without it, and it never commits for it', async () => {
    const names = isolatedNames('fencelong');
    cleanups.push(names);
    const a = await startBridge(names, 'a', SLOW_COMMIT);
    const b = await startBridge(names, 'b');
    const sim = runSim(simArgs('fl1', [a, b], 90), 240_000);
    expect(await waitFor(async () => (await committed(a, 'fl1')) > 0, 60_000)).toBe(true);
    await stopMidTransaction(a);
    const stoppedAt = Date.now();
    // B claims while A is still stopped: only once Kafka has aborted A's open transaction.
    expect(
      await waitFor(async () => (await metric(b, 'tickstream_source_claims_total')) >= 1, 90_000),
      b.proc.output().slice(-2000),
    ).toBe(true);
    process.stderr.write(
      `fence: B claimed ${Date.now() - stoppedAt} ms after A's SIGSTOP, A still stopped\n`,
    );
    a.proc.child.kill('SIGCONT');
    // A's transaction is gone: whatever it still holds of the source is fenced or, if its
    // producer is fenced by the abort, its journal stops and the bridge exits non-zero.
    expect(
      await waitFor(
        async () =>
          a.proc.child.exitCode !== null || (await metric(a, 'tickstream_source_fenced_total')) >= 1,
        60_000,
      ),
      a.proc.output().slice(-3000),
    ).toBe(true);
    process.stderr.write(
      `fence: after SIGCONT A ${a.proc.child.exitCode !== null ? `exited with ${a.proc.child.exitCode}` : 'is up, the source fenced'}\n`,
    );
    const r = await sim;
    expect(r.code, r.output).toBe(0);
    await expectExactlyOnce(names, 'fl1', r.output);
  }, 420_000);
});
