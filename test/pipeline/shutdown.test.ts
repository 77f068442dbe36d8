// SIGTERM stops serve also while an HTTP client keeps a keep-alive connection busy, as a
// Prometheus scraping every few hundred milliseconds does (it once held the process forever:
// the connection never idled out, and an open connection keeps the process alive).
import http from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { isolatedNames, removeNames, serveArgs, startServe } from '../helpers/procs.js';

const names = isolatedNames('shutdown');
afterAll(() => removeNames([names]), 60_000);

describe('serve shutdown', () => {
  it('exits 0 after SIGTERM while a keep-alive client scrapes /metrics every 300 ms', async () => {
    const serve = await startServe(serveArgs(names, ['--loader-enabled', 'false']));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let answered = 0;
    let scraping = true;
    const scrape = () =>
      new Promise<void>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: serve.httpPort, path: '/metrics', agent }, (res) => {
          res.resume();
          res.on('end', () => {
            answered++;
            resolve();
          });
        });
        req.on('error', () => resolve());
      });
    const loop = (async () => {
      while (scraping) {
        await scrape();
        await new Promise((r) => setTimeout(r, 300));
      }
    })();
    try {
      while (answered < 3) await new Promise((r) => setTimeout(r, 100));
      serve.child.kill('SIGTERM');
      const code = await Promise.race([
        serve.exited,
        new Promise<string>((r) => setTimeout(() => r('still running 20 s after SIGTERM'), 20_000)),
      ]);
      expect(code, serve.output().slice(-2000)).toBe(0);
    } finally {
      scraping = false;
      await loop;
      agent.destroy();
      await serve.stop('SIGKILL');
    }
  }, 60_000);
});
