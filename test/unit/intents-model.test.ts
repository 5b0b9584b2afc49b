/**
 * A seeded, replayable model of the calls on two keys of one service against a
 * simulated etcd, on the pure bookkeeping of lib/publish/intents.ts: what the
 * fault suite's model test (test/faults/model.test.ts) checks against a real etcd,
 * with every interleaving of answers reachable in microseconds.
 *
 * The simulated writer is the keeper's (lib/publish/keeper.ts): one round of writes
 * in flight at a time, built afresh from what is owed; a write's answer may be lost
 * (unreachable), and such a write may still be applied later (a paused member reads
 * it late) or never; etcd may refuse a round; the lease may be lost. The self-watch
 * starts from the lowest revision of the first round answered and reports every
 * change after it. etcd may be restored from a backup taken earlier (with the lease): its
 * revisions go back, it holds what it held then, and the keeper asks the lease which keys
 * it holds (answered some steps later). Calls: register() (with or without a health check; withdrawn when
 * it times out or rejects, as Registry.register() does), unregister() of an owned key
 * (not withdrawn when it times out: the delete goes on), pause(), resume(), health
 * verdicts.
 *
 * At quiescence (every answer in, health checks passing, the writer idle):
 * - etcd holds, per key, what the last call standing asked for (the contract both
 *   model tests share: test/support/model-contract.ts), unless the key is paused, and
 *   the registry owns exactly that;
 * - every call has settled; no entry is left for a key not owned; nothing is owed
 *   or pending;
 * - no `registered` event was emitted for a register() that was rejected.
 *
 * INTENTS_SEED=n replays one seed and prints its log; INTENTS_SEEDS=n runs seeds
 * 1..n (3,000 by default); INTENTS_STEPS sets the length (80).
 */
import { describe, expect, it } from 'vitest';
import { RegistryError } from '../../lib/errors';
import { Intents, type Registration, type Write } from '../../lib/publish/intents';
import { standingRegister } from '../support/model-contract';
import { seededRandom } from '../support/random';

const KEYS = ['p/services/web/10.0.0.1:80', 'p/services/web/10.0.0.2:80'] as const;
const reg = (key: string, v: number): Registration => ({
  endpoint: { service: 'web', address: key.slice(key.lastIndexOf('/') + 1), metadata: { v }, key },
  value: JSON.stringify({ v }),
});
const short = (key: string): string => key.slice(key.lastIndexOf('/') + 1);

interface Call {
  readonly kind: 'register' | 'unregister' | 'list';
  readonly key: string;
  readonly token: number;
  readonly v?: number;
  readonly registration?: Registration;
  /** 'pause' or 'resume' for a listing call. */
  readonly what?: string;
  /** What the caller was told. */
  state: 'pending' | 'resolved' | 'rejected';
  code?: string;
  /** Whether the promise Intents returned has settled (a timed-out unregister's goes on). */
  settled: boolean;
}

/** What the calls on `key` ask for (the contract: test/support/model-contract.ts). */
function intended(calls: readonly Call[], key: string): number | undefined {
  return standingRegister(calls.filter((c): c is Call & { kind: 'register' | 'unregister' } => c.key === key && c.kind !== 'list'))?.v;
}

interface Sent {
  readonly write: Write;
  /** How many restores came before it was sent: one sent before the last is answered from the lost history. */
  readonly restores: number;
  applied: boolean;
  revision: number;
}

interface Change {
  readonly key: string;
  readonly type: 'put' | 'delete';
  readonly revision: number;
  readonly value?: Buffer;
}

async function run(seed: number, steps: number): Promise<{ log: string[]; problems: string[] }> {
  const rand = seededRandom(seed);
  const intents = new Intents();
  const log: string[] = [];
  const problems: string[] = [];
  const calls: Call[] = [];
  const etcd = new Map<string, Buffer>();
  let revision = 1;
  /** The round of writes awaiting an answer (the keeper's step). */
  let round: Sent[] = [];
  /** Writes whose answer was lost, not applied yet: applied later, or never. */
  const zombies: Sent[] = [];
  const changes: Change[] = [];
  /** The self-watch: none until a round is answered, then from that round's lowest revision on. */
  let watchingFrom: number | undefined;
  /** A backup of etcd, with the revision it was taken at: etcd may be restored from it. */
  let backup: { data: Map<string, Buffer>; revision: number } | undefined;
  let restores = 0;
  /** The keys on the lease, as read after the last restore, until the answer comes. */
  let onLease: string[] | undefined;
  const answerLease = (): void => {
    if (!onLease) return;
    for (const key of onLease) if (intents.heldOnLease(key)) log.push(`lease holds ${short(key)}, not tracked: owed a delete`);
    onLease = undefined;
  };
  const what = (w: Write): string => `${short(w.key)} ${w.want ? `put v${String(w.want.endpoint.metadata.v)}` : 'delete'} (token ${w.token})`;
  const pick = (): string => KEYS[Math.floor(rand() * KEYS.length)]!;

  const apply = (s: Sent): void => {
    s.applied = true;
    const { key, want } = s.write;
    if (want) {
      etcd.set(key, Buffer.from(want.value));
      changes.push({ key, type: 'put', revision: ++revision, value: Buffer.from(want.value) });
      log.push(`etcd applies ${what(s.write)} at ${revision}`);
    } else if (etcd.delete(key)) {
      changes.push({ key, type: 'delete', revision: ++revision });
      log.push(`etcd applies ${what(s.write)} at ${revision}`);
    } else log.push(`etcd applies ${what(s.write)}: nothing there (${revision})`);
    s.revision = revision;
  };
  /** The round's answers: each confirmed (if applied and `confirmed` says so) or lost. */
  const answerRound = (confirmed: (s: Sent) => boolean): void => {
    let lowest: number | undefined;
    for (const s of round) {
      if (!s.write.want) intents.deleteAnswered(s.write);
      if (s.applied && confirmed(s)) {
        const settled = intents.confirm(s.write, s.revision);
        log.push(`answer: ${what(s.write)} confirmed at ${s.revision}${settled?.first ? ' (registered event)' : ''}`);
        if (settled?.first) {
          const call = calls.find((c) => c.registration === s.write.want);
          if (call?.state === 'rejected') problems.push(`a registered event for register() v${call.v}, which was rejected (${call.code})`);
        }
        // Answered from the lost history, it is watched from what etcd has now (as the keeper does).
        const from = s.restores === restores ? s.revision : revision;
        lowest = Math.min(lowest ?? from, from);
      } else {
        log.push(`answer lost: ${what(s.write)}${s.applied ? ' (applied)' : ''}`);
        if (!s.applied) zombies.push(s);
      }
    }
    round = [];
    if (lowest !== undefined) watchingFrom ??= lowest;
  };
  const deliver = (): void => {
    while (watchingFrom !== undefined && changes.length > 0) {
      const c = changes.shift()!;
      if (c.revision <= watchingFrom) continue;
      const news = c.type === 'put' ? intents.latePut(c.key, c.value!, c.revision) : intents.deletedByOther(c.key, c.revision);
      log.push(`watch: ${short(c.key)} ${c.type} at ${c.revision}${news ? ': owed again' : ''}`);
    }
  };
  const startRound = (): void => {
    const { puts, deletes } = intents.owed(128);
    const writes = [...puts, ...deletes];
    intents.sending(writes);
    round = writes.map((write) => ({ write, restores, applied: false, revision: 0 }));
    for (const s of round) log.push(`send ${what(s.write)}`);
  };
  const track = (call: Call, done: Promise<void>): void => {
    calls.push(call);
    done.then(
      () => {
        call.settled = true;
        if (call.state === 'pending') call.state = 'resolved';
      },
      (e: RegistryError) => {
        call.settled = true;
        // Registry.register() abandons on any rejection (keeper.abandon → withdraw).
        if (call.kind === 'register' && call.state === 'pending') intents.withdraw(call.key, call.token, 'put', e);
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
    if (r < 0.18) {
      const key = pick();
      const v = calls.length;
      const checked = rand() < 0.4;
      const registration = reg(key, v);
      const { token, done } = intents.intend(key, registration, !checked);
      track({ kind: 'register', key, v, token, registration, state: 'pending', settled: false }, done);
      log.push(`register ${short(key)} v${v} (token ${token})${checked ? ', health check not passed yet' : ''}`);
    } else if (r < 0.27) {
      // Registry.unregister() rejects at once (ERR_NOT_REGISTERED) for a key it does not own.
      const key = pick();
      if (intents.endpoint(key) !== undefined) {
        const { token, done } = intents.intend(key, undefined);
        track({ kind: 'unregister', key, token, state: 'pending', settled: false }, done);
        log.push(`unregister ${short(key)} (token ${token})`);
      }
    } else if (r < 0.36) {
      // A pending call times out: a register() is withdrawn; an unregister() goes on in the background.
      const pending = calls.filter((c) => c.state === 'pending' && c.kind !== 'list');
      if (pending.length > 0) {
        const c = pending[Math.floor(rand() * pending.length)]!;
        c.state = 'rejected';
        c.code = 'ERR_ETCD_UNREACHABLE';
        if (c.kind === 'register') intents.withdraw(c.key, c.token, 'put', new RegistryError('ERR_ETCD_UNREACHABLE', 'timed out'));
        log.push(`${c.kind} ${short(c.key)} (token ${c.token}) times out`);
      }
    } else if (r < 0.5) {
      if (round.length === 0 && intents.dirty) startRound();
    } else if (r < 0.64) {
      const unapplied = round.filter((s) => !s.applied);
      if (unapplied.length > 0) apply(unapplied[Math.floor(rand() * unapplied.length)]!);
    } else if (r < 0.78) {
      answerRound(() => rand() < 0.8);
    } else if (r < 0.83) {
      if (zombies.length > 0) apply(zombies.splice(Math.floor(rand() * zombies.length), 1)[0]!);
    } else if (r < 0.87) {
      deliver();
    } else if (r < 0.9) {
      const key = pick();
      const paused = rand() < 0.5;
      const done = intents.setPaused(key, paused);
      if (done) {
        track({ kind: 'list', key, token: 0, what: paused ? 'pause' : 'resume', state: 'pending', settled: false }, done);
        log.push(`${paused ? 'pause' : 'resume'} ${short(key)}`);
      }
    } else if (r < 0.94) {
      const key = pick();
      const healthy = rand() < 0.5;
      intents.setHealthy(key, healthy);
      log.push(`health check of ${short(key)}: ${healthy ? 'passes' : 'fails'}`);
    } else if (r < 0.97) {
      // etcd refuses the round (a permission, a size): the calls it answers fail; the key falls back.
      for (const s of round) {
        if (!s.write.want) intents.deleteAnswered(s.write);
        // Not applied, and said so (a permission, which etcd checks first), or not said.
        intents.refuse(s.write, new RegistryError('ERR_ETCD_REQUEST', 'refused'), !s.applied && rand() < 0.5);
        log.push(`refused: ${what(s.write)}`);
      }
      round = [];
    } else if (r < 0.985) {
      // The lease is lost: etcd drops the keys; writes on their way fail; a new lease, and the watch restarts after the next round.
      if (etcd.size > 0) revision++;
      etcd.clear();
      answerRound(() => false);
      zombies.length = 0;
      changes.length = 0;
      watchingFrom = undefined;
      backup = undefined; // what it held was on the lost lease
      onLease = undefined;
      intents.staleAll();
      log.push(`lease lost (${revision})`);
    } else if (r < 0.99) {
      answerLease();
    } else if (backup === undefined || rand() < 0.5) {
      backup = { data: new Map(etcd), revision };
      log.push(`backup of etcd taken at ${revision}`);
    } else {
      // etcd restored from the backup (our lease with it): its revisions go back; the writes on
      // their way are answered from the lost history; the keeper confirms the loss
      // (keeper.onReset), asks the lease which keys it holds, and the watch restarts after the
      // next round.
      etcd.clear();
      for (const [k, v] of backup.data) etcd.set(k, v);
      revision = backup.revision;
      // Writes whose answer was lost died with the etcd process replaced (those of the round on
      // their way may still reach the restored one, and be answered).
      zombies.length = 0;
      changes.length = 0;
      watchingFrom = undefined;
      intents.forgetRevisions();
      intents.staleAll();
      restores++;
      onLease = [...etcd.keys()];
      log.push(`etcd restored from the backup taken at ${revision}`);
    }
    await tick();
  }

  // Quiescence: the round is answered, zombies apply or vanish, health checks pass, the writer runs until nothing is owed.
  log.push('--- quiescence');
  answerRound(() => true);
  answerLease();
  for (const s of zombies.splice(0)) if (rand() < 0.5) apply(s);
  deliver();
  for (const key of KEYS) intents.setHealthy(key, true);
  await tick();
  for (let i = 0; i < 20 && (intents.dirty || changes.length > 0); i++) {
    startRound();
    for (const s of round) apply(s);
    answerRound(() => true);
    deliver();
    await tick();
  }
  await tick();

  for (const c of calls) if (!c.settled && c.state === 'pending') problems.push(`${c.what ?? c.kind} of ${short(c.key)} (token ${c.token}) never settled`);
  if (intents.dirty) problems.push('writes still owed');
  if (intents.pending) problems.push('a registration still pending');
  const entries = (intents as unknown as { entries: Map<string, unknown> }).entries;
  for (const key of entries.keys()) if (intents.endpoint(key) === undefined) problems.push(`an entry left for ${short(key)}, which is not owned`);
  for (const key of KEYS) {
    const v = intended(calls, key);
    const wanted = v === undefined ? undefined : reg(key, v).value.toString();
    const inEtcd = intents.isPaused(key) ? undefined : wanted;
    if (etcd.get(key)?.toString() !== inEtcd) problems.push(`etcd holds ${etcd.get(key)?.toString()} under ${short(key)}, expected ${inEtcd}`);
    const owned = intents.endpoint(key) && JSON.stringify(intents.endpoint(key)!.metadata);
    if (owned !== wanted) problems.push(`the registry owns ${owned} under ${short(key)}, expected ${wanted}`);
  }
  return { log, problems };
}

describe('Intents against a simulated etcd: withdrawn calls, lost answers, late applies, pauses, health (seeded)', () => {
  it('etcd and the registry end as the last call standing asked; every call settles; nothing is left behind', { timeout: 600_000 }, async () => {
    const one = process.env.INTENTS_SEED;
    const seeds = one ? [Number(one)] : Array.from({ length: Number(process.env.INTENTS_SEEDS ?? 3000) }, (_, i) => i + 1);
    const steps = Number(process.env.INTENTS_STEPS ?? 80);
    for (const seed of seeds) {
      const { log, problems } = await run(seed, steps);
      if (one) console.log(log.join('\n'));
      expect(problems, `seed ${seed} (replay: INTENTS_SEED=${seed}${steps !== 50 ? ` INTENTS_STEPS=${steps}` : ''})\n${log.join('\n')}`).toEqual([]);
    }
  });
});
