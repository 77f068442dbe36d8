/**
 * Bench input: a seeded random walk per symbol that looks like a forex feed. Prices move in
 * whole points, the spread drifts within a few points, one side or both move per tick with the
 * flags MT5 sets for it (BID 2, ASK 4, both 6), and gaps between ticks are exponential with
 * some ticks sharing a millisecond. Times are broker server time on a Europe/Athens clock, the
 * UTC+2/+3 zone many brokers use, from a weekday morning.
 */
import { createServerClock } from '../../codecs/server-clock.js';
import { allocTickBatch, type TickBatch, TickFlag } from '../../codecs/tick-batch.js';

export const SERVER_TIME_ZONE = 'Europe/Athens';

/** Start price in points and digits of the symbols a batch can draw from. */
const MARKETS: Record<string, { points: number; digits: number }> = {
  EURUSD: { points: 108_340, digits: 5 },
  GBPUSD: { points: 126_410, digits: 5 },
  USDJPY: { points: 151_270, digits: 3 },
};
const MIN_SPREAD_POINTS = 1;
const MAX_SPREAD_POINTS = 25;
const MEAN_GAP_MS = 250;

/** mulberry32: small, seeded, good enough for prices. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` ticks with seqs 1..n, each of a random one of `symbols` (keys of MARKETS). */
export function syntheticTicks(n: number, symbols: string[] = ['EURUSD'], seed = 1): TickBatch {
  const random = prng(seed);
  const clock = createServerClock(SERVER_TIME_ZONE);
  const state = symbols.map((s) => {
    const m = MARKETS[s];
    if (!m) throw new Error(`no synthetic market for ${s}: use one of ${Object.keys(MARKETS).join(', ')}`);
    return { bid: m.points, ask: m.points + 8, scale: 10 ** m.digits };
  });
  const b = allocTickBatch(
    'bench',
    symbols,
    n,
    symbols.map((s) => (MARKETS[s] as { digits: number }).digits),
  );
  let msc = Date.UTC(2024, 2, 27, 9);
  for (let i = 0; i < n; i++) {
    const k = Math.floor(random() * symbols.length);
    const s = state[k] as (typeof state)[number];
    const r = random();
    const flags = r < 0.5 ? TickFlag.BID | TickFlag.ASK : r < 0.8 ? TickFlag.BID : TickFlag.ASK;
    let step = (1 + Math.floor(random() * 3)) * (random() < 0.5 ? -1 : 1);
    if (flags !== (TickFlag.BID | TickFlag.ASK)) {
      // One side alone moves the spread: turn back rather than cross or blow out.
      const spread = s.ask - s.bid + (flags === TickFlag.BID ? -step : step);
      if (spread < MIN_SPREAD_POINTS || spread > MAX_SPREAD_POINTS) step = -step;
    }
    if (flags & TickFlag.BID) s.bid += step;
    if (flags & TickFlag.ASK) s.ask += step;
    if (random() > 0.15) msc += 1 + Math.floor(-Math.log(1 - random()) * MEAN_GAP_MS);
    b.seq[i] = i + 1;
    b.symbolIndex[i] = k;
    b.serverTimeMsc[i] = msc;
    b.utcMsc[i] = clock.toUtc(msc);
    // Integer points over a power of ten: the same double as parsing the printed price.
    b.bid[i] = s.bid / s.scale;
    b.ask[i] = s.ask / s.scale;
    b.flags[i] = flags;
  }
  b.length = n;
  return b;
}
