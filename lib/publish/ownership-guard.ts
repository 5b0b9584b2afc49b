/**
 * Watches the services this registry publishes in, so that a key of ours that
 * someone else deletes is put back, and a write of ours that etcd applied late
 * (sent before an outage, timed out here, applied when etcd came back: after a
 * newer write, or after the key was given up) is undone.
 *
 * A service's watch starts after a confirmed write of its keys, from that
 * write's revision on: no delete can fall between the write and the watch.
 * When etcd ends the watch, the keeper writes the service's keys again and the
 * watch restarts after that write; a watch refused for permission is retried
 * with backoff, and a missing permission is reported.
 */
import { EtcdPermissionDeniedError, Range, type IEvent } from 'etcd3';
import { cappedBackoff } from '../backoff';
import { type Connection, watchRefusal } from '../etcd/connection';
import { quote } from '../errors';
import type { KeySpace } from '../keys';
import { logger } from '../log';
import type { WatchStream, WatchTarget } from '../etcd/watch-stream';

const debug = logger('lease');

export interface OwnershipHooks {
  /** `key` was deleted at `revision`. */
  deleted(key: string, revision: number): void;
  /** `key` was put at `revision` with `value` on `lease`. */
  put(key: string, revision: number, value: Buffer, lease: string): void;
  /** The service's watch ended: write its keys again, then call watchFrom(). */
  restart(service: string): void;
  error(error: Error): void;
}

export class OwnershipGuard {
  private readonly watches = new Map<string, WatchTarget>();
  /** Services whose watch must (re)start after their keys were written. */
  private readonly pending = new Set<string>();
  /** Backoff between watches refused for permission, and when the last refusal came. */
  private denied = cappedBackoff(10_000).next();
  private lastDenial = Number.NEGATIVE_INFINITY;
  private closed = false;

  constructor(
    private readonly conn: Connection,
    private readonly stream: WatchStream,
    private readonly keys: KeySpace,
    private readonly hooks: OwnershipHooks,
  ) {}

  /** Keys of `service` were written at `revision`: watch from there, unless already watching. */
  watchFrom(service: string, revision: number): void {
    if (this.closed || (this.watches.has(service) && !this.pending.has(service))) return;
    this.pending.delete(service);
    let target = this.watches.get(service);
    if (!target) {
      const range = Range.prefix(this.keys.servicePrefix(service));
      target = {
        name: `own keys of ${service}`,
        key: range.start,
        rangeEnd: range.end,
        nextRevision: revision + 1,
        onEvents: (events) => this.onEvents(events),
        onLost: (reason) => (watchRefusal(reason) ? this.refused(service, reason) : this.restart(service)),
        // The lease's keepalive stream holds the process anyway, and the next write of the
        // service (its only endpoint registered again) comes soon as often as not.
        linger: true,
      };
      this.watches.set(service, target);
    }
    target.nextRevision = revision + 1;
    this.stream.add(target);
  }

  /**
   * Every watch restarts after the next write of its service's keys: the caller
   * (a new lease, a data loss) has already made every key owed.
   */
  restartAll(): void {
    for (const service of this.watches.keys()) this.stop(service);
  }

  /**
   * This registry keeps nothing in `service` any more, and no put of ours there can
   * still land late: its watch goes (another write of its keys starts it again).
   */
  release(service: string): void {
    const target = this.watches.get(service);
    if (target === undefined) return;
    debug('watch of own keys of %s dropped: nothing of ours is left there', service);
    this.stream.remove(target);
    this.watches.delete(service);
    this.pending.delete(service);
  }

  /** etcd ended the watch: the keeper writes the service's keys again, and it restarts after that write. */
  private restart(service: string): void {
    if (this.closed) return;
    this.stop(service);
    this.hooks.restart(service);
  }

  private stop(service: string): void {
    const target = this.watches.get(service);
    if (target) this.stream.remove(target);
    this.pending.add(service);
  }

  /** etcd refused the watch: a missing permission is reported; a stale auth token heals by itself. */
  private refused(service: string, reason: string): void {
    if (performance.now() - this.lastDenial > 60_000) this.denied = cappedBackoff(10_000).next();
    this.lastDenial = performance.now();
    const wait = Math.round(this.denied.duration);
    this.denied = this.denied.next(undefined);
    const prefix = quote(this.keys.servicePrefix(service));
    if (watchRefusal(reason) === 'permission') {
      this.hooks.error(this.conn.error(new EtcdPermissionDeniedError(reason), `watch the prefix ${prefix} for deletes of its own keys (retrying in ${wait} ms)`));
    } else {
      debug('watch of own keys of %s refused (%s): retrying in %d ms', service, reason, wait);
    }
    setTimeout(() => this.restart(service), wait).unref();
  }

  private onEvents(events: IEvent[]): void {
    if (this.closed) return;
    for (const event of events) {
      const key = event.kv.key.toString();
      const revision = Number(event.kv.mod_revision);
      if (event.type === 'Delete') this.hooks.deleted(key, revision);
      else this.hooks.put(key, revision, event.kv.value, String(event.kv.lease));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const target of this.watches.values()) this.stream.remove(target);
    this.watches.clear();
    this.pending.clear();
  }
}
