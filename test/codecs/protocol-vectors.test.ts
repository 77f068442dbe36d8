import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TickstreamError } from '../../codecs/errors.js';
import { type Frame, FrameDecoder, MessageType } from '../../codecs/frame.js';
import * as m from '../../codecs/messages.js';
import { frames, hexBlock, messages, vectors } from './vectors.js';

const docPath = fileURLToPath(new URL('../../docs/protocol.md', import.meta.url));
const doc = readFileSync(docPath, 'utf8');
const hasPython = spawnSync('python3', ['--version']).status === 0;

const payloadDecoders: Record<keyof typeof messages, (p: Uint8Array) => unknown> = {
  CHALLENGE: m.decodeChallenge,
  HELLO: (p) => m.decodeHello(p),
  HELLO_ACK: m.decodeHelloAck,
  SYMBOLS: (p) => m.decodeSymbols(p),
  TICKS: (p) => m.decodeTicksHeader(p, 60),
  TICKS_52: (p) => m.decodeTicksHeader(p, 52),
  HEARTBEAT: m.decodeHeartbeat,
  ACK: m.decodeAck,
  RESEND: m.decodeResend,
  ERROR: m.decodeError,
  BYE: m.decodeBye,
};

describe('docs/protocol.md test vectors', () => {
  it('the document shows no vector the tests do not know', () => {
    const shown = [...doc.matchAll(/<!-- vector (\w+) -->/g)].map((x) => x[1]);
    expect(shown.sort()).toEqual(Object.keys(vectors).sort());
  });

  for (const [name, bytes] of Object.entries(vectors)) {
    it(`${name}: the document shows exactly what the encoder writes`, () => {
      const block = new RegExp(`<!-- vector ${name} -->\\n\`\`\`text\\n([0-9a-f \\n]+)\`\`\``).exec(doc);
      const want = hexBlock(bytes);
      expect(block?.[1]?.trim(), `docs/protocol.md vector ${name} should read:\n${want}`).toBe(want);
    });
  }

  for (const [name, bytes] of Object.entries(frames)) {
    it(`${name}: decodes back to its message`, () => {
      const d = new FrameDecoder();
      d.push(bytes);
      const f = d.next();
      expect(f).not.toBeInstanceOf(TickstreamError);
      expect((f as Frame).type).toBe(
        MessageType[name === 'TICKS_52' ? 'TICKS' : (name as keyof typeof MessageType)],
      );
      const decoded = payloadDecoders[name as keyof typeof messages]((f as Frame).payload);
      expect(decoded).toEqual(messages[name as keyof typeof messages]);
    });
  }
});

describe.skipIf(!hasPython)('docs/protocol.md test vectors, independent encoder (python3)', () => {
  it('struct/hmac/bitwise-CRC32C in Python write the same bytes as the document shows', () => {
    const script = fileURLToPath(new URL('./protocol_vectors.py', import.meta.url));
    const run = spawnSync('python3', [script, docPath], { encoding: 'utf8' });
    expect(run.stdout + run.stderr).toMatch(/12 vectors agree/);
    expect(run.status).toBe(0);
  });
});
