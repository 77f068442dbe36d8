/**
 * The `tickstream` command line. Each subcommand returns an exit code; failures print one
 * message that says what was wrong and what to do (a TickstreamError's message), never a
 * stack trace unless TICKSTREAM_DEBUG is set.
 */

import { parseArgs } from '../bridge/args.js';
import { simMain } from '../bridge/sim.js';
import { TickstreamError } from '../codecs/errors.js';
import { configKeys, loadConfig } from './config.js';
import { demoMain } from './demo.js';
import { loaderMain } from './loader-main.js';
import { serve } from './serve.js';
import { runSmoke } from './smoke.js';
import { verifyMain } from './verify.js';

type Command = { summary: string; run: (argv: string[]) => Promise<number> };

const out = (line: string) => process.stdout.write(`${line}\n`);

function configFrom(argv: string[]) {
  const { flags } = parseArgs(argv);
  const { config: file, ...rest } = flags;
  return loadConfig(file ? { file, flags: rest } : { flags: rest });
}

const commands: Record<string, Command> = {
  demo: {
    summary: 'the main job end to end: serve, feed the MT5 export and a synthetic stream, print every sink',
    run: (argv) => demoMain(argv),
  },
  serve: {
    summary: 'run the bridge: EA ingress → Kafka journal, Redis, websockets, Postgres loader',
    run: async (argv) => {
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
      const running = await serve(configFrom(argv), {
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
    summary:
      'run only the Postgres loader (journal → COPY into Postgres, exactly once); --reset-offsets re-binds',
    run: (argv) => loaderMain(argv),
  },
  sim: {
    summary: 'stream an MT5 export, a CSV or a synthetic feed to the bridge, as an EA would (sim --help)',
    run: (argv) => simMain(argv),
  },
  verify: {
    summary: 'audit the journal and Postgres per source: holes, duplicates, rows missing or extra',
    run: (argv) => verifyMain(argv),
  },
  smoke: {
    summary: 'one round trip through Kafka, Redis, Postgres and a uWS websocket',
    run: async (argv) => {
      const steps = await runSmoke(configFrom(argv));
      for (const s of steps)
        out(`${s.ok ? 'ok  ' : 'FAIL'} ${s.part.padEnd(9)} ${s.detail} (${s.ms.toFixed(0)} ms)`);
      const failed = steps.filter((s) => !s.ok).length;
      out(failed ? `${failed} part(s) failed: see above` : 'all four parts answered');
      return failed ? 1 : 0;
    },
  },
  config: {
    summary: 'print the effective configuration (--table: every key as a Markdown table)',
    run: async (argv) => {
      if (argv.includes('--table')) {
        out('| key | env | default | meaning |\n|---|---|---|---|');
        for (const k of configKeys())
          out(`| \`${k.flag}\` | \`${k.env}\` | \`${k.default}\` | ${k.description} |`);
        return 0;
      }
      const config = configFrom(argv);
      const shown = {
        ...config,
        sourceSecrets: Object.fromEntries(Object.keys(config.sourceSecrets).map((k) => [k, '***'])),
      };
      out(JSON.stringify(shown, null, 2));
      return 0;
    },
  },
};

function help(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return [
    'tickstream — lossless MetaTrader 5 tick capture into Kafka, Redis, websockets and Postgres',
    '',
    'usage: tickstream <command> [--option value ...]',
    '',
    'commands:',
    ...lines,
    '',
    'Options: every config key as --kebab-case (see `tickstream config --table`), or --config FILE.json.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    out(help());
    return name ? 0 : 1;
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
    return 1;
  }
}
