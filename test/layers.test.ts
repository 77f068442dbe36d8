// Folder = layer, and imports go one way (README, Architecture): codecs import nothing of ours,
// bridge and sinks import codecs only (sinks never each other), pipeline wires everything;
// client/ (@tickstream/client) imports codecs only.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('..', import.meta.url));
const allowed: Record<string, string[]> = {
  codecs: ['codecs'],
  bridge: ['codecs', 'bridge'],
  sinks: ['codecs'],
  pipeline: ['codecs', 'bridge', 'sinks', 'pipeline'],
  // The published client shares the record codec with the server, nothing else.
  client: ['codecs', 'client'],
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'generated' || name === 'dist' ? [] : sourceFiles(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1] as string);
}

describe('import direction between layers', () => {
  for (const [layer, may] of Object.entries(allowed)) {
    it(`${layer}/ imports only ${may.join(', ')}`, () => {
      const bad: string[] = [];
      for (const file of sourceFiles(join(repo, layer))) {
        for (const spec of importsOf(file)) {
          const target = relative(repo, resolve(file, '..', spec)).split(sep);
          const top = target[0] as string;
          // A sink may import its own folder's files, never another sink.
          const sameSink =
            layer === 'sinks' &&
            top === 'sinks' &&
            target[1] === relative(join(repo, 'sinks'), file).split(sep)[0];
          if (!may.includes(top) && !sameSink) bad.push(`${relative(repo, file)} imports ${spec}`);
        }
      }
      expect(bad).toEqual([]);
    });
  }

  it('piscina worker files never import a sink or the Kafka client', () => {
    const workers = sourceFiles(join(repo, 'pipeline')).filter((f) => f.endsWith('-worker.ts'));
    for (const file of workers) {
      const text = readFileSync(file, 'utf8');
      expect(text, relative(repo, file)).not.toMatch(/sinks\/|@confluentinc\/kafka-javascript/);
    }
  });
});
