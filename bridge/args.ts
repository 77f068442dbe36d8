/**
 * Command-line flags of every `tickstream` command, parsed by `node:util` parseArgs in strict
 * mode. A command declares its flags once (type, default, meaning); `--help` is printed from the
 * same declaration, and an unknown flag, a missing value or a non-number where a number is
 * expected is an ERR_USAGE error that names the flag (the CLI exits with code 2).
 */
import { parseArgs } from 'node:util';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';

export interface FlagSpec {
  type: 'string' | 'number' | 'boolean';
  description: string;
  default?: string | number;
  /** Placeholder shown in --help (`--file PATH`). */
  value?: string;
  choices?: readonly string[];
  /** Numbers only: must be an integer. */
  integer?: boolean;
  /** Numbers only: smallest value accepted. */
  min?: number;
}

/** A configuration key offered as a flag (rows of `configKeys()`). */
export interface ConfigFlag {
  flag: string;
  default: string;
  description: string;
}

export interface CommandSpec<F extends Record<string, FlagSpec> = Record<string, FlagSpec>> {
  name: string;
  /** How it is run, when not `tickstream <name>` (`npm run bench --`). */
  invocation?: string;
  summary: string;
  flags: F;
  /** Configuration keys this command also accepts as flags (plus `--config FILE.json`). */
  configFlags?: readonly ConfigFlag[];
  /** Show every configuration key in --help (otherwise one line points to `tickstream config --table`). */
  listConfigFlags?: boolean;
  /** Positional arguments taken, for --help (`[FILE]`); none when left out. */
  positionals?: { usage: string; description: string };
  examples: readonly string[];
  notes?: readonly string[];
}

type ValueOf<S extends FlagSpec> = S['type'] extends 'number'
  ? number
  : S['type'] extends 'boolean'
    ? boolean
    : string;

export type FlagValues<F extends Record<string, FlagSpec>> = {
  [K in keyof F]: F[K] extends { type: 'boolean' }
    ? boolean
    : F[K] extends { default: string | number }
      ? ValueOf<F[K]>
      : ValueOf<F[K]> | undefined;
};

export interface ParsedCommand<F extends Record<string, FlagSpec>> {
  flags: FlagValues<F>;
  /** Configuration flags as given (`kafka-brokers` → value), for loadConfig. */
  config: Record<string, string>;
  configFile?: string;
  positionals: string[];
}

const usage = (spec: CommandSpec, message: string) =>
  new TickstreamError(
    ErrorCode.USAGE,
    `${message}. Run '${spec.invocation ?? `tickstream ${spec.name}`} --help' for the flags it takes.`,
  );

function toNumber(spec: CommandSpec, name: string, flag: FlagSpec, raw: string): number {
  const value = raw.trim() === '' ? Number.NaN : Number(raw);
  if (!Number.isFinite(value)) throw usage(spec, `--${name} expects a number, got '${raw}'`);
  if (flag.integer && !Number.isInteger(value))
    throw usage(spec, `--${name} expects a whole number, got '${raw}'`);
  if (flag.min !== undefined && value < flag.min)
    throw usage(spec, `--${name} must be at least ${flag.min}, got '${raw}'`);
  return value;
}

/**
 * Parses `argv` for `spec`. Returns undefined after printing the help when `--help`/`-h` is
 * given; throws ERR_USAGE naming the flag on anything it cannot take.
 */
export function parseCommand<F extends Record<string, FlagSpec>>(
  spec: CommandSpec<F>,
  argv: readonly string[],
  write: (text: string) => void = (text) => process.stdout.write(text),
): ParsedCommand<F> | undefined {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [name, flag] of Object.entries(spec.flags))
    options[name] = { type: flag.type === 'boolean' ? 'boolean' : 'string' };
  const configNames = new Set((spec.configFlags ?? []).map((c) => c.flag.replace(/^--/, '')));
  for (const name of configNames) options[name] ??= { type: 'string' };
  if (spec.configFlags) options['config'] = { type: 'string' };

  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      options,
      strict: true,
      allowPositionals: spec.positionals !== undefined,
    });
  } catch (err) {
    // node's messages name the flag ("Unknown option '--x'", "Option '--rate <value>' argument missing").
    throw usage(spec, (err as Error).message.replace(/\.$/, '').split('\n')[0] ?? 'bad arguments');
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values['help']) {
    write(`${formatHelp(spec)}\n`);
    return undefined;
  }
  const flags: Record<string, string | number | boolean | undefined> = {};
  for (const [name, flag] of Object.entries(spec.flags)) {
    const raw = values[name];
    if (flag.type === 'boolean') {
      flags[name] = raw === true;
      continue;
    }
    const given = typeof raw === 'string' ? raw : undefined;
    if (given !== undefined && flag.choices && !flag.choices.includes(given))
      throw usage(spec, `--${name} must be one of ${flag.choices.join(', ')}, got '${given}'`);
    if (flag.type === 'number') {
      flags[name] = given !== undefined ? toNumber(spec, name, flag, given) : flag.default;
    } else {
      flags[name] = given ?? flag.default;
    }
  }
  const config: Record<string, string> = {};
  for (const name of configNames) {
    const raw = values[name];
    if (typeof raw === 'string' && !(name in spec.flags)) config[name] = raw;
  }
  const configFile = typeof values['config'] === 'string' ? values['config'] : undefined;
  return {
    flags: flags as FlagValues<F>,
    config,
    ...(configFile !== undefined ? { configFile } : {}),
    positionals: parsed.positionals,
  };
}

function flagLine(name: string, flag: FlagSpec): [string, string] {
  const placeholder =
    flag.type === 'boolean' ? '' : ` ${flag.value ?? (flag.type === 'number' ? 'N' : 'VALUE')}`;
  const extra = [
    flag.choices ? `one of ${flag.choices.join('|')}` : '',
    flag.default !== undefined && flag.default !== '' ? `default ${flag.default}` : '',
  ].filter(Boolean);
  return [
    `--${name}${placeholder}`,
    extra.length ? `${flag.description} (${extra.join('; ')})` : flag.description,
  ];
}

/** The text `--help` prints: usage, every flag with its default, examples. */
export function formatHelp(spec: CommandSpec): string {
  const rows = Object.entries(spec.flags).map(([name, flag]) => flagLine(name, flag));
  if (spec.configFlags) rows.push(['--config FILE', 'JSON file with configuration keys (see below)']);
  rows.push(['-h, --help', 'show this help']);
  const configRows = spec.listConfigFlags
    ? (spec.configFlags ?? []).map((c): [string, string] => [
        `${c.flag} VALUE`,
        `${c.description} (default ${c.default})`,
      ])
    : [];
  const width = Math.min(34, Math.max(...[...rows, ...configRows].map(([left]) => left.length)) + 2);
  const table = (list: [string, string][]) =>
    list.map(([left, right]) =>
      left.length >= width ? `  ${left}\n  ${' '.repeat(width)}${right}` : `  ${left.padEnd(width)}${right}`,
    );
  const args = spec.positionals ? ` ${spec.positionals.usage}` : '';
  const lines = [
    `usage: ${spec.invocation ?? `tickstream ${spec.name}`} [flags]${args}`,
    '',
    spec.summary,
    '',
  ];
  if (spec.positionals) lines.push(`${spec.positionals.usage}: ${spec.positionals.description}`, '');
  lines.push('flags:', ...table(rows));
  if (spec.configFlags) {
    lines.push('');
    if (spec.listConfigFlags) {
      lines.push(
        'configuration (flag, or environment TICKSTREAM_<KEY>, or a key of --config FILE; flags win):',
        ...table(configRows),
      );
    } else {
      lines.push(
        'configuration: every key of `tickstream serve --help` is also a flag here (for example',
        '--kafka-brokers, --postgres-url), or set it in the environment or a --config FILE.',
      );
    }
  }
  for (const note of spec.notes ?? []) lines.push('', note);
  lines.push('', spec.examples.length > 1 ? 'examples:' : 'example:', ...spec.examples.map((e) => `  ${e}`));
  return lines.join('\n');
}
