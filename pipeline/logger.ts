/** Structured logs (pino). Secrets and tokens are redacted wherever they appear in a log object. */
import { pino } from 'pino';

export function createLogger(level: string, name = 'tickstream') {
  return pino({
    name,
    level,
    redact: {
      paths: ['secret', '*.secret', 'sourceSecrets', '*.sourceSecrets', 'token', 'wsTokens', '*.wsTokens'],
      censor: '***',
    },
  });
}

export type Logger = ReturnType<typeof createLogger>;
