/**
 * A reference-counted hold on one service: while any subscription of a service
 * is open, its list is kept in step with etcd (one watch, shared by every
 * subscription and every other use of that service). When the last one closes
 * and no implicit use is live (see Discovery), the watch is cancelled and the
 * list and its pickers are freed.
 */
import { EventEmitter } from 'node:events';
import { emitSurfacing, surface } from '../emit';
import { RegistryError, quote } from '../errors';
import type { PickerOptions } from '../pickers';
import type { ChangeEvent, Endpoint } from '../types';

export interface SubscriptionEvents {
  /** The service's list changed (the first read is not a change). */
  change: [event: ChangeEvent];
  /** The service's list was re-read from etcd (compacted history, data loss). */
  resynced: [event: ChangeEvent];
}

/** What a Subscription needs of its registry. */
export interface SubscriptionHost {
  /** The service's current list, while it is held. */
  endpoints(service: string): readonly Endpoint[] | undefined;
  pick(service: string, options?: PickerOptions): Endpoint;
  release(subscription: Subscription): void;
}

const NONE: readonly Endpoint[] = Object.freeze([]);

export class Subscription extends EventEmitter<SubscriptionEvents> implements AsyncDisposable {
  private open = true;
  private last: readonly Endpoint[] = NONE;
  private filter: ((endpoint: Endpoint) => boolean) | undefined;
  /** With a filter: the unfiltered list `last` was made from. */
  private source: readonly Endpoint[] | undefined;

  /** @internal Created by `registry.subscribe()`. */
  constructor(
    readonly service: string,
    private readonly host: SubscriptionHost,
  ) {
    super();
  }

  /** The live list: the same frozen array until the next change. After close(), the last list seen. */
  get endpoints(): readonly Endpoint[] {
    if (!this.open) return this.last;
    const all = this.host.endpoints(this.service);
    if (all === undefined) return this.last;
    if (this.filter === undefined) return (this.last = all);
    if (all !== this.source) {
      this.source = all;
      this.last = Object.freeze(all.filter(this.filter));
    }
    return this.last;
  }

  /** @internal `registry.subscribe(service, { filter })`: the list, picks and events only show endpoints that pass it. */
  setFilter(filter: (endpoint: Endpoint) => boolean): void {
    let threw = false;
    // A filter that throws (say, reading metadata a Go-written record does not have) leaves
    // the endpoint out; it must not break the registry's delivery of the change to others.
    // Its first exception is rethrown on the next tick, like a listener's.
    this.filter = (endpoint) => {
      try {
        return Boolean(filter(endpoint));
      } catch (e) {
        if (!threw) surface(e);
        threw = true;
        return false;
      }
    };
    this.source = undefined;
  }

  get closed(): boolean {
    return !this.open;
  }

  /** As `registry.pick(service, options)`: synchronous, from the local list. */
  pick(options?: PickerOptions): Endpoint {
    if (!this.open) {
      throw new RegistryError('ERR_REGISTRY_CLOSED', `subscription.pick() was called after the subscription to service ${quote(this.service)} was closed`);
    }
    if (this.filter === undefined) return this.host.pick(this.service, options);
    const own = this.filter;
    const given = options?.filter;
    return this.host.pick(this.service, { ...options, filter: given === undefined ? own : (e) => own(e) && given(e) });
  }

  /** Releases the hold (idempotent). Resolves at once: cancelling the watch needs no answer from etcd. */
  close(): Promise<void> {
    if (this.open) {
      this.last = this.endpoints;
      this.open = false;
      this.removeAllListeners();
      this.host.release(this);
    }
    return Promise.resolve();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal Delivers an event of the service; a listener that throws cannot break the registry. */
  notify(event: 'change' | 'resynced', payload: ChangeEvent): void {
    if (!this.open || this.listenerCount(event) === 0) return;
    const filter = this.filter;
    if (filter === undefined) {
      this.emit(event, payload);
      return;
    }
    const added = payload.added.filter(filter);
    const removed = payload.removed.filter(filter);
    const updated = payload.updated.filter(filter);
    if (event === 'change' && added.length === 0 && removed.length === 0) return; // nothing this subscription shows changed
    this.emit(event, { ...payload, endpoints: this.endpoints, added, removed, updated });
  }

  /** As Registry.emit(): a listener's exception is rethrown on the next tick, the state stays complete. */
  override emit<K extends keyof SubscriptionEvents>(event: K, ...args: SubscriptionEvents[K]): boolean {
    return emitSurfacing(this, event, args);
  }
}
