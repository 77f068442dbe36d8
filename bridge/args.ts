/**
 * A small argv parser: `--key value`, `--key=value`, bare `--flag` (true) and positionals.
 * Commands validate what they get through the config schema or their own checks.
 */
export interface ParsedArgs {
  positionals: string[];
  flags: Record<string, string>;
}

export function parseArgs(
  argv: readonly string[],
  booleanFlags: ReadonlySet<string> = new Set(),
): ParsedArgs {
  const positionals: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    if (eq > 0) {
      flags[arg.slice(2, eq)] = arg.slice(eq + 1);
      continue;
    }
    const name = arg.slice(2);
    const next = argv[i + 1];
    if (booleanFlags.has(name) || next === undefined || next.startsWith('--')) {
      flags[name] = 'true';
    } else {
      flags[name] = next;
      i++;
    }
  }
  return { positionals, flags };
}
