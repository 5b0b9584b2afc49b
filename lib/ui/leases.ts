/**
 * Time left on the leases the web view shows, asked of etcd (LeaseTimeToLive)
 * in the background, batched and cached, never per page request or per key:
 *
 * - one call per distinct lease (a process registers all its endpoints on one
 *   lease, so 10,000 endpoints are usually a few hundred leases at most);
 * - only while a page is open (`active`); at most BATCH calls per tick of
 *   TICK_MS, CONCURRENCY at a time: at most BATCH / TICK_MS calls per second to
 *   etcd whatever the number of leases or pages;
 * - leases never asked first, then the stalest; a lease is asked again once
 *   its answer is older than a third of its granted TTL (when its keeper has
 *   renewed it), clamped to [MIN_AGE_MS, MAX_AGE_MS]. In between, the page
 *   counts down from the answer and the time it was given.
 *
 * etcd's answer: TTL -1 means the lease is gone (its keys are about to vanish
 * from the watch). A refusal (a role that may not ask) is cached as unknown.
 */
import type { Connection } from '../etcd/connection';
import { isUnreachableError } from '../etcd/connection';
import { logger } from '../log';

const debug = logger('ui');

export const TICK_MS = 1000;
export const BATCH = 50;
export const CONCURRENCY = 8;
export const MIN_AGE_MS = 2000;
export const MAX_AGE_MS = 30_000;

export interface LeaseTime {
  /** Seconds left when asked; -1: expired; null: etcd would not say. */
  readonly ttl: number | null;
  /** The TTL the lease was granted with (seconds); null when unknown. */
  readonly granted: number | null;
  /** When etcd answered (ms since epoch). */
  readonly at: number;
}

export class LeaseClock {
  private readonly cache = new Map<string, LeaseTime>();
  private readonly changed = new Map<string, LeaseTime>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  /** Calls made so far (for tests and the report). */
  calls = 0;

  constructor(
    private readonly conn: Connection,
    /** The hex ids of the leases the view shows now. */
    private readonly leases: () => Iterable<string>,
    /** Whether a page is open: no page, no calls. */
    private readonly active: () => boolean,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), TICK_MS);
    this.timer.unref();
  }

  /** Every cached answer, for a page that just connected. */
  all(): Record<string, LeaseTime> {
    return Object.fromEntries(this.cache);
  }

  /** The answers that came since the last call. */
  takeChanged(): Record<string, LeaseTime> | undefined {
    if (this.changed.size === 0) return undefined;
    const out = Object.fromEntries(this.changed);
    this.changed.clear();
    return out;
  }

  /** Asks for due leases now (also run by the timer). */
  async tick(now = Date.now()): Promise<void> {
    if (this.busy || !this.active()) return;
    this.busy = true;
    try {
      const wanted = new Set(this.leases());
      for (const lease of this.cache.keys()) if (!wanted.has(lease)) this.cache.delete(lease);
      const due: { lease: string; at: number }[] = [];
      for (const lease of wanted) {
        const known = this.cache.get(lease);
        if (!known) due.push({ lease, at: 0 });
        else if (now - known.at >= maxAge(known)) due.push({ lease, at: known.at });
      }
      if (due.length === 0) return;
      due.sort((a, b) => a.at - b.at);
      const batch = due.slice(0, BATCH);
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < batch.length) {
          const { lease } = batch[next++]!;
          const answer = await this.ask(lease);
          if (answer === 'unreachable') return;
          if (!wanted.has(lease)) continue;
          this.cache.set(lease, answer);
          this.changed.set(lease, answer);
        }
      };
      await Promise.all(Array.from({ length: Math.min(CONCURRENCY, batch.length) }, worker));
    } finally {
      this.busy = false;
    }
  }

  private async ask(lease: string): Promise<LeaseTime | 'unreachable'> {
    this.calls++;
    try {
      const res = await this.conn.call((c) => c.leaseClient.leaseTimeToLive({ ID: BigInt(`0x${lease}`).toString() }));
      const ttl = Number(res.TTL);
      const granted = Number(res.grantedTTL);
      return { ttl: ttl >= 0 ? ttl : -1, granted: granted > 0 ? granted : null, at: Date.now() };
    } catch (e) {
      if (isUnreachableError(e) || this.conn.isClosed) return 'unreachable';
      debug('lease %s: time left unknown: %s', lease, (e as Error).message);
      return { ttl: null, granted: null, at: Date.now() };
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

function maxAge(known: LeaseTime): number {
  if (known.ttl === null || known.granted === null) return MAX_AGE_MS;
  return Math.min(MAX_AGE_MS, Math.max(MIN_AGE_MS, (known.granted * 1000) / 3));
}
