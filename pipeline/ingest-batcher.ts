/**
 * Batching and the decode pool, the first stage of the ingest (pipeline/ingest.ts): the accepted
 * TICKS bytes of a source gather in one chunk (up to `decodeBatchTicks`, or what arrives in one
 * turn of the event loop), go to a piscina worker with their bytes transferred, and come back
 * through the resequencer in the order the source's bytes arrived.
 *
 * A chunk's buffer starts at the size of its first frame (at least MIN_CHUNK_BYTES) and doubles
 * as frames arrive: a quiet source's one small frame must not cost a full chunk (8192 structs of
 * 60 B, 480 KiB, zeroed), and the buffer is transferred whole, so nothing is copied at a flush.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { Session } from '../bridge/server.js';
import { allocTickBatch, DIGITS_UNKNOWN } from '../codecs/tick-batch.js';
import type { DecodeResult, DecodeTask } from './decode-worker.js';
import type { Logger } from './logger.js';
import type { PipelineMetrics } from './metrics.js';
import { Resequencer } from './resequencer.js';

/** A chunk's first buffer at least; it doubles as frames arrive, up to its capacity. */
const MIN_CHUNK_BYTES = 16 << 10;

interface Chunk {
  session: Session;
  /** The server clock rule in force when the first of these ticks arrived. */
  clockRule: string;
  /** Grows with the frames, up to `capacity`; transferred whole to the worker. */
  bytes: Uint8Array;
  used: number;
  capacity: number;
  frames: number[];
  symbols: string[];
  /** Price digits of each of `symbols` (DIGITS_UNKNOWN when the EA did not say). */
  symbolDigits: number[];
  symbolIndex: Map<string, number>;
  firstSeq: number;
  total: number;
  receivedAtMs: number;
}

/** One frame of accepted ticks, as the ingress hands it over. */
export interface AcceptedFrame {
  session: Session;
  clockRule: string;
  symbol: string;
  firstSeq: number;
  count: number;
  structs: Uint8Array;
  receivedAtMs: number;
}

export interface DecodeBatcherOptions {
  decodeThreads: number;
  decodeBatchTicks: number;
  recordTicks: number;
  metrics: Pick<PipelineMetrics, 'decodeBatchTicks'>;
  logger: Logger;
  /** Each source's results, in the order its bytes arrived (a failed task as a result with an error). */
  release: (source: string, result: DecodeResult) => void;
}

/** The worker file next to this module; under vitest (TypeScript sources) the built one. */
export function decodeWorkerUrl(): string {
  const here = import.meta.url;
  return here.endsWith('.ts')
    ? fileURLToPath(new URL('../dist/pipeline/decode-worker.js', here))
    : fileURLToPath(new URL('./decode-worker.js', here));
}

export class DecodeBatcher {
  readonly #o: DecodeBatcherOptions;
  readonly #pool: Piscina;
  readonly #reseq: Resequencer<DecodeResult>;
  readonly #pending = new Map<string, Chunk>();
  #flushScheduled = false;

  constructor(options: DecodeBatcherOptions) {
    this.#o = options;
    this.#pool = new Piscina({
      filename: decodeWorkerUrl(),
      minThreads: options.decodeThreads,
      maxThreads: options.decodeThreads,
      idleTimeout: 60_000,
    });
    this.#reseq = new Resequencer(options.release);
  }

  /** True while a source (or, without one, any source) has bytes gathered or decode tasks in flight. */
  pending(source?: string): boolean {
    if (source === undefined) return this.#pending.size > 0 || this.#reseq.pending() > 0;
    return this.#pending.has(source) || this.#reseq.pending(source) > 0;
  }

  /** Adds a frame to its source's chunk; decodes the chunk once full, else after this turn. */
  add(frame: AcceptedFrame): void {
    const { session, structs, count } = frame;
    const source = session.source;
    let chunk = this.#pending.get(source);
    if (chunk && chunk.used + structs.length > chunk.capacity) {
      this.flush(source);
      chunk = undefined;
    }
    if (!chunk) {
      const capacity = Math.max(this.#o.decodeBatchTicks, count) * session.structSize;
      chunk = {
        session,
        clockRule: frame.clockRule,
        bytes: new Uint8Array(chunkBytes(structs.length, MIN_CHUNK_BYTES, capacity)),
        used: 0,
        capacity,
        frames: [],
        symbols: [],
        symbolDigits: [],
        symbolIndex: new Map(),
        firstSeq: frame.firstSeq,
        total: 0,
        receivedAtMs: frame.receivedAtMs,
      };
      this.#pending.set(source, chunk);
    }
    let index = chunk.symbolIndex.get(frame.symbol);
    if (index === undefined) {
      index = chunk.symbols.length;
      chunk.symbols.push(frame.symbol);
      chunk.symbolDigits.push(session.digits.get(frame.symbol) ?? DIGITS_UNKNOWN);
      chunk.symbolIndex.set(frame.symbol, index);
    }
    if (chunk.used + structs.length > chunk.bytes.length) {
      const grown = new Uint8Array(
        chunkBytes(chunk.used + structs.length, chunk.bytes.length * 2, chunk.capacity),
      );
      grown.set(chunk.bytes.subarray(0, chunk.used));
      chunk.bytes = grown;
    }
    chunk.bytes.set(structs, chunk.used);
    chunk.used += structs.length;
    chunk.frames.push(index, count);
    chunk.total += count;
    if (chunk.total >= this.#o.decodeBatchTicks) this.flush(source);
    else if (!this.#flushScheduled) {
      // Gather what arrives in this turn of the event loop, then decode it.
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        this.flushAll();
      });
    }
  }

  /** Sends every gathered chunk to the decode pool. */
  flushAll(): void {
    for (const s of [...this.#pending.keys()]) this.flush(s);
  }

  /** Sends the source's gathered chunk, if any, to the decode pool. */
  flush(source: string): void {
    const chunk = this.#pending.get(source);
    if (!chunk) return;
    this.#pending.delete(source);
    // Transferred whole (no copy): the worker reads only the frames' bytes.
    const bytes = chunk.bytes.buffer as ArrayBuffer;
    const frames = Uint32Array.from(chunk.frames);
    const task: DecodeTask = {
      source,
      symbols: chunk.symbols,
      symbolDigits: chunk.symbolDigits,
      structSize: chunk.session.structSize,
      clockRule: chunk.clockRule,
      recordTicks: this.#o.recordTicks,
      bytes,
      frames,
      firstSeq: chunk.firstSeq,
      total: chunk.total,
      receivedAtMs: chunk.receivedAtMs,
    };
    const ticket = this.#reseq.ticket(source);
    this.#o.metrics.decodeBatchTicks.observe(chunk.total);
    this.#pool.run(task, { transferList: [bytes, frames.buffer] }).then(
      (result: DecodeResult) => this.#reseq.done(source, ticket, result),
      (err: Error) => {
        this.#o.logger.error({ err: err.message, source }, 'decode worker failed');
        this.#reseq.done(source, ticket, {
          firstSeq: chunk.firstSeq,
          total: chunk.total,
          batch: allocTickBatch(source, [], 0),
          records: [],
          cursors: [],
          error: { code: 'ERR_INTERNAL', message: `decode worker failed: ${err.message}` },
        });
      },
    );
  }

  async close(): Promise<void> {
    await this.#pool.destroy();
  }
}

/** A chunk buffer's size: `need` bytes rounded up to a power of two, at least `least`, at most `capacity`. */
function chunkBytes(need: number, least: number, capacity: number): number {
  return Math.min(capacity, Math.max(least, 2 ** Math.ceil(Math.log2(need))));
}
