/** Tick objects of websocket messages (docs/websocket.md), shared by live, resume and replay. */
import type { TickBatch } from '../../codecs/tick-batch.js';

/** The rows `idx` of a batch as comma-separated JSON tick objects. */
export function tickObjects(batch: TickBatch, idx: readonly number[]): string {
  let ticks = '';
  for (const i of idx) {
    ticks += `${ticks ? ',' : ''}{"seq":${batch.seq[i]},"time":${batch.utcMsc[i]},"tsrv":${batch.serverTimeMsc[i]},"bid":${batch.bid[i]},"ask":${batch.ask[i]},"last":${batch.last[i]},"vol":${batch.volume[i]},"volr":${batch.volumeReal[i]},"flags":${batch.flags[i]}}`;
  }
  return ticks;
}

/** The rows `idx` of a batch as a batch of their own (for the binary format, or to keep). */
export function pick(batch: TickBatch, idx: readonly number[]): TickBatch {
  const cols = ['seq', 'serverTimeMsc', 'utcMsc', 'bid', 'ask', 'last', 'volume', 'volumeReal'] as const;
  const out = { ...batch, length: idx.length } as TickBatch;
  for (const k of cols) out[k] = Float64Array.from(idx, (i) => batch[k][i] as number);
  out.symbolIndex = Uint16Array.from(idx, (i) => batch.symbolIndex[i] as number);
  out.flags = Uint32Array.from(idx, (i) => batch.flags[i] as number);
  return out;
}
