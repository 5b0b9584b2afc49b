/**
 * A seeded, replayable model of one key's calls against a simulated etcd, on the
 * pure bookkeeping of lib/publish/intents.ts: what the fault suite's model test
 * (test/faults/model.test.ts) checks against a real etcd, with every interleaving
 * of answers reachable in microseconds.
 *
 * The simulated writer is the keeper's: one round of writes in flight at a time;
 * a write's answer may be lost (unreachable), and such a write may still be
 * applied later (a paused member reads it late) or never; the self-watch sees
 * every change after the key's first confirmed write; etcd may refuse a round;
 * the lease may be lost. Calls: register() (which may time out and be withdrawn
 * while still pending, as Registry.register() does), unregister() of an owned key
 * (which may time out: it is not withdrawn, the delete goes on), pause() and
 * resume(). At quiescence etcd must hold what the last call standing asked for,
 * as the fault model's `intended()` says, unless the key is paused.
 *
 * INTENTS_SEED=n replays one seed (its log is in the failure); INTENTS_SEEDS=n
 * runs seeds 1..n (2,000 by default).
 */
import { describe, expect, it } from 'vitest';
import { RegistryError } from '../../lib/errors';
import { Intents, type Registration, type Write } from '../../lib/publish/intents';
import { seededRandom } from '../support/random';

const KEY = 'p/services/web/10.0.0.1:80';
const reg = (v: number): Registration => ({
  endpoint: { service: 'web', address: '10.0.0.1:80', metadata: { v }, key: KEY },
  value: Buffer.from(JSON.stringify({ v })),
});

interface Call {
  readonly kind: 'register' | 'unregister';
  readonly v?: number;
  readonly token: number;
  state: 'pending' | 'resolved' | 'rejected';
  code?: string;
}

/** The fault model's contract, from the last call backwards. */
function intended(calls: readonly Call[]): number | undefined {
  for (let i = calls.length - 1; i >= 0; i--) {
    const c = calls[i]!;
    if (c.kind === 'unregister') {
      if (c.state === 'rejected' && c.code !== 'ERR_ETCD_UNREACHABLE') continue;
      return undefined;
    }
    if (c.state !== 'rejected') return c.v;
  }
  return undefined;
}

interface Sent {
  readonly write: Write;
  applied: boolean;
  revision: number;
}

interface Event {
  readonly type: 'put' | 'delete';
  readonly revision: number;
  readonly value?: Buffer;
}

async function run(seed: number, steps: number): Promise<{ log: string[]; want: string | undefined; inEtcd: string | undefined; etcd: string | undefined; owned: string | undefined; dirty: boolean }> {
  const rand = seededRandom(seed);
  const intents = new Intents();
  const log: string[] = [];
  const calls: Call[] = [];
  let value: Buffer | undefined;
  let revision = 1;
  /** The round of writes awaiting an answer (the keeper's step). */
  let round: Sent[] = [];
  /** Writes whose answer was lost, not applied yet: applied later, or never. */
  const zombies: Sent[] = [];
  const events: Event[] = [];
  /** The self-watch starts after the first confirmed write, from its revision on. */
  let watchingFrom: number | undefined;
  const what = (w: Write): string => `${w.want ? `put v${String(w.want.endpoint.metadata.v)}` : 'delete'} (token ${w.token})`;

  const apply = (s: Sent): void => {
    s.applied = true;
    if (s.write.want) {
      value = s.write.want.value;
      events.push({ type: 'put', revision: ++revision, value });
      log.push(`etcd applies ${what(s.write)} at ${revision}`);
    } else if (value !== undefined) {
      value = undefined;
      events.push({ type: 'delete', revision: ++revision });
      log.push(`etcd applies ${what(s.write)} at ${revision}`);
    } else log.push(`etcd applies ${what(s.write)}: nothing there (${revision})`);
    s.revision = revision;
  };
  const answer = (s: Sent): void => {
    if (!s.write.want) intents.deleteAnswered(s.write);
    intents.confirm(s.write, s.revision);
    log.push(`answer: ${what(s.write)} confirmed at ${s.revision}`);
    watchingFrom ??= s.revision;
  };
  const lose = (s: Sent): void => {
    if (!s.write.want) intents.deleteAnswered(s.write);
    log.push(`answer lost: ${what(s.write)}${s.applied ? ' (applied)' : ''}`);
    if (!s.applied) zombies.push(s);
  };
  const deliver = (): void => {
    // Before the first confirmed write there is no watch yet: it starts from that write's revision on.
    while (watchingFrom !== undefined && events.length > 0) {
      const e = events.shift()!;
      if (e.revision <= watchingFrom) continue;
      const news = e.type === 'put' ? intents.latePut(KEY, e.value!, e.revision) : intents.deletedByOther(KEY, e.revision);
      log.push(`watch: ${e.type} at ${e.revision}${news ? ': owed again' : ''}`);
    }
  };
  const startRound = (): void => {
    const { puts, deletes } = intents.owed(128);
    const writes = [...puts, ...deletes];
    intents.sending(writes);
    round = writes.map((write) => ({ write, applied: false, revision: 0 }));
    for (const s of round) log.push(`send ${what(s.write)}`);
  };
  const track = (call: Call, done: Promise<void>): void => {
    calls.push(call);
    done.then(
      () => {
        if (call.state === 'pending') call.state = 'resolved';
      },
      (e: { code?: string }) => {
        // An unregister() that timed out goes on: if etcd then refuses the delete, it has no effect after all.
        if (call.state !== 'pending' && !(call.kind === 'unregister' && e.code !== 'ERR_ETCD_UNREACHABLE')) return;
        call.state = 'rejected';
        call.code = e.code;
      },
    );
  };
  // Promise callbacks run between two steps, as between two I/O callbacks.
  const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  for (let step = 0; step < steps; step++) {
    const r = rand();
    if (r < 0.2) {
      const v = calls.length;
      const { token, done } = intents.intend(KEY, reg(v));
      track({ kind: 'register', v, token, state: 'pending' }, done);
      log.push(`register v${v} (token ${token})`);
    } else if (r < 0.3) {
      // Registry.unregister() rejects at once (ERR_NOT_REGISTERED) for a key it does not own.
      if (intents.endpoint(KEY) !== undefined) {
        const { token, done } = intents.intend(KEY, undefined);
        track({ kind: 'unregister', token, state: 'pending' }, done);
        log.push(`unregister (token ${token})`);
      }
    } else if (r < 0.4) {
      // A pending call times out: a register() is withdrawn; an unregister() goes on in the background.
      const pending = calls.filter((c) => c.state === 'pending');
      if (pending.length > 0) {
        const c = pending[Math.floor(rand() * pending.length)]!;
        c.state = 'rejected';
        c.code = 'ERR_ETCD_UNREACHABLE';
        if (c.kind === 'register') intents.withdraw(KEY, c.token, 'put', new RegistryError('ERR_ETCD_UNREACHABLE', 'timed out'));
        log.push(`${c.kind} (token ${c.token}) times out`);
      }
    } else if (r < 0.55) {
      if (round.length === 0 && intents.dirty) startRound();
    } else if (r < 0.7) {
      const unapplied = round.filter((s) => !s.applied);
      if (unapplied.length > 0) apply(unapplied[Math.floor(rand() * unapplied.length)]!);
    } else if (r < 0.85) {
      // The round's answers: each confirmed if applied, else (or sometimes even so) lost.
      for (const s of round) (s.applied && rand() < 0.8 ? answer : lose)(s);
      round = [];
    } else if (r < 0.9) {
      if (zombies.length > 0) apply(zombies.splice(Math.floor(rand() * zombies.length), 1)[0]!);
    } else if (r < 0.94) {
      deliver();
    } else if (r < 0.96) {
      // pause() or resume() of the owned key (it goes on in the background if it times out).
      const paused = rand() < 0.5;
      const done = intents.setPaused(KEY, paused);
      done?.catch(() => undefined);
      if (done) log.push(paused ? 'pause' : 'resume');
    } else if (r < 0.98) {
      // etcd refuses the round (a permission, a size): the calls it answers fail; the key falls back.
      for (const s of round) {
        if (!s.write.want) intents.deleteAnswered(s.write);
        intents.refuse(s.write, new RegistryError('ERR_ETCD_REQUEST', 'refused'));
        log.push(`refused: ${what(s.write)}`);
      }
      round = [];
    } else {
      // The lease is lost: etcd drops the key; writes still on their way fail; a new lease, and the watch restarts after the next write.
      if (value !== undefined) {
        value = undefined;
        revision++;
      }
      for (const s of round) if (!s.applied) lose(s);
      round = [];
      zombies.length = 0;
      events.length = 0;
      watchingFrom = undefined;
      intents.staleAll();
      log.push(`lease lost (${revision})`);
    }
    await tick();
  }

  // Quiescence: the round is answered, zombies apply or vanish, the writer runs until nothing is owed.
  log.push('--- quiescence');
  for (const s of round) (s.applied ? answer : lose)(s);
  round = [];
  for (const s of zombies.splice(0)) if (rand() < 0.5) apply(s);
  deliver();
  for (let i = 0; i < 20 && (intents.dirty || events.length > 0); i++) {
    startRound();
    for (const s of round) apply(s);
    for (const s of round) answer(s);
    round = [];
    deliver();
    await tick();
  }
  await tick();
  const want = intended(calls);
  const wanted = want === undefined ? undefined : reg(want).value.toString();
  return {
    log,
    want: wanted,
    // A paused key is owned, and out of etcd.
    inEtcd: intents.isPaused(KEY) ? undefined : wanted,
    etcd: value?.toString(),
    owned: intents.endpoint(KEY) && JSON.stringify(intents.endpoint(KEY)!.metadata),
    dirty: intents.dirty,
  };
}

describe('Intents against a simulated etcd: withdrawn calls, lost answers and late applies (seeded)', () => {
  it('etcd and the registry end as the last call standing asked, for 2,000 seeds', { timeout: 120_000 }, async () => {
    const seeds = process.env.INTENTS_SEED ? [Number(process.env.INTENTS_SEED)] : Array.from({ length: Number(process.env.INTENTS_SEEDS ?? 2000) }, (_, i) => i + 1);
    for (const seed of seeds) {
      const end = await run(seed, 40);
      const context = `seed ${seed} (replay: INTENTS_SEED=${seed})\n${end.log.join('\n')}`;
      expect(end.dirty, context).toBe(false);
      expect(end.etcd, context).toBe(end.inEtcd);
      expect(end.owned, context).toBe(end.want);
    }
  });
});
