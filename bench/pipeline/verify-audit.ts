/**
 * The audit core of `tickstream verify` on a long journal, in process: N seqs (default 100 M)
 * fed through SeqRanges in 1000-seq batches as verify feeds it from decoded records, with a hole
 * and a duplicate every 10 M seqs and the first 1000 seqs gone to retention. Prints the time and
 * the peak RSS. Not part of `npm run bench` (a one-off measure for issue 12):
 *
 *   node dist/bench/pipeline/verify-audit.js [seqs]
 */
import { SeqRanges } from '../../pipeline/seq-ranges.js';

const total = Number(process.argv[2] ?? 100_000_000);
const batch = new Float64Array(1000);
const ranges = new SeqRanges();
let peakRss = process.memoryUsage().rss;
const started = performance.now();
let seq = 1001;
let duplicated = 0;
for (let fed = 0; fed < total; ) {
  for (let i = 0; i < batch.length; i++) {
    if (seq % 10_000_000 === 0) seq += 5; // a hole of 5
    if (seq % 10_000_000 === 5_000_000 && duplicated !== seq) {
      duplicated = seq;
      batch[i] = seq - 1; // the previous seq again
    } else batch[i] = seq++;
  }
  for (let i = 0; i < batch.length; i++) ranges.add(batch[i] as number);
  fed += batch.length;
  if (fed % 10_000_000 === 0) peakRss = Math.max(peakRss, process.memoryUsage().rss);
}
const seconds = (performance.now() - started) / 1000;
const holes = ranges.holes(ranges.min ?? 1);
peakRss = Math.max(peakRss, process.memoryUsage().rss);
process.stdout.write(
  `${JSON.stringify({
    seqs: ranges.total,
    distinct: ranges.size(),
    ranges: ranges.ranges,
    holes: holes.count,
    duplicates: ranges.duplicates,
    seconds: Number(seconds.toFixed(2)),
    seqsPerSecond: Math.round(ranges.total / seconds),
    peakRssMb: Math.round(peakRss / 2 ** 20),
  })}\n`,
);
