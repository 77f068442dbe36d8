/**
 * A terminal that is slow to sync its tick history (issue 19): `tickstream sim
 * --history-delay-ms 20000` blocks the simulated EA 20 s on the first history read of each of 5
 * symbols, as CopyTicks blocks an EA's only thread while the terminal downloads. The EA reads
 * each symbol once before its first connection (its warm-up), so no session waits on history:
 * the source streams every tick exactly once, with at most one reconnect.
 *
 * The one slow test of the bridge (about 100 s of blocked reads); the bridge runs in process
 * with its real default timers and a fake of our own IngressHandler that commits at once.
 */
import { describe, expect, it } from 'vitest';
import { type IngressHandler, IngressServer, type Session } from '../../bridge/server.js';
import { ErrorCode } from '../../codecs/errors.js';
import { runSim } from '../helpers/procs.js';

describe('a new source on a terminal whose history reads take 20 s each', () => {
  it('streams 5 symbols exactly once, with at most one reconnect', async () => {
    const seqs: number[] = [];
    const rejected: ErrorCode[] = [];
    let opened = 0;
    const handler: IngressHandler = {
      resume: async () => ({ nextSeq: seqs.length + 1, cursors: [] }),
      onTicks: (s: Session, _symbol, firstSeq, count) => {
        for (let i = 0; i < count; i++) seqs.push(firstSeq + i);
        server.ack(s.source, firstSeq + count - 1);
      },
      onHeartbeat: () => undefined,
      onSessionOpen: () => {
        opened++;
      },
      onSessionClose: () => undefined,
      onRejected: (code) => {
        rejected.push(code);
      },
      onDuplicate: () => undefined,
      onGap: () => undefined,
      hasRoom: () => true,
    };
    // The bridge's defaults (pipeline/config.ts, pipeline/serve.ts).
    const server = new IngressServer(
      {
        host: '127.0.0.1',
        port: 0,
        secrets: {},
        maxConnections: 16,
        handshakeTimeoutMs: 5000,
        heartbeatIntervalMs: 3000,
        heartbeatTimeoutMs: 15_000,
        maxFrameBytes: 1 << 20,
        maxTicksPerFrame: 16384,
        maxSymbols: 1024,
        creditWindowTicks: 65536,
        maxTicksPerSecondPerSource: 1_000_000,
        logger: { info: () => undefined, warn: () => undefined },
      },
      handler,
    );
    const port = await server.start();
    try {
      const run = await runSim(
        [
          '--synthetic',
          '--symbols',
          '5',
          '--rate',
          '2000',
          '--duration',
          '10',
          '--source',
          'slow-terminal',
          '--port',
          String(port),
          '--history-delay-ms',
          '20000',
          '--max-frame-bytes',
          '32768',
        ],
        240_000,
      );
      expect(run.code, run.output).toBe(0);
      const reconnects = Number(/reconnects (\d+)/.exec(run.output)?.[1]);
      expect(reconnects, run.output).toBeLessThanOrEqual(1);
      // Exactly once: the bridge took seqs 1..N in order, N = every tick of the history.
      const total = Number(/(\d+) ticks captured and ACKed/.exec(run.output)?.[1]);
      expect(total).toBe(20_000);
      expect(seqs).toHaveLength(total);
      expect(seqs.every((seq, i) => seq === i + 1)).toBe(true);
      expect(rejected).toEqual([]);
      expect(opened).toBeLessThanOrEqual(2);
    } finally {
      server.closeAll(ErrorCode.SHUTTING_DOWN, 'test over');
      server.stopAccepting();
    }
  }, 300_000);
});
