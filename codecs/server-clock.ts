/**
 * Broker server time ↔ UTC. MT5 stamps ticks with the broker's server clock, which is a wall
 * clock in some zone, often switching between UTC+2 and UTC+3. A rule is one of:
 *   - a fixed offset: `UTC`, `+2`, `-5`, `+5:30`, `UTC+3`, `GMT-4`
 *   - an IANA zone: `Europe/Athens`, `Asia/Tokyo`, `Etc/GMT-2`, …
 *   - an IANA zone shifted by whole hours: `America/New_York+7`, the common "New York close"
 *     broker clock (UTC+2 in the northern winter, UTC+3 in summer, switching on US dates, so
 *     that 17:00 in New York is always 00:00 on the server).
 * The offset used for a tick is the one in force at the tick's own time. Offsets are cached
 * per 15-minute slot (every real zone changes offset on a 15-minute boundary in both UTC and
 * wall time), with the last slot checked first: a run of ticks costs one compare each.
 * Around a change, a wall time that occurs twice (clocks go back) or never (clocks go
 * forward) is read with the offset in force *before* the change: the first of two
 * occurrences, and for a skipped time the instant the clock would have shown it had it not
 * jumped. This is `disambiguation: 'compatible'` of TC39 Temporal, Python's fold=0 and
 * java.time's default, so other tools agree with us.
 */
import { ErrorCode, TickstreamError } from './errors.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;
const SLOT = 15 * 60_000;
const MAX_CACHED_SLOTS = 1 << 16;

export interface ServerClock {
  readonly rule: string;
  /** Server wall-clock ms → UTC ms. */
  toUtc(serverMs: number): number;
  /** UTC ms → server wall-clock ms. */
  toServer(utcMs: number): number;
  /** Offset (server − UTC, ms) in force at a UTC instant. */
  offsetAt(utcMs: number): number;
}

const FIXED = /^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$/i;

export function createServerClock(rule: string): ServerClock {
  const trimmed = rule.trim();
  if (/^(UTC|GMT|Z)$/i.test(trimmed)) return fixedClock(trimmed, 0);
  const fixed = FIXED.exec(trimmed);
  if (fixed) {
    const minutes = Number(fixed[2]) * 60 + Number(fixed[3] ?? 0);
    if (minutes > 14 * 60) throw new TickstreamError(ErrorCode.TIME_ZONE, `offset ${rule} is outside ±14:00`);
    return fixedClock(trimmed, (fixed[1] === '-' ? -1 : 1) * minutes * 60_000);
  }
  // The whole rule as a zone first (Etc/GMT-2 is a zone), then a zone with an hour shift.
  const format = zoneFormat(trimmed);
  if (format) return zoneClock(trimmed, format, 0);
  const shifted = /^(.+?)([+-]\d{1,2})$/.exec(trimmed);
  const shiftedFormat = shifted ? zoneFormat(shifted[1] as string) : null;
  if (!shifted || !shiftedFormat) {
    throw new TickstreamError(
      ErrorCode.TIME_ZONE,
      `unknown server time zone rule ${JSON.stringify(rule)}: use an IANA zone (Europe/Athens), a zone shifted by hours (America/New_York+7) or a fixed offset (+2, UTC-5)`,
    );
  }
  return zoneClock(trimmed, shiftedFormat, Number(shifted[2]) * HOUR);
}

function zoneFormat(zone: string): Intl.DateTimeFormat | null {
  try {
    return new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  } catch {
    return null;
  }
}

function fixedClock(rule: string, offset: number): ServerClock {
  return { rule, toUtc: (ms) => ms - offset, toServer: (ms) => ms + offset, offsetAt: () => offset };
}

function zoneClock(rule: string, format: Intl.DateTimeFormat, shiftMs: number): ServerClock {
  const zoneOffset = (utcMs: number): number => {
    const p = Object.fromEntries(format.formatToParts(new Date(utcMs)).map((x) => [x.type, x.value]));
    const wall = Date.UTC(
      Number(p['year']),
      Number(p['month']) - 1,
      Number(p['day']),
      Number(p['hour']),
      Number(p['minute']),
      Number(p['second']),
    );
    return wall - utcMs + shiftMs;
  };
  const offsetAt = slotCache((slot) => zoneOffset(slot * SLOT));
  // A wall slot maps back through one of the offsets in force a day either side; when two do
  // (the repeated hour) or none does (the skipped hour), the offset before the change wins:
  // the larger one when clocks go back, the smaller one when they go forward.
  const wallOffset = slotCache((slot) => {
    const wall = slot * SLOT;
    const before = offsetAt(wall - DAY);
    const after = offsetAt(wall + DAY);
    const fits = (off: number) => offsetAt(wall - off) === off;
    if (before === after) return fits(before) ? before : offsetAt(wall - before);
    if (fits(before)) return before;
    if (fits(after)) return after;
    return before;
  });
  return {
    rule,
    toUtc: (serverMs) => serverMs - wallOffset(serverMs),
    toServer: (utcMs) => utcMs + offsetAt(utcMs),
    offsetAt,
  };
}

/** Memoises a per-slot function of a time, checking the last slot first. */
function slotCache(compute: (slot: number) => number): (ms: number) => number {
  const cache = new Map<number, number>();
  let lastSlot = Number.NaN;
  let lastValue = 0;
  return (ms) => {
    const slot = Math.floor(ms / SLOT);
    if (slot === lastSlot) return lastValue;
    let v = cache.get(slot);
    if (v === undefined) {
      // Bounded: a replay over decades must not grow the cache without end.
      if (cache.size >= MAX_CACHED_SLOTS) cache.clear();
      v = compute(slot);
      cache.set(slot, v);
    }
    lastSlot = slot;
    lastValue = v;
    return v;
  };
}

/** `UTC+2`, `UTC-3:30`, `UTC+0`: an offset (ms) as people write it, and as a fixed-offset rule. */
export function formatOffset(offsetMs: number): string {
  const minutes = Math.round(Math.abs(offsetMs) / 60_000);
  const mm = minutes % 60;
  return `UTC${offsetMs < 0 ? '-' : '+'}${Math.floor(minutes / 60)}${mm ? `:${String(mm).padStart(2, '0')}` : ''}`;
}

/**
 * The fixed-offset rule for the (server now, GMT now) pair a terminal reports, to the nearest
 * 15 minutes: every real zone's offset is a multiple of 15 minutes, and TimeTradeServer is an
 * estimate that may be off by seconds. Throws ERR_TIME_ZONE past ±14:00 (a broken clock).
 */
export function reportedOffsetRule(serverNowMs: number, gmtNowMs: number): string {
  const rule = formatOffset(Math.round((serverNowMs - gmtNowMs) / SLOT) * SLOT);
  createServerClock(rule);
  return rule;
}

/**
 * Checks the (server now, GMT now) pair an EA reports against the configured rule. Returns
 * null when they agree within `toleranceMs` (default 2 min: TimeTradeServer is an estimate
 * between ticks), else a message naming both offsets.
 */
export function checkReportedOffset(
  clock: ServerClock,
  serverNowMs: number,
  gmtNowMs: number,
  toleranceMs = 120_000,
): string | null {
  const reported = serverNowMs - gmtNowMs;
  const expected = clock.offsetAt(gmtNowMs);
  if (Math.abs(reported - expected) <= toleranceMs) return null;
  return `the terminal reports server time ${formatOffset(reported)} but the configured rule ${JSON.stringify(clock.rule)} gives ${formatOffset(expected)} now: check the source's server time zone`;
}
