/**
 * The EA's start-up self-test (bridge/mql5/TickStream.mq5, SelfTest) carries its own copies of
 * the protocol vectors, written as `TestVector("NAME", "hex" + "hex" …)`. The EA cannot be compiled
 * here, so this test extracts those copies and checks them against docs/protocol.md §9 (and the
 * TypeScript encoder's bytes), and the one vector the document does not show, HMAC-SHA256 with a
 * 100-byte key, against node:crypto. It also checks that the fields the EA expects its readers
 * to decode are the vectors' inputs.
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { hexBlock, messages, nonce, vectors } from '../codecs/vectors.js';

const read = (rel: string) => readFileSync(fileURLToPath(new URL(rel, import.meta.url)), 'utf8');
const ea = read('../../bridge/mql5/TickStream.mq5');
const doc = read('../../docs/protocol.md');

/** NAME → bytes, for every TestVector("NAME", …) in the EA. */
function eaVectors(): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const m of ea.matchAll(/TestVector\("(\w+)",\s*((?:"[0-9a-f ]*"\s*\+?\s*)+)\)/g)) {
    const hex = [...(m[2] as string).matchAll(/"([0-9a-f ]*)"/g)].map((x) => x[1]).join(' ');
    const bytes = Buffer.from(hex.split(/\s+/).filter(Boolean).join(''), 'hex');
    expect(out.has(m[1] as string), `vector ${m[1]} appears twice in the EA`).toBe(false);
    out.set(m[1] as string, bytes);
  }
  return out;
}

function docVector(name: string): string | undefined {
  return new RegExp(`<!-- vector ${name} -->\\n\`\`\`text\\n([0-9a-f \\n]+)\`\`\``).exec(doc)?.[1]?.trim();
}

describe("the EA's self-test vectors", () => {
  const found = eaVectors();

  it('cover every vector of protocol.md §9, and HMAC with a 100-byte key', () => {
    const inDoc = [...doc.matchAll(/<!-- vector (\w+) -->/g)].map((x) => x[1] as string);
    expect([...found.keys()].sort()).toEqual([...inDoc, 'HMAC_KEY_100'].sort());
  });

  for (const name of Object.keys(vectors)) {
    it(`${name}: the EA's copy is the document's bytes and the encoder's`, () => {
      const bytes = found.get(name);
      expect(bytes, `no TestVector("${name}", …) in TickStream.mq5`).toBeDefined();
      expect(hexBlock(bytes as Buffer)).toBe(docVector(name));
      expect((bytes as Buffer).equals(vectors[name] as Buffer)).toBe(true);
    });
  }

  it('HMAC_KEY_100: HMAC-SHA256(key = bytes 0..99, nonce ‖ "demo"), as node:crypto computes it', () => {
    const key = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
    const mac = createHmac('sha256', key).update(nonce).update('demo').digest();
    expect(found.get('HMAC_KEY_100')?.equals(mac)).toBe(true);
    // The EA builds that key and message itself: bytes 0..99, then nonce 00..1f ‖ "demo".
    expect(ea).toMatch(
      /ArrayResize\(key, 100\);\s+for\(int i = 0; i < 100; i\+\+\)\s+key\[i\] = \(uchar\)i;/,
    );
  });

  it("the readers' expected fields are the vectors' inputs", () => {
    const ack = messages.HELLO_ACK;
    const cursor = ack.cursors[0];
    for (const check of [
      `a.nextSeq != ${ack.nextSeq}`,
      `a.credit != ${ack.creditLimit}`,
      `a.hbInterval != ${ack.heartbeatIntervalMs}`,
      `a.hbTimeout != ${ack.heartbeatTimeoutMs}`,
      `a.maxFrame != ${ack.maxFrameBytes}`,
      `a.maxTicks != ${ack.maxTicksPerFrame}`,
      `a.maxSymbols != ${ack.maxSymbols}`,
      `a.names[0] != "${cursor.symbol}"`,
      `a.mscs[0] != ${cursor.lastMsc}`,
      `a.counts[0] != ${cursor.countAtMsc}`,
      `acked != ${messages.ACK.ackedSeq}`,
      `credit != ${messages.ACK.creditLimit}`,
      `from != ${messages.RESEND}`,
      `text != "${messages.ERROR.message}"`,
      `text != "${messages.BYE}"`,
      `WriteHello("demo", 60, ${messages.HELLO.terminalBuild}, ${messages.HELLO.serverTimeMs}, ${messages.HELLO.gmtTimeMs}`,
      `WriteHeartbeat(${messages.HEARTBEAT.serverTimeMs}, ${messages.HEARTBEAT.gmtTimeMs})`,
    ])
      expect(ea, `TickStream.mq5 SelfTest should contain: ${check}`).toContain(check);
  });
});
