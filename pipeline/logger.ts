/**
 * Structured logs (pino). Secrets and tokens are redacted wherever they appear in a log object.
 * Format `json` is one JSON object a line (for log shippers); `pretty` is one readable line
 * (`12:00:01.234 WARN  message key=value`) for a person at a terminal; `auto` picks pretty when
 * stdout is a terminal.
 */
import { pino } from 'pino';

export type LogFormat = 'auto' | 'json' | 'pretty';

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

function prettyLine(json: string): string {
  const entry = JSON.parse(json) as Record<string, unknown>;
  const time = new Date(Number(entry['time'])).toISOString().slice(11, 23);
  const level = (LEVELS[Number(entry['level'])] ?? String(entry['level'])).padEnd(5);
  const fields = Object.entries(entry)
    .filter(([key]) => !HIDDEN.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
  return `${time} ${level} ${String(entry['msg'] ?? '')}${fields.length ? `  ${fields.join(' ')}` : ''}\n`;
}

export function createLogger(level: string, format: LogFormat = 'json', name = 'tickstream') {
  const pretty = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true);
  return pino(
    {
      name,
      level,
      redact: {
        paths: [
          'secret',
          '*.secret',
          'sourceSecrets',
          '*.sourceSecrets',
          'token',
          'wsTokens',
          '*.wsTokens',
          'kafkaSaslPassword',
          '*.kafkaSaslPassword',
          'kafkaSslKeyPassword',
          '*.kafkaSslKeyPassword',
          'saslPassword',
          '*.saslPassword',
          'sslKeyPassword',
          '*.sslKeyPassword',
          '["sasl.password"]',
          '*["sasl.password"]',
        ],
        censor: '***',
      },
    },
    pretty ? { write: (line: string) => process.stdout.write(prettyLine(line)) } : process.stdout,
  );
}

export type Logger = ReturnType<typeof createLogger>;
