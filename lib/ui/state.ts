/**
 * What the web view shows, kept in step with etcd by lib/ui/source.ts and read
 * by lib/ui/sse.ts: every endpoint with its lease and when the view first saw
 * it, per-service counts and last change, a bounded feed of registrations and
 * deregistrations, etcd's reachability and the revision the view is at.
 *
 * Changes are collected into a pending delta that the SSE feed takes (and
 * broadcasts) on its own schedule, so a burst of 10,000 events is one message,
 * not 10,000. Plain data only: the page renders every value as text.
 */

/** One endpoint as the page gets it. */
export interface EndpointRow {
  readonly key: string;
  readonly service: string;
  readonly address: string;
  /** The metadata as JSON on one line (shown as text). */
  readonly metadata: string;
  /** Lease id as 16 hex digits (as etcdctl prints it); '' for a key without lease. */
  readonly lease: string;
  readonly createRevision: number;
  readonly modRevision: number;
  /** When the view first saw the key (ms since epoch); for keys present at the start, the start. */
  readonly since: number;
  /** True when the key was already there when the view started: its real age is unknown (at least `now - since`). */
  readonly atStart: boolean;
}

export interface ServiceRow {
  readonly name: string;
  readonly count: number;
  /** The last registration or deregistration the view saw (ms since epoch); null: none since the start. */
  readonly lastChange: number | null;
}

export type FeedChange = 'registered' | 'deregistered' | 'updated';

export interface FeedEntry {
  readonly time: number;
  readonly change: FeedChange;
  readonly service: string;
  readonly address: string;
  /** True when the change was found by re-reading the prefix (missed while the watch was down), not from a watch event. */
  readonly resync: boolean;
}

export interface Status {
  readonly reachable: boolean;
  /** Why etcd is unreachable, when it is. */
  readonly error: string | null;
  /** Since when `reachable` has been what it is (ms since epoch). */
  readonly since: number;
  /** The store revision the view is at. */
  readonly revision: number;
  /** Records under the prefix that are not valid endpoints (skipped). */
  readonly skipped: number;
}

export interface Snapshot {
  readonly now: number;
  readonly startedAt: number;
  readonly prefix: string;
  readonly etcd: string;
  readonly status: Status;
  readonly services: readonly ServiceRow[];
  readonly endpoints: readonly EndpointRow[];
  readonly feed: readonly FeedEntry[];
}

export interface Delta {
  readonly upserts: readonly EndpointRow[];
  /** Keys removed. */
  readonly removals: readonly string[];
  /** Services whose count or last change moved; a count of 0 means the service is gone. */
  readonly services: readonly ServiceRow[];
  readonly feed: readonly FeedEntry[];
}

/** Entries kept in the feed. */
export const FEED_LENGTH = 200;

export class ViewState {
  readonly startedAt = Date.now();
  private readonly rows = new Map<string, EndpointRow>();
  private readonly services = new Map<string, { count: number; lastChange: number | null }>();
  private readonly feed: FeedEntry[] = [];
  private readonly skippedKeys = new Set<string>();
  private status: Omit<Status, 'skipped'> = { reachable: true, error: null, since: Date.now(), revision: 0 };
  private pending = { upserts: new Map<string, EndpointRow>(), removals: new Set<string>(), services: new Set<string>(), feed: [] as FeedEntry[] };
  private statusChanged = false;
  /** Distinct leases in use, with how many keys each holds. */
  private readonly leaseUse = new Map<string, number>();
  private loaded = false;

  constructor(
    readonly prefix: string,
    readonly etcd: string,
  ) {}

  get size(): number {
    return this.rows.size;
  }

  get isLoaded(): boolean {
    return this.loaded;
  }

  /** The leases of the endpoints currently shown (hex ids). */
  leases(): IterableIterator<string> {
    return this.leaseUse.keys();
  }

  get(key: string): EndpointRow | undefined {
    return this.rows.get(key);
  }

  /**
   * Replaces everything with a fresh read of the prefix. The first load is not a
   * change; later ones (a resync) report what appeared and vanished meanwhile.
   */
  replaceAll(rows: Iterable<Omit<EndpointRow, 'since' | 'atStart'>>, skipped: Iterable<string>, revision: number): void {
    const first = !this.loaded;
    const now = Date.now();
    const fresh = new Map<string, Omit<EndpointRow, 'since' | 'atStart'>>();
    for (const row of rows) fresh.set(row.key, row);
    for (const key of [...this.rows.keys()]) if (!fresh.has(key)) this.remove(key, now, true);
    for (const row of fresh.values()) this.put(row, now, first, true);
    this.skippedKeys.clear();
    for (const key of skipped) this.skippedKeys.add(key);
    this.loaded = true;
    this.setRevision(revision);
    this.statusChanged = true;
  }

  /** A put seen by the watch: a valid endpoint, or (row undefined) an unusable record replacing whatever the key held. */
  put(row: Omit<EndpointRow, 'since' | 'atStart'>, now = Date.now(), atStart = false, resync = false): void {
    this.skippedKeys.delete(row.key);
    const before = this.rows.get(row.key);
    if (before && before.metadata === row.metadata && before.lease === row.lease && before.address === row.address && before.modRevision === row.modRevision) return;
    // A key written again keeps its age: same key, same endpoint, new value.
    const next: EndpointRow = { ...row, since: before?.since ?? (atStart ? this.startedAt : now), atStart: before?.atStart ?? atStart };
    this.rows.set(row.key, next);
    if (before) this.unuseLease(before.lease);
    this.useLease(next.lease);
    this.pending.removals.delete(row.key);
    this.pending.upserts.set(row.key, next);
    if (!before) this.touchService(row.service, 1, atStart ? null : now);
    if (!atStart && (!before || before.metadata !== row.metadata || before.address !== row.address)) {
      this.addFeed({ time: now, change: before ? 'updated' : 'registered', service: row.service, address: row.address, resync });
    }
  }

  /** A put of a record that is not a valid endpoint. */
  skip(key: string, now = Date.now()): void {
    this.remove(key, now);
    if (!this.skippedKeys.has(key)) {
      this.skippedKeys.add(key);
      this.statusChanged = true;
    }
  }

  remove(key: string, now = Date.now(), resync = false): void {
    if (this.skippedKeys.delete(key)) this.statusChanged = true;
    const before = this.rows.get(key);
    if (!before) return;
    this.rows.delete(key);
    this.unuseLease(before.lease);
    this.pending.upserts.delete(key);
    this.pending.removals.add(key);
    this.touchService(before.service, -1, now);
    this.addFeed({ time: now, change: 'deregistered', service: before.service, address: before.address, resync });
  }

  setReachable(reachable: boolean, error?: string): void {
    if (reachable === this.status.reachable && (reachable || error === this.status.error)) return;
    this.status = { ...this.status, reachable, error: reachable ? null : (error ?? 'unknown error'), since: reachable === this.status.reachable ? this.status.since : Date.now() };
    this.statusChanged = true;
  }

  setRevision(revision: number): void {
    if (revision <= this.status.revision) return;
    this.status = { ...this.status, revision };
    this.statusChanged = true;
  }

  currentStatus(): Status {
    return { ...this.status, skipped: this.skippedKeys.size };
  }

  snapshot(): Snapshot {
    return {
      now: Date.now(),
      startedAt: this.startedAt,
      prefix: this.prefix,
      etcd: this.etcd,
      status: this.currentStatus(),
      services: [...this.services].map(([name, s]) => ({ name, count: s.count, lastChange: s.lastChange })),
      endpoints: [...this.rows.values()],
      feed: [...this.feed],
    };
  }

  /** What changed since the last call (undefined: nothing), and whether the status moved. */
  takeDelta(): { delta: Delta | undefined; status: Status | undefined } {
    const p = this.pending;
    const empty = p.upserts.size === 0 && p.removals.size === 0 && p.services.size === 0 && p.feed.length === 0;
    const delta: Delta | undefined = empty
      ? undefined
      : {
          upserts: [...p.upserts.values()],
          removals: [...p.removals],
          services: [...p.services].map((name) => {
            const s = this.services.get(name);
            return { name, count: s?.count ?? 0, lastChange: s?.lastChange ?? null };
          }),
          feed: p.feed,
        };
    if (!empty) this.pending = { upserts: new Map(), removals: new Set(), services: new Set(), feed: [] };
    const status = this.statusChanged ? this.currentStatus() : undefined;
    this.statusChanged = false;
    return { delta, status };
  }

  private touchService(name: string, by: number, when: number | null): void {
    const s = this.services.get(name) ?? { count: 0, lastChange: null };
    s.count += by;
    if (when !== null) s.lastChange = when;
    if (s.count <= 0) this.services.delete(name);
    else this.services.set(name, s);
    this.pending.services.add(name);
  }

  private addFeed(entry: FeedEntry): void {
    this.feed.push(entry);
    if (this.feed.length > FEED_LENGTH) this.feed.splice(0, this.feed.length - FEED_LENGTH);
    this.pending.feed.push(entry);
    if (this.pending.feed.length > FEED_LENGTH) this.pending.feed.splice(0, this.pending.feed.length - FEED_LENGTH);
  }

  private useLease(lease: string): void {
    if (lease !== '') this.leaseUse.set(lease, (this.leaseUse.get(lease) ?? 0) + 1);
  }

  private unuseLease(lease: string): void {
    if (lease === '') return;
    const n = (this.leaseUse.get(lease) ?? 1) - 1;
    if (n <= 0) this.leaseUse.delete(lease);
    else this.leaseUse.set(lease, n);
  }
}
