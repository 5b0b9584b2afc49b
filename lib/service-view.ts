/**
 * The local endpoint list of one service: one range read at revision R, then a
 * watch from R+1, so no change falls between the two. Changes are applied
 * incrementally (a Map keyed by etcd key). When etcd ends the watch (compacted
 * history) or loses its data, the prefix is read again and exactly what was
 * added and removed meanwhile is reported. While the view is open it always
 * has a working watch or is retrying to get one.
 */
import { Range, type IEvent } from 'etcd3';
import { cappedBackoff } from './backoff';
import { type Connection, isUnreachableError, toRegistryError } from './connection';
import { RegistryClosedError } from './errors';
import { decodeEndpoint } from './keys';
import { logger } from './log';
import { createPicker, type Picker, type Strategy } from './pickers';
import { readPrefix } from './read-prefix';
import { delay } from './time';
import type { Endpoint, InvalidEndpointEvent } from './types';
import type { WatchStream, WatchTarget } from './watch-stream';

const debug = logger('view');

export type ChangeKind = 'change' | 'resync';

export interface ViewHooks {
  onChange(view: ServiceView, added: readonly Endpoint[], removed: readonly Endpoint[], kind: ChangeKind): void;
  onInvalid(event: InvalidEndpointEvent): void;
  onError(error: Error): void;
}

interface Entry {
  readonly endpoint: Endpoint;
  /** The raw value, to tell a real change from a rewrite of the same record. */
  readonly value: string;
}

export class ServiceView implements WatchTarget {
  readonly name: string;
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  nextRevision = 0;
  /** Records skipped because they could not be used. */
  invalidCount = 0;
  private readonly entries = new Map<string, Entry>();
  private snapshot: readonly Endpoint[] | undefined;
  private readonly pickers = new Map<Strategy, Picker>();
  private initial: Promise<void> | undefined;
  private synced = false;
  private resyncing = false;
  private closed = false;

  constructor(
    readonly service: string,
    private readonly prefix: string,
    private readonly conn: Connection,
    private readonly stream: WatchStream,
    private readonly hooks: ViewHooks,
  ) {
    this.name = `service ${service}`;
    const range = Range.prefix(prefix);
    this.key = range.start;
    this.rangeEnd = range.end;
  }

  get isSynced(): boolean {
    return this.synced;
  }

  /** The current list; the same frozen array until the next change. */
  get endpoints(): readonly Endpoint[] {
    this.snapshot ??= Object.freeze(Array.from(this.entries.values(), (e) => e.endpoint));
    return this.snapshot;
  }

  get size(): number {
    return this.entries.size;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** The picker for a strategy, created on first use from the current list and updated on every change. */
  picker(strategy: Strategy): Picker {
    let picker = this.pickers.get(strategy);
    if (!picker) {
      picker = createPicker(strategy, this.endpoints);
      this.pickers.set(strategy, picker);
    }
    return picker;
  }

  /** The first read and watch; concurrent callers share it, a failure lets the next call try again. */
  sync(): Promise<void> {
    if (this.closed) return Promise.reject(new RegistryClosedError('endpoints'));
    this.initial ??= this.load('change').catch((e: unknown) => {
      this.initial = undefined;
      throw toRegistryError(e, `read the endpoints of service "${this.service}"`);
    });
    return this.initial;
  }

  /** Reads the whole prefix, replaces the local list with it and (re)starts the watch after it. */
  private async load(kind: ChangeKind): Promise<void> {
    const snapshot = await readPrefix(this.conn, this.prefix);
    if (this.closed) return;
    const fresh = new Map<string, Entry>();
    for (const kv of snapshot.kvs) {
      const entry = this.decode(kv.key.toString(), kv.value);
      if (entry) fresh.set(entry.endpoint.key, entry);
    }
    const added: Endpoint[] = [];
    const removed: Endpoint[] = [];
    for (const [key, old] of this.entries) {
      const now = fresh.get(key);
      if (!now || now.value !== old.value) removed.push(old.endpoint);
    }
    for (const [key, now] of fresh) {
      const old = this.entries.get(key);
      if (!old || old.value !== now.value) added.push(now.endpoint);
    }
    this.entries.clear();
    for (const [key, entry] of fresh) this.entries.set(key, entry);
    this.nextRevision = snapshot.revision + 1;
    this.synced = true;
    this.stream.add(this);
    debug('%s read at revision %d: %d endpoint(s), +%d -%d', this.service, snapshot.revision, fresh.size, added.length, removed.length);
    this.applied(added, removed, kind);
  }

  onEvents(events: IEvent[]): void {
    if (this.closed) return;
    const added: Endpoint[] = [];
    const removed: Endpoint[] = [];
    for (const event of events) {
      const key = event.kv.key.toString();
      const old = this.entries.get(key);
      if (event.type === 'Delete') {
        if (old) {
          this.entries.delete(key);
          removed.push(old.endpoint);
        }
        continue;
      }
      const entry = this.decode(key, event.kv.value);
      if (old && entry && old.value === entry.value) continue;
      if (old) {
        this.entries.delete(key);
        removed.push(old.endpoint);
      }
      if (entry) {
        this.entries.set(key, entry);
        added.push(entry.endpoint);
      }
    }
    if (added.length > 0 || removed.length > 0) this.applied(added, removed, 'change');
  }

  onLost(reason: string): void {
    void this.resync(reason);
  }

  /** Reads the prefix again and restarts the watch; retried until it works or the view closes. */
  async resync(reason: string): Promise<void> {
    if (this.closed || this.resyncing || !this.synced) return;
    this.resyncing = true;
    this.stream.remove(this);
    debug('%s resync: %s', this.service, reason);
    const backoff = cappedBackoff();
    let step = backoff.next();
    try {
      for (;;) {
        try {
          await this.load('resync');
          return;
        } catch (e) {
          if (this.closed) return;
          debug('%s resync failed, retrying in %d ms: %s', this.service, step.duration, (e as Error).message);
          if (!isUnreachableError(e)) this.hooks.onError(toRegistryError(e, `re-read the endpoints of service "${this.service}"`));
          await delay(step.duration, this.conn.signal);
          step = step.next(undefined);
        }
      }
    } catch {
      // closed while waiting
    } finally {
      this.resyncing = false;
    }
  }

  private decode(key: string, value: Buffer): Entry | undefined {
    const result = decodeEndpoint(this.service, this.prefix, key, value);
    if (result.ok) return { endpoint: Object.freeze({ ...result.endpoint, metadata: Object.freeze(result.endpoint.metadata) }), value: value.toString() };
    this.invalidCount++;
    debug('%s: skipping %s: %s', this.service, key, result.reason);
    this.hooks.onInvalid({ service: this.service, key, reason: result.reason });
    return undefined;
  }

  private applied(added: Endpoint[], removed: Endpoint[], kind: ChangeKind): void {
    this.snapshot = undefined;
    for (const picker of this.pickers.values()) picker.update(added, removed);
    this.hooks.onChange(this, added, removed, kind);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream.remove(this);
  }
}
