/**
 * A micro benchmark: one tinybench task and how many ticks one call moves, so the runner can
 * print ticks/s beside ops/s. Modules under bench/ export `benches(): Promise<MicroBench[]>`.
 */
export interface MicroBench {
  /** Shown in the table, e.g. "frame decode (60-byte ticks, 1000/frame)". */
  name: string;
  /** Group, mirroring the source folder: "codecs", "pipeline", ... */
  group: string;
  ticksPerOp: number;
  fn: () => unknown | Promise<unknown>;
  /** Called once before timing, e.g. to warm a pool. */
  beforeAll?: () => Promise<void> | void;
  afterAll?: () => Promise<void> | void;
}
