/**
 * Fault injection for the crash tests, off unless the environment asks for it:
 *   TICKSTREAM_CRASH_AT=<point>       kill -9 this process when it reaches <point>
 *   TICKSTREAM_CRASH_AFTER=<n>        … on the n-th time (default 1)
 *   TICKSTREAM_FAIL_AT=<point>        throw an error at <point> once (on the TICKSTREAM_FAIL_AFTER-th
 *                                    time), e.g. journal-commit: the transaction fails and aborts
 *   TICKSTREAM_SLOW_AT=<point>        wait TICKSTREAM_SLOW_MS (default 200) at <point> every time,
 *                                    e.g. journal-commit: a deliberately slow journal
 * Crash points: after-decode-before-produce, journal-mid-transaction, after-commit-before-ack,
 * bridge-mid-resend, journal-during-abort, loader-mid-copy. Fail points: journal-commit,
 * ws-message (a websocket message handler throws: that client is closed, serve goes on). The
 * line "crash point <point> hit" (or "fail point … hit") goes to stderr first, so a test can
 * tell the point was reached.
 */
import { writeSync } from 'node:fs';

export function crashPointFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): ((name: string) => void) | undefined {
  const at = env['TICKSTREAM_CRASH_AT'];
  if (!at) return undefined;
  let remaining = Number(env['TICKSTREAM_CRASH_AFTER'] ?? 1);
  return (name: string) => {
    if (name !== at || --remaining > 0) return;
    writeSync(2, `crash point ${name} hit\n`);
    process.kill(process.pid, 'SIGKILL');
  };
}

export function failPointFromEnv(env: NodeJS.ProcessEnv = process.env): ((name: string) => void) | undefined {
  const at = env['TICKSTREAM_FAIL_AT'];
  if (!at) return undefined;
  let remaining = Number(env['TICKSTREAM_FAIL_AFTER'] ?? 1);
  return (name: string) => {
    if (name !== at || --remaining !== 0) return;
    writeSync(2, `fail point ${name} hit\n`);
    throw new Error(`injected failure at ${name} (TICKSTREAM_FAIL_AT)`);
  };
}

export function slowPointFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): ((name: string) => Promise<void>) | undefined {
  const at = env['TICKSTREAM_SLOW_AT'];
  if (!at) return undefined;
  const ms = Number(env['TICKSTREAM_SLOW_MS'] ?? 200);
  return (name: string) => (name === at ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve());
}
