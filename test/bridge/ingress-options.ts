/** IngressServer options for in-process tests: loopback, any port, no secrets, roomy limits. */
import type { IngressOptions } from '../../bridge/server.js';

const quiet = { info: () => undefined, warn: () => undefined };

export function options(over: Partial<IngressOptions> = {}): IngressOptions {
  return {
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
    maxTicksPerSecondPerSource: 10_000_000,
    logger: quiet,
    ...over,
  };
}
