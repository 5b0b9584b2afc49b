/**
 * Owns the etcd3 client: per-call deadlines (etcd3 sets none), failover across
 * members within the request timeout (MemberPolicy/FailoverPolicy replace etcd3's
 * circuit breakers), the first contact (retried with backoff up to the connect
 * timeout), a watchdog that notices a stalled or black-holed connection and rebuilds
 * the client (always on every member), a member check that brings skipped members
 * back, and detection of data loss: suspected from headers (revision going backwards,
 * a new cluster id) or reportReset(), confirmed by linearizable reads before 'reset'
 * goes out, and 'reset' rate-limited.
 */
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { BrokenCircuitError, NoopPolicy, isBrokenCircuitError, noop, type IDefaultPolicyContext, type IPolicy } from 'cockatiel';
import {
  ClientClosedError,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  isRecoverableError,
  type IOptions,
  type IResponseHeader,
} from 'etcd3';
import { cappedBackoff, retryForever } from '../backoff';
import { CallBudget } from './call-budget';
import { EtcdClient } from './etcd-client';
import { RegistryClosedError, RegistryError, quote } from '../errors';
import { logger } from '../log';
import { delay, withDeadline } from '../time';
import { tlsFailure, tlsHint } from '../tls';

const debug = logger('connection');

export interface ConnectionOptions {
  readonly endpoints: readonly string[];
  readonly dialTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly connectTimeoutMs: number;
  /** A key inside the registry's prefix: the watchdog reads it (count only) to prove etcd answers. */
  readonly probeKey: string;
  /** How often the watchdog runs; defaults to max(250 ms, the request timeout). */
  readonly watchdogIntervalMs?: number;
  /** Extra etcd3 options (TLS credentials, auth: see etcdClientOptions()). */
  readonly clientOptions?: Partial<IOptions>;
  /** False: every call on grpc-js, none on the client's own HTTP/2 sessions (EtcdClient). Default true. */
  readonly direct?: boolean;
}

/** What was seen when a request went out (see Connection.checkHeader): the highest revision, and the resets confirmed by then. */
export interface Floor {
  readonly revision: number;
  readonly epoch: number;
}

export interface ConnectionEvents {
  reachable: [];
  unreachable: [error: Error];
  /** A stalled client was replaced: streams opened on the old one must be reopened on `client`. */
  rebuilt: [generation: number];
  /** etcd lost its history (wiped member, another cluster): re-read and re-put everything. */
  reset: [reason: string];
  /** A reset is suspected; 'reset' follows only if a linearizable read confirms it. */
  suspected: [reason: string];
  /**
   * The watchdog's read went to the Watch stream's member (host:port) and another member
   * answered it (that one refused it at once): nothing proves the watch; its stream checks itself.
   */
  unproven: [member: string];
}

/**
 * The useful part of a grpc-js error message: without the status prefix, the
 * "No connection established. Last error:" wrapping, timestamps and the empty
 * "Resolution note:" it appends, and with a DNS failure said as one.
 */
export function grpcReason(message: string): string {
  const text = message
    .replace(/\.?\s*Resolution note:[\s\S]*$/, '')
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)/g, '')
    .replace(/^\d+ [A-Z_]+: /, '')
    .replace(/^No connection established\. Last error: (?:Error: )?/, '')
    .replace(/^Name resolution failed for target dns:([^\s]+).*$/s, 'DNS lookup of $1 failed (no such host)')
    .replace(/^Deadline exceeded after ([\d.]+s).*$/s, 'no answer within $1')
    .trim();
  return text === '' || text === 'null' ? message : text;
}

/** Errors that mean "etcd did not answer", as opposed to "etcd said no". */
export function isUnreachableError(e: unknown): boolean {
  // A BrokenCircuitError says every member was skipped for failing: nobody answered either.
  return e instanceof Error && (isRecoverableError(e) || isBrokenCircuitError(e));
}

/** Consecutive failures after which a member is skipped while another one answers. */
const MEMBER_DOWN_AFTER = 2;
/** Least time between two linearizable reads that check a suspected reset. */
const CONFIRM_GAP_MS = 200;
/** Least time between two 'reset' events; it doubles while resets repeat, up to the max. */
const RESET_MIN_GAP_MS = 1000;
const RESET_MAX_GAP_MS = 30_000;
/**
 * How often the watchdog's read is linearizable with a single endpoint. The others are
 * serializable: a member answers them from its own store, and etcd's gRPC proxy from its
 * cache, so that a fleet of idle clients behind proxies costs etcd next to nothing (issue
 * 18). The linearizable one vouches for the revision (data-loss detection) and for a
 * member that still has a leader.
 */
const VOUCH_INTERVAL_MS = 10_000;
/**
 * The same through etcd's gRPC proxy (answers without a cluster id): every registry's
 * linearizable read reaches etcd through any number of proxies. At 10 s an idle fleet of 500
 * watchers cost etcd 2.5 times its own idle CPU, and at 60 s it still made what the fleet
 * costs etcd grow with it (figure 9: 9.3 reads/s at K = 500, the whole of the difference from
 * raw etcd3 clients). A wipe of etcd needs no such read to be noticed behind a proxy: the
 * watch stream's canary after STREAM_CHECK_MS of silence (lib/etcd/watch-stream.ts) is a create
 * etcd answers with its own revision, checked as this read is (measured: noticed 30 s after the
 * stream's last answer, with this read out of reach). One that registers notices at once, from
 * its keepalives and writes.
 */
const PROXY_VOUCH_INTERVAL_MS = 300_000;
/**
 * Node's timers start from the event loop's cached time, so they fire up to a millisecond or
 * so before their due time by performance.now(): a watchdog round that early counts as due.
 */
const WATCHDOG_SLACK_MS = 5;

/** A gRPC error that says the member could not be reached at all (refused, reset, no route). */
function isConnectFailure(e: Error): boolean {
  return e instanceof GRPCUnavailableError && /No connection established|ECONNREFUSED|ECONNRESET|EHOSTUNREACH|Connection dropped/i.test(e.message);
}

/** A cluster id that says something: etcd's gRPC proxy answers 0 ("not told"), never a change. */
function knownClusterId(id: string | undefined): string | undefined {
  return id === undefined || id === '' || id === '0' ? undefined : id;
}

/**
 * Which members of one client answer. etcd3 puts a policy in front of each member (the
 * "host" policy) and one around each call (the "global" policy); these two replace its
 * circuit breakers, which refuse a call outright once every member has failed a couple of
 * times (an election is enough) and surface as "Execution prevented because the circuit
 * breaker is open". Here a failing member is only skipped while another one is not: when
 * every member has failed, calls go through to all of them again. A skipped member comes
 * back when the member check (watchdog) finds it answering, or when a call through it succeeds.
 */
class MemberHealth {
  private readonly failures = new Map<string, number>();
  private readonly down = new Set<string>();

  constructor(readonly members: readonly string[]) {}

  isDown(member: string): boolean {
    return this.down.has(member);
  }

  /** Members currently skipped. */
  get skipped(): string[] {
    return this.members.filter((m) => this.down.has(m));
  }

  /** Skip `member` now: another member is up to take its calls. */
  shouldSkip(member: string): boolean {
    return this.down.has(member) && this.members.some((m) => m !== member && !this.down.has(m));
  }

  succeeded(member: string): void {
    this.failures.delete(member);
    if (this.down.delete(member)) debug('member %s answers again', member);
  }

  failed(member: string, e: Error): void {
    // Cancelled: our own doing (a stream we closed), not the member's; nor a call ended by a
    // silent session given up (lib/etcd/direct-channel.ts): the call that found it counted.
    if (e instanceof GRPCCancelledError || !isRecoverableError(e) || (e as { retired?: unknown }).retired === true) return;
    const count = (this.failures.get(member) ?? 0) + 1;
    this.failures.set(member, count);
    if (!this.down.has(member) && (count >= MEMBER_DOWN_AFTER || isConnectFailure(e))) {
      this.down.add(member);
      debug('member %s skipped while another answers: %s', member, e.message);
    }
  }

  markDown(member: string, why: string): void {
    if (this.down.has(member)) return;
    this.down.add(member);
    debug('member %s skipped while another answers: %s', member, why);
  }
}

/** etcd3's per-member policy: skips a failing member while another one is up, never refuses a call. */
class MemberPolicy extends NoopPolicy {
  constructor(
    private readonly health: MemberHealth,
    private readonly member: string,
  ) {
    super();
  }

  override async execute<T>(fn: (context: IDefaultPolicyContext) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
    // Thrown without calling through: etcd3 moves on to the next member.
    if (this.health.shouldSkip(this.member)) throw new BrokenCircuitError(`etcd member ${this.member} skipped: it failed recently`);
    try {
      const result = await super.execute(fn, signal);
      // Opening a stream proves nothing yet; a unary answer does.
      if (!isStream(result)) this.health.succeeded(this.member);
      return result;
    } catch (e) {
      if (e instanceof Error) this.health.failed(this.member, e);
      throw e;
    }
  }
}

function isStream(value: unknown): boolean {
  return typeof value === 'object' && value !== null && typeof (value as { write?: unknown }).write === 'function';
}

/**
 * etcd3's policy around each unary call: a call that failed for want of an answer is
 * tried again on the next member at once (after each pass over all of them, with a short
 * pause), and the whole call, every attempt included, ends at the request timeout: each
 * attempt's gRPC deadline is the end of the call's budget (CallBudget). A call that ran
 * into that deadline is not retried: its time is spent.
 */
class FailoverPolicy extends NoopPolicy {
  constructor(
    private readonly budgetMs: number,
    private readonly members: readonly string[],
  ) {
    super();
  }

  override async execute<T>(fn: (context: IDefaultPolicyContext) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
    // On performance.now()'s clock (a wall clock stepped meanwhile must not stretch the
    // budget): each attempt turns what is left into a gRPC deadline when it starts.
    const deadline = performance.now() + this.budgetMs;
    let pause = cappedBackoff(this.budgetMs / 4).next();
    /** The last failure that said why (a refused connection, a failed lookup), to report instead of the deadline it ran into. */
    let telling: unknown;
    for (let attempt = 1; ; attempt++) {
      try {
        return await super.execute(fn, signal);
      } catch (e) {
        const left = deadline - performance.now();
        const again = isUnreachableError(e) && !(e instanceof GRPCDeadlineExceededError) && left > 0 && signal?.aborted !== true;
        if (isUnreachableError(e) && !(e instanceof GRPCDeadlineExceededError) && !isBrokenCircuitError(e)) telling = e;
        if (!again) {
          if (e instanceof GRPCDeadlineExceededError && telling !== undefined) throw telling;
          if (!isBrokenCircuitError(e)) throw e;
          // Never etcd3's breaker: say that no member answered.
          throw new GRPCUnavailableError(`no member of etcd at ${this.members.join(',')} answered within ${this.budgetMs} ms (${attempt} attempt(s))`);
        }
        if (attempt % this.members.length === 0) {
          await delay(Math.min(pause.duration, left));
          pause = pause.next(undefined);
        }
      }
    }
  }
}

/**
 * Why etcd refused a watch: `permission` (the role lacks read on the prefix, or no
 * credentials were given) is the operator's to fix; `token` (the stream's auth token is
 * unknown, e.g. etcd restarted) heals once the stream is reopened with a fresh one.
 */
export function watchRefusal(reason: string): 'permission' | 'token' | undefined {
  if (/permission denied|user name is empty/i.test(reason)) return 'permission';
  if (/invalid auth token/i.test(reason)) return 'token';
  return undefined;
}

/**
 * Turns an etcd3 error into a RegistryError that says what was being done: `doing`
 * names the operation and the key or prefix, e.g. `write "p/services/web/10.0.0.1:80"`.
 * `username` (never the password) is named when etcd refused the credentials or the permission.
 */
export function toRegistryError(e: unknown, doing: string, username?: string): RegistryError {
  if (e instanceof RegistryError) return e;
  const err = e instanceof Error ? e : new Error(String(e));
  const user = username === undefined ? 'this client (no REGISTRY_ETCD_USERNAME)' : `user ${quote(username)}`;
  if (err instanceof EtcdPermissionDeniedError) {
    return new RegistryError(
      'ERR_PERMISSION_DENIED',
      `etcd denied ${user} permission to ${doing}: grant its role readwrite (read for discovery only) on the registry's prefix`,
      { cause: err },
    );
  }
  if (err instanceof EtcdAuthenticationFailedError) {
    return new RegistryError(
      'ERR_AUTHENTICATION_FAILED',
      `etcd rejected the password of ${user} (or there is no such user) while trying to ${doing}: check REGISTRY_ETCD_USERNAME and REGISTRY_ETCD_PASSWORD (or REGISTRY_ETCD_PASSWORD_FILE)`,
      { cause: err },
    );
  }
  if (err instanceof EtcdInvalidAuthTokenError && username !== undefined) {
    return new RegistryError(
      'ERR_AUTHENTICATION_FAILED',
      `etcd did not accept the auth token of ${user} while trying to ${doing} (etcd restarted, or the token expired); the next call authenticates again`,
      { cause: err },
    );
  }
  if (err instanceof EtcdInvalidAuthTokenError || /etcdserver: user name is empty/.test(err.message)) {
    return new RegistryError(
      'ERR_AUTHENTICATION_FAILED',
      `etcd requires authentication and refused to ${doing} without it: set REGISTRY_ETCD_USERNAME and REGISTRY_ETCD_PASSWORD`,
      { cause: err },
    );
  }
  if (/etcdserver: authentication is not enabled/.test(err.message)) {
    return new RegistryError(
      'ERR_AUTHENTICATION_FAILED',
      `REGISTRY_ETCD_USERNAME is set (${user}) but etcd has authentication disabled, so anyone can write the registry; it refused to ${doing}: enable authentication on etcd, or unset REGISTRY_ETCD_USERNAME and REGISTRY_ETCD_PASSWORD`,
      { cause: err },
    );
  }
  const tls = tlsFailure(err);
  if (tls !== undefined) {
    return new RegistryError('ERR_TLS', `could not ${doing}: ${tls}`, { cause: err });
  }
  if (isUnreachableError(err)) {
    return new RegistryError('ERR_ETCD_UNREACHABLE', `etcd did not answer while trying to ${doing}: ${err.message}`, { cause: err });
  }
  return new RegistryError('ERR_ETCD_REQUEST', `etcd failed to ${doing}: ${err.message}`, { cause: err });
}

export class Connection extends EventEmitter<ConnectionEvents> {
  client: EtcdClient;
  /** Increments whenever the client is rebuilt. */
  generation = 0;
  private readonly options: ConnectionOptions;
  private reachable = true;
  private contact: Promise<void> | undefined;
  /** The first contact succeeded: ensureContact() has nothing left to wait for. */
  private contacted = false;
  private maxRevision = 0;
  /** The highest revision etcd vouched for: a linearizable read's, a watch creation's, an event's (see confirmLoss). */
  private vouchedRevision = 0;
  private clusterId: string | undefined;
  /** An answer came without a cluster id: through etcd's gRPC proxy (see PROXY_VOUCH_INTERVAL_MS). */
  private throughProxy = false;
  /** Increments with every confirmed reset: a check that started before one says nothing new. */
  private resetEpoch = 0;
  /** The revision etcd answered the read that confirmed the last reset with. */
  private resetRevision = 0;
  /** A reset suspected and not yet checked by a linearizable read (the first reason given). */
  private suspicion: string | undefined;
  private confirming = false;
  // Times below are on performance.now()'s clock, which no wall-clock step moves: stepped
  // back an hour, Date.now() would hold a check, a reset or a rebuild back for that hour.
  /** When the last confirming read started. */
  private lastConfirmStart = Number.NEGATIVE_INFINITY;
  /** When the last reset went out (none yet: -Infinity). */
  private lastResetAt = Number.NEGATIVE_INFINITY;
  private resetGapMs = RESET_MIN_GAP_MS;
  private pendingReset: string | undefined;
  private resetTimer: NodeJS.Timeout | undefined;
  private watchdogOn = false;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private watchdogBusy = false;
  /** When the watchdog last sent its read, and last looked for skipped members (performance.now(), as every watchdog time). */
  private probedAt = 0;
  private membersCheckedAt = 0;
  /**
   * When the current client last got an answer: a unary call's, or a watch or keepalive
   * answer (checkHeader). With one endpoint, the watchdog's serializable read proves no more
   * than that, so it is sent only after an interval without one (see watchdog()).
   */
  private answeredAt = 0;
  /**
   * When the watchdog's next read is linearizable (see VOUCH_INTERVAL_MS): spread over
   * the interval, so that a fleet started at once does not send them at once.
   */
  private nextVouchAt = performance.now() + Math.random() * VOUCH_INTERVAL_MS;
  private lastRebuild = Number.NEGATIVE_INFINITY;
  private rebuilding = false;
  /** Which members of the current client answer. */
  private health: MemberHealth;
  /** Skipped members being probed on a connection of their own. */
  private readonly checkingMembers = new Set<string>();
  private closed = false;
  private readonly abort = new AbortController();

  constructor(options: ConnectionOptions) {
    super();
    this.options = options;
    this.health = new MemberHealth(options.endpoints);
    this.client = this.createClient(this.health);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Aborted when the connection closes: background retries listen to it. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get requestTimeoutMs(): number {
    return this.options.requestTimeoutMs;
  }

  /** The etcd user, for error messages (never the password). */
  get username(): string | undefined {
    return this.options.clientOptions?.auth?.username;
  }

  /** toRegistryError, naming this connection's etcd user. */
  error(e: unknown, doing: string): RegistryError {
    return toRegistryError(e, doing, this.username);
  }

  /** The members this connection was configured with. */
  get members(): readonly string[] {
    return this.options.endpoints;
  }

  /** Members the current client skips while another one answers (they failed recently). */
  get skippedMembers(): string[] {
    return this.health.skipped;
  }

  /**
   * A client on every configured member (`health` tracks which of them answer), or, without
   * `health`, a plain client on the given members (probes of one member).
   */
  private createClient(health: MemberHealth | undefined, endpoints: readonly string[] = this.options.endpoints): EtcdClient {
    const { requestTimeoutMs, dialTimeoutMs, clientOptions } = this.options;
    const many = health !== undefined && endpoints.length > 1;
    // etcd3 sets no deadline: a stalled member would hang a call for ever. Every attempt of
    // one call shares the call's budget (FailoverPolicy), so the call ends in time.
    // (With one member, nothing makes an attempt's end current: each gets the whole timeout.)
    const budget = new CallBudget(requestTimeoutMs);
    const deadline = (): number => budget.deadline();
    // Each retry picks another member: fail over at once, within the request timeout.
    const global = many ? new FailoverPolicy(requestTimeoutMs, endpoints) : noop;
    const client = new EtcdClient(
      {
        ...clientOptions,
        hosts: [...endpoints],
        dialTimeout: dialTimeoutMs,
        // A token fetch (etcd3 asks the members in turn, between a call's start and its first
        // attempt) gets a whole request timeout of its own and leaves the call's budget alone.
        defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: ctx.service === 'Auth' ? Date.now() + requestTimeoutMs : deadline() }),
        faultHandling: {
          // A failing member is skipped while another answers; never a refusal.
          host: (member: string): IPolicy => (many ? new MemberPolicy(health, member) : noop),
        },
        grpcOptions: {
          // grpc-js shares connections between clients by default: a rebuilt
          // client would get the stalled connection back. Each client its own.
          'grpc.use_local_subchannel_pool': 1,
          'grpc.initial_reconnect_backoff_ms': Math.min(100, dialTimeoutMs),
          'grpc.max_reconnect_backoff_ms': dialTimeoutMs,
          // etcd sends answers as large as its own limit allows (a page of 5,000 records, a watch
          // response catching up on up to 1,000 revisions); grpc-js refuses any over 4 MiB by
          // default, which no retry gets past: the read failed for good, the watch was reopened
          // from the same revision to get the same answer, endlessly.
          'grpc.max_receive_message_length': -1,
          ...clientOptions?.grpcOptions,
        },
      },
      global,
      deadline,
      this.options.direct ?? true,
    );
    if (many) budget.install(client);
    return client;
  }

  /**
   * Runs one etcd call on the current client and keeps the reachable/unreachable
   * state. Rejects with the raw etcd3 error: callers map it with toRegistryError.
   */
  async call<T>(fn: (client: EtcdClient) => Promise<T>): Promise<T> {
    if (this.closed) throw new RegistryClosedError('call');
    const client = this.client;
    try {
      let result: T;
      try {
        result = await fn(client);
      } catch (e) {
        // The client was replaced (rebuilt) and closed before the call went out: nothing
        // was sent, so the call is made again on the new one.
        if (!(e instanceof ClientClosedError) || this.closed || this.client === client) throw e;
        debug('call made on a client that was just replaced: again on generation %d', this.generation);
        result = await fn(this.client);
      }
      // Opening a stream proves nothing yet; a unary answer does (of the current client).
      if (!isStream(result) && client === this.client) this.answeredAt = performance.now();
      this.markReachable();
      return result;
    } catch (e) {
      if (isUnreachableError(e)) this.markUnreachable(e as Error);
      throw e;
    }
  }

  /** Whether the first contact was made (ensureContact() resolved). */
  get hasContact(): boolean {
    return this.contacted;
  }

  /**
   * The first contact: retried with backoff until it succeeds or the connect
   * timeout passes. Shared by concurrent callers; a failure lets a later call try again.
   */
  ensureContact(): Promise<void> {
    if (this.closed) return Promise.reject(new RegistryClosedError('connect'));
    this.contact ??= this.firstContact().catch((e: unknown) => {
      this.contact = undefined;
      throw e;
    });
    return this.contact;
  }

  private async firstContact(): Promise<void> {
    const { connectTimeoutMs, endpoints } = this.options;
    const started = performance.now();
    const deadline = new AbortController();
    const onClose = (): void => deadline.abort(new RegistryClosedError('connect'));
    this.abort.signal.addEventListener('abort', onClose, { once: true });
    let attempts = 0;
    let lastError: unknown;
    /** grpc-js reports "Last error: null" after the first failure: keep the one that said why. */
    let telling: unknown;
    // A refused TLS handshake is unreachable for etcd3, but no retry fixes it: fail at once.
    const policy = retryForever((e) => isUnreachableError(e) && tlsFailure(e) === undefined && performance.now() - started < connectTimeoutMs);
    try {
      await withDeadline(
        policy.execute(async () => {
          attempts++;
          try {
            await this.probe(this.options.dialTimeoutMs);
          } catch (e) {
            lastError = e;
            if (!/Last error: null/.test((e as Error).message)) telling = e;
            debug('contact attempt %d with %s failed (retrying until the connect timeout): %s', attempts, endpoints.join(','), grpcReason((e as Error).message));
            throw e;
          }
        }, deadline.signal),
        connectTimeoutMs,
        () => new Error('connect timeout'),
        // Ref'd: a process whose only work is `await registry.endpoints()` must not end, silently,
        // while the attempts wait (grpc-js's reconnect timers keep nothing alive).
        true,
      );
      debug('contact with %s after %d attempt(s), %d ms', endpoints.join(','), attempts, Math.round(performance.now() - started));
      this.contacted = true;
      // The contact's read was linearizable: the next one comes at a random point of the
      // interval, now known (through a proxy or not), so that a fleet started at once spreads out.
      this.nextVouchAt = performance.now() + Math.random() * this.vouchIntervalMs;
      this.startWatchdog();
    } catch (e) {
      deadline.abort();
      if (this.closed) throw new RegistryClosedError('connect');
      // The connect timeout came before any attempt answered: etcd did not answer, too.
      const cause = lastError ?? new GRPCDeadlineExceededError(`no answer within ${connectTimeoutMs} ms`);
      if (!isUnreachableError(cause) || tlsFailure(cause) !== undefined) {
        throw this.error(cause, `read the key ${quote(this.options.probeKey)} (first contact with etcd at ${endpoints.join(',')})`);
      }
      const why = telling ?? cause;
      const members = endpoints.length === 1 ? `the member ${endpoints[0]}` : `each of the ${endpoints.length} members ${endpoints.join(', ')}`;
      throw new RegistryError(
        'ERR_ETCD_UNREACHABLE',
        `could not reach etcd at ${endpoints.join(',')} within ${connectTimeoutMs / 1000} s (REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS): ${attempts} attempt(s) at ${members}, each a count-only read with a ${this.options.dialTimeoutMs / 1000} s deadline (REGISTRY_ETCD_DIAL_TIMEOUT_SECONDS); last: ${grpcReason((why as Error).message)}${tlsHint(why, this.options.clientOptions?.credentials !== undefined)}`,
        { cause: why },
      );
    } finally {
      this.abort.signal.removeEventListener('abort', onClose);
    }
  }

  /**
   * A cheap linearizable read with a deadline. Its header is checked against what was
   * seen before it was sent: a linearizable answer can only be behind that if etcd lost
   * its data. Resolves with the confirmed reason then (the 'reset' goes out too), else
   * undefined. A refusal for permission (a role limited to some services' prefixes) is an
   * answer too: etcd is there, and the calls that need the permission will say so.
   */
  private async probe(deadlineMs: number): Promise<string | undefined> {
    const baseline = { revision: this.maxRevision, vouched: this.vouchedRevision, clusterId: this.clusterId, epoch: this.resetEpoch };
    const header = await this.call((c) => this.probeWith(c, deadlineMs));
    if (!header) return undefined;
    const revision = Number(header.revision);
    const clusterId = this.clusterIdOf(header);
    // A reset confirmed while this read was out: this one says nothing new.
    const fresh = (): boolean => baseline.epoch === this.resetEpoch;
    let verdict: string | undefined;
    if (fresh() && clusterId !== undefined && baseline.clusterId !== undefined && clusterId !== baseline.clusterId) {
      verdict = `a linearizable read answered from cluster ${clusterId}, not ${baseline.clusterId}`;
    } else if (fresh() && revision < baseline.revision) {
      verdict = await this.confirmLoss(baseline.revision, baseline.vouched, revision, deadlineMs);
    }
    if (verdict !== undefined && fresh()) {
      this.resetEpoch++;
      this.resetRevision = revision;
      this.maxRevision = revision;
      this.vouchedRevision = revision;
      if (clusterId !== undefined) this.clusterId = clusterId;
      this.emitReset(verdict);
      return verdict;
    }
    if (clusterId !== undefined) this.clusterId ??= clusterId;
    if (revision > this.maxRevision) this.maxRevision = revision;
    if (revision > this.vouchedRevision) this.vouchedRevision = revision;
    return undefined;
  }

  /**
   * etcd answered revision `now`, behind `seen`: lost history, or only a header that ran
   * ahead (etcd's gRPC proxy puts a revision of its own, one ahead, in watch answers) or
   * behind (the proxy's and a lagging member's answers)? A read at `seen` tells: "future
   * revision" means etcd does not have it. When `seen` never came from an answer etcd
   * vouched for (a linearizable read, a watch's creation, an event), the loss counts only
   * if the last revision it vouched for is gone too.
   */
  private async confirmLoss(seen: number, vouched: number, now: number, deadlineMs: number): Promise<string | undefined> {
    if (!(await this.lostRevision(seen, deadlineMs))) {
      if (seen > this.vouchedRevision) this.vouchedRevision = seen;
      return undefined;
    }
    const lost = (r: number): string => `etcd no longer has revision ${r}, seen before: a read at it is "a future revision" (etcd answers revision ${now})`;
    if (vouched >= seen) return lost(seen);
    if (vouched > now && (await this.lostRevision(vouched, deadlineMs))) return lost(vouched);
    debug('revision %d was only ever in answers no linearizable read vouched for (etcd at %d, vouched for %d): not a reset', seen, now, vouched);
    // Start again from what etcd does have, or the same header would be suspected again and again.
    if (this.maxRevision === seen) this.maxRevision = Math.max(now, vouched);
    return undefined;
  }

  /**
   * Whether etcd lost `revision`, which it answered before: a linearizable read at that
   * revision says "future revision" only then. A header alone cannot tell (see confirmLoss).
   * A refusal for permission cannot tell either.
   */
  private async lostRevision(revision: number, deadlineMs: number): Promise<boolean> {
    try {
      await this.call((c) =>
        c.kv.range({ key: Buffer.from(this.options.probeKey), count_only: true, revision: String(revision) }, { deadline: Date.now() + deadlineMs }),
      );
      return false;
    } catch (e) {
      if (e instanceof Error && /required revision is a future revision/.test(e.message)) return true;
      if (e instanceof EtcdPermissionDeniedError || (e instanceof Error && /required revision has been compacted/.test(e.message))) return false;
      throw e;
    }
  }

  /**
   * A count-only read of the probe key with a deadline. A refusal for permission
   * (a role limited to one service) still proves etcd answers: it resolves
   * without a header then. While a Watch stream is open, the read goes to its member, on its
   * connection (EtcdClient.watchMember): the watch is what stops hearing when that member goes
   * silent or is cut off from its peers, and a read on any other member would still be answered
   * (measured: a watcher on a black-holed member of 3 went on unnoticed 3–13 s, until a
   * random pick of the read's member landed on it). Answered by another member (that one
   * refused it at once), the read proves nothing of the watch: 'unproven'.
   */
  private async probeWith(client: EtcdClient, deadlineMs: number, serializable = false): Promise<IResponseHeader | undefined> {
    const key = Buffer.from(this.options.probeKey);
    const member = client.watchMember;
    try {
      if (member !== undefined) {
        const { header, answeredBy } = await client.countOn(member, key, serializable, deadlineMs);
        // (Unknown after a renewed auth token: etcd3 made the call again, on a member of its
        // choice. Unproven too: right after etcd restarted, when the watch is most in doubt.)
        if (answeredBy !== member) {
          debug("the watchdog's read to the watch stream's member %s was answered by %s", member, answeredBy ?? 'a member etcd3 chose');
          this.emit('unproven', member);
        }
        return header;
      }
      const res = await client.kv.range({ key, count_only: true, serializable }, { deadline: Date.now() + deadlineMs });
      return res.header;
    } catch (e) {
      if (e instanceof EtcdPermissionDeniedError) return undefined;
      throw e;
    }
  }

  /** The highest revision seen so far. */
  get seenRevision(): number {
    return this.maxRevision;
  }

  /**
   * What was seen so far: taken when a request goes out, it is the floor its answer's
   * header is checked against (see checkHeader).
   */
  get floor(): Floor {
    return { revision: this.maxRevision, epoch: this.resetEpoch };
  }

  /**
   * What was seen when the last reset was confirmed: the floor for answers on a stream
   * that outlived it (not what was seen since: its events trail the answers to their puts).
   */
  get resetFloor(): Floor {
    return { revision: this.resetRevision, epoch: this.resetEpoch };
  }

  /** Whether no reset was confirmed since `floor` was taken. */
  isCurrent(floor: Floor): boolean {
    return floor.epoch === this.resetEpoch;
  }

  /**
   * Tracks the highest revision and the cluster id seen. A header behind `floor` (what
   * was seen when its request went out, or its stream opened), or from another cluster,
   * makes etcd suspected of having lost its data: a linearizable read decides (see
   * suspectReset). Only the floor counts: answers on other connections overtake one
   * another (a watch event trails the answer to its put, a keepalive answered before a
   * put may arrive after it), and that is no loss. A header may still be behind its floor
   * when it comes from a lagging member. A cluster id of 0 (what etcd's gRPC proxy
   * passes on) is "not told": never a change. `vouches`: the revision is the one etcd
   * answered this request with (a linearizable read, a write, a watch's creation), not one a
   * header may carry late; it counts as vouched for (see confirmLoss) unless it is behind.
   * An answer to a request sent before a confirmed reset is not checked: it may be of the
   * old history (vouched for, it could make the next check confirm a reset that was not).
   */
  checkHeader(header: IResponseHeader | undefined, vouches: boolean, floor?: Floor): void {
    this.answeredAt = performance.now();
    if (!header || (floor !== undefined && !this.isCurrent(floor))) return;
    const revision = Number(header.revision);
    const clusterId = this.clusterIdOf(header);
    // A header etcd's grpc-proxy made up itself (a create it answers for a watch it already
    // holds, with the new watch's start revision; a cancel or refusal with an empty header):
    // etcd fills the cluster id in every header it sends, and these revisions are not etcd's.
    if (clusterId === undefined) return;
    if (this.clusterId === undefined) this.clusterId = clusterId;
    else if (clusterId !== this.clusterId) {
      this.suspectReset(`cluster id changed from ${this.clusterId} to ${clusterId}`);
      return;
    }
    // What was seen then and still stands (a check that found no reset lowers what was seen).
    const behind = floor === undefined ? this.maxRevision : Math.min(floor.revision, this.maxRevision);
    if (revision < behind) {
      this.suspectReset(`revision went backwards from ${behind} to ${revision}`);
      return;
    }
    if (vouches) this.vouch(revision);
    if (revision > this.maxRevision) this.maxRevision = revision;
  }

  /** The header's cluster id; undefined (and from now on "through a grpc-proxy") when it has none. */
  private clusterIdOf(header: IResponseHeader): string | undefined {
    const clusterId = knownClusterId(header.cluster_id);
    if (clusterId === undefined) this.markThroughProxy('an answer without a cluster id');
    return clusterId;
  }

  /**
   * The server is etcd's gRPC proxy (`why`: an answer without a cluster id, or watch ids the
   * server chose): the watchdog's linearizable read comes about every PROXY_VOUCH_INTERVAL_MS,
   * the next one at a random point of that interval.
   */
  markThroughProxy(why: string): void {
    if (this.throughProxy) return;
    this.throughProxy = true;
    this.nextVouchAt = performance.now() + Math.random() * this.vouchIntervalMs;
    debug('%s: through a grpc-proxy (a linearizable read about every %d s)', why, this.vouchIntervalMs / 1000);
  }

  /** Whether the server is etcd's gRPC proxy, as far as its answers told (see markThroughProxy). */
  get isThroughProxy(): boolean {
    return this.throughProxy;
  }

  /** Whether the current client got an answer (see answeredAt) after `at` (performance.now()). */
  answeredSince(at: number): boolean {
    return this.answeredAt > at;
  }

  /** How often the watchdog's read is linearizable with a single endpoint (or proxies only). */
  private get vouchIntervalMs(): number {
    return this.throughProxy ? PROXY_VOUCH_INTERVAL_MS : VOUCH_INTERVAL_MS;
  }

  /** The watchdog's next round reads linearizably (it vouches for the revision), whatever the interval. */
  vouchSoon(why: string): void {
    if (this.closed) return;
    debug('a linearizable read at the next watchdog round: %s', why);
    this.nextVouchAt = 0;
  }

  /**
   * `revision` is one etcd wrote (a watch event's): it counts as vouched for (see
   * confirmLoss). Not while a reset is suspected: what the check compares against must be
   * what was vouched for before, not the revisions of a history etcd may have started again.
   */
  vouch(revision: number): void {
    if (this.suspicion !== undefined || this.confirming) return;
    if (revision > this.vouchedRevision) this.vouchedRevision = revision;
  }

  /**
   * Somebody noticed lost history (e.g. a watch resumed past etcd's revision). It is
   * checked first: 'reset' goes out only once a linearizable read confirms it.
   */
  reportReset(reason: string): void {
    this.suspectReset(reason);
  }

  /**
   * A reset is suspected: one linearizable read at a time checks it (suspicions that
   * arrive meanwhile are checked by the next one), at most one every CONFIRM_GAP_MS,
   * retried with backoff while etcd does not answer. 'reset' is emitted only when the
   * read is behind what was seen before it was sent, or comes from another cluster.
   */
  suspectReset(reason: string): void {
    if (this.closed) return;
    debug('etcd suspected of losing its data: %s', reason);
    this.emit('suspected', reason);
    this.suspicion ??= reason;
    if (!this.confirming) void this.confirmResets();
  }

  private async confirmResets(): Promise<void> {
    this.confirming = true;
    let step = cappedBackoff().next();
    try {
      while (this.suspicion !== undefined && !this.closed) {
        const wait = this.lastConfirmStart + CONFIRM_GAP_MS - performance.now();
        if (wait > 0) await delay(wait, this.signal);
        const reason = this.suspicion;
        this.suspicion = undefined;
        this.lastConfirmStart = performance.now();
        try {
          const verdict = await this.probe(this.options.requestTimeoutMs);
          if (verdict === undefined) debug('not a reset (a linearizable read shows etcd at revision %d or later): %s', this.maxRevision, reason);
          else debug('reset confirmed: %s (suspected: %s)', verdict, reason);
          step = cappedBackoff().next();
        } catch (e) {
          if (this.closed) return;
          // Cannot tell yet: keep suspecting and ask again.
          this.suspicion ??= reason;
          debug('could not check a suspected reset, again in %d ms: %s', step.duration, (e as Error).message);
          await delay(step.duration, this.signal);
          step = step.next(undefined);
        }
      }
    } catch {
      // closed
    } finally {
      this.confirming = false;
    }
  }

  /**
   * Emits a confirmed reset, at most one per RESET_MIN_GAP_MS; while resets keep coming
   * the gap doubles (up to RESET_MAX_GAP_MS), so that no misdetection becomes a write loop.
   * Resets confirmed within the gap go out together when it ends.
   */
  private emitReset(reason: string): void {
    if (this.closed) return;
    const due = this.lastResetAt + this.resetGapMs;
    if (performance.now() >= due) {
      this.fireReset(reason);
      return;
    }
    this.pendingReset ??= reason;
    if (this.resetTimer) return;
    debug('reset held back %d ms (resets repeat): %s', Math.round(due - performance.now()), reason);
    this.resetTimer = setTimeout(() => {
      this.resetTimer = undefined;
      const pending = this.pendingReset;
      this.pendingReset = undefined;
      if (pending !== undefined) this.fireReset(pending);
    }, due - performance.now());
    this.resetTimer.unref();
  }

  private fireReset(reason: string): void {
    if (this.closed) return;
    const now = performance.now();
    const repeat = now - this.lastResetAt < 2 * this.resetGapMs;
    this.resetGapMs = repeat ? Math.min(2 * this.resetGapMs, RESET_MAX_GAP_MS) : RESET_MIN_GAP_MS;
    this.lastResetAt = now;
    debug('etcd lost its data: %s', reason);
    this.emit('reset', reason);
  }

  private markReachable(): void {
    if (this.reachable || this.closed) return;
    this.reachable = true;
    debug('etcd reachable again');
    this.emit('reachable');
  }

  markUnreachable(error: Error): void {
    if (!this.reachable || this.closed) return;
    this.reachable = false;
    // Said at once, cleanly, naming the members: the first contact may go on retrying for minutes.
    const clean = new RegistryError('ERR_ETCD_UNREACHABLE', `etcd at ${this.options.endpoints.join(', ')} did not answer: ${grpcReason(error.message)}`, { cause: error });
    debug('etcd unreachable: %s', clean.message);
    this.emit('unreachable', clean);
  }

  private get watchdogIntervalMs(): number {
    return this.options.watchdogIntervalMs ?? Math.max(250, this.options.requestTimeoutMs);
  }

  /**
   * Several members (not grpc-proxies, which pass reads to members of their own choosing): a
   * linearizable read every interval, whatever else answered.
   */
  private get readsEveryInterval(): boolean {
    return this.options.endpoints.length > 1 && !this.throughProxy;
  }

  private startWatchdog(): void {
    if (this.watchdogOn || this.closed) return;
    this.watchdogOn = true;
    this.probedAt = this.membersCheckedAt = performance.now();
    this.armWatchdog();
  }

  /**
   * The watchdog's timer, set for the next time it has something to do: the next member
   * check, linearizable read, or (with one endpoint) the end of an interval without an
   * answer. A watch event or keepalive answer in between moves that on; the timer then fires
   * once early and is set again, so nothing is done per answer but note the time.
   */
  private armWatchdog(): void {
    if (this.closed) return;
    const now = performance.now();
    const interval = this.watchdogIntervalMs;
    let due = this.membersCheckedAt + interval;
    // While a read is out, only the member check: the read ends within its deadline.
    if (!this.watchdogBusy) {
      due = Math.min(due, this.lastSign + interval, this.nextVouchAt);
    }
    this.watchdogTimer = setTimeout(() => this.watchdogRound(), Math.max(0, due - now));
    this.watchdogTimer.unref();
  }

  /**
   * Since when the watchdog's read is not needed: the last read, or any later answer (a
   * keepalive, a watch event) when that is enough. It is not enough with several members
   * (every read is linearizable, see watchdog()), nor while etcd is taken for unreachable: a
   * unary answer is what says it is reachable again (keepalives and watch events on a rebuilt
   * client would otherwise hold the read back until the next linearizable one, minutes away
   * through a proxy, with the registry 'recovering' all that time).
   */
  private get lastSign(): number {
    return this.readsEveryInterval || !this.reachable ? this.probedAt : Math.max(this.probedAt, this.answeredAt);
  }

  private watchdogRound(): void {
    this.watchdogTimer = undefined;
    try {
      if (performance.now() - this.membersCheckedAt >= this.watchdogIntervalMs - WATCHDOG_SLACK_MS) {
        this.membersCheckedAt = performance.now();
        this.checkSkippedMembers();
      }
    } catch (e) {
      debug('member check failed: %s', (e as Error).message);
    }
    const round = this.watchdog().catch((e: unknown) => debug('watchdog round failed: %s', (e as Error).message));
    // A read went out: set again once it has ended (until then, for the member check).
    if (this.watchdogBusy) {
      void round.finally(() => {
        clearTimeout(this.watchdogTimer);
        this.armWatchdog();
      });
    }
    this.armWatchdog();
  }

  /**
   * Proves the client still gets answers: a read with a deadline, once per interval. With
   * one endpoint (one member, or a grpc-proxy) it is linearizable about every
   * VOUCH_INTERVAL_MS (see probe()) and serializable in between, an answer that says nothing
   * of the revision: any other answer in the interval (a watch event, a keepalive) says as
   * much, and then it is not sent. Those may come on connections of their own (etcd3 opens
   * one per service); a call that runs into its deadline on a stalled one has etcd3 close the
   * member's connections (Host.resetAllServices), so the next call goes on a new one. A
   * connection that went silent is noticed as before, within two intervals of the last
   * answer. With several members every read is linearizable and always sent: a member cut
   * off from its peers still answers serializable reads (and its watch streams' probes) but
   * delivers nothing.
   */
  private async watchdog(): Promise<void> {
    if (this.watchdogBusy || this.closed) return;
    const now = performance.now();
    const interval = this.watchdogIntervalMs;
    const vouch = now + WATCHDOG_SLACK_MS >= this.nextVouchAt || (this.readsEveryInterval && now - this.probedAt >= interval - WATCHDOG_SLACK_MS);
    if (!vouch && now - this.lastSign < interval - WATCHDOG_SLACK_MS) return;
    this.watchdogBusy = true;
    this.probedAt = now;
    try {
      if (vouch) {
        this.nextVouchAt = now + this.vouchIntervalMs * (0.8 + 0.4 * Math.random());
        await this.probe(this.options.requestTimeoutMs);
      } else {
        // Only the answer counts, not its header: etcd's gRPC proxy gives a serializable read
        // from a cache that outlives writes and even a wipe, with etcd's own cluster id.
        await this.call((c) => this.probeWith(c, this.options.requestTimeoutMs, true));
      }
    } catch (e) {
      if (this.closed) return;
      debug('watchdog probe failed: %s', (e as Error).message);
      // A call that timed out (rather than being refused) is the mark of a
      // stalled or silently dead connection: grpc will not notice by itself.
      if (e instanceof GRPCDeadlineExceededError) this.rebuild('watchdog probe timed out');
    } finally {
      this.watchdogBusy = false;
    }
  }

  /**
   * Each member the current client skips is probed on a connection of its own: once it
   * answers, calls go to it again (a member that was killed and restarted, or came back).
   */
  private checkSkippedMembers(): void {
    const health = this.health;
    for (const member of health.skipped) {
      if (this.checkingMembers.has(member)) continue;
      this.checkingMembers.add(member);
      const probe = this.createClient(undefined, [member]);
      this.probeWith(probe, this.options.requestTimeoutMs)
        .then(() => health.succeeded(member))
        .catch((e: Error) => debug('skipped member %s still does not answer: %s', member, e.message))
        .finally(() => {
          probe.close();
          this.checkingMembers.delete(member);
        });
    }
  }

  /**
   * Replaces the client with a fresh one (new channels, new TCP connections), always on
   * every configured member. With several members, each is probed on its own first and
   * those that did not answer start out skipped, so the new client does not land on the
   * silent one again; the member check brings them back once they answer. Streams opened
   * on the old client fail and their owners reopen them on the new client.
   * Rate-limited to once per request timeout.
   */
  rebuild(reason: string): void {
    if (this.closed || this.rebuilding) return;
    const now = performance.now();
    if (now - this.lastRebuild < this.options.requestTimeoutMs) return;
    this.lastRebuild = now;
    this.rebuilding = true;
    void this.answeringMembers()
      .then((answered) => {
        if (this.closed) return;
        const old = this.client;
        const health = new MemberHealth(this.options.endpoints);
        if (answered.length > 0) {
          for (const member of this.options.endpoints) if (!answered.includes(member)) health.markDown(member, 'did not answer the probe before the rebuild');
        }
        this.health = health;
        this.client = this.createClient(health);
        this.generation++;
        debug('client rebuilt (generation %d) on %s, answering: %s: %s', this.generation, this.options.endpoints.join(','), answered.join(',') || 'none', reason);
        this.emit('rebuilt', this.generation);
        old.close();
      })
      .finally(() => {
        this.rebuilding = false;
      });
  }

  /** The members that answer a probe on a connection of their own (the first answer and those within 50 ms of it). */
  private answeringMembers(): Promise<string[]> {
    const all = this.options.endpoints;
    if (all.length === 1) return Promise.resolve([...all]);
    return new Promise((resolve) => {
      const answered: string[] = [];
      let pending = all.length;
      let grace: NodeJS.Timeout | undefined;
      const finish = (): void => {
        clearTimeout(grace);
        clearTimeout(limit);
        resolve([...answered]);
      };
      const limit = setTimeout(finish, this.options.requestTimeoutMs);
      limit.unref();
      for (const member of all) {
        const probe = this.createClient(undefined, [member]);
        this.probeWith(probe, this.options.requestTimeoutMs)
          .then(() => {
            answered.push(member);
            // The first answer decides; the others get a moment to join.
            if (answered.length === 1) grace = setTimeout(finish, 50);
          })
          .catch((e: Error) => debug('member %s did not answer the probe: %s', member, e.message))
          .finally(() => {
            probe.close();
            if (--pending === 0) finish();
          });
      }
    });
  }

  /** The options hold credentials: print none of them. */
  [inspect.custom](): string {
    return `Connection { etcd: ${this.options.endpoints.join(',')}, generation: ${this.generation}, closed: ${this.closed} }`;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watchdogTimer) clearTimeout(this.watchdogTimer);
    if (this.resetTimer) clearTimeout(this.resetTimer);
    this.abort.abort(new RegistryClosedError('close'));
    this.client.close();
    debug('closed');
  }
}
