/**
 * The ingress hot path, one core: what the bridge's main thread does per TCP chunk (frame
 * decode: header checks, CRC32C, TICKS header) and what a decode worker does per frame (MqlTick
 * structs → TickBatch columns with validation and server time → UTC). Input: TICKS frames of
 * 1000 synthetic ticks each, delivered in 64 KiB chunks as a socket read hands them over, so
 * most frames arrive split across two chunks.
 */
import { crc32c } from '../../codecs/crc32c.js';
import { TickstreamError } from '../../codecs/errors.js';
import { encodeFrame, FrameDecoder, MessageType } from '../../codecs/frame.js';
import { decodeTicksHeader, encodeTicks } from '../../codecs/messages.js';
import { createServerClock } from '../../codecs/server-clock.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';
import {
  decodeTicksInto,
  encodeTickStructs,
  LEGACY_TICK_STRUCT_BYTES,
  TICK_STRUCT_BYTES,
} from '../../codecs/ticks.js';
import type { MicroBench } from '../types.js';
import { SERVER_TIME_ZONE, syntheticTicks } from './synthetic.js';

const TICKS_PER_FRAME = 1000;
const FRAMES = 32;
const TOTAL = TICKS_PER_FRAME * FRAMES;
const CHUNK_BYTES = 64 * 1024;
/** 60-byte structs in 1 MiB, whole: the CRC input is that many structs. */
const CRC_STRUCTS = Math.floor((1 << 20) / TICK_STRUCT_BYTES);

export async function benches(): Promise<MicroBench[]> {
  const ticks = syntheticTicks(TOTAL);
  /** Per frame, the MqlTick structs of `size` bytes each, as a worker receives them. */
  const structsOf = (size: number) =>
    Array.from({ length: FRAMES }, (_, f) =>
      encodeTickStructs(ticks, f * TICKS_PER_FRAME, (f + 1) * TICKS_PER_FRAME, size),
    );
  const structs60 = structsOf(TICK_STRUCT_BYTES);
  const structs52 = structsOf(LEGACY_TICK_STRUCT_BYTES);

  const stream = Buffer.concat(
    structs60.map((s, f) =>
      encodeFrame(
        MessageType.TICKS,
        encodeTicks({ symbolId: 1, firstSeq: f * TICKS_PER_FRAME + 1, count: TICKS_PER_FRAME }, s),
      ),
    ),
  );
  const chunks: Buffer[] = [];
  for (let o = 0; o < stream.length; o += CHUNK_BYTES) chunks.push(stream.subarray(o, o + CHUNK_BYTES));

  const batch = allocTickBatch('bench', ['EURUSD'], TOTAL);
  // One rule per process: a second clock here would make the worker's toUtc call site
  // polymorphic and slow whichever bench ran second by about a third.
  const clock = createServerClock(SERVER_TIME_ZONE);
  const decodeAll = (frames: Uint8Array[], size: number) => () => {
    batch.length = 0;
    for (let f = 0; f < FRAMES; f++) {
      const err = decodeTicksInto(
        batch,
        frames[f] as Uint8Array,
        size,
        TICKS_PER_FRAME,
        0,
        f * TICKS_PER_FRAME + 1,
        clock,
      );
      if (err) throw err;
    }
    return batch.length;
  };
  const crcInput = Buffer.concat(structs60).subarray(0, CRC_STRUCTS * TICK_STRUCT_BYTES);

  return [
    {
      name: `frame decode (60-byte ticks, ${TICKS_PER_FRAME}/frame, 64 KiB chunks; CRC32C + TICKS header)`,
      group: 'codecs',
      ticksPerOp: TOTAL,
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
        if (n !== TOTAL) throw new Error(`decoded ${n} ticks of ${TOTAL}`);
        return n;
      },
    },
    {
      name: `TICKS decode → TickBatch (60-byte ticks, ${TICKS_PER_FRAME}/frame, ${SERVER_TIME_ZONE})`,
      group: 'codecs',
      ticksPerOp: TOTAL,
      fn: decodeAll(structs60, TICK_STRUCT_BYTES),
    },
    {
      name: `TICKS decode → TickBatch (52-byte ticks, ${TICKS_PER_FRAME}/frame, ${SERVER_TIME_ZONE})`,
      group: 'codecs',
      ticksPerOp: TOTAL,
      fn: decodeAll(structs52, LEGACY_TICK_STRUCT_BYTES),
    },
    {
      name: `CRC32C over 1 MiB of 60-byte ticks (${CRC_STRUCTS} structs)`,
      group: 'codecs',
      ticksPerOp: CRC_STRUCTS,
      fn: () => crc32c(crcInput),
    },
  ];
}
