// Secured Kafka: a broker of the test's own with a SASL_SSL listener (a CA and certificate made
// now with openssl, a SCRAM-SHA-512 user and a PLAIN user). With the right credentials the
// journal (serve + sim), a standalone loader and `verify` work; with a wrong password, user or CA
// each of them exits non-zero at once with a message that says what is wrong and which keys to
// fix. The password is never printed (`config`, logs, errors).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ownSecureKafka, type SecureKafka } from '../helpers/instances.js';
import {
  captured,
  freePorts,
  isolatedNames,
  removeNames,
  runCli,
  runSim,
  serveArgs,
  startCli,
  startServe,
  verifyArgs,
} from '../helpers/procs.js';
import { loaderArgs, startLoader } from './loader-helpers.js';

let k: SecureKafka;
const n = isolatedNames('sasl');
/**
 * From its error line to its exit a failing command takes well under the Kafka connect timeout
 * (10 s) it would otherwise sit out: measured from the line, not from the start, so a slow start
 * on a loaded machine does not count (the one time bound here, and the behaviour under test).
 */
const EXIT_AFTER_ERROR_MS = 5000;

beforeAll(async () => {
  const [port, internal, controller] = await freePorts(3);
  k = await ownSecureKafka(port as number, internal as number, controller as number);
}, 120_000);

afterAll(async () => {
  await removeNames([n], k?.internal).catch(() => undefined);
  await k?.destroy();
}, 60_000);

function env(mechanism: 'SCRAM-SHA-512' | 'PLAIN', user: string, password: string, ca = k.caFile) {
  return {
    TICKSTREAM_KAFKA_BROKERS: k.brokers,
    TICKSTREAM_KAFKA_SECURITY_PROTOCOL: 'sasl_ssl',
    TICKSTREAM_KAFKA_SASL_MECHANISM: mechanism,
    TICKSTREAM_KAFKA_SASL_USERNAME: user,
    TICKSTREAM_KAFKA_SASL_PASSWORD: password,
    TICKSTREAM_KAFKA_SSL_CA_LOCATION: ca,
  };
}
const scram = () => env('SCRAM-SHA-512', k.users.scram.name, k.users.scram.password);
const plain = () => env('PLAIN', k.users.plain.name, k.users.plain.password);

describe('SASL_SSL', () => {
  it('SCRAM-SHA-512: serve + sim commit to the journal, a standalone loader loads, verify finds the source whole', async () => {
    const serve = await startServe(serveArgs(n, ['--loader-enabled', 'false']), {
      ...scram(),
      TICKSTREAM_LOG_LEVEL: 'info',
    });
    const loader = await startLoader(loaderArgs(n, k.brokers), scram());
    try {
      const sim = await runSim([
        '--synthetic',
        '--speed',
        'max',
        '--symbols',
        '2',
        '--rate',
        '2000',
        '--duration',
        '3',
        '--source',
        'sec1',
        '--port',
        String(serve.ingressPort),
      ]);
      expect(sim.code, sim.output).toBe(0);
      expect(captured(sim.output)).toBeGreaterThan(5000);
      const verify = await runCli(verifyArgs(n, 60), scram(), 90_000);
      expect(verify.code, `verify said:\n${verify.output}`).toBe(0);
      expect(verify.output).toContain(
        'all 1 source(s) whole: every seq exactly once in the journal and in Postgres',
      );
    } finally {
      loader.child.kill('SIGTERM');
      await loader.exited;
      await serve.stop();
    }
    for (const out of [serve.output(), loader.output()]) expect(out).not.toContain(k.users.scram.password);
  }, 120_000);

  it('PLAIN: verify reads the journal with the PLAIN user', async () => {
    const verify = await runCli(['verify', '--ticks-topic', n.ticksTopic, '--no-postgres'], plain(), 60_000);
    expect(verify.code, verify.output).toBe(0);
    expect(verify.output).toContain('all 1 source(s) whole');
  }, 90_000);

  it('smoke: the Kafka round trip works with the SCRAM user, and names the refused credentials with a wrong password', async () => {
    const ok = await runCli(['smoke'], scram(), 60_000);
    expect(ok.output).toMatch(/^ok {3}kafka/m);
    const bad = await runCli(['smoke'], env('SCRAM-SHA-512', k.users.scram.name, 'wrong'), 60_000);
    expect(bad.output).toMatch(/^FAIL kafka .*refused the SASL credentials/m);
    expect(bad.output).not.toContain(k.users.scram.password);
  }, 90_000);

  it('config shows the password as ***', async () => {
    const r = await runCli(['config'], scram());
    expect(r.code).toBe(0);
    expect(r.output).toContain('"kafkaSaslPassword": "***"');
    expect(r.output).not.toContain(k.users.scram.password);
  });

  const wrong = [
    {
      what: 'a wrong SCRAM password',
      env: () => env('SCRAM-SHA-512', k.users.scram.name, 'not-the-password'),
      says: /refused the SASL credentials.*SCRAM-SHA-512.*Check kafkaSaslUsername and kafkaSaslPassword/s,
    },
    {
      what: 'an unknown PLAIN user',
      env: () => env('PLAIN', 'nobody', k.users.plain.password),
      says: /PLAIN as user 'nobody'\) refused the SASL credentials/,
    },
    {
      what: "a CA that did not sign the broker's certificate",
      env: () =>
        env(
          'SCRAM-SHA-512',
          k.users.scram.name,
          k.users.scram.password,
          '/etc/ssl/certs/ca-certificates.crt',
        ),
      says: /TLS handshake with Kafka .* failed .*certificate verify failed.*kafkaSslCaLocation/s,
    },
  ];
  for (const w of wrong) {
    it(`${w.what}: serve, loader and verify exit non-zero at once, saying what to fix`, async () => {
      const commands = [
        ['serve', ...serveArgs(n, ['--loader-enabled', 'false'])],
        loaderArgs(n, k.brokers),
        verifyArgs(n, 5),
      ];
      const results = await Promise.all(
        commands.map(async (args) => {
          const p = startCli(args, w.env());
          let saidAt = 0;
          p.child.stderr.on('data', () => {
            if (!saidAt && /ERR_KAFKA/.test(p.output())) saidAt = performance.now();
          });
          const timer = setTimeout(() => p.child.kill('SIGKILL'), 30_000);
          const code = await p.exited;
          clearTimeout(timer);
          return { code, output: p.output(), ms: performance.now() - saidAt, command: args[0] };
        }),
      );
      for (const r of results) {
        expect(r.code, `${r.command}: ${r.output}`).toBe(1);
        expect(r.output, r.command).toMatch(/ERR_KAFKA/);
        expect(r.output, r.command).toMatch(w.says);
        expect(r.output).not.toContain(k.users.scram.password);
        expect(r.output).not.toContain(k.users.plain.password);
        expect(r.ms, `${r.command} exited ${Math.round(r.ms)} ms after its error`).toBeLessThan(
          EXIT_AFTER_ERROR_MS,
        );
      }
    }, 60_000);
  }
});
