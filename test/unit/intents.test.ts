import { describe, expect, it } from 'vitest';
import { Intents, type Registration } from '../../lib/publish/intents';
import { RecoveryLimiter } from '../../lib/publish/recovery-limiter';
import { seededRandom } from '../support/random';

const reg = (v: number): Registration => ({
  endpoint: { service: 'web', address: '10.0.0.1:80', metadata: { v }, key: 'p/services/web/10.0.0.1:80' },
  value: Buffer.from(JSON.stringify({ v })),
});
const KEY = 'p/services/web/10.0.0.1:80';
const settle = async (p: Promise<void>): Promise<string> => p.then(() => 'resolved', (e: { code?: string; message: string }) => e.code ?? e.message);

describe('Intents', () => {
  it('a put confirmed for an older token leaves the newer intent owed (v1 in flight, unregister, v2)', async () => {
    const intents = new Intents();
    const first = intents.intend(KEY, reg(1));
    const [w1] = intents.owed(128).puts;
    intents.sending([w1!]);
    const removed = intents.intend(KEY, undefined);
    const last = intents.intend(KEY, reg(2));
    intents.confirm(w1!, 10);
    expect(intents.dirty).toBe(true);
    const [w2] = intents.owed(128).puts;
    expect(w2!.want!.endpoint.metadata).toEqual({ v: 2 });
    intents.confirm(w2!, 11);
    expect(intents.dirty).toBe(false);
    expect(await settle(first.done)).toBe('resolved');
    expect(await settle(removed.done)).toBe('resolved'); // superseded by a registration: kept
    expect(await settle(last.done)).toBe('resolved');
  });

  it('a failed update falls back to the confirmed registration; a failed first registration to absent', async () => {
    const intents = new Intents();
    const v1 = intents.intend(KEY, reg(1));
    intents.confirm(intents.owed(128).puts[0]!, 5);
    await v1.done;
    const v2 = intents.intend(KEY, reg(2));
    intents.sending(intents.owed(128).puts);
    expect(intents.withdraw(KEY, v2.token, 'put', new Error('timed out'))).toBe(true);
    expect(await settle(v2.done)).toBe('timed out');
    expect(intents.endpoint(KEY)?.metadata).toEqual({ v: 1 });
    expect(intents.owed(128).puts[0]?.want?.endpoint.metadata).toEqual({ v: 1 }); // put again: v2 may have landed
    expect(intents.pending).toBe(false);

    const fresh = new Intents();
    const only = fresh.intend(KEY, reg(1));
    fresh.sending(fresh.owed(128).puts);
    fresh.withdraw(KEY, only.token, 'put', new Error('timed out'));
    expect(await settle(only.done)).toBe('timed out');
    expect(fresh.endpoint(KEY)).toBeUndefined();
    expect(fresh.owed(128).deletes).toHaveLength(1); // deleted in case the put landed
  });

  it('withdrawing an older call changes nothing of a newer one', async () => {
    const intents = new Intents();
    const older = intents.intend(KEY, reg(1));
    const newer = intents.intend(KEY, reg(2));
    expect(intents.withdraw(KEY, older.token, 'put', new Error('timed out'))).toBe(false);
    expect(await settle(older.done)).toBe('timed out');
    intents.confirm(intents.owed(128).puts[0]!, 3);
    expect(await settle(newer.done)).toBe('resolved');
    expect(intents.endpoint(KEY)?.metadata).toEqual({ v: 2 });
  });

  it('a write issued before a lease loss answers its callers but stays owed', async () => {
    const intents = new Intents();
    const v1 = intents.intend(KEY, reg(1));
    const [w] = intents.owed(128).puts;
    intents.staleAll();
    intents.confirm(w!, 4);
    expect(await settle(v1.done)).toBe('resolved');
    expect(intents.putsOwed).toBe(true);
  });

  it('an unregister of a key never sent settles at once; a register it superseded rejects ERR_NOT_REGISTERED', async () => {
    const intents = new Intents();
    const v1 = intents.intend(KEY, reg(1));
    const gone = intents.intend(KEY, undefined);
    expect(await settle(gone.done)).toBe('resolved');
    expect(await settle(v1.done)).toBe('ERR_NOT_REGISTERED');
    expect(intents.dirty).toBe(false);
  });

  it('a foreign delete older than our last put is not news', () => {
    const intents = new Intents();
    intents.intend(KEY, reg(1));
    intents.confirm(intents.owed(128).puts[0]!, 10);
    expect(intents.deletedByOther(KEY, 9)).toBe(false);
    expect(intents.deletedByOther(KEY, 11)).toBe(true);
    const settled = intents.confirm(intents.owed(128).puts[0]!, 12);
    expect(settled).toEqual({ first: false, restored: true });
  });

  it('after any sequence of calls and confirmations, the last call wins (seeded)', async () => {
    for (let seed = 1; seed <= 200; seed++) {
      const rand = seededRandom(seed);
      const intents = new Intents();
      let expected: number | undefined;
      const inFlight: ReturnType<Intents['owed']>['puts'] = [];
      for (let step = 0; step < 30; step++) {
        const r = rand();
        if (r < 0.35) {
          const v = Math.floor(rand() * 5);
          void intents.intend(KEY, reg(v)).done.catch(() => undefined);
          expected = v;
        } else if (r < 0.5) {
          void intents.intend(KEY, undefined).done.catch(() => undefined);
          expected = undefined;
        } else if (r < 0.75) {
          const { puts, deletes } = intents.owed(128);
          intents.sending(puts);
          inFlight.push(...puts, ...deletes);
        } else if (inFlight.length > 0) {
          const w = inFlight.splice(Math.floor(rand() * inFlight.length), 1)[0]!;
          intents.confirm(w, step);
        }
      }
      // Quiescence: confirm what is in flight in any order, then write until nothing is owed.
      for (const w of inFlight) intents.confirm(w, 100);
      for (let round = 0; intents.dirty && round < 10; round++) {
        const { puts, deletes } = intents.owed(128);
        intents.sending(puts);
        for (const w of [...puts, ...deletes]) intents.confirm(w, 200 + round);
      }
      expect(intents.dirty, `seed ${seed}`).toBe(false);
      expect(intents.endpoint(KEY)?.metadata.v, `seed ${seed}`).toBe(expected);
    }
  });
});

describe('RecoveryLimiter', () => {
  it('lets the first recovery through, then paces 1 s, 2 s, 4 s … up to the cap, and calms down after a quiet spell', () => {
    let now = 1_000_000;
    const limiter = new RecoveryLimiter(8000, 60_000, () => now);
    expect(limiter.take()).toBe(0);
    now += 10;
    expect(limiter.take()).toBe(990);
    now += 990;
    expect(limiter.take()).toBe(2000);
    now += 2000;
    expect(limiter.take()).toBe(4000);
    now += 4000;
    expect(limiter.take()).toBe(8000);
    now += 8000;
    expect(limiter.take()).toBe(8000); // capped
    now += 8000 + 60_000 + 8001;
    expect(limiter.take()).toBe(0);
  });

  it('bounds a flapping cause to a handful of recoveries a minute', () => {
    let now = 0;
    const limiter = new RecoveryLimiter(undefined, undefined, () => now);
    let recoveries = 0;
    // A cause every 5 ms for a minute: each recovery runs when its wait is over.
    let nextAllowed = 0;
    for (now = 0; now < 60_000; now += 5) {
      if (now < nextAllowed) continue;
      nextAllowed = now + limiter.take();
      recoveries++;
    }
    expect(recoveries).toBeLessThanOrEqual(7);
  });
});
