// The status page in a real browser: headless Chromium (Debian `chromium`, driven by its own
// command line: --dump-dom for the rendered page, --screenshot for people to look at) loads it
// from a real `serve` while a sim streams. The page logs nothing to the console (Chromium
// prints every console message and uncaught error as a CONSOLE line with --enable-logging),
// shows the sim's source with a tick count that rises between two loads, and fills its sinks.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  isolatedNames,
  removeNames,
  repoRoot,
  type ServeProcess,
  serveArgs,
  startCli,
  startServe,
  waitFor,
} from '../helpers/procs.js';
import { which } from './promql.js';

const chromium = which('chromium');
const screenshot = `${repoRoot}.infra/screenshots/status-page.png`;
const profile = mkdtempSync(join(tmpdir(), 'tickstream-chromium-'));
const n = isolatedNames('opspage');
let serve: ServeProcess | null = null;
let sim: ReturnType<typeof startCli> | null = null;

/** Runs chromium headless on `url` (killed by pid after 60 s); its stdout and stderr. */
function browse(
  url: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(
    chromium!,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      `--user-data-dir=${profile}`,
      '--enable-logging=stderr',
      '--v=0',
      // Virtual time runs the page's timers ahead (it waits for the page's fetches to answer), so
      // the ticks/s the page computes from its own clock are not the real rates here.
      '--virtual-time-budget=4000',
      ...args,
      url,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

const consoleLines = (stderr: string) => stderr.split('\n').filter((l) => /:CONSOLE[:(]/.test(l));

function ticksShown(dom: string, source: string): number {
  const row = new RegExp(`<tr data-source="${source}">.*?</tr>`).exec(dom)?.[0] ?? '';
  const cell = /<td data-field="ticks">([\d,]+)<\/td>/.exec(row)?.[1];
  return cell === undefined ? Number.NaN : Number(cell.replaceAll(',', ''));
}

afterAll(async () => {
  sim?.child.kill('SIGKILL');
  await serve?.stop('SIGKILL');
  await removeNames([n]);
  rmSync(profile, { recursive: true, force: true });
});

describe.skipIf(!chromium)(
  chromium
    ? 'status page in headless Chromium'
    : 'status page (SKIPPED: chromium not installed; `npm run setup` installs it)',
  () => {
    let url = '';
    beforeAll(async () => {
      // A feed group over the sim's symbols, so the merged-feed table has a row.
      const feedGroups = [
        {
          symbol: 'SYN',
          policy: 'failover',
          members: [
            { source: 'pagesim', symbol: 'SYN001' },
            { source: 'pagespare', symbol: 'SYN001' },
          ],
        },
      ];
      serve = await startServe(serveArgs(n, ['--feed-groups', JSON.stringify(feedGroups)]));
      url = `http://127.0.0.1:${serve.httpPort}/`;
      sim = startCli([
        'sim',
        '--synthetic',
        '--symbols',
        '2',
        '--rate',
        '500',
        '--duration',
        '600',
        '--source',
        'pagesim',
        '--port',
        String(serve.ingressPort),
      ]);
      const status = async () =>
        (await fetch(`${url}status`)).json() as Promise<{ sources: { ticks: number }[] }>;
      expect(await waitFor(async () => ((await status()).sources[0]?.ticks ?? 0) > 0)).toBe(true);
    });

    it('the console stays silent, and the probe would see an error if there were one', async () => {
      const page = await browse(url, ['--dump-dom']);
      expect(page.code, page.stderr.slice(-2000)).toBe(0);
      expect(consoleLines(page.stderr)).toEqual([]);
      const broken = await browse(
        'data:text/html,<script>console.error("probe");missingFunction()</script>',
        ['--dump-dom'],
      );
      expect(consoleLines(broken.stderr).join('\n')).toMatch(/"probe".*\n.*missingFunction is not defined/s);
    });

    it("shows the running sim's source with a count that rises, and the sinks", async () => {
      const first = await browse(url, ['--dump-dom']);
      const before = ticksShown(first.stdout, 'pagesim');
      expect(before, first.stdout.slice(0, 3000)).toBeGreaterThan(0);
      expect(first.stdout).toMatch(/<span id="ready" class="ok">ready<\/span>/);
      for (const sink of ['Kafka journal', 'Redis', 'Websockets', 'Postgres loader'])
        expect(first.stdout).toContain(`<tr data-sink="${sink}">`);
      // The merged feed SYN follows the sim's source, and says why.
      const feed = /<tr data-feed="SYN">.*?<\/tr>/.exec(first.stdout)?.[0] ?? '';
      expect(feed).toMatch(
        /<td data-field="active" class="ok">pagesim<\/td><td data-field="why">start<\/td>/,
      );
      expect(feed).toContain('pagespare:SYN001 no-ticks');
      let after = before;
      expect(
        await waitFor(async () => {
          after = ticksShown((await browse(url, ['--dump-dom'])).stdout, 'pagesim');
          return after > before;
        }, 60_000),
        `ticks shown: ${before} then ${after}`,
      ).toBe(true);
    });

    it('writes a screenshot to .infra/screenshots/status-page.png', async () => {
      mkdirSync(join(repoRoot, '.infra/screenshots'), { recursive: true });
      rmSync(screenshot, { force: true });
      const shot = await browse(url, ['--window-size=1400,900', `--screenshot=${screenshot}`]);
      expect(shot.code, shot.stderr.slice(-2000)).toBe(0);
      expect(existsSync(screenshot)).toBe(true);
      expect(statSync(screenshot).size).toBeGreaterThan(10_000);
    });
  },
);
