// The replay Pacer on fake timers (no wall-clock assertions): ×N divides the event-time spacing,
// 'max' never waits, time going backwards does not wait, a bad speed is refused.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TickstreamError } from '../../codecs/errors.js';
import { Pacer } from '../../pipeline/pace.js';

describe('Pacer', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** Resolves `p` and says whether it did within `ms` of fake time. */
  async function settlesWithin(p: Promise<void>, ms: number): Promise<boolean> {
    let done = false;
    void p.then(() => {
      done = true;
    });
    await vi.advanceTimersByTimeAsync(ms);
    return done;
  }

  it('×N waits (event time since the first tick) / N after the first call', async () => {
    const pacer = new Pacer(10);
    expect(await settlesWithin(pacer.wait(1_000_000), 0)).toBe(true);
    // 60 s of event time at ×10: 6 s of wall time.
    const p = pacer.wait(1_060_000);
    expect(await settlesWithin(p, 5_999)).toBe(false);
    expect(await settlesWithin(p, 1)).toBe(true);
    // Already late (the wall clock passed it) or earlier in event time: no wait.
    expect(await settlesWithin(pacer.wait(1_030_000), 0)).toBe(true);
  });

  it("'max' never waits", async () => {
    const pacer = new Pacer('max');
    expect(await settlesWithin(pacer.wait(0), 0)).toBe(true);
    expect(await settlesWithin(pacer.wait(3_600_000), 0)).toBe(true);
  });

  it('refuses a speed that is not above 0', () => {
    expect(() => new Pacer(0)).toThrow(TickstreamError);
    expect(() => new Pacer(Number.NaN)).toThrow(/'max' or a positive number/);
  });
});
