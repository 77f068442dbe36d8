// The command line as a user meets it: every subcommand explains itself with --help, and a
// command line it cannot take is refused with a message naming the flag and exit code 2.
// Runs the built CLI (bin/tickstream.js) as a user would.
import { describe, expect, it } from 'vitest';
import { parseCommand } from '../../bridge/args.js';
import { SIM_COMMAND } from '../../bridge/sim.js';
import { runCli } from '../helpers/procs.js';

const SUBCOMMANDS = ['serve', 'loader', 'sim', 'verify', 'replay', 'export', 'demo', 'smoke', 'config'];

describe('tickstream --help', () => {
  it.each(SUBCOMMANDS)('`%s --help` prints its flags with defaults and an example, exit 0', async (name) => {
    const r = await runCli([name, '--help'], {}, 30_000);
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain(`usage: tickstream ${name} [flags]`);
    expect(r.output).toMatch(/\n {2}-h, --help +show this help/);
    expect(r.output).toMatch(/\nexamples?:\n {2}(\S+ )?(tickstream|npm run demo)/);
    if (['serve', 'sim', 'verify', 'demo'].includes(name))
      expect(r.output).toMatch(/\(default [^)]+\)|default \d/);
  });

  it('`serve --help` lists every configuration key with its default', async () => {
    const r = await runCli(['serve', '--help'], {}, 30_000);
    expect(r.output).toMatch(
      /--kafka-brokers VALUE +Kafka bootstrap servers \(default "127\.0\.0\.1:9092"\)/,
    );
    expect(r.output).toContain('--postgres-url VALUE');
  });

  it('the top-level help names every command and exits 0', async () => {
    const r = await runCli(['--help'], {}, 30_000);
    expect(r.code).toBe(0);
    for (const name of SUBCOMMANDS) expect(r.output).toMatch(new RegExp(`\\n {2}${name} +\\S`));
  });
});

describe('a command line the CLI cannot take: exit 2 and the flag named', () => {
  it.each([
    [['sim', '--synthetic', '--rate', 'abc'], "--rate expects a number, got 'abc'"],
    [['sim', '--synthetic', '--symbols', '2.5'], "--symbols expects a whole number, got '2.5'"],
    [['sim', '--synthetic', '--rate'], "Option '--rate <value>' argument missing"],
    [['sim', '--synthetic', '--bogus'], "Unknown option '--bogus'"],
    [
      ['sim', '--file', 'x.csv', '--format', 'xml'],
      '--format must be one of mt5, dukascopy, histdata, truefx',
    ],
    [['serve', '--help-me'], "Unknown option '--help-me'"],
    [['verify', '--wait-postgres', 'soon'], "--wait-postgres expects a number, got 'soon'"],
    [['serve', '--ingress-port', 'abc'], 'ingressPort (--ingress-port, TICKSTREAM_INGRESS_PORT)'],
    [['sim'], 'give --file PATH or --synthetic'],
    [['replay', '--target', 'websocket'], '--target must be one of stdout, redis, postgres, ws'],
    [['replay', '--target', 'ws', '--ws-wait-clients', '0'], "--ws-wait-clients must be at least 1, got '0'"],
    [
      ['replay', '--target', 'ws', '--out', 'x.jsonl'],
      "--out writes stdout's lines to a file: it does not go with --target ws",
    ],
  ])('%j', async (args, message) => {
    const r = await runCli(args, {}, 30_000);
    expect(r.code, r.output).toBe(2);
    expect(r.output).toContain(message);
    expect(r.output).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('an unknown command prints the list of commands, exit 2', async () => {
    const r = await runCli(['serv'], {}, 30_000);
    expect(r.code).toBe(2);
    expect(r.output).toContain("unknown command 'serv'");
  });
});

describe('parseCommand', () => {
  it('applies defaults and types, and takes --flag=value', () => {
    const parsed = parseCommand(SIM_COMMAND, ['--synthetic', '--rate=2000', '--server-utc-offset=-5']);
    expect(parsed?.flags.rate).toBe(2000);
    expect(parsed?.flags.symbols).toBe(10);
    expect(parsed?.flags.synthetic).toBe(true);
    expect(parsed?.flags.tls).toBe(false);
    expect(parsed?.flags['server-utc-offset']).toBe(-5);
    expect(parsed?.flags.file).toBeUndefined();
  });

  it('returns nothing after writing the help for --help and -h', () => {
    let text = '';
    expect(parseCommand(SIM_COMMAND, ['-h'], (t) => (text += t))).toBeUndefined();
    expect(text).toContain('--synthetic');
  });
});
