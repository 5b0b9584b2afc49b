/**
 * One lease per registry and the set of endpoints it owns.
 *
 * A single worker (`pump`) does all writes, one step at a time: grant a lease
 * when there is none (or it was lost), put dirty endpoints on it in
 * transactions, delete unregistered ones (only while they are still ours). Any
 * failure is retried with capped, jittered backoff for as long as the registry
 * is open.
 *
 * Keepalive is our own: a request every TTL/3 on one stream; no answer within
 * the request timeout tears the stream down and rebuilds the client; no answer
 * for a whole TTL (etcd has expired the lease by then), a TTL of 0, or "lease
 * not found" declares the lease lost at once, and the worker grants a new one
 * and puts every owned endpoint on it.
 *
 * A deletes-only watch per owned service notices when someone else deletes one
 * of our keys, and the worker puts it back.
 */
import type { IDuplexStream, IEvent, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, IRequestOp } from 'etcd3';
import { EtcdLeaseInvalidError, EtcdPermissionDeniedError, FilterType, Range } from 'etcd3';
import { cappedBackoff } from './backoff';
import { type Connection, isUnreachableError, watchRefusal } from './connection';
import { RegistryClosedError, RegistryError, quote } from './errors';
import type { KeySpace } from './keys';
import { logger } from './log';
import { delay } from './time';
import type { Endpoint } from './types';
import type { WatchStream, WatchTarget } from './watch-stream';

const debug = logger('lease');

/** etcd's default limit on operations in one transaction (--max-txn-ops). */
export const MAX_TXN_OPS = 128;

export type LeaseState = 'idle' | 'registering' | 'registered' | 'recovering';

export interface LeaseHooks {
  registered(endpoint: Endpoint): void;
  leaseLost(leaseId: string, reason: string): void;
  reregistered(leaseId: string, endpoints: readonly Endpoint[]): void;
  restored(endpoint: Endpoint): void;
  state(state: LeaseState): void;
  error(error: Error): void;
}

interface Waiter {
  resolve(): void;
  reject(e: Error): void;
}

interface Owned {
  readonly endpoint: Endpoint;
  readonly value: Buffer;
  /** Written to etcd at least once. */
  written: boolean;
  /** Bumped on every change, so a put that raced with a newer change doesn't clear it. */
  version: number;
  waiters: Waiter[];
}

interface Deletion {
  waiters: Waiter[];
}

export class LeaseKeeper {
  leaseId: string | undefined;
  private readonly owned = new Map<string, Owned>();
  private readonly dirty = new Set<string>();
  /** Owned keys not yet written once: the state is 'registering' while there are any. */
  private readonly unwritten = new Set<string>();
  private readonly deletions = new Map<string, Deletion>();
  /** Keys a foreign delete removed: reported as restored once put back. */
  private readonly restoring = new Set<string>();
  private readonly selfWatches = new Map<string, WatchTarget>();
  /** Services whose self-watch must (re)start after their keys were put. */
  private readonly watchPending = new Set<string>();
  private lost = false;
  /** Leases replaced after a loss, revoked once every key is on the new one. */
  private readonly retiring = new Set<string>();
  private reregistering = false;
  private pumping = false;
  private closed = false;
  /** The one close: every caller waits for the same revoke. */
  private closing: Promise<RegistryError | undefined> | undefined;
  private currentState: LeaseState = 'idle';
  private keepalive: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> | undefined;
  private keepaliveOpening = false;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private lossTimer: NodeJS.Timeout | undefined;
  /** Armed when a keepalive is sent, cleared by its answer. */
  private ackTimer: NodeJS.Timeout | undefined;
  private reachable = true;
  /** What the worker's current etcd call does, for error messages: operation and keys. */
  private doing = 'write the registry keys';
  /** Backoff between self-watches refused for permission, and when the last refusal came. */
  private denied = cappedBackoff(10_000).next();
  private lastDenial = 0;

  constructor(
    private readonly conn: Connection,
    private readonly stream: WatchStream,
    private readonly keys: KeySpace,
    private readonly ttlSeconds: number,
    private readonly hooks: LeaseHooks,
  ) {
    conn.on('rebuilt', this.onRebuilt);
    conn.on('reset', this.onReset);
    conn.on('unreachable', this.onUnreachable);
    conn.on('reachable', this.onReachable);
  }

  get state(): LeaseState {
    return this.currentState;
  }

  get endpoints(): Endpoint[] {
    return Array.from(this.owned.values(), (o) => o.endpoint);
  }

  /** The owned endpoint with this key, if any. */
  endpoint(key: string): Endpoint | undefined {
    return this.owned.get(key)?.endpoint;
  }

  /** Owns the endpoint and resolves once it is in etcd on this registry's lease. */
  add(endpoint: Endpoint, value: string): Promise<void> {
    if (this.closed) return Promise.reject(new RegistryClosedError('register'));
    const deletion = this.deletions.get(endpoint.key);
    if (deletion) {
      // Registered again before its deletion went out: keep it instead.
      this.deletions.delete(endpoint.key);
      for (const w of deletion.waiters) w.resolve();
    }
    const previous = this.owned.get(endpoint.key);
    const owned: Owned = {
      endpoint,
      value: Buffer.from(value),
      written: false,
      version: (previous?.version ?? 0) + 1,
      waiters: previous?.waiters ?? [],
    };
    this.owned.set(endpoint.key, owned);
    this.unwritten.add(endpoint.key);
    this.dirty.add(endpoint.key);
    const done = new Promise<void>((resolve, reject) => owned.waiters.push({ resolve, reject }));
    this.pump();
    return done;
  }

  /**
   * Gives up an endpoint whose registration did not complete (its caller timed
   * out or etcd refused it). Its put may still be in flight, so it is deleted
   * too, like an unregistered one: nothing is left behind on our lease.
   */
  abandon(key: string, error: Error): void {
    const owned = this.owned.get(key);
    if (!owned || owned.written) return;
    for (const w of owned.waiters.splice(0)) w.reject(error);
    this.remove(key).catch(() => undefined);
    this.refreshState();
  }

  /** Stops owning the endpoint and deletes its key (only while the key is still on our lease). */
  remove(key: string): Promise<void> {
    if (this.closed) return Promise.reject(new RegistryClosedError('unregister'));
    const owned = this.owned.get(key);
    this.owned.delete(key);
    this.unwritten.delete(key);
    this.dirty.delete(key);
    this.restoring.delete(key);
    if (owned) for (const w of owned.waiters.splice(0)) w.reject(new RegistryError('ERR_NOT_REGISTERED', `${key} was unregistered before it reached etcd`));
    if (!this.leaseId || this.lost) return Promise.resolve(); // nothing of ours is in etcd
    let deletion = this.deletions.get(key);
    if (!deletion) {
      deletion = { waiters: [] };
      this.deletions.set(key, deletion);
    }
    const d = deletion;
    const done = new Promise<void>((resolve, reject) => d.waiters.push({ resolve, reject }));
    this.pump();
    return done;
  }

  /** The single writer: runs until nothing is left to do, retrying failures with backoff. */
  private pump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    this.refreshState();
    void this.work().finally(() => {
      this.pumping = false;
      this.refreshState();
      // Work may have arrived after the last check.
      if (!this.closed && this.hasWork()) this.pump();
    });
  }

  private hasWork(): boolean {
    return this.dirty.size > 0 || this.deletions.size > 0 || (this.owned.size > 0 && (this.lost || !this.leaseId));
  }

  private async work(): Promise<void> {
    let step = cappedBackoff().next();
    while (!this.closed && this.hasWork()) {
      try {
        if (this.owned.size > 0 && (this.lost || !this.leaseId)) await this.grant();
        if (this.dirty.size > 0) await this.putDirty();
        if (this.deletions.size > 0) await this.deleteRemoved();
        step = cappedBackoff().next();
      } catch (e) {
        if (this.closed) return;
        this.failed(e as Error);
        debug('write failed, retrying in %d ms: %s', step.duration, (e as Error).message);
        try {
          await delay(step.duration, this.conn.signal);
        } catch {
          return; // closed
        }
        step = step.next(undefined);
      }
    }
  }

  private failed(e: Error): void {
    if (e instanceof EtcdLeaseInvalidError) {
      this.markLost('etcd no longer knows the lease');
      return;
    }
    if (isUnreachableError(e)) return;
    // etcd refused (permission, bad request): registrations that never made it fail now.
    const error = this.conn.error(e, this.doing);
    for (const key of Array.from(this.unwritten)) this.abandon(key, error);
    this.hooks.error(error);
  }

  private async grant(): Promise<void> {
    const old = this.lost ? this.leaseId : undefined;
    this.doing = `grant a lease of ${this.ttlSeconds} s`;
    const res = await this.conn.call((c) => c.leaseClient.leaseGrant({ TTL: this.ttlSeconds }));
    this.conn.checkHeader(res.header, false);
    if (this.closed) {
      void this.revokeQuietly(res.ID);
      return;
    }
    this.leaseId = res.ID;
    this.reregistering = this.lost;
    this.lost = false;
    debug('lease %s granted, TTL %d s', res.ID, this.ttlSeconds);
    for (const key of this.owned.keys()) this.dirty.add(key);
    for (const service of this.selfWatches.keys()) this.restartSelfWatch(service);
    this.startKeepalive();
    // Revoked only once every key is on the new lease: revoking it now would
    // delete keys it still holds (etcd restores leases on restart) under every watcher.
    if (old) this.retiring.add(old);
  }

  private async putDirty(): Promise<void> {
    const leaseId = this.leaseId!;
    const batch = Array.from(this.dirty).slice(0, MAX_TXN_OPS);
    const versions = batch.map((key) => this.owned.get(key)?.version);
    const ops: IRequestOp[] = [];
    for (const key of batch) {
      const owned = this.owned.get(key);
      if (owned) ops.push({ request_put: { key: Buffer.from(key), value: owned.value, lease: leaseId } });
    }
    this.doing = `write ${quote(batch[0])}${batch.length > 1 ? ` and ${batch.length - 1} more key(s)` : ''} on lease ${leaseId}`;
    // One key: a plain put (etcd's transaction path costs more for nothing).
    const single = ops.length === 1 ? ops[0]!.request_put : undefined;
    const res = single ? await this.conn.call((c) => c.kv.put(single)) : await this.conn.call((c) => c.kv.txn({ success: ops }));
    this.conn.checkHeader(res.header, false);
    const revision = Number(res.header.revision);
    const services = new Set<string>();
    batch.forEach((key, i) => {
      const owned = this.owned.get(key);
      if (!owned || owned.version !== versions[i]) return; // changed meanwhile: stays dirty
      this.dirty.delete(key);
      services.add(owned.endpoint.service);
      const first = !owned.written;
      owned.written = true;
      this.unwritten.delete(key);
      for (const w of owned.waiters.splice(0)) w.resolve();
      if (this.restoring.delete(key)) {
        debug('restored %s after a foreign delete', key);
        this.hooks.restored(owned.endpoint);
      } else if (first) {
        debug('registered %s on lease %s', key, leaseId);
        this.hooks.registered(owned.endpoint);
      }
    });
    for (const service of services) this.ensureSelfWatch(service, revision);
    if (this.reregistering && this.dirty.size === 0) {
      this.reregistering = false;
      for (const retired of this.retiring) void this.revokeQuietly(retired);
      this.retiring.clear();
      debug('every endpoint is back on lease %s', leaseId);
      this.hooks.reregistered(leaseId, this.endpoints);
    }
  }

  private async deleteRemoved(): Promise<void> {
    const leaseId = this.leaseId;
    const batch = Array.from(this.deletions.keys()).slice(0, MAX_TXN_OPS);
    const results = await Promise.allSettled(
      batch.map((key) => {
        const k = Buffer.from(key);
        // Delete only while the key is on our lease: a successor may have taken it over.
        return this.conn.call((c) =>
          c.kv.txn({
            compare: [{ key: k, target: 'Lease', result: 'Equal', lease: leaseId }],
            success: [{ request_delete_range: { key: k } }],
          }),
        );
      }),
    );
    let retry: Error | undefined;
    results.forEach((result, i) => {
      const key = batch[i]!;
      if (result.status === 'rejected' && isUnreachableError(result.reason)) {
        retry = result.reason as Error; // stays queued
        return;
      }
      const deletion = this.deletions.get(key);
      this.deletions.delete(key);
      if (result.status === 'fulfilled') {
        debug('unregistered %s', key);
        for (const w of deletion?.waiters ?? []) w.resolve();
      } else {
        // etcd refused: retrying will not help; the key goes with the lease.
        const error = this.conn.error(result.reason, `delete ${quote(key)}`);
        debug('deleting %s failed: %s', key, error.message);
        for (const w of deletion?.waiters ?? []) w.reject(error);
      }
    });
    if (retry) throw retry;
  }

  // ---- keepalive -------------------------------------------------------------

  private startKeepalive(): void {
    this.stopKeepalive();
    this.armLossTimer();
    const interval = Math.max(50, (this.ttlSeconds * 1000) / 3);
    this.keepaliveTimer = setInterval(() => this.keepaliveTick(), interval);
    this.keepaliveTimer.unref();
    this.openKeepalive();
  }

  private stopKeepalive(): void {
    this.stopKeepaliveTimers();
    this.dropKeepaliveStream();
  }

  private stopKeepaliveTimers(): void {
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    if (this.lossTimer) clearTimeout(this.lossTimer);
    this.clearAckTimer();
    this.keepaliveTimer = undefined;
    this.lossTimer = undefined;
  }

  private dropKeepaliveStream(): void {
    const stream = this.keepalive;
    this.keepalive = undefined;
    this.clearAckTimer();
    try {
      stream?.cancel();
    } catch {
      // already gone
    }
  }

  /** etcd expires the lease one TTL after the last renewal it saw: so do we. */
  private armLossTimer(): void {
    if (this.lossTimer) clearTimeout(this.lossTimer);
    this.lossTimer = setTimeout(() => this.markLost(`no keepalive answer for ${this.ttlSeconds} s`), this.ttlSeconds * 1000);
    this.lossTimer.unref();
  }

  private openKeepalive(): void {
    if (this.keepalive || this.keepaliveOpening || this.closed || !this.leaseId || this.lost) return;
    this.keepaliveOpening = true;
    const generation = this.conn.generation;
    this.conn.client.leaseClient
      .leaseKeepAlive()
      .then((stream) => {
        this.keepaliveOpening = false;
        if (this.closed || this.lost || generation !== this.conn.generation) {
          stream.cancel();
          return;
        }
        this.keepalive = stream;
        stream.on('data', (res) => this.onKeepalive(stream, res));
        stream.on('error', (err) => this.onKeepaliveEnd(stream, err));
        stream.on('end', () => this.onKeepaliveEnd(stream, new Error('keepalive stream ended')));
        this.keepaliveTick();
      })
      .catch((err: Error) => {
        this.keepaliveOpening = false;
        debug('opening the keepalive stream failed: %s', err.message);
      });
  }

  private keepaliveTick(): void {
    if (this.closed || !this.leaseId || this.lost) return;
    const stream = this.keepalive;
    if (!stream) {
      this.openKeepalive();
      return;
    }
    try {
      stream.write({ ID: this.leaseId });
    } catch (e) {
      this.onKeepaliveEnd(stream, e as Error);
      return;
    }
    if (!this.ackTimer) {
      // Leave time for a second attempt on a fresh connection before etcd's TTL runs out.
      const deadline = Math.min(this.conn.requestTimeoutMs, (this.ttlSeconds * 1000) / 3);
      this.ackTimer = setTimeout(() => this.keepaliveStalled(deadline), deadline);
      this.ackTimer.unref();
    }
  }

  private keepaliveStalled(deadline: number): void {
    this.ackTimer = undefined;
    if (this.closed || this.lost) return;
    debug('keepalive unanswered for %d ms: rebuilding the connection', deadline);
    this.conn.markUnreachable(new Error('lease keepalive unanswered'));
    this.dropKeepaliveStream();
    this.conn.rebuild('lease keepalive unanswered');
  }

  private onKeepalive(stream: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>, res: ILeaseKeepAliveResponse): void {
    if (stream !== this.keepalive || res.ID !== this.leaseId || this.closed) return;
    this.clearAckTimer();
    this.conn.checkHeader(res.header, false);
    if (Number(res.TTL) <= 0) {
      this.markLost('etcd answered the keepalive with TTL 0');
      return;
    }
    this.armLossTimer();
  }

  private clearAckTimer(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
  }

  private onKeepaliveEnd(stream: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>, err: Error): void {
    if (stream !== this.keepalive) return;
    debug('keepalive stream closed: %s', err.message);
    this.keepalive = undefined;
    this.clearAckTimer();
  }

  private markLost(reason: string): void {
    if (this.lost || !this.leaseId || this.closed) return;
    this.lost = true;
    this.stopKeepalive();
    debug('lease %s lost: %s', this.leaseId, reason);
    this.hooks.leaseLost(this.leaseId, reason);
    for (const key of this.owned.keys()) this.dirty.add(key);
    this.pump();
  }

  private onRebuilt = (): void => {
    this.dropKeepaliveStream();
    this.openKeepalive();
  };

  private onReset = (reason: string): void => {
    if (!this.leaseId || this.owned.size === 0) return;
    debug('etcd lost its data (%s): putting every endpoint back', reason);
    for (const key of this.owned.keys()) this.dirty.add(key);
    for (const service of this.selfWatches.keys()) this.restartSelfWatch(service);
    this.pump();
  };

  private onUnreachable = (): void => {
    this.reachable = false;
    this.refreshState();
  };

  private onReachable = (): void => {
    this.reachable = true;
    this.refreshState();
  };

  // ---- foreign deletes ---------------------------------------------------------

  private ensureSelfWatch(service: string, revision: number): void {
    if (this.selfWatches.has(service) && !this.watchPending.has(service)) return;
    this.watchPending.delete(service);
    let target = this.selfWatches.get(service);
    if (!target) {
      const range = Range.prefix(this.keys.servicePrefix(service));
      target = {
        name: `own keys of ${service}`,
        key: range.start,
        rangeEnd: range.end,
        filters: [FilterType.Noput],
        nextRevision: revision + 1,
        onEvents: (events) => this.onForeignEvents(events),
        onLost: (reason) => (watchRefusal(reason) ? this.selfWatchDenied(service, reason) : this.restartSelfWatch(service)),
      };
      this.selfWatches.set(service, target);
    }
    target.nextRevision = revision + 1;
    this.stream.add(target);
  }

  /**
   * etcd refused to watch our own keys: try again later, with backoff. A missing
   * permission (a role without read) is reported; a stale auth token heals by itself.
   */
  private selfWatchDenied(service: string, reason: string): void {
    if (Date.now() - this.lastDenial > 60_000) this.denied = cappedBackoff(10_000).next();
    this.lastDenial = Date.now();
    const wait = Math.round(this.denied.duration);
    this.denied = this.denied.next(undefined);
    const prefix = quote(this.keys.servicePrefix(service));
    if (watchRefusal(reason) === 'permission') {
      this.hooks.error(this.conn.error(new EtcdPermissionDeniedError(reason), `watch the prefix ${prefix} for deletes of its own keys (retrying in ${wait} ms)`));
    } else {
      debug('watch of own keys of %s refused (%s): retrying in %d ms', service, reason, wait);
    }
    setTimeout(() => {
      if (!this.closed) this.restartSelfWatch(service);
    }, wait).unref();
  }

  /** Puts the service's keys again, then watches from that write on: no delete can fall in between. */
  private restartSelfWatch(service: string): void {
    const target = this.selfWatches.get(service);
    if (target) this.stream.remove(target);
    this.watchPending.add(service);
    for (const [key, owned] of this.owned) if (owned.endpoint.service === service) this.dirty.add(key);
    this.pump();
  }

  private onForeignEvents(events: IEvent[]): void {
    let any = false;
    for (const event of events) {
      const key = event.kv.key.toString();
      const owned = this.owned.get(key);
      if (event.type !== 'Delete' || !owned || !owned.written || this.closed) continue;
      debug('%s was deleted by someone else: putting it back', key);
      this.restoring.add(key);
      this.dirty.add(key);
      any = true;
    }
    if (any) this.pump();
  }

  // ---- state and shutdown -------------------------------------------------------

  private refreshState(): void {
    if (this.closed) return;
    let state: LeaseState;
    if (this.owned.size === 0) state = 'idle';
    else if (this.lost || this.reregistering || (!this.reachable && this.leaseId)) state = 'recovering';
    else if (!this.leaseId || this.unwritten.size > 0) state = 'registering';
    else state = 'registered';
    if (state === this.currentState) return;
    debug('state %s -> %s', this.currentState, state);
    this.currentState = state;
    this.hooks.state(state);
  }

  private async revokeQuietly(leaseId: string): Promise<void> {
    try {
      await this.conn.call((c) => c.leaseClient.leaseRevoke({ ID: leaseId }));
      debug('old lease %s revoked', leaseId);
    } catch (e) {
      debug('revoking old lease %s failed (it expires by itself): %s', leaseId, (e as Error).message);
    }
  }

  /**
   * Stops all background work and revokes the lease so every owned key vanishes
   * in one round trip. Bounded by `timeoutMs`; resolves (never rejects) with the error if it failed.
   */
  close(timeoutMs: number): Promise<RegistryError | undefined> {
    this.closing ??= this.doClose(timeoutMs);
    return this.closing;
  }

  private async doClose(timeoutMs: number): Promise<RegistryError | undefined> {
    this.closed = true;
    this.conn.off('rebuilt', this.onRebuilt);
    this.conn.off('reset', this.onReset);
    this.conn.off('unreachable', this.onUnreachable);
    this.conn.off('reachable', this.onReachable);
    this.stopKeepaliveTimers();
    const closedError = new RegistryClosedError('register');
    for (const owned of this.owned.values()) for (const w of owned.waiters.splice(0)) w.reject(closedError);
    for (const deletion of this.deletions.values()) for (const w of deletion.waiters.splice(0)) w.resolve();
    // Revoke first: tearing down gRPC streams costs milliseconds of CPU the revoke would wait behind.
    const error = await this.revokeForClose(timeoutMs);
    this.dropKeepaliveStream();
    for (const target of this.selfWatches.values()) this.stream.remove(target);
    return error;
  }

  private async revokeForClose(timeoutMs: number): Promise<RegistryError | undefined> {
    const leaseId = this.leaseId;
    if (!leaseId || this.lost) return undefined;
    const started = Date.now();
    let step = cappedBackoff(250).next();
    for (;;) {
      try {
        const left = timeoutMs - (Date.now() - started);
        await this.conn.call((c) =>
          c.leaseClient.leaseRevoke({ ID: leaseId }, { deadline: Date.now() + Math.max(1, Math.min(left, this.conn.requestTimeoutMs)) }),
        );
        debug('lease %s revoked: %d endpoint(s) removed', leaseId, this.owned.size);
        return undefined;
      } catch (e) {
        if (e instanceof EtcdLeaseInvalidError) return undefined; // already gone
        const left = timeoutMs - (Date.now() - started);
        if (!isUnreachableError(e) || left <= step.duration) {
          debug('revoking lease %s failed: %s (its keys expire after the TTL)', leaseId, (e as Error).message);
          return this.conn.error(e, `revoke lease ${leaseId} (which deletes ${this.owned.size} key(s) under ${quote(this.keys.root)})`);
        }
        await delay(step.duration, undefined, true);
        step = step.next(undefined);
      }
    }
  }
}
