/**
 * Ticks/s through a real piscina decode pool: the pipeline's worker file (built, from dist),
 * two threads, tasks built as Ingest builds them (structs of 1000-tick frames concatenated,
 * the bytes copied out of the pending chunk and transferred; the worker decodes, encodes a
 * Kafka record per 1000 ticks and transfers its columns back). Each op keeps 8 tasks in flight
 * and awaits them all; from 100 to 10000 ticks a task, the per-task overhead shows.
 */
import { Piscina } from 'piscina';
import { encodeTickStructs, TICK_STRUCT_BYTES } from '../../codecs/ticks.js';
import type { DecodeResult, DecodeTask } from '../../pipeline/decode-worker.js';
import { decodeWorkerUrl } from '../../pipeline/ingest-batcher.js';
import { SERVER_TIME_ZONE, syntheticTicks } from '../codecs/synthetic.js';
import type { MicroBench } from '../types.js';

const THREADS = 2;
const IN_FLIGHT = 8;
const TICKS_PER_FRAME = 1000;
/** The pipeline's default `recordTicks`. */
const RECORD_TICKS = 1000;

function poolBench(ticksPerTask: number): MicroBench {
  const ticks = syntheticTicks(ticksPerTask);
  const structs = encodeTickStructs(ticks, 0, ticksPerTask);
  const frameList: number[] = [];
  for (let left = ticksPerTask; left > 0; left -= TICKS_PER_FRAME)
    frameList.push(0, Math.min(left, TICKS_PER_FRAME));
  const frames = Uint32Array.from(frameList);
  let pool: Piscina | null = null;

  const runAll = async (p: Piscina): Promise<number> => {
    const runs: Promise<DecodeResult>[] = [];
    for (let t = 0; t < IN_FLIGHT; t++) {
      // Ingest copies each task's bytes out of its reused chunk buffer: so does the bench.
      const bytes = structs.slice().buffer;
      const taskFrames = frames.slice();
      const task: DecodeTask = {
        source: 'bench',
        symbols: ['EURUSD'],
        symbolDigits: [5],
        structSize: TICK_STRUCT_BYTES,
        clockRule: SERVER_TIME_ZONE,
        recordTicks: RECORD_TICKS,
        bytes,
        frames: taskFrames,
        firstSeq: 1,
        total: ticksPerTask,
        receivedAtMs: 0,
      };
      runs.push(p.run(task, { transferList: [bytes, taskFrames.buffer] }));
    }
    let n = 0;
    for (const r of await Promise.all(runs)) {
      if (r.error) throw new Error(`decode worker: ${r.error.code}: ${r.error.message}`);
      n += r.batch.length;
    }
    if (n !== IN_FLIGHT * ticksPerTask) throw new Error(`decoded ${n} ticks of ${IN_FLIGHT * ticksPerTask}`);
    return n;
  };

  return {
    name: `decode pool (${THREADS} threads, ${IN_FLIGHT} × ${ticksPerTask}-tick tasks in flight, transferred)`,
    group: 'pipeline',
    ticksPerOp: IN_FLIGHT * ticksPerTask,
    beforeAll: async () => {
      pool = new Piscina({
        filename: decodeWorkerUrl(),
        minThreads: THREADS,
        maxThreads: THREADS,
      });
      // Both threads up and the worker module loaded before timing starts.
      await runAll(pool);
    },
    afterAll: async () => {
      await pool?.destroy();
      pool = null;
    },
    fn: () => runAll(pool as Piscina),
  };
}

export async function benches(): Promise<MicroBench[]> {
  return [100, 1000, 10_000].map(poolBench);
}
