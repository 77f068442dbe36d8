// The deployable stack, checked as far as this machine can without a Docker engine: the compose
// file passes `docker-compose config` (its schema and interpolation), names the files it mounts,
// and the Dockerfile has the stages and settings the stack relies on. Nothing is built or run.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/procs.js';
import { which } from './promql.js';

const composeFile = `${repoRoot}ops/compose.yaml`;
const dockerCompose = which('docker-compose');

describe('ops/compose.yaml and the Dockerfile', () => {
  it.skipIf(!dockerCompose)(
    'docker-compose config accepts the file with the stack profile (skipped without Debian docker-compose)',
    () => {
      const r = spawnSync(dockerCompose!, ['-f', composeFile, '--profile', 'stack', 'config'], {
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      for (const service of ['kafka', 'redis', 'postgres', 'prometheus', 'grafana', 'tickstream', 'traefik'])
        expect(r.stdout).toMatch(new RegExp(`^  ${service}:$`, 'm'));
    },
  );

  it('every config file the compose file mounts exists (ops/certs is optional)', () => {
    const mounts = [...readFileSync(composeFile, 'utf8').matchAll(/- \.\/([\w./-]+):/g)].map((m) => m[1]!);
    expect(mounts.length).toBeGreaterThanOrEqual(5);
    for (const m of mounts) expect(existsSync(`${repoRoot}ops/${m}`), m).toBe(true);
  });

  it('every service has a health check, Traefik routes HTTP to :5001 and passes TLS through to :5555', () => {
    const text = readFileSync(composeFile, 'utf8');
    expect(text.match(/^ {4}healthcheck:$/gm)?.length).toBe(6); // tickstream's is in its image
    expect(text).toContain('traefik.http.services.tickstream-http.loadbalancer.server.port: "5001"');
    expect(text).toContain('traefik.tcp.routers.tickstream-ingress.tls.passthrough: "true"');
    expect(text).toContain('traefik.tcp.services.tickstream-ingress.loadbalancer.server.port: "5555"');
  });

  it('the Dockerfile builds in a stage of its own and runs as a non-root user with a readiness health check', () => {
    const text = readFileSync(`${repoRoot}Dockerfile`, 'utf8');
    expect(text).toMatch(/^FROM node:20-bookworm AS build$/m);
    expect(text).toMatch(/^COPY --from=build \/app\/node_modules/m);
    expect(text).toMatch(/^USER node$/m);
    expect(text).toMatch(/^HEALTHCHECK .*\n.*\/readyz/m);
    expect(readFileSync(`${repoRoot}.dockerignore`, 'utf8')).toMatch(/^node_modules$/m);
  });
});
