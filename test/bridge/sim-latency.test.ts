// The sim's send → ACK latency per tick (bridge/sim.ts AckLatency), driven in-process with a
// fake clock: frames go out, ACKs cover them whole or in part, a resend does not reset a tick.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AckLatency } from '../../bridge/sim.js';

describe('AckLatency', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('records every tick once, from its first sending to the ACK that covers it', async () => {
    const now = vi.spyOn(performance, 'now');
    const lat = await AckLatency.create();
    now.mockReturnValue(1000);
    lat.sent(1, 100);
    now.mockReturnValue(1005);
    lat.sent(101, 100);
    now.mockReturnValue(1007);
    lat.sent(50, 100); // a resend of 50…149: already counted from 1000 and 1005
    now.mockReturnValue(1010);
    lat.acked(150); // 1…100 after 10 ms, 101…150 after 5 ms
    lat.acked(120); // an older ACK changes nothing
    now.mockReturnValue(1012);
    lat.acked(200); // 151…200 after 7 ms
    const s = lat.summary();
    expect(s.n).toBe(200);
    expect(s.min).toBeCloseTo(5, 1);
    expect(s.p50).toBeCloseTo(7, 1);
    expect(s.max).toBeCloseTo(10, 1);
    expect(s.p99).toBeCloseTo(10, 1);
  });

  it('counts nothing before an ACK and nothing twice after it', async () => {
    const now = vi.spyOn(performance, 'now');
    const lat = await AckLatency.create();
    now.mockReturnValue(0);
    lat.sent(1, 10);
    expect(lat.summary().n).toBe(0);
    now.mockReturnValue(2);
    lat.acked(10);
    lat.acked(10);
    expect(lat.summary().n).toBe(10);
  });
});
