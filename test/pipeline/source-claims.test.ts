// The fencing rule and the claim procedure (docs/architecture.md, "Sources that move between
// bridges"), in process: the rule as a pure function, and SourceClaims over fakes of our own
// log and journal interfaces. The real-process race (kill -9, SIGSTOP) is test/faults/move.test.ts.
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { type ClaimJournal, type ClaimLog, SourceClaims } from '../../pipeline/source-claims.js';
import type { Committed, JournalEntry, SourceState } from '../../sinks/kafka/journal.js';
import { type FenceItem, fencedSources, type SourceClaim } from '../../sinks/kafka/source-log.js';

const logger = pino({ level: 'silent' });

describe('fencedSources', () => {
  const epochs: Record<string, number> = { a: 3, b: 0 };
  const seen = (s: string) => epochs[s] ?? 0;
  const cases: [FenceItem, boolean][] = [
    [{ source: 'a', epoch: 3, kind: 'state' }, false], // the owner's own epoch
    [{ source: 'a', epoch: 2, kind: 'state' }, true], // a newer claim exists
    [{ source: 'a', epoch: 4, kind: 'claim' }, false], // the next claim
    [{ source: 'a', epoch: 3, kind: 'claim' }, true], // someone claimed this epoch first
    [{ source: 'b', epoch: 0, kind: 'state' }, false], // never claimed (states from before claims)
    [{ source: 'c', epoch: 1, kind: 'claim' }, false],
  ];
  for (const [item, fenced] of cases)
    it(`${item.kind} of ${item.source} under epoch ${item.epoch} with claim ${seen(item.source)}: ${fenced ? 'fenced' : 'commits'}`, () => {
      expect(fencedSources([item], seen).has(item.source)).toBe(fenced);
    });
});

/** A log with committed claims and states, and a journal that runs the rule on each claim. */
function fakes(initial: { claims?: SourceClaim[]; states?: SourceState[] } = {}) {
  const claims = new Map((initial.claims ?? []).map((c) => [c.source, c]));
  const states = new Map((initial.states ?? []).map((s) => [s.source, s]));
  let offset = 0;
  const reads: number[] = [];
  /** Claims another bridge commits just before ours is checked (a lost race), one per call. */
  const rivals: SourceClaim[] = [];
  const log: ClaimLog = {
    readTo: async (o) => {
      reads.push(o);
    },
    readToEnd: async () => {
      reads.push(-1);
    },
    claimEpoch: (s) => claims.get(s)?.epoch ?? 0,
    claim: (s) => claims.get(s),
    state: (s) => states.get(s),
  };
  const journal: ClaimJournal = {
    append: async (entry: JournalEntry): Promise<Committed> => {
      const rival = rivals.shift();
      if (rival) claims.set(rival.source, rival);
      const items = (entry.claims ?? []).map((c) => ({
        source: c.source,
        epoch: c.epoch,
        kind: 'claim' as const,
      }));
      const fenced = fencedSources(items, log.claimEpoch);
      if (fenced.size) throw new TickstreamError(ErrorCode.SOURCE_FENCED, `fenced: ${[...fenced].join(',')}`);
      for (const c of entry.claims ?? []) claims.set(c.source, c);
      offset += 2;
      return { sourcesOffset: offset };
    },
  };
  return { log, journal, claims, reads, rivals };
}

function claimsOver(f: ReturnType<typeof fakes>, registry = new Registry()) {
  const c = new SourceClaims({ log: f.log, owner: 'tickstream-b1', registry, logger });
  c.attach(f.journal);
  return { c, registry };
}

describe('SourceClaims', () => {
  it('claims with the next epoch and resumes from the latest state, read after its own claim', async () => {
    const f = fakes({
      claims: [{ source: 's1', epoch: 4, owner: 'tickstream-a1' }],
      states: [
        {
          source: 's1',
          nextSeq: 501,
          cursors: { EURUSD: { lastMsc: 9, countAtMsc: 2 } },
          updatedAtMs: 1,
          epoch: 4,
        },
      ],
    });
    const { c, registry } = claimsOver(f);
    const state = await c.claim('s1');
    expect(state).toMatchObject({ source: 's1', nextSeq: 501, epoch: 5 });
    expect(state.cursors['EURUSD']).toEqual({ lastMsc: 9, countAtMsc: 2 });
    expect(f.claims.get('s1')).toEqual({ source: 's1', epoch: 5, owner: 'tickstream-b1' });
    // Read to the end before choosing the epoch, and past the claim's second record after it.
    expect(f.reads).toEqual([-1, 3]);
    expect(await registry.getSingleMetricAsString('tickstream_source_claims_total')).toMatch(/ 1$/);
  });

  it('a source never seen starts at seq 1 under epoch 1', async () => {
    const { c } = claimsOver(fakes());
    expect(await c.claim('new')).toEqual({
      source: 'new',
      nextSeq: 1,
      cursors: {},
      updatedAtMs: 0,
      epoch: 1,
    });
  });

  it('a claim that loses the race to another bridge is retried with a fresh epoch', async () => {
    const f = fakes();
    f.rivals.push({ source: 's1', epoch: 1, owner: 'tickstream-a1' });
    const { c } = claimsOver(f);
    expect((await c.claim('s1')).epoch).toBe(2);
  });

  it('three lost races in a row fail the HELLO with ERR_SOURCE_FENCED', async () => {
    const f = fakes();
    for (let e = 1; e <= 3; e++) f.rivals.push({ source: 's1', epoch: e, owner: 'tickstream-a1' });
    const { c } = claimsOver(f);
    await expect(c.claim('s1')).rejects.toMatchObject({ code: ErrorCode.SOURCE_FENCED });
  });

  it('check reads up to the transaction first record, then fences states under older epochs and counts them', async () => {
    const f = fakes({ claims: [{ source: 's1', epoch: 2, owner: 'tickstream-b1' }] });
    const { c, registry } = claimsOver(f);
    const fenced = await c.check(42, [
      { source: 's1', epoch: 1, kind: 'state' },
      { source: 's2', epoch: 0, kind: 'state' },
    ]);
    expect([...fenced]).toEqual(['s1']);
    expect(f.reads).toEqual([42]);
    expect(await registry.getSingleMetricAsString('tickstream_source_fenced_total')).toMatch(/ 1$/);
  });

  it('check with the claims already read answers by the rule at once; the log catches up meanwhile, one read at a time', async () => {
    const f = fakes({ claims: [{ source: 's1', epoch: 2, owner: 'tickstream-b1' }] });
    let release = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    f.log.readTo = async (o) => {
      f.reads.push(o);
      await held;
    };
    const { c } = claimsOver(f);
    const state = (epoch: number): FenceItem[] => [{ source: 's1', epoch, kind: 'state' }];
    expect([...(await c.check(50, state(2), true))]).toEqual([]);
    expect([...(await c.check(52, state(1), true))]).toEqual(['s1']);
    expect(f.reads).toEqual([50]); // the second catch-up waits for the first
    release();
    await held;
    await new Promise((r) => setImmediate(r));
    await c.check(54, state(2), true);
    expect(f.reads).toEqual([50, 54]);
  });
});
