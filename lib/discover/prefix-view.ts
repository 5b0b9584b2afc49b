/**
 * Keeps ServiceLists in step with etcd for one key prefix: one service's
 * (`$PREFIX/services/web/`) or every service's (`$PREFIX/services/`).
 *
 * One range read at revision R, then a watch from R+1, so no change falls
 * between the two. When etcd ends the watch (compacted history) or loses its
 * data, the prefix is read again, the lists replaced, and exactly what was
 * added and removed meanwhile reported. While the view is open it always has a
 * working watch or is retrying to get one. Every read goes through the
 * registry's Limiter: a reset re-reads many views a few at a time.
 */
import { EtcdPermissionDeniedError, Range, type IEvent } from 'etcd3';
import type { RangeKeyValue } from '../etcd/wire';
import { cappedBackoff } from '../backoff';
import { type Connection, isUnreachableError, watchRefusal } from '../etcd/connection';
import { RegistryClosedError, quote } from '../errors';
import { SERVICE_NAME_PATTERN, canonicalValue, decodeEndpoint, type KeySpace, type ReadContext } from '../keys';
import { logger } from '../log';
import { readPrefix } from '../etcd/read-prefix';
import type { Limiter } from './limiter';
import type { ListEntry, ServiceList } from './service-list';
import { delay } from '../time';
import type { Endpoint, InvalidEndpointEvent } from '../types';
import type { WatchStream, WatchTarget } from '../etcd/watch-stream';

const debug = logger('view');

/** Longest wait between attempts to watch a prefix that etcd refused for permission. */
export const DENIED_WATCH_MAX_DELAY_MS = 10_000;
/** Keys that are not valid UTF-8 cannot be told apart once decoded: they are skipped. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** 'initial': the first fill of a list, not reported as a change. */
export type ChangeKind = 'initial' | 'change' | 'resync';

export interface ViewHooks {
  /** The list for a service, created if needed. */
  list(service: string): ServiceList;
  /** Every list this view covers (for a whole-registry view, all of them). */
  lists(): Iterable<ServiceList>;
  onChange(list: ServiceList, added: readonly Endpoint[], removed: readonly Endpoint[], kind: ChangeKind): void;
  onInvalid(event: InvalidEndpointEvent): void;
  /** The prefix was read again (compaction, data loss, a refused watch): for metrics. */
  onResynced(reason: string): void;
  onError(error: Error): void;
}

/** What one read found for one list, in key order. */
interface Fill {
  readonly keys: string[];
  readonly entries: ListEntry[];
}

/** The service of the last key located during one read (fill undefined before the first). */
interface LastService {
  prefix: string;
  service: string;
  fill: Fill | undefined;
}

/**
 * A value read in the canonical form keeps only its metadata text (shared by the endpoints
 * whose metadata is the same); the value is spelled again on the rare comparison.
 */
class CanonicalEntry implements ListEntry {
  constructor(
    readonly endpoint: Endpoint,
    private readonly metadataText: string,
  ) {}

  get value(): string {
    return canonicalValue(this.endpoint.address, this.metadataText);
  }
}

interface Batch {
  readonly list: ServiceList;
  readonly added: Endpoint[];
  readonly removed: Endpoint[];
}

export class PrefixView implements WatchTarget {
  readonly name: string;
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  nextRevision = 0;
  /** Records skipped because they could not be used. */
  invalidCount = 0;
  private readonly prefix: string;
  private initial: Promise<void> | undefined;
  private synced = false;
  private resyncing = false;
  private closed = false;
  /** Backoff between watches refused for permission, and when the last refusal came. */
  private denied = cappedBackoff(DENIED_WATCH_MAX_DELAY_MS).next();
  private lastDenial = Number.NEGATIVE_INFINITY;
  /** Ends the first sync's wait for the watch's create (see watchCreated()). */
  private watching: (() => void) | undefined;

  /** `service` undefined: the view covers every service under the key space's root. */
  constructor(
    private readonly keys: KeySpace,
    readonly service: string | undefined,
    private readonly conn: Connection,
    private readonly stream: WatchStream,
    private readonly hooks: ViewHooks,
    private readonly limiter: Limiter,
  ) {
    this.prefix = service === undefined ? keys.root : keys.servicePrefix(service);
    this.name = service === undefined ? 'all services' : `service ${service}`;
    const range = Range.prefix(this.prefix);
    this.key = range.start;
    this.rangeEnd = range.end;
  }

  get isSynced(): boolean {
    return this.synced;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Synced, and its watch on the stream: `nextRevision` is exactly where its lists stand. */
  get isWatching(): boolean {
    return this.synced && !this.resyncing && !this.closed;
  }

  /**
   * Takes over lists that another view kept up to date until `nextRevision` - 1
   * (the whole-registry view handing services over): watches from there, no read.
   */
  adopt(nextRevision: number): void {
    if (this.closed || this.synced) return;
    this.nextRevision = nextRevision;
    this.synced = true;
    this.initial = Promise.resolve();
    this.stream.add(this);
    debug('%s adopted at revision %d', this.name, nextRevision);
  }

  /** The first read and watch; concurrent callers share it, a failure lets the next call try again. */
  sync(): Promise<void> {
    if (this.closed) return Promise.reject(new RegistryClosedError('endpoints'));
    // The wait for the watch's create is not the read's: it holds no place in the limiter.
    this.initial ??= this.limiter.run(() => this.load('initial')).then(({ created }) => created).catch((e: unknown) => {
      this.initial = undefined;
      throw this.conn.error(e, `read the prefix ${quote(this.prefix)}`);
    });
    return this.initial;
  }

  /**
   * Reads the whole prefix, replaces the lists with it and (re)starts the watch after it.
   * The first load gives the wait for the watch's create (see watchCreated()), in an object
   * so that the load's own promise does not take it over.
   */
  private async load(kind: ChangeKind): Promise<{ created?: Promise<void> }> {
    if (this.closed) throw new RegistryClosedError('endpoints');
    const fresh = new Map<ServiceList, Fill>();
    for (const list of this.hooks.lists()) fresh.set(list, { keys: [], entries: [] });
    const last: LastService = { prefix: '', service: '', fill: undefined };
    const context: ReadContext = { metadata: new Map(), metadataText: undefined };
    // Each page is decoded as it arrives, while the next one is on its way.
    const snapshot = await readPrefix(this.conn, this.prefix, (kvs) => this.decodePage(kvs, fresh, last, context));
    // Closed while reading: nothing was applied, and the caller must not take the lists as read.
    if (this.closed) throw new RegistryClosedError('endpoints');
    let total = 0;
    const batches: Batch[] = [];
    for (const [list, fill] of fresh) {
      const batch: Batch = { list, added: [], removed: [] };
      if (list.size > 0) {
        // One read never holds a key twice: what the list has and the read has not was deleted.
        const read = new Set(fill.keys);
        for (const key of list.keys()) if (!read.has(key)) list.set(key, undefined, batch.added, batch.removed);
      }
      list.setAll(fill.keys, fill.entries, batch.added, batch.removed);
      total += fill.keys.length;
      batches.push(batch);
    }
    this.nextRevision = snapshot.revision + 1;
    this.synced = true;
    const created = kind === 'initial' && !this.stream.onMember ? this.watchCreated() : undefined;
    this.stream.add(this);
    debug('%s read at revision %d: %d endpoint(s)', this.name, snapshot.revision, total);
    for (const batch of batches) this.commit(batch, batch.list.synced ? kind : 'initial');
    return { created };
  }

  /**
   * The first sync resolves once the watch's create was answered (within a request timeout;
   * past it, the list is read and the watch catches up from its revision when it comes),
   * unless the stream is known to reach a member. A change that follows then reaches this
   * client through the watch a grpc-proxy holds on etcd for the range. A create that reached
   * the proxy after a change had moved that watch on needed one of its own, from its older
   * revision; the creates right behind it joined that one, and the proxy never merges a watch
   * of five clients or more into another (figure 9).
   */
  private watchCreated(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.watching?.(), this.conn.requestTimeoutMs);
      timer.unref();
      this.watching = () => {
        clearTimeout(timer);
        this.watching = undefined;
        resolve();
      };
    });
  }

  onCreated(): void {
    this.watching?.();
  }

  onEvents(events: IEvent[]): void {
    if (this.closed) return;
    const n = events.length;
    const keys = events.map((event) => keyString(event.kv, (event.kv as RangeKeyValue).keyText?.()));
    // Only the last event of a key counts: a response that catches a watch up can hold a key
    // put and deleted again, which the list never held (and its pickers must not get).
    let last: Map<string, number> | undefined;
    if (n > 1) {
      last = new Map();
      for (let i = 0; i < n; i++) if (keys[i] !== undefined) last.set(keys[i]!, i);
    }
    const batches = new Map<ServiceList, Batch>();
    for (let i = 0; i < n; i++) {
      const event = events[i]!;
      const key = keys[i];
      if (last !== undefined && key !== undefined && last.get(key) !== i) continue;
      // A deleted key that has no place here was skipped (and reported) when it was put.
      const decoded = event.type === 'Delete' ? key !== undefined && this.locate(key, false) : this.decode(event.kv, key);
      if (!decoded) continue;
      let batch = batches.get(decoded.list);
      if (!batch) batches.set(decoded.list, (batch = { list: decoded.list, added: [], removed: [] }));
      decoded.list.set(decoded.key, 'entry' in decoded ? decoded.entry : undefined, batch.added, batch.removed);
    }
    for (const batch of batches.values()) this.commit(batch, 'change');
  }

  onLost(reason: string): void {
    this.watching?.();
    const refusal = watchRefusal(reason);
    if (refusal === undefined) {
      void this.resync(reason);
      return;
    }
    // etcd refused the watch: try again later, with backoff. A missing permission is the
    // operator's to fix (say so); a stale auth token heals on the reopened stream.
    if (performance.now() - this.lastDenial > 6 * DENIED_WATCH_MAX_DELAY_MS) this.denied = cappedBackoff(DENIED_WATCH_MAX_DELAY_MS).next();
    this.lastDenial = performance.now();
    const wait = Math.round(this.denied.duration);
    this.denied = this.denied.next(undefined);
    if (refusal === 'permission') {
      this.hooks.onError(this.conn.error(new EtcdPermissionDeniedError(reason), `watch the prefix ${quote(this.prefix)} (retrying in ${wait} ms)`));
    }
    void this.resync(reason, wait);
  }

  /** Reads the prefix again (after `delayMs`) and restarts the watch; retried until it works or the view closes. */
  async resync(reason: string, delayMs = 0): Promise<void> {
    if (this.closed || this.resyncing || !this.synced) return;
    this.resyncing = true;
    this.stream.remove(this);
    debug('%s resync: %s', this.name, reason);
    let step = cappedBackoff().next();
    try {
      if (delayMs > 0) await delay(delayMs, this.conn.signal);
      for (;;) {
        try {
          await this.limiter.run(() => this.load('resync'));
          this.hooks.onResynced(reason);
          return;
        } catch (e) {
          if (this.closed) return;
          debug('%s resync failed, retrying in %d ms: %s', this.name, step.duration, (e as Error).message);
          if (!isUnreachableError(e)) this.hooks.onError(this.conn.error(e, `re-read the prefix ${quote(this.prefix)}`));
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

  /** The list a key belongs to, or undefined (reported as invalid if `report`) when the key has no place. */
  private locate(key: string, report = true): { list: ServiceList; key: string; service: string } | undefined {
    let service = this.service;
    if (service === undefined) {
      service = this.keys.serviceOf(key);
      if (service === undefined || !SERVICE_NAME_PATTERN.test(service)) {
        if (report) this.invalid(service ?? '', key, 'key is not $PREFIX/services/$SERVICE/$ENDPOINT with a valid service name');
        return undefined;
      }
    }
    return { list: this.hooks.list(service), key, service };
  }

  /** A put's record; `key`: its key as text (undefined: not valid UTF-8). */
  private decode(kv: RangeKeyValue, key: string | undefined): { list: ServiceList; key: string; entry: ListEntry | undefined } | undefined {
    if (key === undefined) {
      this.invalid(this.service ?? '', kv.key.toString(), 'key is not valid UTF-8');
      return undefined;
    }
    const located = this.locate(key);
    if (!located) return undefined;
    const value = kv.value.toString();
    const result = decodeEndpoint(located.service, this.keys.servicePrefix(located.service), key, value);
    if (result.ok) return { list: located.list, key, entry: { endpoint: result.endpoint, value } };
    this.invalid(located.service, key, result.reason);
    // An unusable record replaces whatever the key held before.
    return { list: located.list, key, entry: undefined };
  }

  /**
   * decode() for one page of a read, into `fresh`: keys arrive sorted, so one service's keys
   * are consecutive and its list, prefix and name are looked up once per run of them (every
   * endpoint of a service shares one service string); metadata is shared through `context`.
   */
  private decodePage(kvs: RangeKeyValue[], fresh: Map<ServiceList, Fill>, last: LastService, context: ReadContext): void {
    // Closed while the read went on: its pages must not make lists for nobody.
    if (this.closed) return;
    for (const kv of kvs) {
      // A page's key as text straight from the answer's bytes (a Buffer of it only if it is not valid UTF-8).
      const key = keyString(kv, kv.keyText?.());
      if (key === undefined) {
        this.invalid(this.service ?? '', kv.key.toString(), 'key is not valid UTF-8');
        continue;
      }
      if (last.fill === undefined || !key.startsWith(last.prefix)) {
        const located = this.locate(key);
        if (!located) continue;
        last.service = located.service;
        last.prefix = this.keys.servicePrefix(located.service);
        let fill = fresh.get(located.list);
        if (!fill) fresh.set(located.list, (fill = { keys: [], entries: [] }));
        last.fill = fill;
      }
      const result = decodeEndpoint(last.service, last.prefix, key, kv.value, context);
      if (!result.ok) {
        // Unusable: left out of the read, so it replaces whatever the key held before.
        this.invalid(last.service, key, result.reason);
        continue;
      }
      last.fill.keys.push(key);
      const text = context.metadataText;
      last.fill.entries.push(text === undefined ? { endpoint: result.endpoint, value: kv.value.toString() } : new CanonicalEntry(result.endpoint, text));
    }
  }

  private invalid(service: string, key: string, reason: string): void {
    this.invalidCount++;
    debug('%s: skipping %s: %s', this.name, key, reason);
    this.hooks.onInvalid({ service, key, reason });
  }

  /** Events on a list of a synced view are changes, whether or not the list existed before. */
  private commit(batch: Batch, kind: ChangeKind): void {
    batch.list.synced = true;
    batch.list.stale = false;
    batch.list.commit(batch.added, batch.removed);
    this.hooks.onChange(batch.list, batch.added, batch.removed, kind);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream.remove(this);
    this.watching?.();
  }
}

/**
 * The key as a string, or undefined when its bytes are not valid UTF-8. Invalid bytes
 * decode to U+FFFD: a key without one was valid (only one with it needs the strict decoder).
 */
function keyString(kv: { readonly key: Buffer }, text?: string): string | undefined {
  text ??= kv.key.toString('utf8');
  if (!text.includes('\uFFFD')) return text;
  try {
    return utf8.decode(kv.key);
  } catch {
    return undefined;
  }
}
