#!/usr/bin/env node
// The `tickstream` command: runs the built CLI (tsc output in dist/).
import { existsSync } from 'node:fs';

// A closed pipe (`tickstream --help | head`) is not an error worth a stack trace.
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
});

const cli = new URL('../dist/pipeline/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write(
    'tickstream is not built yet: run `npm run setup && npm run build` in the repository first.\n',
  );
  process.exit(1);
}
const { main } = await import(cli.href);
const code = await main(process.argv.slice(2));
// A failed command exits at once: a half-started client (Kafka, Postgres) must not hold it open.
if (code !== 0) process.exit(code);
