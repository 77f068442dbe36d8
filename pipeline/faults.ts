/**
 * Fault injection for the crash tests, off unless the environment asks for it:
 *   TICKSTREAM_CRASH_AT=<point>       kill -9 this process when it reaches <point>
 *   TICKSTREAM_CRASH_AFTER=<n>        … on the n-th time (default 1)
 * Points: after-decode-before-produce, journal-mid-transaction, after-commit-before-ack,
 * bridge-mid-resend, journal-during-abort, loader-mid-copy. The line "crash point <point> hit"
 * goes to stderr first, so a test can tell the point was reached.
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
