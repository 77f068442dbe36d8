// Probes of a running serve's HTTP port shared by the fault tests: /metrics read as text
// (bench/harness.ts `scrape`, parsed here independently of prom-client) and /healthz.

const LOOPBACK = '127.0.0.1';

export { scrape } from '../../bench/harness.js';

/** Samples of `name` by the value of `label` (one label only). */
export function samples(text: string, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  const re = new RegExp(`^${name}\\{${label}="([^"]*)"\\} (\\S+)$`, 'gm');
  for (const m of text.matchAll(re)) out[m[1] as string] = Number(m[2]);
  return out;
}

/** The value of an unlabelled metric, NaN when absent. */
export function gauge(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

/** /healthz's status code, 0 when nothing answers. */
export async function healthz(httpPort: number): Promise<number> {
  try {
    const res = await fetch(`http://${LOOPBACK}:${httpPort}/healthz`, { signal: AbortSignal.timeout(5000) });
    return res.status;
  } catch {
    return 0;
  }
}
