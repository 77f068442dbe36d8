/**
 * Versioned migrations (sinks/postgres/migrations/NNN_name.sql), applied in order, each in its
 * own transaction, recorded in `schema_migrations`. Idempotent, and safe when several
 * processes start at once (an advisory lock serialises them).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';

/** The .sql files live in the source tree; from dist/ they are found one level further up. */
function migrationsDir(): string {
  const here = import.meta.url;
  return fileURLToPath(
    new URL(here.includes('/dist/') ? '../../../sinks/postgres/migrations/' : './migrations/', here),
  );
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export async function migrate(client: pg.ClientBase, schema: string): Promise<string[]> {
  const applied: string[] = [];
  await client.query(`create schema if not exists ${quoteIdent(schema)}`);
  await client.query('select pg_advisory_lock(hashtext($1))', [`tickstream migrations ${schema}`]);
  try {
    await client.query(`set search_path to ${quoteIdent(schema)}`);
    await client.query(
      'create table if not exists schema_migrations (version text primary key, applied_at timestamptz not null default now())',
    );
    const done = new Set(
      (await client.query<{ version: string }>('select version from schema_migrations')).rows.map(
        (r) => r.version,
      ),
    );
    const dir = migrationsDir();
    for (const file of readdirSync(dir)
      .filter((f) => /^\d{3}_.*\.sql$/.test(f))
      .sort()) {
      if (done.has(file)) continue;
      await client.query('begin');
      try {
        await client.query(readFileSync(`${dir}${file}`, 'utf8'));
        await client.query('insert into schema_migrations (version) values ($1)', [file]);
        await client.query('commit');
        applied.push(file);
      } catch (err) {
        await client.query('rollback');
        throw err;
      }
    }
  } finally {
    await client.query('select pg_advisory_unlock(hashtext($1))', [`tickstream migrations ${schema}`]);
  }
  return applied;
}
