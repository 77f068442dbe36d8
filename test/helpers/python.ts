// Running the Python package (clients/python) from tests: the interpreter whose Debian packages
// ops/setup.sh installs (python3-confluent-kafka, -flatbuffers, -websockets, -redis, -psycopg),
// with clients/python on PYTHONPATH (no install needed). TICKSTREAM_PYTHON names another one.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { repoRoot } from './procs.js';

export const PYTHON = process.env['TICKSTREAM_PYTHON'] ?? '/usr/bin/python3';
export const pythonPath = `${repoRoot}clients/python`;

export function pythonEnv(env: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, PYTHONPATH: pythonPath, PYTHONUNBUFFERED: '1', ...env };
}

export interface PythonResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `python3 args…` to its end (killed by pid after `timeoutMs`). */
export async function runPython(
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<PythonResult> {
  const child = spawn(PYTHON, args, {
    cwd: repoRoot,
    env: pythonEnv(options.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** A long-running Python process whose stdout is JSON lines; it ends when its stdin closes. */
export function startPythonLines(args: string[], env: Record<string, string> = {}) {
  const child: ChildProcess = spawn(PYTHON, args, {
    cwd: repoRoot,
    env: pythonEnv(env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const p of parts) if (p) lines.push(JSON.parse(p) as Record<string, unknown>);
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    /** Closes stdin (the process ends by itself), then SIGKILLs it by pid after `graceMs`. */
    stop: async (graceMs = 10_000): Promise<number | null> => {
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
