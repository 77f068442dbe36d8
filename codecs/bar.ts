/**
 * A closed (or, when published as "open", still forming) 1-minute bar of one source and symbol.
 * Bid OHLC and spread stats always; last-price OHLC and volume only where trades exist
 * (`lastOpen` is NaN when the minute had no tick with the LAST flag).
 */
export interface Bar {
  source: string;
  symbol: string;
  /** UTC start of the minute, ms since the epoch (a multiple of 60 000). */
  startMs: number;
  open: number;
  high: number;
  low: number;
  close: number;
  /** Ticks whose UTC time falls in [startMs, startMs + 60 000). */
  tickCount: number;
  spreadMin: number;
  spreadMax: number;
  /** Sum of (ask - bid) over the minute's ticks; mean spread = spreadSum / tickCount. */
  spreadSum: number;
  lastOpen: number;
  lastHigh: number;
  lastLow: number;
  lastClose: number;
  /** Sum of volume_real over ticks with the LAST or VOLUME flag. */
  volume: number;
  /** Seq of the last tick in the bar, for idempotent writes. */
  lastSeq: number;
}
