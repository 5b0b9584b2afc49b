/**
 * One etcd lease at a time, kept alive on our own keepalive stream, and the
 * leases it replaced until they are revoked.
 *
 *   none ──grant()──► granting ──► alive ──(no ack for a TTL, TTL 0, not found)──► lost
 *     ▲ ▲                │                                                         │
 *     │ └──── failed ────┘                          grant() again: the lost lease ─┘
 *     │                                             is retired, revoked later
 *     └──── retireLost() (nothing to put on a new lease): the lost lease is retired and
 *           revoked now, retried until etcd answers
 *   any ──close()──► closed (current and retired leases revoked, bounded)
 *
 * Keepalive: a request every TTL/4 on one stream; an ack deadline of
 * min(TTL/2, request timeout + TTL/3) per request (a grpc-proxy answers only
 * when its own upstream keepalive, every TTL/3, does; unanswered: the
 * connection is rebuilt, so a second try on a fresh connection fits in the TTL); no ack for a
 * whole TTL (etcd has expired the lease by then), a TTL of 0, or "lease not
 * found" make the lease lost. A member gone silent is noticed at most TTL/4 + TTL/2
 * after the last answer, which leaves TTL/4 to rebuild and renew elsewhere (TTL/3
 * would leave TTL/6: half a second at a 3 s TTL, which a loaded machine missed).
 * An answer not there a request timeout after its keepalive went out is late: one keepalive
 * more goes to another member on a stream of its own (EtcdClient.keepaliveOnce), and its
 * answer renews the lease as any other does. The stream that is late is left alone (a slow
 * member that still answers is no stall), so the lease is renewed at most a keepalive
 * interval + a request timeout after the last answer while the rebuild finds a member that
 * answers (a 3 s TTL: 1.75 s, not 2.25 s and the rebuild). Not through a grpc-proxy: it
 * answers only when its own upstream keepalive does, late is how it answers. A hedge says
 * nothing of reachability (it goes where the stream does not: neither its answer nor its
 * failure is the stream's).
 * The session knows nothing of keys.
 *
 * Close (a SIGTERM's deregistration) is one LeaseRevoke that must be fast: it is
 * sent before anything else is torn down, and warm. The first LeaseRevoke of a
 * process costs about a millisecond more than the next (code and protobuf
 * encoders run for the first time), so after the first grant the session grants
 * a throwaway lease and revokes it through the same call (fire and forget; no
 * key is ever on it, so neither call writes a revision).
 */
import { EtcdLeaseInvalidError, type IDuplexStream, type ILeaseKeepAliveRequest, type ILeaseKeepAliveResponse } from 'etcd3';
import { handleWhen, retry } from 'cockatiel';
import { cappedBackoff, retryAfterFirst, retryForever } from '../backoff';
import { type Connection, type Floor, isUnreachableError } from '../etcd/connection';
import { RegistryClosedError, type RegistryError } from '../errors';
import { logger } from '../log';
import { withDeadline } from '../time';

const debug = logger('lease');
/** Floors kept for unanswered keepalives (see keepaliveFloors): a keepalive goes out every TTL/4. */
const MAX_FLOORS = 16;

export type LeaseSessionState = 'none' | 'granting' | 'alive' | 'lost' | 'closed';

type KeepaliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

export interface LeaseSessionHooks {
  /** The alive lease was lost; `leaseId` is retired and revoked once replaced. */
  lost(leaseId: string, reason: string): void;
  /** A retired lease is revoked: etcd holds it no more, nothing of ours can land on it. */
  gone(leaseId: string): void;
}

export class LeaseSession {
  private currentState: LeaseSessionState = 'none';
  /** The current lease: alive, or lost and not yet replaced. */
  private current: string | undefined;
  /** Leases replaced after a loss: etcd may still hold them (it restores leases on restart). */
  private readonly retired = new Set<string>();
  /** Retired leases being revoked by revokeLost(), retried while etcd does not answer. */
  private readonly revoking = new Set<string>();
  private keepalive: KeepaliveStream | undefined;
  private keepaliveOpening = false;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private lossTimer: NodeJS.Timeout | undefined;
  /** Armed when a keepalive is sent, cleared by its answer. */
  private ackTimer: NodeJS.Timeout | undefined;
  /** Armed with ackTimer, earlier: the answer is late, one keepalive more goes elsewhere (hedge). */
  private hedgeTimer: NodeJS.Timeout | undefined;
  /** A hedge on its way (one at a time): whether it was answered. */
  private hedging: Promise<boolean> | undefined;
  /** A hedge was answered since the oldest unanswered keepalive went out: etcd answers, elsewhere. */
  private answeredElsewhere = false;
  /**
   * What was seen when each unanswered keepalive went out, oldest first: etcd answers a stream's
   * keepalives in order, so an answer's header is checked against the oldest. (With one floor
   * for all, an answer slower than the interval was checked against what was seen when a later
   * keepalive went out: behind it after any write meanwhile, a suspected reset each time.)
   * etcd's grpc-proxy answers each keepalive too, in order. At most MAX_FLOORS are kept: past
   * that, further keepalives count against the newest kept floor (older than theirs: the check
   * is only weaker, never a false alarm), so the queue stays aligned with the answers.
   */
  private keepaliveFloors: { floor: Floor; keepalives: number }[] = [];
  /** The floor of the last answer: for an answer with no keepalive left in the queue. */
  private lastKeepaliveFloor: Floor = { revision: 0, epoch: 0 };
  private closing: Promise<RegistryError | undefined> | undefined;
  /** Ends the background revokes of retireLost() on close (which revokes what they had left). */
  private readonly abort = new AbortController();
  /** The throwaway grant and revoke that warm the close path's revoke; once per session. */
  private warming: Promise<void> | undefined;

  constructor(
    private readonly conn: Connection,
    private readonly ttlSeconds: number,
    private readonly hooks: LeaseSessionHooks,
  ) {
    conn.on('rebuilt', this.onRebuilt);
  }

  get state(): LeaseSessionState {
    return this.currentState;
  }

  /** The current lease id (alive or lost), once granted. */
  get leaseId(): string | undefined {
    return this.current;
  }

  /** Every lease of ours etcd may still hold: the current one and the retired ones. */
  get known(): ReadonlySet<string> {
    const all = new Set(this.retired);
    if (this.current) all.add(this.current);
    return all;
  }

  get isAlive(): boolean {
    return this.currentState === 'alive';
  }

  private setState(next: LeaseSessionState, why: string): void {
    if (next === this.currentState) return;
    debug('lease session %s -> %s (%s%s)', this.currentState, next, why, this.current ? `, lease ${this.current}` : '');
    this.currentState = next;
  }

  /** A fresh lease, kept alive from now on; a lost one is retired. */
  async grant(): Promise<string> {
    if (this.currentState === 'closed') throw new RegistryClosedError('register');
    if (this.currentState === 'alive' && this.current) return this.current;
    this.setState('granting', 'granting');
    let res;
    const floor = this.conn.floor;
    try {
      res = await this.conn.call((c) => c.leaseClient.leaseGrant({ TTL: this.ttlSeconds }));
    } catch (e) {
      if (this.currentState === 'granting') this.setState(this.current ? 'lost' : 'none', 'grant failed');
      throw e;
    }
    // A grant is a write: its revision is one etcd committed.
    this.conn.checkHeader(res.header, true, floor);
    if (this.closing) {
      void this.revokeQuietly(res.ID, 'granted after close');
      throw new RegistryClosedError('register');
    }
    if (this.current) this.retired.add(this.current);
    this.current = res.ID;
    this.setState('alive', `granted with TTL ${this.ttlSeconds} s`);
    this.startKeepalive();
    this.warming ??= this.warmRevoke();
    return res.ID;
  }

  /**
   * Revokes the retired leases: call once every key is on the current one. Each stays known
   * (a late put of ours on it is still ours to undo) until etcd holds it no more.
   */
  revokeRetired(): void {
    for (const id of this.retired) if (!this.revoking.has(id)) void this.revokeLost(id);
  }

  /** The lease is gone (etcd said so, or it cannot have survived). */
  markLost(reason: string): void {
    if (this.currentState !== 'alive' || !this.current) return;
    this.setState('lost', reason);
    this.stopKeepalive();
    this.hooks.lost(this.current, reason);
  }

  /**
   * The lost lease, when nothing is to be put on a new one: retired and revoked now rather than
   * left as the current lease for ever. etcd may still hold it (it restores leases on restart),
   * and a put of ours that got no answer may still land on it while it lives. Retried while etcd
   * does not answer; hooks.gone once etcd holds it no more.
   */
  retireLost(): void {
    if (this.currentState !== 'lost' || !this.current) return;
    const leaseId = this.current;
    this.retired.add(leaseId);
    this.current = undefined;
    this.setState('none', `lost lease ${leaseId} retired: nothing to put on a new one`);
    // Leases retired before it (a recovery that did not finish) hold nothing of ours either.
    this.revokeRetired();
  }

  private async revokeLost(leaseId: string): Promise<void> {
    this.revoking.add(leaseId);
    // Unref'd (a process with nothing else to do exits while etcd is down; the lease then
    // expires by itself) and abandoned once closed: cockatiel retries no more once the signal
    // is aborted, and an attempt due after a pause that close() fell into is not sent.
    const policy = retryForever(isUnreachableError).dangerouslyUnref();
    try {
      await policy.execute(({ signal }) => {
        if (signal.aborted) throw new RegistryClosedError('revoke');
        return this.conn.call((c) => c.leaseClient.leaseRevoke({ ID: leaseId }));
      }, this.abort.signal);
      debug('lost lease %s revoked', leaseId);
    } catch (e) {
      if (this.currentState === 'closed') return; // close() revokes it
      if (!(e instanceof EtcdLeaseInvalidError)) {
        debug('revoking lost lease %s failed (close() tries again; it expires by itself): %s', leaseId, (e as Error).message);
        return;
      }
      debug('lost lease %s: etcd no longer holds it', leaseId);
    } finally {
      this.revoking.delete(leaseId);
    }
    if (this.currentState === 'closed') return;
    this.retired.delete(leaseId);
    this.hooks.gone(leaseId);
  }

  /**
   * The revoke call, the same one on close and in the warm-up: sent before this
   * returns, with the call's deadline at most `deadline` (on performance.now()'s clock).
   */
  private sendRevoke(leaseId: string, deadline: number): Promise<unknown> {
    return this.conn.call((c) =>
      c.leaseClient.leaseRevoke({ ID: leaseId }, { deadline: Date.now() + Math.min(deadline - performance.now(), this.conn.requestTimeoutMs) }),
    );
  }

  /**
   * Runs the close path's revoke once, on a lease of our own granted for it (never
   * a made-up ID: it could be someone else's lease). Errors are only logged: a
   * throwaway lease that could not be revoked holds no key and expires by itself.
   */
  private async warmRevoke(): Promise<void> {
    let leaseId: string;
    try {
      leaseId = (await this.conn.call((c) => c.leaseClient.leaseGrant({ TTL: this.ttlSeconds }))).ID;
    } catch (e) {
      debug('warm-up: granting a throwaway lease failed: %s', (e as Error).message);
      return;
    }
    try {
      await this.sendRevoke(leaseId, performance.now() + this.conn.requestTimeoutMs);
      debug('warm-up: throwaway lease %s granted and revoked', leaseId);
    } catch (e) {
      debug('warm-up: revoking throwaway lease %s failed, it expires by itself: %s', leaseId, (e as Error).message);
    }
  }

  private async revokeQuietly(leaseId: string, why: string): Promise<void> {
    try {
      await this.conn.call((c) => c.leaseClient.leaseRevoke({ ID: leaseId }));
      debug('lease %s revoked (%s)', leaseId, why);
    } catch (e) {
      debug('revoking lease %s (%s) failed, it expires by itself: %s', leaseId, why, (e as Error).message);
    }
  }

  // ---- keepalive -------------------------------------------------------------

  private startKeepalive(): void {
    this.stopKeepalive();
    this.armLossTimer();
    const interval = Math.max(50, (this.ttlSeconds * 1000) / 4);
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
    if (this.keepalive || this.keepaliveOpening || !this.isAlive) return;
    this.keepaliveOpening = true;
    const generation = this.conn.generation;
    this.conn.client
      .keepaliveStream()
      .then((stream) => {
        this.keepaliveOpening = false;
        if (!this.isAlive || generation !== this.conn.generation) {
          stream.cancel();
          if (this.isAlive) this.openKeepalive();
          return;
        }
        this.keepalive = stream;
        this.keepaliveFloors = [];
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
    if (!this.isAlive || !this.current) return;
    const stream = this.keepalive;
    if (!stream) {
      this.openKeepalive();
      return;
    }
    const floor = this.conn.floor;
    try {
      stream.write({ ID: this.current });
    } catch (e) {
      this.onKeepaliveEnd(stream, e as Error);
      return;
    }
    if (this.keepaliveFloors.length < MAX_FLOORS) this.keepaliveFloors.push({ floor, keepalives: 1 });
    else this.keepaliveFloors.at(-1)!.keepalives++;
    if (!this.ackTimer) {
      // etcd's grpc-proxy answers a keepalive only when its own upstream keepalive (every TTL/3)
      // comes back: allow for that wait, and still leave half the TTL for a second attempt on a
      // fresh connection before etcd's TTL runs out.
      const ttlMs = this.ttlSeconds * 1000;
      const deadline = Math.min(ttlMs / 2, this.conn.requestTimeoutMs + ttlMs / 3);
      this.ackTimer = setTimeout(() => this.keepaliveStalled(deadline), deadline);
      this.ackTimer.unref();
      this.answeredElsewhere = false;
      const late = this.conn.requestTimeoutMs;
      if (late < deadline && !this.conn.isThroughProxy && this.conn.client.canKeepaliveElsewhere) {
        this.hedgeTimer = setTimeout(() => this.hedge(late), late);
        this.hedgeTimer.unref();
      }
    }
  }

  /**
   * The keepalive stream's answer is `lateMs` late: one keepalive more, to another member
   * (EtcdClient.keepaliveOnce), bounded by a request timeout. Its answer renews the lease as
   * the stream's would; the stream is left alone (its ack deadline decides whether it stalled).
   */
  private hedge(lateMs: number): void {
    this.hedgeTimer = undefined;
    const leaseId = this.current;
    if (!this.isAlive || leaseId === undefined || this.hedging) return;
    const floor = this.conn.floor;
    // Its own controller: AbortSignal.any() on the session's signal keeps every hedge's signal
    // for the session's life on Node 20 (nodejs/node#55351).
    const ended = new AbortController();
    const timer = setTimeout(() => ended.abort(new Error(`no answer within ${this.conn.requestTimeoutMs} ms`)), this.conn.requestTimeoutMs);
    timer.unref();
    const closed = (): void => ended.abort(this.abort.signal.reason);
    this.abort.signal.addEventListener('abort', closed, { once: true });
    debug('keepalive unanswered for %d ms: one more on another connection', lateMs);
    this.hedging = this.conn.client
      .keepaliveOnce(leaseId, ended.signal)
      .then((res) => {
        if (res === undefined) return false;
        if (res.ID !== this.current || !this.isAlive) return true;
        this.conn.checkHeader(res.header, false, floor);
        if (Number(res.TTL) <= 0) {
          this.markLost('etcd answered the keepalive with TTL 0');
          return true;
        }
        debug('lease %s renewed on another connection', leaseId);
        this.answeredElsewhere = true;
        this.armLossTimer();
        return true;
      })
      .catch((e: Error) => {
        debug('the keepalive on another connection got no answer: %s', e.message);
        return false;
      })
      .finally(() => {
        clearTimeout(timer);
        this.abort.signal.removeEventListener('abort', closed);
        this.hedging = undefined;
      });
  }

  private keepaliveStalled(deadline: number): void {
    this.ackTimer = undefined;
    if (!this.isAlive) return;
    debug('keepalive unanswered for %d ms: rebuilding the connection%s', deadline, this.answeredElsewhere ? ' (answered on another connection)' : '');
    // etcd is unreachable unless the hedge is answered (now or, on its way, later: then only if
    // nothing answered meanwhile, the rebuilt client included, and the lease is the same).
    const unreachable = (): void => this.conn.markUnreachable(new Error('lease keepalive unanswered'));
    const [leaseId, stalledAt] = [this.current, performance.now()];
    if (this.hedging) void this.hedging.then((answered) => !answered && this.isAlive && this.current === leaseId && !this.conn.answeredSince(stalledAt) && unreachable());
    else if (!this.answeredElsewhere) unreachable();
    this.dropKeepaliveStream();
    this.conn.rebuild('lease keepalive unanswered');
  }

  private onKeepalive(stream: KeepaliveStream, res: ILeaseKeepAliveResponse): void {
    if (stream !== this.keepalive || res.ID !== this.current || !this.isAlive) return;
    this.clearAckTimer();
    const oldest = this.keepaliveFloors[0];
    const floor = oldest?.floor ?? this.lastKeepaliveFloor;
    if (oldest && --oldest.keepalives === 0) this.keepaliveFloors.shift();
    this.lastKeepaliveFloor = floor;
    this.conn.checkHeader(res.header, false, floor);
    if (Number(res.TTL) <= 0) {
      this.markLost('etcd answered the keepalive with TTL 0');
      return;
    }
    this.armLossTimer();
  }

  private clearAckTimer(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    if (this.hedgeTimer) clearTimeout(this.hedgeTimer);
    this.ackTimer = undefined;
    this.hedgeTimer = undefined;
  }

  private onKeepaliveEnd(stream: KeepaliveStream, err: Error): void {
    if (stream !== this.keepalive) return;
    debug('keepalive stream closed: %s', err.message);
    this.keepalive = undefined;
    this.clearAckTimer();
  }

  private onRebuilt = (): void => {
    this.dropKeepaliveStream();
    this.openKeepalive();
  };

  // ---- close -----------------------------------------------------------------

  /**
   * Revokes every lease of ours etcd may hold (the current one even if we think it
   * lost, and the retired ones), so every key on them vanishes in one round trip
   * each. Bounded by `timeoutMs`; resolves (never rejects) with the first error.
   * One shared promise for every caller.
   */
  close(timeoutMs: number, what: string): Promise<RegistryError | undefined> {
    this.closing ??= this.doClose(timeoutMs, what);
    return this.closing;
  }

  private async doClose(timeoutMs: number, what: string): Promise<RegistryError | undefined> {
    // Monotonic: a wall clock stepped back would let the retries go on past the timeout.
    const deadline = performance.now() + timeoutMs;
    // The revokes go out first, the current lease's first of all: everything else here
    // (and the caller's teardown after it) runs while they are on their way.
    const revokes: Promise<RegistryError | undefined>[] = [];
    if (this.current) revokes.push(this.revokeForClose(this.current, deadline, what));
    for (const id of this.retired) if (id !== this.current) revokes.push(this.revokeForClose(id, deadline, what));
    this.setState('closed', 'closing');
    this.abort.abort(new RegistryClosedError('close'));
    this.stopKeepaliveTimers();
    this.conn.off('rebuilt', this.onRebuilt);
    const errors = await Promise.all(revokes);
    this.dropKeepaliveStream();
    this.retired.clear();
    // The throwaway lease of the warm-up, if it is still on its way: revoked by it (bounded by the deadline).
    if (this.warming) await withDeadline(this.warming, Math.max(0, deadline - performance.now()), () => new Error('warm-up still on its way at the deadline')).catch(() => undefined);
    return errors.find((e) => e !== undefined);
  }

  private async revokeForClose(leaseId: string, deadline: number, what: string): Promise<RegistryError | undefined> {
    // The first attempt is sent now; the retry policy is built only if it fails. Retried while
    // etcd does not answer and a pause and another attempt fit before the deadline.
    const maxDelay = 250;
    const retryable = (err: Error): boolean => isUnreachableError(err) && deadline - performance.now() > maxDelay;
    try {
      await retryAfterFirst(
        this.sendRevoke(leaseId, deadline),
        () => retry(handleWhen(retryable), { maxAttempts: Number.POSITIVE_INFINITY, backoff: cappedBackoff(maxDelay) }),
        () => this.sendRevoke(leaseId, deadline),
      );
      debug('lease %s revoked on close', leaseId);
      return undefined;
    } catch (cause) {
      if (cause instanceof EtcdLeaseInvalidError) return undefined; // already gone
      debug('revoking lease %s failed: %s (its keys expire after the TTL)', leaseId, (cause as Error).message);
      return this.conn.error(cause, `revoke lease ${leaseId} (${what})`);
    }
  }
}
