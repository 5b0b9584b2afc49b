/**
 * Owns the etcd3 client: per-call deadlines (etcd3 sets none), failover across
 * members, the first contact (retried with backoff up to the connect timeout),
 * a watchdog that notices a stalled or black-holed connection and rebuilds the
 * client, and detection of data loss (revisions going backwards or a new cluster
 * id in the answer to a linearizable read).
 */
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { circuitBreaker, ConsecutiveBreaker, handleWhen, noop, retry } from 'cockatiel';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  isRecoverableError,
  type IOptions,
  type IResponseHeader,
} from 'etcd3';
import { retryForever } from './backoff';
import { RegistryClosedError, RegistryError, quote } from './errors';
import { logger } from './log';
import { withDeadline } from './time';
import { tlsFailure, tlsHint } from './tls';

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
}

export interface ConnectionEvents {
  reachable: [];
  unreachable: [error: Error];
  /** A stalled client was replaced: streams opened on the old one must be reopened on `client`. */
  rebuilt: [generation: number];
  /** etcd lost its history (wiped member, another cluster): re-read and re-put everything. */
  reset: [reason: string];
}

/** Errors that mean "etcd did not answer", as opposed to "etcd said no". */
export function isUnreachableError(e: unknown): boolean {
  return e instanceof Error && isRecoverableError(e);
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
  client: Etcd3;
  /** Increments whenever the client is rebuilt. */
  generation = 0;
  private readonly options: ConnectionOptions;
  private reachable = true;
  private contact: Promise<void> | undefined;
  private maxRevision = 0;
  private clusterId: string | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private watchdogBusy = false;
  private lastRebuild = 0;
  private rebuilding = false;
  private closed = false;
  private readonly abort = new AbortController();

  constructor(options: ConnectionOptions) {
    super();
    this.options = options;
    this.client = this.createClient();
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

  private createClient(endpoints: readonly string[] = this.options.endpoints): Etcd3 {
    const { requestTimeoutMs, dialTimeoutMs, clientOptions } = this.options;
    const many = endpoints.length > 1;
    return new Etcd3({
      ...clientOptions,
      hosts: [...endpoints],
      dialTimeout: dialTimeoutMs,
      // etcd3 sets no deadline: a stalled member would hang a call for ever.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + requestTimeoutMs }),
      faultHandling: {
        // Each retry picks another member: fail over at once, without delay.
        global: many ? retry(handleWhen(isRecoverableError), { maxAttempts: endpoints.length - 1 }) : noop,
        // A dead member is skipped for a second rather than the default five.
        host: () => (many ? circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(2) }) : noop),
      },
      grpcOptions: {
        // grpc-js shares connections between clients by default: a rebuilt
        // client would get the stalled connection back. Each client its own.
        'grpc.use_local_subchannel_pool': 1,
        'grpc.initial_reconnect_backoff_ms': Math.min(100, dialTimeoutMs),
        'grpc.max_reconnect_backoff_ms': dialTimeoutMs,
        ...clientOptions?.grpcOptions,
      },
    });
  }

  /**
   * Runs one etcd call on the current client and keeps the reachable/unreachable
   * state. Rejects with the raw etcd3 error: callers map it with toRegistryError.
   */
  async call<T>(fn: (client: Etcd3) => Promise<T>): Promise<T> {
    if (this.closed) throw new RegistryClosedError('call');
    try {
      const result = await fn(this.client);
      this.markReachable();
      return result;
    } catch (e) {
      if (isUnreachableError(e)) this.markUnreachable(e as Error);
      throw e;
    }
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
    const started = Date.now();
    const deadline = new AbortController();
    const onClose = (): void => deadline.abort(new RegistryClosedError('connect'));
    this.abort.signal.addEventListener('abort', onClose, { once: true });
    let attempts = 0;
    let lastError: unknown;
    /** grpc-js reports "Last error: null" after the first failure: keep the one that said why. */
    let telling: unknown;
    // A refused TLS handshake is unreachable for etcd3, but no retry fixes it: fail at once.
    const policy = retryForever((e) => isUnreachableError(e) && tlsFailure(e) === undefined && Date.now() - started < connectTimeoutMs);
    try {
      await withDeadline(
        policy.execute(async () => {
          attempts++;
          try {
            await this.probe(this.options.dialTimeoutMs);
          } catch (e) {
            lastError = e;
            if (!/Last error: null/.test((e as Error).message)) telling = e;
            debug('contact attempt %d failed: %s', attempts, (e as Error).message);
            throw e;
          }
        }, deadline.signal),
        connectTimeoutMs,
        () => new Error('connect timeout'),
      );
      debug('contact with %s after %d attempt(s), %d ms', endpoints.join(','), attempts, Date.now() - started);
      this.startWatchdog();
    } catch (e) {
      deadline.abort();
      if (this.closed) throw new RegistryClosedError('connect');
      const cause = lastError ?? e;
      if (!isUnreachableError(cause) || tlsFailure(cause) !== undefined) {
        throw this.error(cause, `read the key ${quote(this.options.probeKey)} (first contact with etcd at ${endpoints.join(',')})`);
      }
      const why = telling ?? cause;
      throw new RegistryError(
        'ERR_ETCD_UNREACHABLE',
        `could not reach etcd at ${endpoints.join(',')} within ${connectTimeoutMs / 1000} s (REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS), ${attempts} attempt(s): ${(why as Error).message}${tlsHint(why, this.options.clientOptions?.credentials !== undefined)}`,
        { cause: why },
      );
    } finally {
      this.abort.signal.removeEventListener('abort', onClose);
    }
  }

  /**
   * A cheap linearizable read with a deadline; its header reveals data loss. A
   * refusal for permission (a role limited to some services' prefixes) is an
   * answer too: etcd is there, and the calls that need the permission will say so.
   */
  private async probe(deadlineMs: number): Promise<void> {
    const header = await this.call((c) => this.probeWith(c, deadlineMs));
    if (header) this.checkHeader(header, true);
  }

  /**
   * A count-only read of the probe key with a deadline. A refusal for permission
   * (a role limited to one service) still proves etcd answers: it resolves
   * without a header then.
   */
  private async probeWith(client: Etcd3, deadlineMs: number): Promise<IResponseHeader | undefined> {
    try {
      const res = await client.kv.range({ key: Buffer.from(this.options.probeKey), count_only: true }, { deadline: Date.now() + deadlineMs });
      return res.header;
    } catch (e) {
      if (e instanceof EtcdPermissionDeniedError) return undefined;
      throw e;
    }
  }

  /**
   * Tracks the highest revision and the cluster id seen. `linearizable` answers
   * must never be behind a revision already seen: if one is, etcd lost data.
   */
  checkHeader(header: IResponseHeader | undefined, linearizable: boolean): void {
    if (!header) return;
    const revision = Number(header.revision);
    const clusterId = header.cluster_id;
    let reason: string | undefined;
    if (this.clusterId !== undefined && clusterId !== this.clusterId) {
      reason = `cluster id changed from ${this.clusterId} to ${clusterId}`;
    } else if (linearizable && revision < this.maxRevision) {
      reason = `revision went backwards from ${this.maxRevision} to ${revision}`;
    }
    this.clusterId = clusterId;
    if (reason !== undefined) {
      this.maxRevision = revision;
      this.reportReset(reason);
    } else if (revision > this.maxRevision) {
      this.maxRevision = revision;
    }
  }

  /** Somebody noticed lost history (e.g. a watch resumed past etcd's revision). */
  reportReset(reason: string): void {
    if (this.closed) return;
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
    debug('etcd unreachable: %s', error.message);
    this.emit('unreachable', error);
  }

  private startWatchdog(): void {
    if (this.watchdogTimer || this.closed) return;
    const interval = this.options.watchdogIntervalMs ?? Math.max(250, this.options.requestTimeoutMs);
    this.watchdogTimer = setInterval(() => void this.watchdog(), interval);
    this.watchdogTimer.unref();
  }

  private async watchdog(): Promise<void> {
    if (this.watchdogBusy || this.closed) return;
    this.watchdogBusy = true;
    try {
      await this.probe(this.options.requestTimeoutMs);
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
   * Replaces the client with a fresh one (new channels, new TCP connections).
   * With several members, each is probed on its own first and the new client
   * uses only those that answered, so it cannot land on the silent one again.
   * Streams opened on the old client fail and their owners reopen them on the
   * new client. Rate-limited to once per request timeout.
   */
  rebuild(reason: string): void {
    if (this.closed || this.rebuilding) return;
    const now = Date.now();
    if (now - this.lastRebuild < this.options.requestTimeoutMs) return;
    this.lastRebuild = now;
    this.rebuilding = true;
    void this.answeringMembers()
      .then((members) => {
        if (this.closed) return;
        const old = this.client;
        this.client = this.createClient(members);
        this.generation++;
        debug('client rebuilt (generation %d) on %s: %s', this.generation, members.join(','), reason);
        this.emit('rebuilt', this.generation);
        old.close();
      })
      .finally(() => {
        this.rebuilding = false;
      });
  }

  /** The members that answer a probe on a connection of their own; all of them if none does. */
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
        resolve(answered.length > 0 ? [...answered] : [...all]);
      };
      const limit = setTimeout(finish, this.options.requestTimeoutMs);
      limit.unref();
      for (const member of all) {
        const probe = this.createClient([member]);
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
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    this.abort.abort(new RegistryClosedError('close'));
    this.client.close();
    debug('closed');
  }
}
