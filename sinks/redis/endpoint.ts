/**
 * Where the Redis sink connects: a `redis://[user:password@]host[:port][/db]` or `rediss://`
 * (TLS) URL, checked once at start-up with messages that name what is wrong.
 */
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { redactUrl } from '../../codecs/redact.js';

export interface Endpoint {
  host: string;
  port: number;
  tls: boolean;
  username: string;
  password: string;
  db: number;
}

export function parseUrl(url: string): Endpoint {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TickstreamError(
      ErrorCode.CONFIG,
      `redis url "${redactUrl(url)}" is not a URL: use redis://host:port`,
    );
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    throw new TickstreamError(
      ErrorCode.CONFIG,
      `redis url "${redactUrl(url)}": scheme must be redis:// or rediss:// (TLS), not ${u.protocol}`,
    );
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0)
    throw new TickstreamError(
      ErrorCode.CONFIG,
      `redis url "${redactUrl(url)}": the path must be a db number`,
    );
  return {
    host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    tls: u.protocol === 'rediss:',
    username: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    db,
  };
}
