// The protocol's hex test vectors: docs/protocol.md shows these bytes, and
// protocol-vectors.test.ts checks that the document, the encoder and the decoders agree.
import { helloProof } from '../../codecs/auth.js';
import { encodeFrame, MessageType } from '../../codecs/frame.js';
import * as m from '../../codecs/messages.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';
import { encodeTickStructs } from '../../codecs/ticks.js';

export const nonce = Uint8Array.from({ length: 32 }, (_, i) => i);
export const secret = 's3cret-s3cret';
const tick = allocTickBatch('demo', ['EURUSD'], 1);
tick.serverTimeMsc[0] = 1_577_923_200_065; // 2020.01.02 00:00:00.065 server time
tick.bid[0] = 1.1212;
tick.ask[0] = 1.12172;
tick.flags[0] = 6;
tick.length = 1;

export const proof = helloProof(secret, nonce, 'demo');

/** What each frame vector decodes back to (the payload decoder's result). */
export const messages = {
  CHALLENGE: { nonce, minVersion: 1, maxVersion: 1 },
  HELLO: {
    source: 'demo',
    structSize: 60,
    terminalBuild: 4755,
    serverTimeMs: 1_577_923_200_000,
    gmtTimeMs: 1_577_916_000_000,
    symbols: ['EURUSD'],
    proof: new Uint8Array(proof),
  },
  HELLO_ACK: {
    nextSeq: 1,
    creditLimit: 65537,
    heartbeatIntervalMs: 1000,
    heartbeatTimeoutMs: 15000,
    maxFrameBytes: 1 << 20,
    maxTicksPerFrame: 16384,
    maxSymbols: 1024,
    cursors: [{ symbol: 'EURUSD', lastMsc: 1_577_923_199_000, countAtMsc: 2 }],
  },
  SYMBOLS: [{ id: 1, digits: 5, name: 'EURUSD' }],
  TICKS: { symbolId: 1, firstSeq: 1, count: 1 },
  TICKS_52: { symbolId: 1, firstSeq: 1, count: 1 },
  HEARTBEAT: { serverTimeMs: 1_577_923_201_000, gmtTimeMs: 1_577_916_001_000 },
  ACK: { ackedSeq: 1, creditLimit: 65538 },
  RESEND: 42,
  ERROR: { code: 'ERR_AUTH', message: 'bad proof' },
  BYE: 'shutdown',
} as const;

export const frames: Record<keyof typeof messages, Buffer> = {
  CHALLENGE: encodeFrame(MessageType.CHALLENGE, m.encodeChallenge({ nonce })),
  HELLO: encodeFrame(MessageType.HELLO, m.encodeHello({ ...messages.HELLO, symbols: ['EURUSD'] })),
  HELLO_ACK: encodeFrame(
    MessageType.HELLO_ACK,
    m.encodeHelloAck({ ...messages.HELLO_ACK, cursors: [...messages.HELLO_ACK.cursors] }),
  ),
  SYMBOLS: encodeFrame(MessageType.SYMBOLS, m.encodeSymbols([...messages.SYMBOLS])),
  TICKS: encodeFrame(MessageType.TICKS, m.encodeTicks(messages.TICKS, encodeTickStructs(tick, 0, 1))),
  TICKS_52: encodeFrame(MessageType.TICKS, m.encodeTicks(messages.TICKS, encodeTickStructs(tick, 0, 1, 52))),
  HEARTBEAT: encodeFrame(MessageType.HEARTBEAT, m.encodeHeartbeat(messages.HEARTBEAT)),
  ACK: encodeFrame(MessageType.ACK, m.encodeAck(messages.ACK)),
  RESEND: encodeFrame(MessageType.RESEND, m.encodeResend(messages.RESEND)),
  ERROR: encodeFrame(MessageType.ERROR, m.encodeError(messages.ERROR)),
  BYE: encodeFrame(MessageType.BYE, m.encodeBye(messages.BYE)),
};

/** Every block the document shows: the frames and the bare HELLO proof. */
export const vectors: Record<string, Buffer> = { ...frames, HELLO_PROOF: proof };

export function hexBlock(bytes: Buffer): string {
  const lines: string[] = [];
  for (let i = 0; i < bytes.length; i += 16)
    lines.push(
      bytes
        .subarray(i, i + 16)
        .toString('hex')
        .replace(/(..)(?!$)/g, '$1 '),
    );
  return lines.join('\n');
}
