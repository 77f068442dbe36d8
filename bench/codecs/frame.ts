/**
 * The ingress hot path, one core: what the bridge's main thread does per TCP chunk (frame
 * decode: header checks, CRC32C, TICKS header) and what a decode worker does per frame (MqlTick
 * structs → TickBatch columns with validation and UTC conversion). Input is a synthetic random
 * walk of 60-byte ticks, 1000 per frame, delivered in 64 KiB chunks as a socket would.
 */
import { crc32c } from '../../codecs/crc32c.js';
import { TickstreamError } from '../../codecs/errors.js';
import { encodeFrame, FrameDecoder, MessageType } from '../../codecs/frame.js';
import { decodeTicksHeader, encodeTicks, TICKS_HEADER_BYTES } from '../../codecs/messages.js';
import { createServerClock } from '../../codecs/server-clock.js';
import { allocTickBatch, type TickBatch } from '../../codecs/tick-batch.js';
import { decodeTicksInto, encodeTickStructs, TICK_STRUCT_BYTES } from '../../codecs/ticks.js';
import type { MicroBench } from '../types.js';

const TICKS_PER_FRAME = 1000;
const FRAMES = 32;
const CHUNK_BYTES = 64 * 1024;

function randomWalk(n: number): TickBatch {
  const b = allocTickBatch('bench', ['EURUSD'], n);
  let bid = 1.1;
  let msc = Date.UTC(2024, 2, 30, 12); // spans the EU DST switch for the IANA clock below
  for (let i = 0; i < n; i++) {
    bid = Math.max(0.5, bid + (((i * 7919) % 11) - 5) * 1e-5);
    msc += 1 + ((i * 104729) % 700);
    b.serverTimeMsc[i] = msc;
    b.bid[i] = Number(bid.toFixed(5));
    b.ask[i] = Number((bid + 0.00012).toFixed(5));
    b.flags[i] = 6;
  }
  b.length = n;
  return b;
}

export async function benches(): Promise<MicroBench[]> {
  const ticks = randomWalk(TICKS_PER_FRAME * FRAMES);
  const payloads: Buffer[] = [];
  for (let f = 0; f < FRAMES; f++) {
    const from = f * TICKS_PER_FRAME;
    const structs = encodeTickStructs(ticks, from, from + TICKS_PER_FRAME);
    payloads.push(encodeTicks({ symbolId: 1, firstSeq: from + 1, count: TICKS_PER_FRAME }, structs));
  }
  const stream = Buffer.concat(payloads.map((p) => encodeFrame(MessageType.TICKS, p)));
  const chunks: Buffer[] = [];
  for (let o = 0; o < stream.length; o += CHUNK_BYTES) chunks.push(stream.subarray(o, o + CHUNK_BYTES));
  const total = TICKS_PER_FRAME * FRAMES;
  const batch = allocTickBatch('bench', ['EURUSD'], total);
  const decodeAll = (clock: ReturnType<typeof createServerClock>) => () => {
    batch.length = 0;
    for (let f = 0; f < FRAMES; f++) {
      const p = payloads[f] as Buffer;
      const err = decodeTicksInto(
        batch,
        p.subarray(TICKS_HEADER_BYTES),
        TICK_STRUCT_BYTES,
        TICKS_PER_FRAME,
        0,
        f * TICKS_PER_FRAME + 1,
        clock,
      );
      if (err) throw err;
    }
    return batch.length;
  };
  const fixed = createServerClock('+2');
  const athens = createServerClock('Europe/Athens');
  const crcInput = Buffer.alloc(1 << 20, 0xa5);

  return [
    {
      name: `frame decode: 64 KiB chunks → TICKS frames (${TICKS_PER_FRAME} × 60-byte ticks/frame, CRC32C + header)`,
      group: 'codecs',
      ticksPerOp: total,
      fn: () => {
        const d = new FrameDecoder();
        let n = 0;
        for (const c of chunks) {
          d.push(c);
          for (let f = d.next(); f !== null; f = d.next()) {
            if (f instanceof TickstreamError) throw f;
            const h = decodeTicksHeader(f.payload, TICK_STRUCT_BYTES);
            if (h instanceof TickstreamError) throw h;
            n += h.count;
          }
        }
        return n;
      },
    },
    {
      name: `TICKS decode + validate → TickBatch (60-byte, ${TICKS_PER_FRAME}/frame, fixed offset)`,
      group: 'codecs',
      ticksPerOp: total,
      fn: decodeAll(fixed),
    },
    {
      name: `TICKS decode + validate → TickBatch (60-byte, ${TICKS_PER_FRAME}/frame, Europe/Athens)`,
      group: 'codecs',
      ticksPerOp: total,
      fn: decodeAll(athens),
    },
    {
      // One op hashes 1 MiB, so ops/s reads as MiB/s; ticksPerOp counts 60-byte structs.
      name: 'CRC32C over 1 MiB (ops/s = MiB/s)',
      group: 'codecs',
      ticksPerOp: Math.floor(crcInput.length / TICK_STRUCT_BYTES),
      fn: () => crc32c(crcInput),
    },
  ];
}
