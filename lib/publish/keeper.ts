/**
 * What this registry publishes: its endpoints on one kept-alive lease.
 *
 * - `Intents` holds what each key should be; every call is an intent with a
 *   token, and a write settles only the intents as old as the one it was built
 *   from (a stale write can neither clear nor abandon a newer call).
 * - `LeaseSession` grants the lease and keeps it alive; a lost lease makes every
 *   owned key owed again on a new lease, and the old one is revoked once every
 *   key is on the new one.
 * - `OwnershipGuard` puts back a key someone else deleted.
 * - One writer (`drain`) does every etcd write, one step at a time, retried by
 *   one cockatiel policy for as long as the keeper is open. Recovery writes
 *   (after a lost lease, a data loss, a foreign delete) are paced by a
 *   `RecoveryLimiter`, so no misdetection can become a write loop.
 * - The status changes in one method (`setStatus`), and events wait in an
 *   outbox until the state they describe is complete: a listener sees a
 *   consistent keeper, and nothing it does (or throws) can break a write.
 */
import { EtcdLeaseInvalidError, EtcdPermissionDeniedError, type IRequestOp } from 'etcd3';
import { handleWhen, retry } from 'cockatiel';
import { cappedBackoff, retryAfterFirst } from '../backoff';
import { type Connection, isUnreachableError } from '../etcd/connection';
import type { DeleteOnLeaseRequest } from '../etcd/delete-on-lease';
import { RegistryClosedError, type RegistryError, quote } from '../errors';
import type { KeySpace } from '../keys';
import { logger } from '../log';
import { afterSend, delay } from '../time';
import type { Endpoint } from '../types';
import type { WatchStream } from '../etcd/watch-stream';
import { HealthCheck, type HealthSpec, type HealthState } from './health';
import { Intents, type Write } from './intents';
import { LeaseSession } from './lease-session';
import { OwnershipGuard } from './ownership-guard';
import { RecoveryLimiter } from './recovery-limiter';

const debug = logger('lease');

/** etcd's default limit on operations in one transaction (--max-txn-ops). */
export const MAX_TXN_OPS = 128;
/** Bytes of keys and values in one transaction: well under etcd's default --max-request-bytes (1.5 MiB). */
export const MAX_TXN_BYTES = 512 * 1024;

export type KeeperStatus = 'idle' | 'registering' | 'registered' | 'recovering';

/** What made keys owed again; each cause is paced on its own, so one incident seen two ways is not slowed. */
type RecoveryCause = 'lease lost' | 'data loss' | 'foreign delete' | 'watch ended';

export interface KeeperHooks {
  registered(endpoint: Endpoint): void;
  leaseLost(leaseId: string, reason: string): void;
  reregistered(leaseId: string, endpoints: readonly Endpoint[]): void;
  restored(endpoint: Endpoint): void;
  healthy(endpoint: Endpoint): void;
  unhealthy(endpoint: Endpoint, reason: string): void;
  status(status: KeeperStatus): void;
  error(error: Error): void;
}

export class LeaseKeeper {
  private readonly intents: Intents;
  /** The check in charge of each key: its latest registration's (see alignChecks()). */
  private readonly checks = new Map<string, HealthCheck>();
  /** Every running check of a key: the one in charge, and those of registrations it may fall back to. */
  private readonly running = new Map<string, Set<HealthCheck>>();
  private readonly checkOf = new WeakMap<Endpoint, HealthCheck>();
  /** The verdict last told per key (healthy / unhealthy events): a fallback tells only a new one. */
  private readonly announced = new Map<string, boolean>();
  private readonly session: LeaseSession;
  private readonly guard: OwnershipGuard;
  private readonly limiters = new Map<RecoveryCause, RecoveryLimiter>();
  /**
   * Per service, the leases of ours a put went out on with no answer (etcd may apply it
   * late, while the lease lives): the service's self-watch stays to undo such a put.
   */
  private readonly doubted = new Map<string, Set<string>>();
  /** Retries a failed writer step with capped backoff until the keeper closes. */
  private readonly policy = retry(handleWhen(() => !this.closed), { maxAttempts: Number.POSITIVE_INFINITY, backoff: cappedBackoff() }).dangerouslyUnref();
  private readonly abort = new AbortController();
  /** Events whose state is complete, delivered by flush(). */
  private readonly outbox: (() => void)[] = [];
  /** A register() or unregister() left the status and events for after its request went out (see kick(), settle()). */
  private eventsDue = false;
  private writing = false;
  /** A lost lease is being replaced: 'recovering' until every key is on the new one. */
  private regranting = false;
  /** Aborted by a call (register, unregister, pause…) that arrives while a recovery round waits its turn, and by close(). */
  private pacing: AbortController | undefined;
  /** Data losses confirmed so far: a write sent before the latest is answered from history etcd lost. */
  private resets = 0;
  /** A data loss was confirmed: the leases of ours are asked which keys they hold before the next writes (see askLeases()). */
  private leasesToAsk = false;
  /** Causes of recovery that came since the last recovery round began: the next round is paced by them. */
  private readonly recoveryDue = new Set<RecoveryCause>();
  private reachable = true;
  private currentStatus: KeeperStatus = 'idle';
  private closed = false;
  private closing: Promise<RegistryError | undefined> | undefined;

  constructor(
    private readonly conn: Connection,
    stream: WatchStream,
    private readonly keys: KeySpace,
    private readonly ttlSeconds: number,
    private readonly hooks: KeeperHooks,
  ) {
    this.intents = new Intents((key) => keys.serviceOf(key));
    this.session = new LeaseSession(conn, ttlSeconds, {
      lost: (leaseId, reason) => this.onLeaseLost(leaseId, reason),
      gone: (leaseId) => this.onLeaseGone(leaseId),
    });
    this.guard = new OwnershipGuard(conn, stream, keys, {
      deleted: (key, revision) => this.onForeignDelete(key, revision),
      put: (key, revision, value, lease) => this.onLatePut(key, lease, value, revision),
      restart: (service) => this.onWatchRestart(service),
      error: (e) => {
        this.outbox.push(() => this.hooks.error(e));
        this.kick();
      },
    });
    conn.on('reset', this.onReset);
    conn.on('unreachable', this.onUnreachable);
    conn.on('reachable', this.onReachable);
  }

  get status(): KeeperStatus {
    return this.currentStatus;
  }

  get leaseId(): string | undefined {
    return this.session.leaseId;
  }

  get endpoints(): Endpoint[] {
    return this.intents.endpoints;
  }

  /** The owned endpoint with this key, if any. */
  endpoint(key: string): Endpoint | undefined {
    return this.intents.endpoint(key);
  }

  /**
   * Owns the endpoint (replacing what this registry had under its key). `done`
   * resolves once it is in etcd on this registry's lease (with a health check:
   * after its first pass); `token` names the call for abandon().
   */
  add(endpoint: Endpoint, value: string, health?: HealthSpec): { token: number; done: Promise<void> } {
    if (this.closed) return { token: 0, done: Promise.reject(new RegistryClosedError('register')) };
    const { key } = endpoint;
    const previous = this.checks.get(key);
    // (A paused key is not listed: its new check must pass before resume() puts it back.)
    const listedBefore = this.intents.endpoint(key) !== undefined && !this.intents.isPaused(key) && (previous === undefined || previous.state === 'passing');
    const intent = this.intents.intend(key, { endpoint, value }, health === undefined);
    if (health) {
      // A key already listed stays listed until its new check fails.
      const check = new HealthCheck(key, health, {
        healthy: () => this.onHealth(key, check, true, ''),
        unhealthy: (reason) => this.onHealth(key, check, false, reason),
      }, listedBefore ? 'passing' : 'unknown');
      this.checkOf.set(endpoint, check);
      let running = this.running.get(key);
      if (!running) this.running.set(key, (running = new Set()));
      running.add(check);
      check.start();
    }
    this.alignChecks(key);
    this.kick(true);
    return intent;
  }

  /** 'passing' | 'failing', or 'unknown' (no check, or no verdict yet). */
  health(key: string): HealthState {
    return this.checks.get(key)?.state ?? 'unknown';
  }

  /**
   * Each registration has its own check (or none): the key's current check is its latest
   * call's. The check of a registration the key may still fall back to (the one before an
   * update not confirmed yet) keeps running, out of charge: if the update fails, it is in
   * charge again, with its own verdict. A failed update's check must not judge, and take
   * out of etcd, the registration that stays. Checks of registrations out of play stop.
   */
  private alignChecks(key: string): void {
    const current = this.intents.endpoint(key);
    const check = current === undefined ? undefined : this.checkOf.get(current);
    if (check) this.checks.set(key, check);
    else this.checks.delete(key);
    const running = this.running.get(key);
    if (running) {
      const inPlay = new Set(this.intents.registrations(key).map((e) => this.checkOf.get(e)));
      for (const c of running) {
        if (inPlay.has(c)) continue;
        c.stop();
        running.delete(c);
      }
      if (running.size === 0) this.running.delete(key);
    }
    if (current !== undefined) this.intents.setHealthy(key, check === undefined || check.state === 'passing');
  }

  private onHealth(key: string, check: HealthCheck, healthy: boolean, reason: string): void {
    if (this.closed || this.checks.get(key) !== check) return;
    const endpoint = this.intents.endpoint(key);
    if (!endpoint) return;
    this.intents.setHealthy(key, healthy);
    this.announce(key, endpoint, healthy, reason);
    this.kick();
  }

  private announce(key: string, endpoint: Endpoint, healthy: boolean, reason: string): void {
    this.announced.set(key, healthy);
    this.outbox.push(healthy ? () => this.hooks.healthy(endpoint) : () => this.hooks.unhealthy(endpoint, reason));
  }

  /**
   * A failed call fell back to a registration whose own check is in charge again: if its
   * verdict is not the one last told (it failed, or passed again, while out of charge), the
   * key is taken out of etcd or put back, and the event says so.
   */
  private announceFallback(key: string): void {
    const endpoint = this.intents.endpoint(key);
    if (!endpoint) {
      this.announced.delete(key);
      return;
    }
    const check = this.checks.get(key);
    if (!check || check.state === 'unknown') return;
    const healthy = check.state === 'passing';
    if (this.announced.get(key) !== healthy) this.announce(key, endpoint, healthy, check.reason);
  }

  /**
   * Takes an owned endpoint out of etcd (`paused`) without giving it up, or puts
   * it back (once its health check passes). Resolves once etcd holds the result;
   * undefined if the key is not owned. Idempotent.
   */
  setPaused(key: string, paused: boolean): Promise<void> | undefined {
    if (this.closed) return Promise.reject(new RegistryClosedError(paused ? 'pause' : 'resume'));
    const done = this.intents.setPaused(key, paused);
    this.kick();
    return done;
  }

  isPaused(key: string): boolean {
    return this.intents.isPaused(key);
  }

  /**
   * The call `token` gave up (timed out, or etcd refused it). Unless a newer call
   * on the key came meanwhile, the key falls back to what was last confirmed: the
   * previous registration stays (a failed update never removes a healthy
   * endpoint), and a key that was never registered is deleted in case the put landed.
   */
  abandon(key: string, token: number, error: Error): void {
    if (this.closed) return;
    if (this.intents.withdraw(key, token, 'put', error)) debug('registration of %s abandoned: %s', key, error.message);
    this.alignChecks(key);
    this.announceFallback(key);
    this.kick();
  }

  /** Stops owning the endpoint and deletes its key (only while the key is on a lease of ours). */
  remove(key: string): Promise<void> {
    if (this.closed) return Promise.reject(new RegistryClosedError('unregister'));
    const { done } = this.intents.intend(key, undefined);
    this.announced.delete(key);
    this.alignChecks(key);
    this.kick(true);
    return done;
  }

  // ---- the writer -------------------------------------------------------------

  /**
   * Starts the writer if there is work; brings the status and the events up to date: at
   * once, or for a register() or unregister() while a round of writes runs (`call`), once
   * this turn's requests went out (afterSend(): a call's request does not wait behind its
   * 'status' event and the listeners). settle() brings them up to date sooner.
   */
  private kick(call = false): void {
    // A key forgotten without a delete round (never written: its check had not passed) may leave its service empty.
    this.releaseEmptied();
    // A lost lease with nothing left to put on a new one is not replaced: it is revoked, once
    // no write is owed or on its way (a delete still owed compares against it).
    if (this.session.state === 'lost' && this.intents.ownedCount === 0 && !this.intents.dirty && !this.writing && !this.closed) {
      this.regranting = false;
      this.session.retireLost();
    }
    // A call never waits behind the pacing of recovery writes: the round goes out now, with it.
    if (this.pacing !== undefined && this.intents.callsOwed) this.pacing.abort();
    if (!this.writing && !this.closed && this.workOwed) {
      this.writing = true;
      void this.drain().finally(() => {
        this.writing = false;
        this.kick();
      });
    }
    // (A running round takes what is owed now on its next turn: maybe this one.)
    if (call && this.writing) {
      if (!this.eventsDue) {
        this.eventsDue = true;
        afterSend(() => this.settle());
      }
      return;
    }
    this.updateStatus();
    this.flush();
  }

  /** Brings the status and the events a call left for after its send (kick()) up to date now. */
  settle(): void {
    if (!this.eventsDue) return;
    this.eventsDue = false;
    this.updateStatus();
    this.flush();
  }

  private async drain(): Promise<void> {
    while (!this.closed && this.workOwed) {
      try {
        // The first attempt outside the policy (the usual case: it works).
        await retryAfterFirst(this.step(), () => this.policy, () => this.step(), this.abort.signal);
      } catch (e) {
        if (!this.closed) debug('writer stopped: %s', (e as Error).message);
        return;
      }
    }
    this.recoveryDue.clear(); // nothing left to recover
  }

  /** One round of writes: a lease if needed, then up to MAX_TXN_OPS puts and deletes. */
  private async step(): Promise<void> {
    if (this.closed) return;
    try {
      // Writes that answer calls never wait behind the pacing of recovery writes.
      if (this.recoveryDue.size > 0 && !this.intents.callsOwed) await this.paceRecovery();
      // Writes that answer calls go first: the drain's next step asks.
      if (this.leasesToAsk && !this.intents.callsOwed) await this.askLeases();
      if ((this.intents.putsOwed || this.leaseOwed) && !this.session.isAlive) await this.grant();
      // Taken with the writes: a data loss confirmed after this is one they may predate.
      const resets = this.resets;
      const { puts, deletes } = this.intents.owed(MAX_TXN_OPS);
      let failure: unknown;
      if (puts.length > 0) failure = await this.put(byteLimited(puts), resets);
      if (deletes.length > 0) failure = (await this.deleteAll(deletes, resets)) ?? failure;
      if (failure !== undefined && !this.closed) {
        debug('write failed, retrying: %s', (failure as Error).message);
        throw failure;
      }
      // A new lease with nothing to put on it (every endpoint paused or failing its check).
      if (!this.intents.putsOwed && this.session.isAlive) this.recovered(this.session.leaseId!);
    } finally {
      this.updateStatus();
      this.flush();
    }
  }

  private async grant(): Promise<void> {
    let leaseId: string;
    try {
      leaseId = await this.session.grant();
    } catch (e) {
      if (!(e instanceof RegistryClosedError)) this.refused(e, this.intents.owed(MAX_TXN_OPS).puts, `grant a lease of ${this.ttlSeconds} s`);
      throw e;
    }
    debug('lease %s granted, TTL %d s', leaseId, this.ttlSeconds);
    // Keys move to the new lease; each service's watch restarts after its keys are written.
    this.intents.staleAll();
    this.guard.restartAll();
  }

  /** Puts the writes on the current lease; resolves with the error if it failed. `resets`: this.resets when they were taken. */
  private async put(writes: Write[], resets: number): Promise<unknown> {
    const leaseId = this.session.leaseId;
    if (!leaseId || !this.session.isAlive) return new Error('no live lease to write on');
    this.intents.sending(writes);
    const floor = this.conn.floor;
    let revision: number;
    try {
      // One key: a plain put (etcd's transaction path costs more for nothing).
      const res =
        writes.length === 1
          ? await this.conn.call((c) => c.putOnLease({ key: writes[0]!.key, value: writes[0]!.want!.value, lease: leaseId }))
          : await this.conn.call((c) =>
              c.kv.txn({ success: writes.map((w): IRequestOp => ({ request_put: { key: Buffer.from(w.key), value: Buffer.from(w.want!.value), lease: leaseId } })) }),
            );
      // A write's revision is one etcd committed: it vouches for it.
      this.conn.checkHeader(res.header, true, floor);
      revision = Number(res.header.revision);
    } catch (e) {
      if (e instanceof EtcdLeaseInvalidError) this.session.markLost('etcd no longer knows the lease');
      else if (!isUnreachableError(e) && writes.length > 1) {
        // etcd refuses a transaction as a whole (too large, one key outside a role's prefix):
        // halves are tried on their own, so only the key it refuses fails its caller.
        debug('%s refused (%s): splitting the transaction', describeWrites(writes, leaseId), (e as Error).message);
        if (refusedUnapplied(e)) this.intents.unapplied(writes); // (the halves are sent again)
        const half = Math.ceil(writes.length / 2);
        const first = await this.put(writes.slice(0, half), resets);
        const second = this.closed ? undefined : await this.put(writes.slice(half), resets);
        return first ?? second;
      } else if (isUnreachableError(e)) this.doubt(writes, leaseId);
      else this.refused(e, writes, describeWrites(writes, leaseId), true);
      return e;
    }
    if (this.closed) return undefined;
    const services = new Set<string>();
    for (const w of writes) {
      const settled = this.intents.confirm(w, revision);
      if (this.running.has(w.key)) this.alignChecks(w.key);
      if (!settled) continue;
      const endpoint = w.want!.endpoint;
      services.add(endpoint.service);
      if (settled.restored) {
        debug('restored %s after a foreign delete', w.key);
        this.outbox.push(() => this.hooks.restored(endpoint));
      } else if (settled.first) {
        debug('registered %s on lease %s', w.key, leaseId);
        this.outbox.push(() => this.hooks.registered(endpoint));
      }
    }
    // Taken before a data loss, the writes may be answered from the lost history: their keys
    // are owed again, and the watch restarts after that write.
    if (resets === this.resets) for (const service of services) this.guard.watchFrom(service, revision);
    if (!this.intents.putsOwed) this.recovered(leaseId);
    return undefined;
  }

  /**
   * A lease lost while endpoints are owned is granted again even with nothing to put on it
   * (every endpoint paused or failing its check): the lease of a registry that owns endpoints
   * stays alive, and its status does not stay 'recovering'.
   */
  private get leaseOwed(): boolean {
    return this.session.state === 'lost' && this.intents.ownedCount > 0;
  }

  /** The writer has something to do: a write, a lease, or leases to ask after a data loss. */
  private get workOwed(): boolean {
    return this.intents.dirty || this.leaseOwed || this.leasesToAsk;
  }

  /**
   * After a data loss: etcd restored from a backup holds the keys of ours it held then, on our
   * lease it restored too, which we keep alive. Those given up since (unregistered, and
   * forgotten once their delete was confirmed) would stay for as long as the lease lives, so
   * each lease of ours is asked which keys it holds (LeaseTimeToLive, keys: a read, no
   * revision), and a key not listed is deleted again. A refusal (a role without read access to
   * a key on it) ends the check: it is reported, not retried.
   */
  private async askLeases(): Promise<void> {
    this.leasesToAsk = false;
    for (const lease of this.session.known) {
      let keys: readonly Buffer[];
      try {
        ({ keys } = await this.conn.call((c) => c.leaseClient.leaseTimeToLive({ ID: lease, keys: true })));
      } catch (e) {
        if (this.closed) return;
        if (isUnreachableError(e)) {
          this.leasesToAsk = true; // asked again when the step is retried
          throw e;
        }
        const error = this.conn.error(e, `ask lease ${lease} which keys it holds`);
        debug('%s', error.message);
        this.outbox.push(() => this.hooks.error(error));
        continue;
      }
      if (this.closed) return;
      for (const raw of keys ?? []) {
        const key = raw.toString();
        if (this.keys.serviceOf(key) === undefined || !this.intents.heldOnLease(key)) continue;
        debug('%s is on lease %s after the data loss, though not listed: deleting it again', key, lease);
      }
    }
  }

  /** The puts of `writes` went out on `leaseId` and got no answer: etcd may apply them later. */
  private doubt(writes: readonly Write[], leaseId: string): void {
    for (const w of writes) {
      const service = this.keys.serviceOf(w.key);
      if (service === undefined) continue;
      let leases = this.doubted.get(service);
      if (!leases) this.doubted.set(service, (leases = new Set()));
      leases.add(leaseId);
    }
  }

  /** Releases the self-watch of each service whose last key was forgotten (see releaseIdle()). */
  private releaseEmptied(): void {
    for (const service of this.intents.takeEmptied()) this.releaseIdle(service);
  }

  /**
   * The self-watch of `service` goes once this registry keeps nothing there and no put
   * of ours there may still land late (one that got no answer, on a lease still known).
   */
  private releaseIdle(service: string): void {
    if (this.intents.tracks(service)) return;
    const leases = this.doubted.get(service);
    if (leases) {
      const known = this.session.known;
      for (const lease of leases) if (!known.has(lease)) leases.delete(lease);
      if (leases.size > 0) return;
      this.doubted.delete(service);
    }
    this.guard.release(service);
  }

  /** Every owned key is written on the current lease. */
  private recovered(leaseId: string): void {
    if (!this.regranting) return;
    this.regranting = false;
    // Each retired lease's doubted puts stop holding a self-watch once it is revoked (onLeaseGone).
    this.session.revokeRetired();
    debug('every endpoint is back on lease %s', leaseId);
    const endpoints = this.intents.endpoints;
    this.outbox.push(() => this.hooks.reregistered(leaseId, endpoints));
  }

  /** Deletes each key while it is on a lease of ours; resolves with an error if any failed. */
  private async deleteAll(writes: Write[], resets: number): Promise<unknown> {
    this.intents.sending(writes);
    const results = await Promise.allSettled(writes.map((w) => this.deleteOne(w)));
    let failure: unknown;
    /** Per service, the lowest revision a delete was answered at. */
    const from = new Map<string, number>();
    results.forEach((result, i) => {
      const w = writes[i]!;
      this.intents.deleteAnswered(w);
      if (result.status === 'fulfilled') {
        const { revision, note } = result.value;
        this.intents.confirm(w, revision);
        if (this.running.has(w.key)) this.alignChecks(w.key);
        debug('unregistered %s%s', w.key, note);
        const service = this.keys.serviceOf(w.key);
        if (service !== undefined && revision > 0) from.set(service, Math.min(from.get(service) ?? revision, revision));
        return;
      }
      failure = result.reason;
      this.refused(result.reason, [w], `delete ${quote(w.key)}`);
    });
    // Watched from here on too, so that a put of ours that lands late is undone: from the
    // round's lowest revision (a delete that found nothing answers with etcd's current
    // revision, which may be past a late put on another key).
    // Taken before a data loss, they may be answered from the lost history: watched from
    // what etcd has now (no later write of the service may come to restart the watch).
    const now = this.conn.seenRevision;
    for (const [service, revision] of from) this.guard.watchFrom(service, resets === this.resets ? revision : now);
    this.releaseEmptied();
    return failure;
  }

  /**
   * Deletes the key only while it is on a lease of ours (a successor may have
   * taken it over). The transaction reads the key when the compare fails, so a
   * key left on an older lease of ours is found and deleted there. Resolves with
   * a note for the log.
   */
  private async deleteOne(w: Write): Promise<{ note: string; revision: number }> {
    // With no current lease (a lost one retired), compared against a retired one: a late put
    // of ours may have landed on any of them while it lives (a failed compare reads the holder).
    let lease: string | undefined = this.session.leaseId ?? [...this.session.known][0];
    if (lease === undefined) return { note: ' (no lease of ours may hold it)', revision: 0 };
    for (let attempt = 0; attempt < 3; attempt++) {
      const floor = this.conn.floor;
      const req: DeleteOnLeaseRequest = { key: w.key, lease };
      const res = await this.conn.call((c) => c.deleteOnLease(req));
      // As for a put: a header behind what was seen (etcd restored empty) is checked.
      this.conn.checkHeader(res.header, true, floor);
      const revision = Number(res.header.revision);
      if (res.succeeded) return { note: '', revision };
      if (!res.kv) return { note: ' (it was not in etcd)', revision };
      const holder: string = res.kv.lease;
      if (!this.session.known.has(holder)) return { note: ` (left alone: it is on lease ${holder}, not ours)`, revision };
      lease = holder;
    }
    throw new Error(`the key ${quote(w.key)} kept moving between leases of ours`);
  }

  /**
   * etcd refused these writes (not a matter of reachability): the calls that asked for them
   * fail. `sent`: the refusal answered these very writes (not a step before them).
   */
  private refused(e: unknown, writes: readonly Write[], doing: string, sent = false): void {
    if (isUnreachableError(e) || e instanceof RegistryClosedError) return;
    const error = this.conn.error(e, doing);
    const unapplied = sent && refusedUnapplied(e);
    for (const w of writes) {
      this.intents.refuse(w, error, unapplied);
      this.alignChecks(w.key);
      this.announceFallback(w.key);
    }
    this.outbox.push(() => this.hooks.error(error));
  }

  // ---- recovery ---------------------------------------------------------------

  /** A cause of recovery: the writes it needs go out in the next recovery round. */
  private startRecovery(cause: RecoveryCause, detail: string): void {
    debug('recovery needed (%s): %s', cause, detail);
    this.recoveryDue.add(cause);
  }

  /**
   * A recovery round waits its turn (the first after a quiet spell goes at once).
   * Causes that come while it waits are covered by it; one that comes while its
   * writes are in flight makes the next round, paced again.
   */
  private async paceRecovery(): Promise<void> {
    let wait = 0;
    for (const cause of this.recoveryDue) {
      let limiter = this.limiters.get(cause);
      if (!limiter) this.limiters.set(cause, (limiter = new RecoveryLimiter()));
      wait = Math.max(wait, limiter.take());
    }
    if (wait > 0 && !this.intents.callsOwed) {
      debug('recovery writes paced (%s repeating): waiting %d ms', Array.from(this.recoveryDue).join(', '), wait);
      const pacing = (this.pacing = new AbortController());
      try {
        await delay(wait, pacing.signal);
      } catch (e) {
        if (this.closed) throw e;
        // The limiter keeps its schedule: the next recovery round waits as it would have.
        debug('recovery writes go out with a call that arrived while they waited');
      } finally {
        this.pacing = undefined;
      }
    }
    this.recoveryDue.clear();
  }

  private onLeaseLost(leaseId: string, reason: string): void {
    debug('lease %s lost: %s', leaseId, reason);
    if (this.closed) return;
    this.outbox.push(() => this.hooks.leaseLost(leaseId, reason));
    // With every endpoint paused (nothing stale to put back), the lease is granted again all the same.
    if (this.intents.staleAll() > 0 || this.intents.ownedCount > 0) {
      this.regranting = true;
      this.startRecovery('lease lost', reason);
    }
    this.kick();
  }

  /** A retired lease is revoked: puts of ours on it can no longer land. */
  private onLeaseGone(leaseId: string): void {
    if (this.closed) return;
    debug('lost lease %s revoked: its doubted puts can no longer land', leaseId);
    for (const service of Array.from(this.doubted.keys())) this.releaseIdle(service);
  }

  private onReset = (reason: string): void => {
    if (this.closed) return;
    this.resets++;
    // Revisions start again lower: what each key remembers of them would hide real deletes.
    // A key not listed that a put of ours reached is deleted again (a backup may hold it).
    const deletes = this.intents.forgetRevisions();
    // The self-watches wait at revisions of the lost history: each restarts after the next
    // write of its service (with every key paused or failing its check, when one comes back).
    this.guard.restartAll();
    // A lease of ours etcd restored may hold keys given up since: asked first (see askLeases()).
    // Paced as the recovery it is: a reset reported again and again costs a read now and then.
    this.leasesToAsk = this.session.known.size > 0;
    const stale = this.intents.staleAll();
    if (stale === 0 && deletes === 0 && !this.leasesToAsk) return;
    debug('etcd lost its data (%s): putting every endpoint back', reason);
    this.startRecovery('data loss', reason);
    this.kick();
  };

  private onForeignDelete(key: string, revision: number): void {
    if (this.closed || !this.intents.deletedByOther(key, revision)) return;
    debug('%s was deleted by someone else at revision %d: putting it back', key, revision);
    this.startRecovery('foreign delete', key);
    this.kick();
  }

  /**
   * A put on a lease of ours (a successor that takes a key over keeps it) that is
   * not what the key should be: a write of ours that etcd applied after we stopped
   * waiting for it (a stalled etcd or member gives a request it reads late a fresh
   * deadline), after a newer call was written or the key was given up. Written again.
   */
  private onLatePut(key: string, lease: string, value: Buffer, revision: number): void {
    if (this.closed || !this.session.known.has(lease) || !this.intents.latePut(key, value, revision)) return;
    // Not paced as a recovery: a superseded put of a burst of updates lands like this too, and our rewrite ends it.
    debug('%s was written by an older put of ours at revision %d: writing what it should be', key, revision);
    this.kick();
  }

  private onWatchRestart(service: string): void {
    if (this.closed || this.intents.staleAll((e) => e.service === service) === 0) return;
    this.startRecovery('watch ended', `own keys of ${service}`);
    this.kick();
  }

  private onUnreachable = (): void => {
    this.reachable = false;
    this.kick();
  };

  private onReachable = (): void => {
    this.reachable = true;
    this.kick();
  };

  // ---- status and events --------------------------------------------------------

  private updateStatus(): void {
    if (this.closed) return;
    let next: KeeperStatus;
    if (this.intents.ownedCount === 0) next = 'idle';
    else if (this.regranting || this.intents.recovering || this.session.state === 'lost' || (!this.reachable && this.session.leaseId !== undefined)) next = 'recovering';
    else if (!this.session.isAlive || this.intents.pending) next = 'registering';
    else next = 'registered';
    this.setStatus(next);
  }

  /** The one place the status changes. */
  private setStatus(next: KeeperStatus): void {
    if (next === this.currentStatus) return;
    debug('status %s -> %s', this.currentStatus, next);
    this.currentStatus = next;
    this.outbox.push(() => this.hooks.status(next));
  }

  /** Delivers the events whose state is complete, in order. Hooks never throw (the registry's dispatch). */
  private flush(): void {
    while (this.outbox.length > 0) this.outbox.shift()!();
  }

  // ---- close ------------------------------------------------------------------

  /**
   * Stops all background work and revokes every lease of ours, so every owned key
   * vanishes in one round trip. Bounded by `timeoutMs`; resolves (never rejects)
   * with the error if it failed. Every caller gets the same promise, settled only
   * once the revoke is done.
   */
  close(timeoutMs: number): Promise<RegistryError | undefined> {
    // What a call of this turn changed is told before 'closing' (only then: no wait otherwise).
    if (this.closing === undefined) this.settle();
    this.closing ??= this.doClose(timeoutMs);
    return this.closing;
  }

  private async doClose(timeoutMs: number): Promise<RegistryError | undefined> {
    this.closed = true;
    const what = `which deletes this registry's ${this.intents.ownedCount} key(s) under ${quote(this.keys.root)}`;
    // The revoke goes out before anything else. Its request reaches the socket once this turn
    // of the event loop has run its synchronous code and microtasks: the tidying up waits for
    // the next step (nothing can write meanwhile: the keeper and its session are closed).
    const revoked = this.session.close(timeoutMs, what);
    await new Promise<void>((resolve) => afterSend(resolve));
    this.abort.abort(new RegistryClosedError('close'));
    this.pacing?.abort(this.abort.signal.reason);
    for (const running of this.running.values()) for (const check of running) check.stop();
    this.running.clear();
    this.checks.clear();
    this.announced.clear();
    this.conn.off('reset', this.onReset);
    this.conn.off('unreachable', this.onUnreachable);
    this.conn.off('reachable', this.onReachable);
    this.intents.closeAll(new RegistryClosedError('register'));
    const error = await revoked;
    this.guard.close();
    this.flush();
    return error;
  }
}

/** What a put of `writes` does, for an error (built only when one fails). */
function describeWrites(writes: readonly Write[], leaseId: string): string {
  return `write ${quote(writes[0]!.key)}${writes.length > 1 ? ` and ${writes.length - 1} more key(s)` : ''} on lease ${leaseId}`;
}

/** The first writes that fit in MAX_TXN_BYTES (at least one). */
function byteLimited(writes: Write[]): Write[] {
  let bytes = 0;
  for (let i = 0; i < writes.length; i++) {
    const w = writes[i]!;
    bytes += w.key.length * 3 + Buffer.byteLength(w.want!.value) + 64;
    if (bytes > MAX_TXN_BYTES && i > 0) return writes.slice(0, i);
  }
  return writes;
}

/**
 * etcd refused the write before applying it: a permission, which it checks first. (Other
 * refusals are not taken for proof: a put whose answer was an error may still be in etcd.)
 */
function refusedUnapplied(e: unknown): boolean {
  return e instanceof EtcdPermissionDeniedError;
}
