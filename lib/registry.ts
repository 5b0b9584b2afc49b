/**
 * The public facade. Publishing (LeaseKeeper) and seeing (Discovery) share one
 * Connection and one WatchStream and nothing else.
 */
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { resolveConfig, type RegistryConfig, type RegistryOptions } from './config';
import { checkOptions, checkPickOptions, checkSignal, checkTimeout } from './arguments';
import { connectionOptions } from './etcd/client-options';
import { Connection } from './etcd/connection';
import { RegistryClosedError, RegistryError, isRegistryError, quote } from './errors';
import { KeySpace, encodeValue } from './keys';
import { validateAddress, validateMetadata, validateServiceAddress, validateServiceName } from './validate';
import { fetchWithFailover, type FailoverRequestInit } from './fetch';
import { healthSpec, type HealthState } from './publish/health';
import { LeaseKeeper } from './publish/keeper';
import { listeningAddress, serverAddress, type ListeningServer, type ServerRegistration } from './publish/server';
import { isStrategy, STRATEGY_LIST, type Picker, type PickerOptions } from './pickers';
import { logger } from './log';
import { Discovery } from './discover/discovery';
import type { ChangeKind } from './discover/prefix-view';
import type { ServiceList } from './discover/service-list';
import type { Subscription } from './discover/subscription';
import { enroll } from './shutdown';
import { abortable, delay, withDeadline } from './time';
import type { ChangeEvent, Endpoint, EndpointInput, RegistryEvents, RegistryStatus } from './types';
import { emitSurfacing, surface } from './emit';
import { RegistryMetrics, type FetchOutcome, type RegistryStats } from './observe/metrics';
import { WatchStream } from './etcd/watch-stream';
import { EndpointCall, type Call } from './choose/call';
import { OutlierDetector, resolveOutlierOptions, type OutlierOptions, type ResolvedOutlierOptions } from './choose/outlier';
import type { LeastLoadedPicker } from './pickers/least';

const debug = logger('registry');

export interface WatchOptions {
  signal?: AbortSignal;
}

export type { PickerOptions };

export interface WaitForOptions {
  /** How many endpoints to wait for; default 1. */
  min?: number;
  /** Milliseconds; no limit by default. */
  timeout?: number;
  signal?: AbortSignal;
}

export class Registry extends EventEmitter<RegistryEvents> implements AsyncDisposable {
  readonly config: RegistryConfig;
  private readonly keys: KeySpace;
  private readonly conn: Connection;
  private readonly stream: WatchStream;
  private readonly keeper: LeaseKeeper;
  /** What is watched, and for how long (lib/discover/discovery.ts). */
  private readonly discovery: Discovery;
  private readonly metrics: RegistryMetrics;
  /**
   * Locally ejected endpoints (by key) and when they come back, on performance.now()'s clock:
   * a wall clock stepped back an hour would keep them out for that hour.
   */
  private readonly down = new Map<string, number>();
  /** Outlier ejection (lib/choose/outlier.ts). */
  private readonly outliers: OutlierDetector;
  private currentStatus: RegistryStatus = 'idle';
  /**
   * The library's own waiters for a status change (ready(), watch()): kept here rather
   * than as 'status' listeners, so that many concurrent calls neither show up in the
   * application's listener counts nor set off Node's MaxListenersExceededWarning.
   */
  private readonly statusWaiters = new Set<(status: RegistryStatus) => void>();
  private unenroll: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  /** One per fetch() in flight: close() aborts them. */
  private readonly fetches = new Set<AbortController>();
  /** When sweepDown() may look again. */
  private downSweepAt = 0;

  constructor(options: RegistryOptions = {}) {
    super();
    this.config = resolveConfig(options);
    this.keys = new KeySpace(this.config.keyPrefix);
    this.outliers = new OutlierDetector({
      size: (service) => this.discovery.lists.get(service)?.size ?? 0,
      ejected: (info) => {
        debug('%s ejected for %d s after %d failures in a row (ejection %d)', info.endpoint.key, info.seconds, info.failures, info.times);
        this.metrics.ejected(info.endpoint.service);
        this.emit('ejected', info);
      },
      returned: (endpoint) => {
        debug('%s returned after its ejection', endpoint.key);
        this.emit('returned', { endpoint });
      },
    });
    this.metrics = new RegistryMetrics(this.config.keyPrefix, {
      lists: () => this.discovery.lists.values(),
      ownEndpoints: () => this.keeper.endpoints.length,
    });
    this.conn = new Connection(connectionOptions(this.config, this.keys.root));
    this.stream = new WatchStream(this.conn, (e) => this.reportError(e), this.config.watchSilenceMs);
    this.keeper = new LeaseKeeper(this.conn, this.stream, this.keys, this.config.leaseSeconds, {
      registered: (endpoint) => this.emit('registered', endpoint),
      leaseLost: (leaseId, reason) => {
        this.metrics.leaseLost(reason);
        this.emit('lease-lost', { leaseId, reason });
      },
      reregistered: (leaseId, endpoints) => {
        this.metrics.reregistered();
        this.emit('reregistered', { leaseId, endpoints });
      },
      restored: (endpoint) => this.emit('restored', endpoint),
      healthy: (endpoint) => this.emit('healthy', { endpoint }),
      unhealthy: (endpoint, reason) => this.emit('unhealthy', { endpoint, reason }),
      // (Once closing, the keeper's own status is no longer the registry's.)
      status: (state) => this.currentStatus !== 'closing' && this.setStatus(state),
      error: (e) => this.reportError(e),
    });
    this.conn.on('unreachable', (error) => {
      this.metrics.unreachable();
      this.emit('etcd-unreachable', { error });
    });
    this.conn.on('reachable', () => this.emit('etcd-reachable'));
    this.discovery = new Discovery({
      keys: this.keys,
      conn: this.conn,
      stream: this.stream,
      idleMs: this.config.discoveryIdleMs,
      connectTimeoutMs: this.config.connectTimeoutMs,
      hooks: {
        onChange: (list, added, removed, kind, subscriptions) => this.onListChange(list, added, removed, kind, subscriptions),
        onInvalid: (event) => this.emit('invalid-endpoint', event),
        onResynced: (reason) => this.metrics.resynced(reason),
        onError: (e) => this.reportError(e),
        pick: (service, options) => this.pickFast(service, options) ?? this.pickChecked(service, options, false),
      },
    });
    this.conn.on('reset', (reason) => this.discovery.resyncAll(`etcd lost its data: ${reason}`));
    debug('created: etcd %s, prefix %s', this.config.etcdEndpoints.join(','), quote(this.config.keyPrefix));
  }

  /**
   * 'idle' | 'registering' | 'registered' | 'recovering' | 'closed'. Read right after a call,
   * it tells the status the call made (and its 'status' event comes first).
   */
  get status(): RegistryStatus {
    this.keeper.settle();
    return this.currentStatus;
  }

  /** The current lease id, once granted. */
  get leaseId(): string | undefined {
    return this.keeper.leaseId;
  }

  private get closed(): boolean {
    return this.closing !== undefined;
  }

  private setStatus(state: RegistryStatus): void {
    if (state === this.currentStatus) return;
    debug('status %s -> %s', this.currentStatus, state);
    this.currentStatus = state;
    this.emit('status', state);
    for (const waiter of Array.from(this.statusWaiters)) {
      try {
        waiter(state);
      } catch (e) {
        // Never skips the other waiters; a bug here still surfaces.
        surface(e);
      }
    }
  }

  /**
   * Every event leaves through here. A listener that throws cannot change the
   * registry's state (each event is emitted once that state is complete); its
   * exception is rethrown on the next tick, where it reaches the process's
   * 'uncaughtException' as an exception thrown from any Node callback does.
   */
  override emit<K extends keyof RegistryEvents>(event: K, ...args: RegistryEvents[K]): boolean {
    return emitSurfacing(this, event, args);
  }

  /** The `error` event always carries a RegistryError: anything else is wrapped (the original as `cause`). */
  private reportError(error: Error): void {
    debug('background error: %s', error.message);
    if (this.listenerCount('error') === 0) return;
    const e = isRegistryError(error)
      ? error
      : new RegistryError('ERR_ETCD_REQUEST', `a background etcd call failed and is being retried: ${error.message}`, { cause: error });
    this.emit('error', e);
  }

  private assertOpen(method: string): void {
    if (this.closed) throw new RegistryClosedError(method);
  }

  /**
   * Registers an endpoint on this registry's lease and resolves once it is in etcd.
   * With no argument, registers the service from REGISTRY_SERVICE_NAME and
   * REGISTRY_SERVICE_ADDRESS (or REGISTRY_SERVICE_PORT) with REGISTRY_SERVICE_METADATA.
   */
  async register(input: EndpointInput = {}): Promise<Endpoint> {
    this.assertOpen('register');
    checkOptions('register', input, 'the endpoint');
    const service = input.service ?? this.config.serviceName;
    if (service === undefined) {
      throw new RegistryError('ERR_INVALID_ARGUMENT', 'register() needs a service: pass { service } or set REGISTRY_SERVICE_NAME');
    }
    const address = input.address ?? this.config.serviceAddress;
    if (address === undefined) {
      throw new RegistryError(
        'ERR_INVALID_ARGUMENT',
        'register() needs an address: pass { address } or set REGISTRY_SERVICE_ADDRESS or REGISTRY_SERVICE_PORT',
      );
    }
    validateServiceName(service);
    validateServiceAddress(address);
    let metadata = input.metadata === undefined ? this.config.serviceMetadata : validateMetadata(input.metadata);
    if (this.config.zone !== undefined && metadata.zone === undefined) metadata = Object.freeze({ ...metadata, zone: this.config.zone });
    const endpoint: Endpoint = Object.freeze({ service, address, metadata, key: this.keys.endpointKey(service, address) });
    // From the environment only for the endpoint the environment describes.
    const fromEnv = input.service === undefined && input.address === undefined ? this.config.healthUrl : undefined;
    const healthInput = input.health ?? (fromEnv === undefined ? undefined : { url: fromEnv });
    const health = healthInput === undefined ? undefined : healthSpec(healthInput, address, this.config.health);
    this.enrollSignals();
    debug('registering %s%s', endpoint.key, health ? ` once its health check (${health.what}) passes` : '');
    const { token, done: written } = this.keeper.add(endpoint, encodeValue(address, metadata), health);
    const seconds = this.config.connectTimeoutMs / 1000;
    try {
      await withDeadline(writtenUnlessNoContact(written, this.conn), this.config.connectTimeoutMs, () =>
        health && this.keeper.health(endpoint.key) !== 'passing'
          ? new RegistryError('ERR_TIMEOUT', `could not register ${endpoint.key}: its health check (${health.what}) did not pass within ${seconds} s (REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS)`)
          : new RegistryError('ERR_ETCD_UNREACHABLE', `could not register ${endpoint.key}: etcd did not accept it within ${seconds} s (REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS)`),
        // Ref'd: a process whose only work is `await register()` must not end while the writer's retries (unref'd) wait.
        true,
      );
    } catch (e) {
      // Unless a newer call on the key came meanwhile, it falls back to what it was before this call.
      this.keeper.abandon(endpoint.key, token, e as Error);
      throw e;
    }
    return endpoint;
  }

  /** The key of an endpoint this registry owns, or ERR_NOT_REGISTERED / ERR_INVALID_ARGUMENT. */
  private owned(endpoint: Pick<Endpoint, 'service' | 'address'>, method = 'unregister'): { key: string; endpoint: Endpoint } {
    if (typeof endpoint !== 'object' || endpoint === null) {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `${method}() expects an endpoint { service, address }, got ${quote(endpoint)}`);
    }
    const key = this.keys.endpointKey(validateServiceName(endpoint.service), validateAddress(endpoint.address));
    const owned = this.keeper.endpoint(key);
    if (!owned) throw new RegistryError('ERR_NOT_REGISTERED', `${quote(key)} is not registered by this registry`);
    return { key, endpoint: owned };
  }

  /** Removes one endpoint of this registry from etcd. */
  async unregister(endpoint: Pick<Endpoint, 'service' | 'address'>): Promise<void> {
    this.assertOpen('unregister');
    const { key, endpoint: owned } = this.owned(endpoint);
    debug('unregistering %s', key);
    // The deletion goes on in the background if this gives up: the key is no
    // longer ours, and it goes when etcd answers again or with the lease.
    await withDeadline(
      this.keeper.remove(key),
      this.config.connectTimeoutMs,
      () =>
        new RegistryError(
          'ERR_ETCD_UNREACHABLE',
          `could not unregister ${key}: etcd did not answer within ${this.config.connectTimeoutMs / 1000} s (REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS); it is deleted when etcd answers, or expires with the lease`,
        ),
      true,
    );
    this.emit('unregistered', owned);
  }

  /**
   * Takes one endpoint of this registry (all of them without an argument) out of
   * etcd without unregistering it: the process keeps running and owning it, its
   * lease stays alive, and resume() puts it back. Resolves once etcd no longer
   * lists it. Idempotent: `paused` is emitted only when it was listed.
   */
  async pause(endpoint?: Pick<Endpoint, 'service' | 'address'>, options: { reason?: string } = {}): Promise<void> {
    this.assertOpen('pause');
    checkOptions('pause', options);
    if (options.reason !== undefined && typeof options.reason !== 'string') {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `reason ${quote(options.reason)} is invalid: expected a string`);
    }
    await this.setPaused('pause', endpoint, true, options.reason);
  }

  /** Puts endpoints taken out by pause() back in etcd (once their health check passes, if they have one). Idempotent. */
  async resume(endpoint?: Pick<Endpoint, 'service' | 'address'>): Promise<void> {
    this.assertOpen('resume');
    await this.setPaused('resume', endpoint, false, undefined);
  }

  private async setPaused(method: string, endpoint: Pick<Endpoint, 'service' | 'address'> | undefined, paused: boolean, reason: string | undefined): Promise<void> {
    const targets = endpoint === undefined ? this.keeper.endpoints : [this.owned(endpoint, method).endpoint];
    await Promise.all(
      targets.map(async (owned) => {
        const changed = this.keeper.isPaused(owned.key) !== paused;
        debug('%s %s%s', method, owned.key, changed ? '' : ' (already)');
        await withDeadline(
          this.keeper.setPaused(owned.key, paused) ?? Promise.resolve(),
          this.config.connectTimeoutMs,
          () => new RegistryError('ERR_ETCD_UNREACHABLE', `could not ${method} ${owned.key}: etcd did not answer within ${this.config.connectTimeoutMs / 1000} s (REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS); it goes on in the background`),
        );
        if (changed && paused) this.emit('paused', reason === undefined ? { endpoint: owned } : { endpoint: owned, reason });
        if (changed && !paused) this.emit('resumed', { endpoint: owned });
      }),
    );
  }

  /** The health of an endpoint of this registry: 'passing' | 'failing', or 'unknown' (no check, or no verdict yet). */
  health(endpoint: Pick<Endpoint, 'service' | 'address'>): HealthState {
    this.assertOpen('health');
    return this.keeper.health(this.owned(endpoint, 'health').key);
  }

  /**
   * Registers a listening server (node:http, node:https, node:net, or anything with
   * `address()` and `listening`): once it listens, with the port it was bound to;
   * unregisters when it emits `close`. See serverAddress() for the host.
   */
  async registerServer(server: ListeningServer, options: ServerRegistration = {}): Promise<Endpoint> {
    this.assertOpen('registerServer');
    checkOptions('registerServer', options, 'the options');
    const bound = await listeningAddress(server);
    let closedMeanwhile = false;
    let registered: Endpoint | undefined;
    const drop = (endpoint: Endpoint): void => {
      if (this.closed || this.keeper.endpoint(endpoint.key) !== endpoint) return;
      this.unregister(endpoint).catch((e: Error) => debug('unregistering %s after its server closed failed: %s', endpoint.key, e.message));
    };
    // Listening for 'close' before registering: a server that closes meanwhile is not left listed.
    const onClose = (): void => {
      closedMeanwhile = true;
      if (registered) drop(registered);
    };
    server.once('close', onClose);
    try {
      registered = await this.register({ ...options, address: options.address ?? serverAddress(bound) });
    } catch (e) {
      // Nothing to unregister: an application that retries must not collect listeners.
      server.off?.('close', onClose);
      throw e;
    }
    if (closedMeanwhile) drop(registered);
    return registered;
  }

  /**
   * The endpoints of a service. The first call reads them and starts a watch;
   * later calls answer from the local list without a round trip. Without a
   * subscription, the watch ends once the service has not been read for
   * REGISTRY_DISCOVERY_IDLE_SECONDS (then the next call reads it again).
   */
  async endpoints(service: string): Promise<readonly Endpoint[]> {
    const fast = this.closing === undefined ? this.discovery.syncedListFast(service) : undefined;
    return (fast ?? (await this.syncedList(service, 'endpoints'))).endpoints;
  }

  /**
   * Holds a service for as long as the subscription is open: its list is kept
   * in step with etcd and read without a round trip (`sub.endpoints`,
   * `sub.pick()`), its changes are emitted on `sub` as well as on the registry.
   * Resolves once the service is synced. Reference-counted: when the last
   * subscription of a service closes and no other use is live, its watch is
   * cancelled and its list freed.
   */
  async subscribe(service: string, options: { filter?: (endpoint: Endpoint) => boolean } = {}): Promise<Subscription> {
    this.assertOpen('subscribe');
    validateServiceName(service);
    checkOptions('subscribe', options);
    const { filter } = options;
    if (filter !== undefined && typeof filter !== 'function') {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `subscribe() option filter ${quote(filter)} is invalid: expected a function (endpoint) => boolean`);
    }
    const sub = await this.discovery.subscribe(service, 'subscribe');
    if (filter !== undefined) sub.setFilter(filter);
    return sub;
  }

  /**
   * Every service with at least one endpoint. The first call reads all of
   * `$PREFIX/services/` and watches it as one prefix; later calls, and
   * endpoints() for any service, answer from the local lists. The
   * whole-registry watch ends like an implicit per-service one, after
   * REGISTRY_DISCOVERY_IDLE_SECONDS without a services() call.
   */
  async services(): Promise<ReadonlyMap<string, readonly Endpoint[]>> {
    this.assertOpen('services');
    return this.discovery.services();
  }

  /** The list of a service, synced on first use; an implicit use of it. */
  private async syncedList(service: string, method: string): Promise<ServiceList> {
    this.assertOpen(method);
    validateServiceName(service);
    this.discovery.touch(service);
    return this.discovery.syncedList(service, method);
  }

  private onListChange(
    list: ServiceList,
    added: readonly Endpoint[],
    removed: readonly Endpoint[],
    kind: ChangeKind,
    subscriptions: ReadonlySet<Subscription> | undefined,
  ): void {
    const changed = kind !== 'initial' && (added.length > 0 || removed.length > 0);
    if (this.down.size > 0) for (const e of added) this.down.delete(e.key);
    if (removed.length > 0) {
      const kept = added.length > 0 ? new Set(added.map((e) => e.key)) : undefined;
      for (const e of removed) {
        if (kept?.has(e.key)) continue;
        this.outliers.forget(e.key);
        // Gone: it comes back unmarked if it registers again.
        if (this.down.size > 0) this.down.delete(e.key);
      }
    }
    if (changed) {
      if (debug.enabled) debug('%s: +%d -%d (%d endpoint(s))', list.service, added.length, removed.length, list.size);
      this.metrics.changed(list.service);
    }
    const subs = subscriptions !== undefined && subscriptions.size > 0 ? [...subscriptions] : undefined;
    const wantsChange = changed && (subs !== undefined || this.listenerCount('change') > 0);
    const wantsResync = kind === 'resync' && (subs !== undefined || this.listenerCount('resynced') > 0);
    if (!wantsChange && !wantsResync) return;
    // The whole list is built only if a listener reads it (once, shared by all): see ServiceList.view().
    const view = list.view();
    const event: ChangeEvent = {
      service: list.service,
      get endpoints() {
        return view.endpoints;
      },
      added,
      removed,
      updated: updatedOf(added, removed),
    };
    if (wantsResync) {
      this.emit('resynced', event);
      if (subs) for (const sub of subs) sub.notify('resynced', event);
    }
    if (wantsChange) {
      this.emit('change', event);
      if (subs) for (const sub of subs) sub.notify('change', event);
    }
  }

  /**
   * One endpoint of the service from the local list, with no round trip.
   * Synchronous: the service must have been synced (by endpoints(), waitFor()
   * or pickAsync()); otherwise this starts the sync and throws ERR_NOT_SYNCED.
   */
  pick(service: string, options?: PickerOptions): Endpoint {
    return this.pickFast(service, options) ?? this.pickChecked(service, options, true);
  }

  /**
   * The hot path: a synced service and a strategy already in use. Nothing to
   * validate: only valid names get a list, only valid strategies get a picker,
   * and the consistent-hash picker checks its key itself. Undefined sends the
   * caller down the checked path.
   */
  private pickFast(service: string, options: PickerOptions | undefined): Endpoint | undefined {
    if (this.down.size !== 0 || this.outliers.any || this.closing !== undefined) return undefined;
    if (this.config.zone !== undefined && options?.zone !== 'any') return undefined;
    const list = this.discovery.lists.get(service);
    if (list === undefined || !list.synced || list.stale) return undefined;
    list.used = true;
    const picker = options === undefined ? list.existingPicker('round-robin') : fastPicker(list, options);
    return picker?.pick(options);
  }

  /** `implicit`: a use of the service that keeps it watched for the idle time (not for a Subscription's pick). */
  private pickChecked(service: string, given: PickerOptions | undefined, implicit: boolean): Endpoint {
    this.assertOpen('pick');
    checkPickOptions('pick', given);
    const options = given ?? {};
    validateServiceName(service);
    if (implicit) this.discovery.touch(service);
    if (this.down.size > 0) this.sweepDown();
    if (!this.discovery.isSynced(service)) {
      this.syncedList(service, 'pick').catch((e: Error) => debug('background sync of %s failed: %s', service, e.message));
      throw new RegistryError('ERR_NOT_SYNCED', `service ${quote(service)} is not synced yet: await registry.pickAsync() or registry.endpoints() first`);
    }
    const strategy = options.strategy ?? 'round-robin';
    if (!isStrategy(strategy)) {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `strategy ${quote(strategy)} is invalid: use ${STRATEGY_LIST}`);
    }
    const list = this.discovery.lists.get(service);
    if (!list) throw new RegistryError('ERR_NO_ENDPOINTS', `service ${quote(service)} has no endpoints`);
    list.used = true;
    const picker = list.picker(strategy);
    const zone = this.config.zone;
    const mode = zone === undefined ? 'any' : (options.zone ?? 'prefer');
    if (options.filter !== undefined || mode !== 'any') return this.pickConstrained(list, picker, options, mode);
    const endpoint = picker.pick(options, this.down.size > 0 || this.outliers.any ? this.isExcluded : undefined);
    if (!endpoint) throw new RegistryError('ERR_NO_ENDPOINTS', `service ${quote(service)} has no endpoints`);
    if (picker.lastAllExcluded) debug('%s: every endpoint is marked down; picked %s anyway', service, endpoint.address);
    return endpoint;
  }

  /** The current constrained pick (see pickConstrained); fields, so that no closure is made per pick. */
  private pickFilter: ((endpoint: Endpoint) => boolean) | undefined;
  private pickZone: string | undefined;
  private pickSoft = false;

  private constrained = (endpoint: Endpoint): boolean =>
    (this.pickZone !== undefined && endpoint.metadata.zone !== this.pickZone) ||
    (this.pickFilter !== undefined && !this.pickFilter(endpoint)) ||
    (this.pickSoft && this.isExcluded(endpoint));

  /**
   * A pick with a filter or a zone: first among the endpoints that pass the
   * filter, are in the zone (mode 'only', or 'prefer' while enough of the
   * zone is up) and are neither marked down nor ejected; then, if there is
   * none, without the preferred zone; then including the marked-down and
   * ejected ones; then ERR_NO_ENDPOINTS saying what the filter and zone left.
   */
  private pickConstrained(list: ServiceList, picker: Picker, options: PickerOptions, mode: 'prefer' | 'only' | 'any'): Endpoint {
    const zone = this.config.zone;
    const soft = this.down.size > 0 || this.outliers.any;
    const preferLocal = mode === 'prefer' && this.localIsUp(list, zone!);
    const saved = [this.pickFilter, this.pickZone, this.pickSoft] as const;
    this.pickFilter = options.filter;
    this.pickZone = mode === 'only' || preferLocal ? zone : undefined;
    this.pickSoft = soft;
    try {
      let endpoint = picker.pick(options, this.constrained);
      if (endpoint !== undefined && picker.lastAllExcluded && preferLocal) {
        this.pickZone = undefined;
        endpoint = picker.pick(options, this.constrained);
      }
      if (endpoint !== undefined && picker.lastAllExcluded && soft) {
        this.pickSoft = false;
        endpoint = picker.pick(options, this.constrained);
        if (endpoint !== undefined && !picker.lastAllExcluded) debug('%s: every endpoint left by the filter or zone is marked down or ejected; picked %s anyway', list.service, endpoint.address);
      }
      if (endpoint === undefined) throw new RegistryError('ERR_NO_ENDPOINTS', `service ${quote(list.service)} has no endpoints`);
      if (picker.lastAllExcluded) throw this.noneLeft(list, options.filter, mode === 'only' ? zone : undefined);
      return endpoint;
    } finally {
      [this.pickFilter, this.pickZone, this.pickSoft] = saved;
    }
  }

  private noneLeft(list: ServiceList, filter: ((endpoint: Endpoint) => boolean) | undefined, zone: string | undefined): RegistryError {
    const all = list.endpoints;
    const passing = filter === undefined ? all.length : all.filter((e) => filter(e)).length;
    const parts: string[] = [];
    if (filter !== undefined) parts.push(passing === 0 ? `none of its ${all.length} endpoint(s) passes the filter` : `${passing} of its ${all.length} endpoint(s) pass the filter`);
    if (zone !== undefined && passing > 0) parts.push(`${filter === undefined ? `none of its ${all.length} endpoint(s)` : 'none of those'} is in zone ${quote(zone)} (zone: 'only')`);
    return new RegistryError('ERR_NO_ENDPOINTS', `service ${quote(list.service)} has no endpoint to pick: ${parts.join(' and ')}`);
  }

  /** Local endpoints of a list (metadata.zone === this zone), computed once per version of the list. */
  private readonly localKeys = new WeakMap<readonly Endpoint[], ReadonlySet<string>>();

  /** Whether at least one endpoint of this zone, and at least half of them, are neither marked down nor ejected. */
  private localIsUp(list: ServiceList, zone: string): boolean {
    const endpoints = list.endpoints;
    let keys = this.localKeys.get(endpoints);
    if (keys === undefined) {
      const set = new Set<string>();
      for (const e of endpoints) if (e.metadata.zone === zone) set.add(e.key);
      this.localKeys.set(endpoints, (keys = set));
    }
    if (keys.size === 0) return false;
    let out = this.outliers.countEjectedIn(keys);
    if (this.down.size > 0) {
      const now = performance.now();
      for (const [key, until] of this.down) if (until > now && keys.has(key) && !this.outliers.isEjected(key)) out++;
    }
    const up = keys.size - out;
    return up >= 1 && up * 2 >= keys.size;
  }

  /** pick(), after the first sync of the service. */
  async pickAsync(service: string, options: PickerOptions = {}): Promise<Endpoint> {
    checkPickOptions('pickAsync', options);
    await this.syncedList(service, 'pickAsync');
    return this.pick(service, options);
  }

  /**
   * Drops marks that expired (at most once a second): a mark of an endpoint no pick meets
   * again (not in any list) would otherwise stay, and keep every pick off the fast path.
   */
  private sweepDown(): void {
    const now = performance.now();
    if (now < this.downSweepAt) return;
    this.downSweepAt = now + 1000;
    for (const [key, until] of this.down) if (until <= now) this.down.delete(key);
  }

  /** Marked down or ejected. */
  private isExcluded = (endpoint: Endpoint): boolean => this.outliers.isEjected(endpoint.key) || this.isDown(endpoint);

  private isDown = (endpoint: Endpoint): boolean => {
    const until = this.down.get(endpoint.key);
    if (until === undefined) return false;
    if (until > performance.now()) return true;
    this.down.delete(endpoint.key);
    debug('%s is back after being marked down', endpoint.key);
    return false;
  };

  /**
   * Hides an endpoint from this process's pickers for a while (a failed call)
   * without touching etcd. It comes back on expiry, or at once if it re-registers.
   */
  markDown(endpoint: Pick<Endpoint, 'service' | 'address'>, options: { seconds?: number } = {}): void {
    this.assertOpen('markDown');
    checkOptions('markDown', options);
    const seconds = options.seconds ?? 10;
    if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `seconds ${quote(seconds)} is invalid: expected a finite number ≥ 0`);
    }
    const key = this.keys.endpointKey(validateServiceName(endpoint?.service), validateAddress(endpoint?.address));
    this.down.set(key, performance.now() + seconds * 1000);
    this.metrics.ejected(endpoint.service);
    debug('%s marked down for %d s', key, seconds);
  }

  /**
   * Reports a request to an endpoint made by a client of your own (gRPC, a
   * database driver; fetch() does it by itself): `const call =
   * registry.begin(endpoint)` as it starts, `call.end({ ok })` when it is over
   * (`ok: false` for no answer, a timeout or a 5xx), or `call.end()` when it
   * was cancelled. Feeds the 'least-request' and 'least-latency' pickers of the
   * service (requests in flight, latency) and outlier ejection; `outlier`
   * overrides the registry's `outlier` option for this request (`false`: its
   * outcome does not count towards ejection).
   */
  begin(endpoint: Pick<Endpoint, 'service' | 'address'> & { key?: string }, options: { outlier?: OutlierOptions | false } = {}): Call {
    this.assertOpen('begin');
    if (typeof endpoint !== 'object' || endpoint === null) {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `begin() expects an endpoint { service, address }, got ${quote(endpoint)}`);
    }
    checkOptions('begin', options);
    const outlier: ResolvedOutlierOptions | false =
      options.outlier === undefined ? this.config.outlier : resolveOutlierOptions(options.outlier, this.config.outlier, 'outlier');
    const service = endpoint.service;
    const list = this.discovery.lists.get(service);
    const key = typeof endpoint.key === 'string' && list !== undefined ? endpoint.key : this.keys.endpointKey(validateServiceName(service), validateAddress(endpoint.address));
    const request = (list?.existingPicker('least-request') as LeastLoadedPicker | undefined)?.load(key);
    const latency = (list?.existingPicker('least-latency') as LeastLoadedPicker | undefined)?.load(key);
    const target: Endpoint = typeof endpoint.key === 'string' && 'metadata' in endpoint ? (endpoint as Endpoint) : Object.freeze({ service, address: endpoint.address, metadata: {}, key });
    return new EndpointCall(request, latency, (ok) => {
      // Only for an endpoint still listed: one that left while the call was out (its calls
      // failing as it goes) has nothing left to eject, and its state would outlive it.
      if (outlier !== false && !this.closed && this.discovery.lists.get(service)?.get(key) !== undefined) this.outliers.record(target, ok, outlier);
    });
  }

  /** fetch() tells the outcome of each attempt (for metrics). */
  recordFetchAttempt(service: string, outcome: FetchOutcome, seconds: number): void {
    this.metrics.fetchAttempt(service, outcome, seconds);
  }

  /**
   * The registry's figures as a plain object: what the OpenTelemetry instruments
   * report (see the README's Metrics section), for those without an SDK.
   */
  stats(): RegistryStats {
    return this.metrics.stats();
  }

  /**
   * Node's global fetch against one endpoint of the service: on a connection
   * error or timeout the endpoint is marked down and the request retried on
   * another one (idempotent methods only, unless `retryNonIdempotent`).
   */
  fetch(service: string, path: string, init?: FailoverRequestInit): Promise<Response> {
    // close() stops the calls in flight (the request, the pause between attempts), with an
    // error that says so, instead of letting each run to its attempt timeout.
    if (this.closing !== undefined) return Promise.reject(new RegistryClosedError('fetch'));
    // One controller per call, let go when it settles: a signal that lives as long as the
    // registry, given to AbortSignal.any() on every call, would keep every call's signal.
    const stop = new AbortController();
    this.fetches.add(stop);
    return fetchWithFailover(this, service, path, init, stop.signal).finally(() => this.fetches.delete(stop));
  }

  /**
   * Resolves with the list once the service has at least `min` endpoints (at once if it already has).
   * A timeout or an abort leaves nothing behind: no listener, no hold on the service beyond the
   * implicit one of any read.
   */
  async waitFor(service: string, options: WaitForOptions = {}): Promise<readonly Endpoint[]> {
    this.assertOpen('waitFor');
    checkOptions('waitFor', options);
    checkTimeout('waitFor', options.timeout);
    checkSignal('waitFor', options.signal);
    const min = options.min ?? 1;
    if (typeof min !== 'number' || !Number.isInteger(min) || min < 0) {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `min ${quote(min)} is invalid: expected an integer ≥ 0`);
    }
    validateServiceName(service);
    this.discovery.touch(service);
    let settled = false;
    let sub: Subscription | undefined;
    const work = (async () => {
      const subscription = await this.discovery.subscribe(service, 'waitFor');
      if (settled) {
        await subscription.close();
        throw new RegistryClosedError('waitFor');
      }
      sub = subscription;
      if (subscription.endpoints.length >= min) return subscription.endpoints;
      return new Promise<readonly Endpoint[]>((resolve) => {
        subscription.on('change', (event) => {
          if (event.endpoints.length >= min) resolve(event.endpoints);
        });
      });
    })();
    try {
      return await abortable(work, options, `${min} endpoint(s) of service ${quote(service)}`);
    } finally {
      settled = true;
      // Unsubscribing removes the listener with it; a subscription still being made is closed when it arrives.
      await sub?.close();
    }
  }

  /**
   * Yields the service's list now, then again whenever it has changed, until
   * the signal aborts, the loop breaks, or the registry closes. Latest value
   * only: a consumer that pulls slowly gets the current list, not every list in
   * between. An abort releases everything at once, even while the consumer is
   * not pulling.
   */
  async *watch(service: string, options: WatchOptions = {}): AsyncGenerator<readonly Endpoint[], void, undefined> {
    this.assertOpen('watch');
    validateServiceName(service);
    checkOptions('watch', options);
    checkSignal('watch', options.signal);
    const { signal } = options;
    if (signal?.aborted) return;
    this.discovery.touch(service);
    const sub = await this.discovery.subscribe(service, 'watch');
    let stopped = false;
    let dirty = false;
    let wake: (() => void) | undefined;
    const notify = (): void => {
      wake?.();
      wake = undefined;
    };
    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      this.statusWaiters.delete(onStatus);
      signal?.removeEventListener('abort', stop);
      void sub.close();
      notify();
    };
    const onStatus = (status: RegistryStatus): void => {
      if (status === 'closed') stop();
    };
    sub.on('change', () => {
      dirty = true;
      notify();
    });
    this.statusWaiters.add(onStatus);
    signal?.addEventListener('abort', stop, { once: true });
    if (signal?.aborted || this.closed) stop();
    try {
      if (stopped) return;
      let last = sub.endpoints;
      yield last;
      for (;;) {
        if (stopped || signal?.aborted || this.closed) return;
        if (!dirty) {
          await new Promise<void>((resolve) => (wake = resolve));
          continue;
        }
        dirty = false;
        const current = sub.endpoints;
        if (current === last) continue;
        last = current;
        yield current;
      }
    } finally {
      stop();
    }
  }

  /**
   * Resolves when everything asked of the registry is done: etcd contacted,
   * every endpoint registered on a live lease, every watched service synced.
   * A timeout or an abort leaves no listener behind.
   */
  async ready(options: { timeout?: number; signal?: AbortSignal } = {}): Promise<void> {
    this.assertOpen('ready');
    checkOptions('ready', options);
    checkTimeout('ready', options.timeout);
    checkSignal('ready', options.signal);
    let settled = false;
    let onStatus: (() => void) | undefined;
    const work = (async () => {
      await this.conn.ensureContact();
      await this.discovery.syncAll('ready');
      // A register() of this turn has its status told after its send: told now.
      this.keeper.settle();
      while (!settled && (this.currentStatus === 'registering' || this.currentStatus === 'recovering')) {
        await new Promise<void>((resolve) => {
          const waiter = (): void => {
            this.statusWaiters.delete(waiter);
            resolve();
          };
          onStatus = waiter;
          this.statusWaiters.add(waiter);
        });
        onStatus = undefined;
      }
      // (A shutdown signal deregisters before close(): nothing will be ready.)
      if (this.currentStatus === 'closing') throw new RegistryClosedError('ready');
      this.assertOpen('ready');
    })();
    if (options.timeout === undefined && options.signal === undefined) return work;
    try {
      return await abortable(work, options, 'the registry to be ready');
    } finally {
      settled = true;
      if (onStatus) this.statusWaiters.delete(onStatus);
    }
  }

  private enrollSignals(): void {
    // Also with no signal of its own: when the library ends the process on another registry's
    // signal, this one is deregistered first rather than left listed for a TTL.
    if (this.unenroll) return;
    this.unenroll = enroll({
      signals: this.config.shutdownSignals,
      shutdown: (signal) => this.shutdown(signal),
    });
  }

  /** What a shutdown signal does: deregister at once (bounded), drain, close. */
  private async shutdown(signal: NodeJS.Signals): Promise<void> {
    if (this.closing) {
      // The application's own close() is deregistering: the process ends once it is done.
      debug('%s: close() is under way: waiting for it', signal);
      return this.closing;
    }
    debug('%s: deregistering', signal);
    const started = performance.now();
    const revoked = this.keeper.close(this.config.shutdownTimeoutMs);
    this.setStatus('closing'); // after the revoke is on its way
    const error = await revoked;
    debug('%s: deregistered in %d ms%s', signal, Math.round(performance.now() - started), error ? ` (failed: ${error.message})` : '');
    if (this.config.drainMs > 0) await delay(this.config.drainMs, undefined, true);
    await this.close();
  }

  /**
   * Revokes the lease (every own key vanishes in one round trip, bounded by the
   * shutdown timeout), stops every watch and closes the client. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing === undefined) {
      this.closing = this.doClose();
      // Once the revoke is on its way, and once close() is under way: a listener that calls it gets this promise.
      this.setStatus('closing');
    }
    return this.closing;
  }

  private async doClose(): Promise<void> {
    debug('closing');
    const stopped = new RegistryError('ERR_REGISTRY_CLOSED', 'registry.close() was called while the request was in flight');
    for (const stop of this.fetches) stop.abort(stopped);
    this.fetches.clear();
    // Enrolled until the revoke is done: a signal meanwhile waits for it rather than ending the
    // process with the keys still in etcd for a TTL.
    const error = await this.keeper.close(this.config.shutdownTimeoutMs);
    this.unenroll?.();
    if (error) debug('close: %s', error.message);
    this.outliers.close();
    this.discovery.close();
    this.stream.close();
    this.conn.close();
    this.metrics.close();
    this.setStatus('closed');
    debug('closed');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Never the password or the key: only whether TLS is on and which user. */
  [inspect.custom](): string {
    const { tls, auth } = this.config;
    const security = `tls: ${tls ? (tls.cert ? 'mutual' : 'on') : 'off'}, user: ${auth ? quote(auth.username) : 'none'}`;
    return `Registry { status: ${this.currentStatus}, prefix: ${quote(this.config.keyPrefix)}, etcd: ${this.config.etcdEndpoints.join(',')}, ${security}, services known: ${this.discovery.lists.size} }`;
  }
}

const NO_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);

/** Endpoints written again with other metadata: in both `removed` (the old record) and `added` (the new one). */
function updatedOf(added: readonly Endpoint[], removed: readonly Endpoint[]): readonly Endpoint[] {
  if (added.length === 0 || removed.length === 0) return NO_ENDPOINTS;
  const keys = new Set(removed.map((e) => e.key));
  const updated = added.filter((e) => keys.has(e.key));
  return updated.length === 0 ? NO_ENDPOINTS : updated;
}

/** The picker for well-formed pick options whose strategy is already in use; undefined sends the caller down the checked path. */
function fastPicker(list: ServiceList, options: PickerOptions): Picker | undefined {
  if (typeof options !== 'object' || options === null) return undefined;
  const { key } = options;
  if (key !== undefined && typeof key !== 'string') return undefined;
  if (options.filter !== undefined) return undefined;
  return list.existingPicker(options.strategy ?? 'round-robin');
}

/**
 * Settles with the write: a write etcd confirmed is registered, even while the first
 * contact is still being made (its probe may lose to the write); fails only if the
 * first contact fails first (a refused TLS handshake, a connect timeout). Once contact
 * was made, the write alone.
 */
function writtenUnlessNoContact(written: Promise<void>, conn: Connection): Promise<void> {
  if (conn.hasContact) return written;
  const contact = conn.ensureContact();
  return new Promise<void>((resolve, reject) => {
    written.then(resolve, reject);
    contact.catch(reject);
  });
}
