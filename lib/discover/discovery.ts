/**
 * What the registry watches, and for how long.
 *
 * A service is watched while it is held:
 * - by an open Subscription (`registry.subscribe()`), reference-counted;
 * - by a call in progress (a first sync, a pending waitFor(), a running watch());
 * - implicitly, after a read through endpoints(), pick(), pickAsync(), waitFor()
 *   or watch(), for REGISTRY_DISCOVERY_IDLE_SECONDS (default 300) after the last
 *   one. A sweep every half of that drops a service not read for two sweeps in a
 *   row (so between 1 and 1.5 times the idle time after its last read); its next
 *   read syncs it again. 0 keeps implicit uses for the registry's life.
 *
 * A service that is no longer held has its watch cancelled and its list and
 * pickers freed. The whole-registry view of services() is held the same way
 * (implicitly, by services() calls). While it is synced it covers every service,
 * so per-service views are closed; when it is dropped, each service still held
 * gets its own watch, started at the revision the whole-registry watch had
 * reached (no read, nothing missed), and the other lists are freed.
 *
 * Every range read (first syncs and re-reads after a reset or a compaction)
 * goes through one Limiter: READ_CONCURRENCY at a time.
 */
import { type Connection } from '../etcd/connection';
import { RegistryClosedError, isRegistryError } from '../errors';
import type { KeySpace } from '../keys';
import { logger } from '../log';
import type { PickerOptions } from '../pickers';
import { delay } from '../time';
import type { Endpoint, InvalidEndpointEvent } from '../types';
import type { WatchStream } from '../etcd/watch-stream';
import { Limiter } from './limiter';
import { PrefixView, type ChangeKind, type ViewHooks } from './prefix-view';
import { ServiceList } from './service-list';
import { Subscription, type SubscriptionHost } from './subscription';

const debug = logger('view');

/** Range reads of discovery in flight at once. */
export const READ_CONCURRENCY = 8;

export interface DiscoveryHooks {
  onChange(list: ServiceList, added: readonly Endpoint[], removed: readonly Endpoint[], kind: ChangeKind, subscriptions: ReadonlySet<Subscription> | undefined): void;
  onInvalid(event: InvalidEndpointEvent): void;
  onResynced(reason: string): void;
  onError(error: Error): void;
  pick(service: string, options?: PickerOptions): Endpoint;
}

export interface DiscoveryOptions {
  keys: KeySpace;
  conn: Connection;
  stream: WatchStream;
  /** 0: implicit uses never expire. */
  idleMs: number;
  connectTimeoutMs: number;
  hooks: DiscoveryHooks;
}

interface Hold {
  readonly subscriptions: Set<Subscription>;
  /** Calls in progress that need the service watched. */
  pins: number;
  /** Read recently through endpoints(), pick(), … */
  implicit: boolean;
  /** Sweeps in a row that found it unread. */
  idle: number;
}

export class Discovery {
  /** The local list of every service held (and, while services() is held, of every service). */
  readonly lists = new Map<string, ServiceList>();
  readonly limiter = new Limiter(READ_CONCURRENCY);
  private readonly holds = new Map<string, Hold>();
  /** One watched prefix per service held, unless the whole-registry view covers them all. */
  private readonly views = new Map<string, PrefixView>();
  private root: PrefixView | undefined;
  private readonly rootHold = { pins: 0, implicit: false, used: false, idle: 0 };
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly host: SubscriptionHost = {
    endpoints: (service) => this.lists.get(service)?.endpoints,
    pick: (service, options) => this.options.hooks.pick(service, options),
    release: (subscription) => this.release(subscription),
  };

  constructor(private readonly options: DiscoveryOptions) {}

  /** Views currently watching (for tests and inspection). */
  get viewCount(): number {
    return this.views.size + (this.root ? 1 : 0);
  }

  /** Services held, by any kind of use. */
  get heldCount(): number {
    return this.holds.size;
  }

  isSynced(service: string): boolean {
    return this.root?.isSynced === true || this.views.get(service)?.isSynced === true;
  }

  /** An implicit use of a service: keeps it watched for the idle time after this. */
  touch(service: string): void {
    const hold = this.holdOf(service);
    hold.implicit = true;
    hold.idle = -1; // as if read since the last sweep: dropped 1 to 1.5 idle times from now
    this.ensureSweeper();
  }

  /**
   * The hot path of endpoints(): the list of a service already read, and already
   * held implicitly (so the read only needs marking); undefined sends the caller
   * down the full path.
   */
  syncedListFast(service: string): ServiceList | undefined {
    const list = this.lists.get(service);
    if (list === undefined || !list.synced || list.stale || this.holds.get(service)?.implicit !== true) return undefined;
    list.used = true;
    return list;
  }

  /** A reference-counted hold, resolved once the service is synced. */
  async subscribe(service: string, method = 'subscribe'): Promise<Subscription> {
    this.assertOpen(method);
    const subscription = new Subscription(service, this.host);
    this.holdOf(service).subscriptions.add(subscription);
    try {
      await this.syncedList(service, method);
    } catch (e) {
      await subscription.close();
      throw e;
    }
    return subscription;
  }

  /** The list of a service, synced on first use (through the whole-registry view if it is synced). */
  async syncedList(service: string, method: string): Promise<ServiceList> {
    const hold = this.holdOf(service);
    hold.pins++;
    try {
      for (;;) {
        this.assertOpen(method);
        if (this.root?.isSynced) return this.list(service);
        let view = this.views.get(service);
        if (!view) {
          view = this.newView(service);
          this.views.set(service, view);
        }
        try {
          await this.syncView(view, method);
        } catch (e) {
          this.assertOpen(method);
          // Closed meanwhile because the whole-registry view took over: go round again.
          if (view.isClosed) continue;
          // Refused (a role that may not read the service): nothing of it is kept, so that
          // ready() does not wait on it; the next read asks etcd again.
          if (refusedFirstRead(view, e)) this.dropRefused(service, view);
          throw e;
        }
        // Never answer a list that was not read: the registry closed during the read.
        this.assertOpen(method);
        if (view.isClosed) continue;
        return this.list(service);
      }
    } finally {
      hold.pins--;
      this.maybeRelease(service);
    }
  }

  /** Every service, through one whole-registry view. */
  async services(): Promise<ReadonlyMap<string, readonly Endpoint[]>> {
    this.assertOpen('services');
    this.rootHold.implicit = true;
    this.rootHold.used = true;
    this.ensureSweeper();
    this.rootHold.pins++;
    try {
      this.root ??= this.newView(undefined);
      const root = this.root;
      try {
        await this.syncView(root, 'services');
      } catch (e) {
        // Refused (a role limited to some services): nothing of it is kept, as for one service.
        if (refusedFirstRead(root, e)) this.rootHold.implicit = false;
        throw e;
      }
      this.assertOpen('services');
      // The whole-registry watch covers every service: the per-service ones are redundant now.
      if (root.isSynced && this.root === root) {
        for (const view of this.views.values()) view.close();
        this.views.clear();
      }
    } finally {
      this.rootHold.pins--;
      if (!this.rootHeld()) this.releaseRoot();
    }
    const result = new Map<string, readonly Endpoint[]>();
    for (const [service, list] of this.lists) if (list.size > 0) result.set(service, list.endpoints);
    return result;
  }

  /** Waits for the first sync of every view (ready()). */
  async syncAll(method: string): Promise<void> {
    const views = [...(this.root ? [this.root] : []), ...this.views.values()];
    await Promise.all(views.map((view) => this.syncView(view, method)));
  }

  /** etcd lost its data: every view reads its prefix again (READ_CONCURRENCY at a time). */
  resyncAll(reason: string): void {
    if (this.root) void this.root.resync(reason);
    for (const view of this.views.values()) void view.resync(reason);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.root?.close();
    for (const view of this.views.values()) view.close();
    this.views.clear();
  }

  private assertOpen(method: string): void {
    if (this.closed) throw new RegistryClosedError(method);
  }

  /** First sync of a view: retried while etcd is unreachable, up to the connect timeout. */
  private async syncView(view: PrefixView, method: string): Promise<void> {
    if (view.isSynced) return;
    await this.options.conn.ensureContact();
    // Monotonic: a wall clock stepped back must not stretch the connect timeout.
    const started = performance.now();
    for (;;) {
      try {
        await view.sync();
        return;
      } catch (e) {
        this.assertOpen(method);
        const left = this.options.connectTimeoutMs - (performance.now() - started);
        if (view.isClosed || !isRegistryError(e) || e.code !== 'ERR_ETCD_UNREACHABLE' || left <= 0) throw e;
        await delay(Math.min(250, left), this.options.conn.signal).catch(() => this.assertOpen(method));
      }
    }
  }

  private list(service: string): ServiceList {
    let list = this.lists.get(service);
    if (!list) {
      list = new ServiceList(service);
      this.lists.set(service, list);
    }
    return list;
  }

  private holdOf(service: string): Hold {
    let hold = this.holds.get(service);
    if (!hold) {
      hold = { subscriptions: new Set(), pins: 0, implicit: false, idle: 0 };
      this.holds.set(service, hold);
    }
    return hold;
  }

  private static held(hold: Hold): boolean {
    return hold.subscriptions.size > 0 || hold.pins > 0 || hold.implicit;
  }

  private rootHeld(): boolean {
    return this.rootHold.pins > 0 || this.rootHold.implicit;
  }

  private release(subscription: Subscription): void {
    this.holds.get(subscription.service)?.subscriptions.delete(subscription);
    this.maybeRelease(subscription.service);
  }

  /** A view whose first read etcd refused: closed, and the service's implicit hold with it. */
  private dropRefused(service: string, view: PrefixView): void {
    view.close();
    if (this.views.get(service) === view) this.views.delete(service);
    const hold = this.holds.get(service);
    if (hold) hold.implicit = false;
    debug('service %s refused: not watched', service);
  }

  /** A service no longer held: its watch is cancelled, its list (unless the whole-registry view feeds it) freed. */
  private maybeRelease(service: string): void {
    const hold = this.holds.get(service);
    if (!hold || Discovery.held(hold)) return;
    this.holds.delete(service);
    const view = this.views.get(service);
    if (view) {
      view.close();
      this.views.delete(service);
    }
    if (!this.root) this.lists.delete(service);
    else if (!this.root.isSynced) {
      const list = this.lists.get(service);
      if (list) list.stale = true;
    }
    debug('service %s released', service);
  }

  /** services() no longer held: each service still held gets its own watch, the rest is freed. */
  private releaseRoot(): void {
    const root = this.root;
    if (!root) return;
    this.root = undefined;
    const { isSynced: synced, isWatching: watching, nextRevision } = root;
    root.close();
    let handed = 0;
    for (const [service, list] of this.lists) {
      let hold = this.holds.get(service);
      // A list picked from since the last sweep counts as read.
      if ((!hold || !Discovery.held(hold)) && list.used && synced) {
        hold = this.holdOf(service);
        hold.implicit = true;
      }
      if (!hold || !Discovery.held(hold)) {
        this.lists.delete(service);
        continue;
      }
      if (!synced || this.views.has(service)) continue;
      const view = this.newView(service);
      this.views.set(service, view);
      view.adopt(nextRevision);
      if (!watching) void view.resync('handed over by the whole-registry view while it was not watching');
      handed++;
    }
    debug('whole-registry view released; %d service(s) handed over to their own watch', handed);
  }

  private ensureSweeper(): void {
    if (this.sweeper || this.closed || this.options.idleMs === 0) return;
    this.sweeper = setInterval(() => this.sweep(), Math.max(1, Math.floor(this.options.idleMs / 2)));
    this.sweeper.unref();
  }

  /** Drops implicit uses not read for two sweeps in a row. */
  private sweep(): void {
    let live = false;
    for (const [service, hold] of this.holds) {
      if (!hold.implicit) continue;
      const list = this.lists.get(service);
      if (list?.used) {
        list.used = false;
        hold.idle = 0;
      } else if (++hold.idle >= 2) {
        hold.implicit = false;
        debug('service %s not read for %d ms: dropping its implicit use', service, this.options.idleMs);
        this.maybeRelease(service);
        continue;
      }
      live = true;
    }
    const root = this.rootHold;
    if (root.implicit) {
      if (root.used) {
        root.used = false;
        root.idle = 0;
        live = true;
      } else if (++root.idle >= 2) {
        root.implicit = false;
        root.idle = 0;
        if (!this.rootHeld()) this.releaseRoot();
      } else {
        live = true;
      }
    }
    if (!live) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private newView(service: string | undefined): PrefixView {
    const { keys, conn, stream } = this.options;
    return new PrefixView(keys, service, conn, stream, this.viewHooks(service), this.limiter);
  }

  private viewHooks(service: string | undefined): ViewHooks {
    return {
      list: (s) => this.list(s),
      lists: () => (service === undefined ? this.lists.values() : [this.list(service)]),
      onChange: (list, added, removed, kind) => {
        // A list freed while a read was under way is nobody's any more.
        if (this.lists.get(list.service) !== list) return;
        this.options.hooks.onChange(list, added, removed, kind, this.holds.get(list.service)?.subscriptions);
        // Under the whole-registry view, a service whose last endpoint went and that nothing
        // holds is freed: a registry that watches everything must not keep every name it saw.
        if (service === undefined && list.size === 0 && this.lists.get(list.service) === list) {
          const hold = this.holds.get(list.service);
          if (!hold || !Discovery.held(hold)) this.lists.delete(list.service);
        }
      },
      onInvalid: (event) => this.options.hooks.onInvalid(event),
      onResynced: (reason) => this.options.hooks.onResynced(reason),
      onError: (e) => this.options.hooks.onError(e),
    };
  }
}

/** etcd refused a view's first read for permission: nothing of it is to be kept (ready() would wait on it). */
function refusedFirstRead(view: PrefixView, e: unknown): boolean {
  return !view.isSynced && isRegistryError(e) && e.code === 'ERR_PERMISSION_DENIED';
}
