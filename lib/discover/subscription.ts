/**
 * A reference-counted hold on one service: while any subscription of a service
 * is open, its list is kept in step with etcd (one watch, shared by every
 * subscription and every other use of that service). When the last one closes
 * and no implicit use is live (see Discovery), the watch is cancelled and the
 * list and its pickers are freed.
 */
import { EventEmitter } from 'node:events';
import { emitSurfacing } from '../emit';
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

  /** @internal Created by `registry.subscribe()`. */
  constructor(
    readonly service: string,
    private readonly host: SubscriptionHost,
  ) {
    super();
  }

  /** The live list: the same frozen array until the next change. After close(), the last list seen. */
  get endpoints(): readonly Endpoint[] {
    if (this.open) this.last = this.host.endpoints(this.service) ?? this.last;
    return this.last;
  }

  get closed(): boolean {
    return !this.open;
  }

  /** As `registry.pick(service, options)`: synchronous, from the local list. */
  pick(options?: PickerOptions): Endpoint {
    if (!this.open) {
      throw new RegistryError('ERR_REGISTRY_CLOSED', `subscription.pick() was called after the subscription to service ${quote(this.service)} was closed`);
    }
    return this.host.pick(this.service, options);
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
    if (this.open && this.listenerCount(event) > 0) this.emit(event, payload);
  }

  /** As Registry.emit(): a listener's exception is rethrown on the next tick, the state stays complete. */
  override emit<K extends keyof SubscriptionEvents>(event: K, ...args: SubscriptionEvents[K]): boolean {
    return emitSurfacing(this, event, args);
  }
}
