// The alert rules are valid PromQL (`promtool check rules`) and each one is proven by unit tests
// (`promtool test rules`, ops/prometheus/alerts.test.yml): a case where it fires with the
// labels and summary an operator will read, and one where it stays quiet.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { alertsFile, alertTestsFile, readAlertRules, which } from './promql.js';

const promtool = which('promtool');
const rules = readAlertRules();

describe('ops/prometheus/alerts.yml', () => {
  it('every rule has a severity and a summary', () => {
    expect(rules.length).toBeGreaterThanOrEqual(18);
    for (const r of rules) {
      expect(r.expr, r.alert).not.toBe('');
      expect(['critical', 'warning'], r.alert).toContain(r.severity);
      expect(r.summary, r.alert).toBeTruthy();
    }
  });

  it('every rule has a unit test where it fires and one where it does not', () => {
    const tests = readFileSync(alertTestsFile, 'utf8');
    for (const { alert } of rules) {
      expect(tests, `no quiet case for ${alert}`).toMatch(
        new RegExp(`alertname: ${alert}, exp_alerts: \\[\\]`),
      );
      expect(tests, `no firing case for ${alert}`).toMatch(
        new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels:`),
      );
    }
  });
});

describe.skipIf(!promtool)(
  promtool
    ? 'promtool'
    : 'promtool (SKIPPED: not installed; `npm run setup` installs the Debian prometheus package)',
  () => {
    const run = (args: string[]) => {
      const r = spawnSync(promtool!, args, { encoding: 'utf8', timeout: 60_000 });
      return { status: r.status, output: `${r.stdout}${r.stderr}` };
    };

    it('check rules: the file is valid and holds every rule', () => {
      const r = run(['check', 'rules', alertsFile]);
      expect(r.status, r.output).toBe(0);
      expect(r.output).toContain(`SUCCESS: ${rules.length} rules found`);
    });

    it('test rules: every unit test passes', () => {
      const r = run(['test', 'rules', alertTestsFile]);
      expect(r.status, r.output).toBe(0);
      expect(r.output).toContain('SUCCESS');
    });
  },
);
