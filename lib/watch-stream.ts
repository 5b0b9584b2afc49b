/**
 * One etcd watch stream shared by every watch of a registry, written against
 * etcd's own protocol rather than etcd3's Watcher (which drops a watcher for
 * good after a compaction, resumes from a header revision that may be ahead of
 * the events delivered, and crashes on progress responses).
 *
 * - Each watch carries its own `nextRevision`, advanced only by events it
 *   received (and by progress notifications, which etcd sends only when synced),
 *   so a reconnect resumes exactly where it left off.
 * - Watch ids are chosen by the client (etcd ≥ 3.4), so responses match without
 *   relying on creation order.
 * - A progress request with a deadline is the stream's own heartbeat: a stream
 *   that stops answering is torn down and the client rebuilt.
 * - When etcd cancels a watch (compacted revision, permission), its owner is told
 *   through `onLost` and must re-read and add it again. etcd 3.4 answers a create
 *   it refuses with watch id -1, so creates are matched to answers in order too.
 *   A refusal for permission also reopens the stream: the stream keeps the auth
 *   token it was opened with, which etcd forgets when it restarts.
 */
import type { FilterType, IDuplexStream, IEvent, IWatchRequest, IWatchResponse } from 'etcd3';
import { cappedBackoff } from './backoff';
import { watchRefusal, type Connection } from './connection';
import { logger } from './log';

const debug = logger('watch');

/** etcd's id for a progress response that covers every watch on the stream. */
const ALL_WATCHES = -1;

export interface WatchTarget {
  /** For logs. */
  readonly name: string;
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  readonly filters?: FilterType[];
  /** The revision the watch starts (or resumes) from. */
  nextRevision: number;
  onEvents(events: IEvent[]): void;
  /** etcd ended this watch; it is no longer on the stream. */
  onLost(reason: string, compacted: boolean): void;
}

export class WatchStream {
  private readonly conn: Connection;
  private readonly ids = new Map<WatchTarget, number>();
  private readonly targets = new Map<number, WatchTarget>();
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | undefined;
  private opening = false;
  private generation = -1;
  private nextId = 1;
  /** Ids of the creates sent on the current stream and not answered yet, in order. */
  private pendingCreates: number[] = [];
  private backoff = cappedBackoff().next();
  private reopenTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private pingSentAt = 0;
  private closed = false;

  constructor(conn: Connection, private readonly onError: (e: Error) => void) {
    this.conn = conn;
    conn.on('rebuilt', this.onRebuilt);
  }

  add(target: WatchTarget): void {
    if (this.closed || this.ids.has(target)) return;
    const id = this.nextId++;
    this.ids.set(target, id);
    this.targets.set(id, target);
    if (this.stream) this.create(id, target);
    else this.open();
  }

  remove(target: WatchTarget): void {
    const id = this.ids.get(target);
    if (id === undefined) return;
    this.ids.delete(target);
    this.targets.delete(id);
    this.write({ cancel_request: { watch_id: id } });
    if (this.targets.size === 0) this.teardown('no watches left');
  }

  get size(): number {
    return this.targets.size;
  }

  private onRebuilt = (): void => {
    if (this.stream && this.generation !== this.conn.generation) this.broken(new Error('client rebuilt'), 0);
  };

  private open(): void {
    if (this.closed || this.opening || this.stream || this.targets.size === 0) return;
    this.opening = true;
    const generation = this.conn.generation;
    this.conn.client.watchClient
      .watch()
      .then((stream) => {
        this.opening = false;
        if (this.closed || this.targets.size === 0 || generation !== this.conn.generation) {
          stream.cancel();
          if (!this.closed) this.open();
          return;
        }
        this.stream = stream;
        this.generation = generation;
        stream.on('data', (res) => this.onResponse(stream, res));
        stream.on('error', (err) => this.onStreamEnd(stream, err));
        stream.on('end', () => this.onStreamEnd(stream, new Error('watch stream ended')));
        debug('stream open (generation %d), %d watch(es)', generation, this.targets.size);
        for (const [id, target] of this.targets) this.create(id, target);
        this.startPing();
      })
      .catch((err: Error) => {
        this.opening = false;
        this.scheduleReopen(err);
      });
  }

  private create(id: number, target: WatchTarget): void {
    debug('watch %d %s from revision %d', id, target.name, target.nextRevision);
    if (this.stream) this.pendingCreates.push(id);
    this.write({
      create_request: {
        key: target.key,
        range_end: target.rangeEnd,
        start_revision: target.nextRevision,
        watch_id: id,
        filters: target.filters,
        progress_notify: true,
      },
    });
  }

  private write(req: IWatchRequest): void {
    try {
      this.stream?.write(req);
    } catch (e) {
      this.broken(e as Error);
    }
  }

  private onResponse(stream: IDuplexStream<IWatchRequest, IWatchResponse>, res: IWatchResponse): void {
    if (stream !== this.stream) return;
    this.pingSentAt = 0;
    this.backoff = cappedBackoff().next();
    this.conn.checkHeader(res.header, false);
    let id = Number(res.watch_id);
    const revision = Number(res.header.revision);
    if (res.created) {
      // etcd answers creates in order; 3.4 answers one it refused with id -1.
      const i = id === ALL_WATCHES ? 0 : this.pendingCreates.indexOf(id);
      const [created] = i >= 0 ? this.pendingCreates.splice(i, 1) : [];
      if (id === ALL_WATCHES && res.canceled && created !== undefined) id = created;
    }
    if (id === ALL_WATCHES) {
      for (const target of this.targets.values()) target.nextRevision = Math.max(target.nextRevision, revision + 1);
      return;
    }
    const target = this.targets.get(id);
    if (!target) return; // removed while the response was in flight
    if (res.canceled) {
      this.targets.delete(id);
      this.ids.delete(target);
      const compacted = Number(res.compact_revision) > 0;
      const reason = compacted
        ? `revision ${target.nextRevision} was compacted (etcd keeps history from ${res.compact_revision})`
        : res.cancel_reason || 'canceled by etcd';
      debug('watch %d %s lost: %s', id, target.name, reason);
      this.guard(() => target.onLost(reason, compacted));
      if (!compacted && watchRefusal(reason) !== undefined) this.broken(new Error(`etcd refused watch ${target.name}: ${reason}`));
      return;
    }
    if (res.created) {
      // A watch resumed from revision N on an etcd whose history ends before N-1:
      // the events we saw are not in this etcd's history any more.
      if (revision < target.nextRevision - 1) {
        this.conn.reportReset(`watch ${target.name} resumed at revision ${target.nextRevision}, but etcd is at ${revision}`);
      }
      return;
    }
    if (res.events.length > 0) {
      target.nextRevision = Number(res.events[res.events.length - 1]!.kv.mod_revision) + 1;
      this.guard(() => target.onEvents(res.events));
    } else {
      target.nextRevision = Math.max(target.nextRevision, revision + 1);
    }
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.onError(e as Error);
    }
  }

  private onStreamEnd(stream: IDuplexStream<IWatchRequest, IWatchResponse>, err: Error): void {
    if (stream === this.stream) this.broken(err);
  }

  /** Drops the stream and reopens it (after `delayMs`, by default the next backoff step). */
  private broken(err: Error, delayMs?: number): void {
    this.teardown(err.message);
    if (!this.closed && this.targets.size > 0) this.scheduleReopen(err, delayMs);
  }

  private teardown(reason: string): void {
    const stream = this.stream;
    this.stream = undefined;
    this.pendingCreates = [];
    this.stopPing();
    if (stream) {
      debug('stream closed: %s', reason);
      try {
        stream.cancel();
      } catch {
        // already gone
      }
    }
  }

  private scheduleReopen(err: Error, delayMs?: number): void {
    if (this.closed || this.reopenTimer) return;
    const wait = delayMs ?? this.backoff.duration;
    this.backoff = this.backoff.next(undefined);
    debug('reopening the stream in %d ms after: %s', wait, err.message);
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = undefined;
      this.open();
    }, wait);
    this.reopenTimer.unref();
  }

  private startPing(): void {
    this.stopPing();
    const timeout = this.conn.requestTimeoutMs;
    this.pingTimer = setInterval(() => {
      if (!this.stream) return;
      if (this.pingSentAt !== 0 && Date.now() - this.pingSentAt >= timeout) {
        debug('no answer to a progress request within %d ms: stream is dead', timeout);
        this.conn.markUnreachable(new Error('watch stream stopped answering'));
        this.conn.rebuild('watch stream stopped answering');
        this.broken(new Error('watch stream stopped answering'));
        return;
      }
      if (this.pingSentAt === 0) {
        this.pingSentAt = Date.now();
        this.write({ progress_request: {} });
      }
    }, timeout);
    this.pingTimer.unref();
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    this.pingSentAt = 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.off('rebuilt', this.onRebuilt);
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.teardown('closed');
    this.targets.clear();
    this.ids.clear();
  }
}
