import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import {
  checkReportedOffset,
  createServerClock,
  formatOffset,
  reportedOffsetRule,
} from '../../codecs/server-clock.js';

const at = (iso: string) => Date.parse(`${iso}Z`);
const H = 3_600_000;

/** Uncached reference: the zone's offset at an instant, straight from Intl, minute precision. */
function referenceOffset(zone: string, utcMs: number): number {
  const f = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
  });
  const p = Object.fromEntries(f.formatToParts(new Date(utcMs)).map((x) => [x.type, Number(x.value)]));
  const wall = Date.UTC(p['year'] ?? 0, (p['month'] ?? 1) - 1, p['day'], p['hour'], p['minute']);
  return wall - (utcMs - (utcMs % 60_000));
}

describe('server clock', () => {
  it('fixed offsets', () => {
    expect(createServerClock('+2').toUtc(at('2020-01-02T00:00:00'))).toBe(at('2020-01-01T22:00:00'));
    expect(createServerClock('UTC-5').toServer(at('2020-01-01T22:00:00'))).toBe(at('2020-01-01T17:00:00'));
    expect(createServerClock('GMT+3').offsetAt(0)).toBe(3 * H);
    expect(createServerClock('+5:30').offsetAt(0)).toBe(5.5 * H);
    expect(createServerClock('UTC').offsetAt(at('2024-07-01T00:00:00'))).toBe(0);
  });

  it('DST switching with a real IANA zone (Europe/Athens, UTC+2/UTC+3): the offset at each tick', () => {
    const athens = createServerClock('Europe/Athens');
    // EU summer time starts 2024-03-31 01:00 UTC: local 03:00 jumps to 04:00.
    expect(athens.toUtc(at('2024-03-31T02:59:59.999'))).toBe(at('2024-03-31T00:59:59.999'));
    expect(athens.toUtc(at('2024-03-31T04:00:00'))).toBe(at('2024-03-31T01:00:00'));
    expect(athens.toUtc(at('2024-07-01T12:00:00'))).toBe(at('2024-07-01T09:00:00'));
    // It ends 2024-10-27 01:00 UTC: local 04:00 goes back to 03:00.
    expect(athens.toUtc(at('2024-10-27T02:59:59'))).toBe(at('2024-10-26T23:59:59'));
    expect(athens.toUtc(at('2024-10-27T04:00:00'))).toBe(at('2024-10-27T02:00:00'));
    expect(athens.toServer(at('2024-10-27T00:59:59.999'))).toBe(at('2024-10-27T03:59:59.999'));
    expect(athens.toServer(at('2024-10-27T01:00:00'))).toBe(at('2024-10-27T03:00:00'));
  });

  it('a repeated wall time is its first occurrence; a skipped one uses the offset before the jump', () => {
    const athens = createServerClock('Europe/Athens');
    // 03:30 on 2024-10-27 happens twice (00:30 and 01:30 UTC): the first, summer, one.
    expect(athens.toUtc(at('2024-10-27T03:30:00'))).toBe(at('2024-10-27T00:30:00'));
    // 03:30 on 2024-03-31 never happens: read at UTC+2, as if the clock had not jumped yet.
    expect(athens.toUtc(at('2024-03-31T03:30:00'))).toBe(at('2024-03-31T01:30:00'));
    expect(athens.toServer(at('2024-03-31T01:30:00'))).toBe(at('2024-03-31T04:30:00'));
  });

  it('the New York close broker clock (America/New_York+7) switches on US dates', () => {
    const ny7 = createServerClock('America/New_York+7');
    expect(ny7.offsetAt(at('2024-01-15T12:00:00'))).toBe(2 * H);
    expect(ny7.offsetAt(at('2024-07-15T12:00:00'))).toBe(3 * H);
    // US DST 2024 starts March 10 (07:00 UTC), three weeks before the EU's.
    expect(ny7.offsetAt(at('2024-03-10T06:59:59'))).toBe(2 * H);
    expect(ny7.offsetAt(at('2024-03-10T07:00:00'))).toBe(3 * H);
    // 17:00 in New York is midnight on the server, winter and summer.
    expect(ny7.toServer(at('2024-01-15T22:00:00'))).toBe(at('2024-01-16T00:00:00'));
    expect(ny7.toServer(at('2024-07-15T21:00:00'))).toBe(at('2024-07-16T00:00:00'));
    expect(createServerClock('Etc/GMT-2').offsetAt(0)).toBe(2 * H);
  });

  it('zones changing on a half hour (Australia/Lord_Howe, ±30 min DST) are exact', () => {
    const lh = createServerClock('Australia/Lord_Howe');
    // DST starts 2024-10-06 02:00 local (+10:30) = 2024-10-05 15:30 UTC, to +11:00.
    expect(lh.offsetAt(at('2024-10-05T15:29:59.999'))).toBe(10.5 * H);
    expect(lh.offsetAt(at('2024-10-05T15:30:00'))).toBe(11 * H);
  });

  it('offsetAt equals the uncached Intl offset at any instant, in several zones', () => {
    const zones = [
      'Europe/Athens',
      'America/New_York',
      'Australia/Lord_Howe',
      'Asia/Kathmandu',
      'Europe/London',
    ];
    const clocks = zones.map((z) => createServerClock(z));
    fc.assert(
      fc.property(
        fc.integer({ min: at('2015-01-01T00:00:00'), max: at('2030-01-01T00:00:00') }),
        fc.nat(zones.length - 1),
        (t, i) => {
          expect((clocks[i] as ReturnType<typeof createServerClock>).offsetAt(t)).toBe(
            referenceOffset(zones[i] as string, t),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('toUtc inverts toServer except for the second pass through a repeated hour', () => {
    const ny7 = createServerClock('America/New_York+7');
    fc.assert(
      fc.property(fc.integer({ min: at('2015-01-01T00:00:00'), max: at('2030-01-01T00:00:00') }), (t) => {
        const back = ny7.toUtc(ny7.toServer(t));
        expect(back === t || (back === t - H && ny7.offsetAt(t) < ny7.offsetAt(t - H))).toBe(true);
      }),
    );
  });

  it('an unknown rule is ERR_TIME_ZONE naming the accepted forms', () => {
    for (const rule of ['Mars/Olympus', '+15', 'Europe/Athens+x', '']) {
      const err = (() => {
        try {
          createServerClock(rule);
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(TickstreamError);
      expect((err as TickstreamError).code).toBe(ErrorCode.TIME_ZONE);
    }
  });

  it('checkReportedOffset: agrees within the tolerance, else explains both offsets', () => {
    const plus2 = createServerClock('+2');
    expect(checkReportedOffset(plus2, at('2024-01-01T02:00:30'), at('2024-01-01T00:00:00'))).toBeNull();
    expect(checkReportedOffset(plus2, at('2024-01-01T03:00:00'), at('2024-01-01T00:00:00'))).toMatch(
      /UTC\+3 .* gives UTC\+2/,
    );
    const athens = createServerClock('Europe/Athens');
    expect(checkReportedOffset(athens, at('2024-07-01T03:00:00'), at('2024-07-01T00:00:00'))).toBeNull();
    expect(checkReportedOffset(athens, at('2024-07-01T02:00:00'), at('2024-07-01T00:00:00'))).toMatch(
      /UTC\+2/,
    );
  });

  it('reportedOffsetRule: the reported offset to the nearest 15 minutes, as a fixed rule', () => {
    const gmt = at('2024-01-01T00:00:00');
    expect(reportedOffsetRule(gmt + 2 * H - 40_000, gmt)).toBe('UTC+2');
    expect(reportedOffsetRule(gmt + 5.5 * H + 3_000, gmt)).toBe('UTC+5:30');
    expect(reportedOffsetRule(gmt - 3.5 * H, gmt)).toBe('UTC-3:30');
    expect(reportedOffsetRule(gmt + 20_000, gmt)).toBe('UTC+0');
    expect(createServerClock(reportedOffsetRule(gmt - 4 * H, gmt)).toUtc(gmt)).toBe(gmt + 4 * H);
    expect(() => reportedOffsetRule(gmt + 15 * H, gmt)).toThrow(/outside ±14:00/);
    expect(formatOffset(-(5 * H + 45 * 60_000))).toBe('UTC-5:45');
  });
});
