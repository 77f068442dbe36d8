/**
 * The `tickstream` command line. Each subcommand declares its flags once (bridge/args.ts) and
 * answers `--help` from that declaration. Exit codes: 0 done, 1 failed, 2 a command line or
 * configuration it cannot take. Failures print one message that says what was wrong and what
 * to do (a TickstreamError's message), never a stack trace unless TICKSTREAM_DEBUG is set.
 */

import { type CommandSpec, parseCommand } from '../bridge/args.js';
import { SIM_COMMAND, simMain } from '../bridge/sim.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { configKeys, loadConfig, SECRET_KEYS } from './config.js';
import { DEMO_COMMAND, demoMain } from './demo.js';
import { EXPORT_COMMAND, exportMain } from './export.js';
import { LOADER_COMMAND, loaderMain } from './loader-main.js';
import { REPLAY_COMMAND, replayMain } from './replay.js';
import { serve } from './serve.js';

import { runSmoke } from './smoke.js';
import { VERIFY_COMMAND, verifyMain } from './verify.js';

interface Command {
  spec: CommandSpec;
  run: (argv: string[]) => Promise<number>;
}

const out = (line: string) => process.stdout.write(`${line}\n`);

/** Every configuration key as a flag: `--kafka-brokers` for `kafkaBrokers`. */
export const CONFIG_FLAGS = configKeys();

/** Parses a command that takes only configuration flags; undefined after printing --help. */
function configCommand(spec: CommandSpec, argv: string[]) {
  const parsed = parseCommand(spec, argv);
  if (!parsed) return undefined;
  return loadConfig({ ...(parsed.configFile ? { file: parsed.configFile } : {}), flags: parsed.config });
}

const SERVE: CommandSpec = {
  name: 'serve',
  summary: 'Run the bridge: EA ingress → Kafka journal, Redis streams, websockets and the Postgres loader.',
  flags: {},
  configFlags: CONFIG_FLAGS,
  listConfigFlags: true,
  examples: [
    'tickstream serve --source-secrets terminal1=change-me-please --source-time-zones terminal1=Europe/Athens',
  ],
};

const SMOKE: CommandSpec = {
  name: 'smoke',
  summary:
    'One round trip through Kafka, Redis, Postgres and a uWS websocket, each reported ok or FAIL with the reason.',
  flags: {},
  configFlags: CONFIG_FLAGS,
  examples: ['tickstream smoke --kafka-brokers 127.0.0.1:9092'],
};

const CONFIG: CommandSpec = {
  name: 'config',
  summary:
    'Print the effective configuration (defaults ← --config FILE ← TICKSTREAM_* environment ← flags), secrets masked.',
  flags: { table: { type: 'boolean', description: 'print every key as a Markdown table instead' } },
  configFlags: CONFIG_FLAGS,
  examples: ['TICKSTREAM_HTTP_PORT=8080 tickstream config --log-level debug'],
};

const commands: Record<string, Command> = {
  demo: { spec: DEMO_COMMAND, run: (argv) => demoMain(argv) },
  serve: {
    spec: SERVE,
    run: async (argv) => {
      const config = configCommand(SERVE, argv);
      if (!config) return 0;
      // Signals are taken from the first moment: one that comes while starting stops it once up.
      let signals = 0;
      let stopWith: ((signal: string) => void) | null = null;
      let early: string | null = null;
      const onSignal = (signal: string) => {
        // A second signal exits at once: safe, nothing uncommitted was ever ACKed.
        if (++signals > 1) process.exit(1);
        if (stopWith) stopWith(signal);
        else early = signal;
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      const running = await serve(config, {
        onFatal: (err) => {
          process.stderr.write(`tickstream serve: stopped: ${err.message}\n`);
          process.exit(1);
        },
      });
      out(
        `tickstream serving: EA ingress :${running.ingressPort}, websockets/metrics :${running.httpPort} (SIGTERM or Ctrl-C to stop)`,
      );
      await new Promise<void>((resolve) => {
        stopWith = (signal) => void running.stop(signal).then(resolve, resolve);
        if (early) stopWith(early);
      });
      return 0;
    },
  },
  loader: {
    spec: LOADER_COMMAND,
    run: (argv) => loaderMain(argv),
  },
  sim: { spec: SIM_COMMAND, run: (argv) => simMain(argv) },
  verify: { spec: VERIFY_COMMAND, run: (argv) => verifyMain(argv) },
  replay: { spec: REPLAY_COMMAND, run: (argv) => replayMain(argv) },
  export: { spec: EXPORT_COMMAND, run: (argv) => exportMain(argv) },
  smoke: {
    spec: SMOKE,
    run: async (argv) => {
      const config = configCommand(SMOKE, argv);
      if (!config) return 0;
      const steps = await runSmoke(config);
      for (const s of steps)
        out(`${s.ok ? 'ok  ' : 'FAIL'} ${s.part.padEnd(9)} ${s.detail} (${s.ms.toFixed(0)} ms)`);
      const failed = steps.filter((s) => !s.ok).length;
      out(failed ? `${failed} part(s) failed: see above` : 'all four parts answered');
      return failed ? 1 : 0;
    },
  },
  config: {
    spec: CONFIG,
    run: async (argv) => {
      const parsed = parseCommand(CONFIG, argv);
      if (!parsed) return 0;
      if (parsed.flags['table']) {
        out('| key | env | default | meaning |\n|---|---|---|---|');
        for (const k of CONFIG_FLAGS)
          out(`| \`${k.flag}\` | \`${k.env}\` | \`${k.default}\` | ${k.description} |`);
        return 0;
      }
      const config = loadConfig({
        ...(parsed.configFile ? { file: parsed.configFile } : {}),
        flags: parsed.config,
      });
      const shown = {
        ...config,
        sourceSecrets: Object.fromEntries(Object.keys(config.sourceSecrets).map((k) => [k, '***'])),
        ...Object.fromEntries(SECRET_KEYS.map((k) => [k, config[k] ? '***' : ''])),
      };
      out(JSON.stringify(shown, null, 2));
      return 0;
    },
  },
};

function help(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  const lines = Object.entries(commands).map(
    ([name, c]) => `  ${name.padEnd(width)}  ${c.spec.summary.split(/(?<=[.:])\s/)[0]}`,
  );
  return [
    'tickstream — lossless MetaTrader 5 tick capture into Kafka, Redis, websockets and Postgres',
    '',
    'usage: tickstream <command> [flags]      tickstream <command> --help',
    '',
    'commands:',
    ...lines,
    '',
    'Configuration: every key as a --kebab-case flag, a TICKSTREAM_* variable or a key of --config',
    'FILE.json (`tickstream serve --help` lists them all).',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    out(help());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`tickstream: unknown command '${name}'\n\n${help()}\n`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof TickstreamError && !process.env['TICKSTREAM_DEBUG']) {
      process.stderr.write(`tickstream ${name}: ${err.code}: ${err.message}\n`);
    } else {
      process.stderr.write(`tickstream ${name}: ${(err as Error).stack ?? String(err)}\n`);
    }
    const usage =
      err instanceof TickstreamError && (err.code === ErrorCode.USAGE || err.code === ErrorCode.CONFIG);
    return usage ? 2 : 1;
  }
}
