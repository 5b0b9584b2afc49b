/**
 * One etcd watch stream shared by every watch of a registry, written against
 * etcd's own protocol rather than etcd3's Watcher (which drops a watcher for
 * good after a compaction, resumes from a header revision that may be ahead of
 * the events delivered, and crashes on progress responses).
 *
 * - Each watch carries its own `nextRevision`, advanced only by events it
 *   received (and by progress notifications, which etcd sends only when synced),
 *   so a reconnect resumes exactly where it left off.
 * - A watch is created one revision early, at `nextRevision - 1` (a revision
 *   already seen, never in the future), and the events below `nextRevision` are
 *   dropped here: etcd ≥ 3.4.38 / 3.5.22 / 3.6.2 (PR #20229) answers no progress
 *   request while a watch's start revision is in the future, and "snapshot
 *   revision + 1" stays in the future until the next write.
 * - Watch ids are chosen by the client (etcd ≥ 3.4), so responses match without
 *   relying on creation order. etcd's grpc-proxy ignores them and numbers the
 *   watches of a stream itself from 0: once a server answers with an id of its
 *   own, the stream is reopened with one create in flight at a time, and each
 *   answer tells the server's id of that create.
 * - The stream's sign of life is any response on it. After STREAM_CHECK_MS of
 *   silence (at once while a create is unanswered) a progress request asks; when no
 *   response came within a request timeout of it, a canary watch (created, then
 *   cancelled) asks again: etcd answers a create at once whatever its watches'
 *   state, and so does the grpc-proxy, which drops progress requests. Only a
 *   canary left unanswered for a request timeout tears the stream down and
 *   rebuilds the client. A progress answer only fences revisions.
 * - When etcd cancels a watch (compacted revision, permission), its owner is told
 *   through `onLost` and must re-read and add it again. etcd 3.4 answers a create
 *   it refuses with watch id -1, so creates are matched to answers in order too.
 *   A refusal for permission also reopens the stream: the stream keeps the auth
 *   token it was opened with, which etcd forgets when it restarts.
 * - etcd's grpc-proxy groups watches by their exact key and range end, and keeps a
 *   watch etcd ended for a compaction among them, with next revision 1, until every
 *   client in it cancels: every new create of that range fits it, and every watch of
 *   fewer than 5 clients of that range is merged into it at its next answer, all never
 *   to hear of a change again, with no sign of it. So:
 *   - a watch goes out as [key + NUL, range end), a spelling of its range only this
 *     library uses (its first key itself, a prefix ending in `/`, is never a record): a
 *     client that does not cancel such a watch (etcd3 while its stream holds other
 *     watches, an older version of this library) cannot hold one for ours;
 *   - ours cancel a watch as soon as etcd ends it, and after each compaction that ended
 *     it, a watch goes out as [key + NUL, key + 0xFF) (every UTF-8 key of the range: no
 *     UTF-8 text holds the byte 0xFF), then as before again, away from the dead watch a
 *     slower registry's may still hold, and so do the stream's other watches of the
 *     range (see renewJoined());
 *   - a watch of ours that joined such a dead watch anyway (another registry's, while
 *     the clients in it had not cancelled yet) hears nothing: through a grpc-proxy, a
 *     watch that heard nothing for `silenceMs` (etcd sends a progress notification in
 *     each interval, 10 minutes by default, in which it sent the watch no event) is
 *     cancelled and created again, under the other spelling.
 */
import type { FilterType, IDuplexStream, IEvent, IWatchRequest, IWatchResponse } from 'etcd3';
import { cappedBackoff } from '../backoff';
import { watchRefusal, type Connection, type Floor } from './connection';
import { logger } from '../log';

const debug = logger('watch');

/** etcd's id for a progress response that covers every watch on the stream. */
const ALL_WATCHES = -1;
/**
 * Our watch ids start far above the ids a grpc-proxy gives a stream's watches (0, 1, 2…),
 * so that an answer of the proxy cannot be taken for one of ours before the stream
 * notices that the server picks the ids.
 */
const FIRST_ID = 2 ** 31;
/**
 * After this many probes in a row whose progress request went unanswered (a grpc-proxy
 * drops them, logging an error each time), probes start with the canary and a progress
 * request goes out only every PROGRESS_RETRY_PROBES probes.
 */
const PROGRESS_MISSES = 3;
const PROGRESS_RETRY_PROBES = 60;
/**
 * A stream silent this long is asked whether it is still there. Not sooner: the
 * connection's watchdog already notices a member or proxy that stops answering within
 * about two request timeouts, and every probe here is a request to etcd for each client
 * (behind a grpc-proxy, a canary is a watch created and cancelled on etcd). This one is
 * for a stream lost on its own (a connection dropped by a middlebox while idle). A stream
 * with a create not answered yet (a stream just opened, on a connection that may have been
 * made while etcd did not answer) is checked every request timeout, as before.
 */
const STREAM_CHECK_MS = 30_000;
/**
 * A stream whose last watch lingers (WatchTarget.linger: the self-watch of a service) stays
 * open this long with no watch, unchecked, before it is closed: a service's only endpoint
 * registered and unregistered again and again opened a stream each time (about 2 ms of CPU
 * here, and a stream on etcd).
 */
const LINGER_MS = 5_000;
/** The spellings of a watch's range (see the top of the file): key + NUL, and range end key + 0xFF. */
const NUL = Buffer.from([0]);
const FF = Buffer.from([0xff]);

export interface WatchTarget {
  /** For logs. */
  readonly name: string;
  /** The range's first key, never itself a record: the watch may start just after it (see above). */
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  readonly filters?: FilterType[];
  /** The revision the watch starts (or resumes) from. */
  nextRevision: number;
  onEvents(events: IEvent[]): void;
  /** Its create was answered: the watch is on etcd (or on a grpc-proxy's watch on etcd). */
  onCreated?(): void;
  /** etcd ended this watch; it is no longer on the stream. */
  onLost(reason: string, compacted: boolean): void;
  /**
   * The last watch gone, the stream stays open LINGER_MS for the next one (see idle()).
   * For a watch whose owner holds the process anyway: an open stream keeps it from exiting.
   */
  readonly linger?: boolean;
}

/** A create sent on the current stream. */
interface Sent {
  /** undefined: the canary. */
  readonly target: WatchTarget | undefined;
  /** Events below this revision were seen before: the watch starts one revision early. */
  readonly skipBelow: number;
  /** The revision the create asked for. */
  readonly startRevision: number;
  /** Sent before the server was known (a member, or a grpc-proxy that numbers watches itself): from its own revision. */
  readonly blind: boolean;
  /** Progress requests written before this create: an answer to a later one covers it. */
  readonly progressSeq: number;
  /**
   * What was seen when the create went out: etcd answers it with its current revision,
   * never below that unless it lost its data (the canary's answer checks this every 30 s,
   * on a stream that through a grpc-proxy outlives any restart of etcd).
   */
  readonly floor: Floor;
  /** The server's id for it, once its create was answered. */
  serverId?: number;
  /** When it went out, or the last response for it came (performance.now()). */
  heardAt: number;
  /** An event or a progress notification came for it: it is on a live watch. */
  live?: boolean;
  /** Its create was in flight when etcd ended a watch it may join (see renewJoined()): created again once answered. */
  rejoin?: boolean;
  /** Removed (or a canary answered) before its create was answered: cancel it then. */
  cancelOnCreate?: boolean;
  /**
   * Created behind etcd's revision (this one): it may still be catching up, with events
   * up to here to come. etcd 3.4.23 answers a progress request with its own revision at
   * once, ahead of those events, so progress answers do not move this watch on until an
   * event at or past it arrived (cleared then).
   */
  catchingUpTo?: number;
}

interface Probe {
  readonly sentAt: number;
  /** A canary create went with it (a progress request alone may go unanswered). */
  readonly canary: boolean;
  /** Responses received before it was sent: one more answers it. */
  readonly heard: number;
  /** Progress answers received before its progress request was sent (undefined: none was). */
  readonly progressAnswers: number | undefined;
  /**
   * A create sent before the server was known was unanswered: it asked for its own next
   * revision, ahead of a member that has not passed it, and etcd >= 3.5.22 answers no
   * progress request then. Its progress request going unanswered counts for nothing.
   */
  readonly blind: boolean;
}

export class WatchStream {
  private readonly conn: Connection;
  private readonly ids = new Map<WatchTarget, number>();
  private readonly targets = new Map<number, WatchTarget>();
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | undefined;
  private opening = false;
  private generation = -1;
  private nextId = FIRST_ID;
  /**
   * The server picks the watch ids (a grpc-proxy): one create in flight at a time, so
   * that each answer tells the server's id of that create. Once seen, kept.
   */
  private serialCreates = false;
  /** The server answered a create with the id we gave it: a member, not a grpc-proxy. */
  private ownIds = false;
  // ---- state of the current stream
  /** Creates written on the current stream, by our id, until etcd ends the watch or it is cancelled. */
  private sent = new Map<number, Sent>();
  /** Our id of each watch the server answered for, by the server's id. */
  private byServer = new Map<number, number>();
  /** Ids of the creates sent on the current stream and not answered yet, in order. */
  private pendingCreates: number[] = [];
  /** With serialCreates: creates waiting for the one in flight to be answered. */
  private createQueue: { id: number; target: WatchTarget | undefined }[] = [];
  /** Progress requests written on the current stream, and that count when the last answer came. */
  private progressSeq = 0;
  private progressFrom = 0;
  /** Responses, and answers to progress requests, received on the current stream. */
  private heard = 0;
  /**
   * When the current stream last answered (or opened). This and every other time here is on
   * performance.now()'s clock: with Date.now(), a wall clock stepped back an hour would keep a
   * stream that went silent from being probed for that hour.
   */
  private heardAt = 0;
  /**
   * What was seen when the current stream opened: its events' and progress answers' headers
   * are checked against it (a create's against what was seen when it went out). Not what
   * was seen since: an event trails the answer to its own put, and through a grpc-proxy one
   * stream carries the answers of several watches on etcd, in no one order.
   */
  private floor: Floor = { revision: 0, epoch: 0 };
  private progressAnswers = 0;
  private probe: Probe | undefined;
  private probes = 0;
  /** Probes in a row whose progress request went unanswered while something else answered. */
  private progressMisses = 0;
  /** Targets whose next create asks for `nextRevision` itself (the revision before it was compacted). */
  private readonly exactStart = new WeakSet<WatchTarget>();
  /** Targets whose watch etcd ended for a compaction (or went silent) an odd number of times: range end key + 0xFF. */
  private readonly respelled = new WeakSet<WatchTarget>();
  /**
   * Targets renewed for silence and silent since: the next renewal waits this many times
   * silenceMs (doubling, at most 16), for an etcd whose progress notifications come less often.
   */
  private readonly silenceFactor = new WeakMap<WatchTarget, number>();
  private backoff = cappedBackoff().next();
  /** The backoff as a response last reset it: reset again only once a reopen has used it (no allocation per response). */
  private freshBackoff = this.backoff;
  private reopenTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  /** Closes a stream that has had no watch for LINGER_MS. */
  private lingerTimer: NodeJS.Timeout | undefined;
  private closed = false;

  /** `silenceMs`: through a grpc-proxy, a watch that heard nothing this long is created again (see the top of the file). */
  constructor(
    conn: Connection,
    private readonly onError: (e: Error) => void,
    private readonly silenceMs: number,
  ) {
    this.conn = conn;
    conn.on('rebuilt', this.onRebuilt);
    conn.on('unproven', this.onUnproven);
  }

  add(target: WatchTarget): void {
    if (this.closed || this.ids.has(target)) return;
    const id = this.nextId++;
    this.ids.set(target, id);
    this.targets.set(id, target);
    if (this.stopLinger() && this.stream) this.startPing();
    if (this.stream) this.create(id, target);
    else this.open();
  }

  remove(target: WatchTarget): void {
    const id = this.ids.get(target);
    if (id === undefined) return;
    this.ids.delete(target);
    this.targets.delete(id);
    this.cancel(id);
    if (this.targets.size === 0) this.idle(target);
  }

  /**
   * `last`, the last watch, is gone. Unless it lingers, the stream closes; else it closes
   * unless another watch comes within LINGER_MS (unchecked meanwhile: no canary to send).
   */
  private idle(last: WatchTarget): void {
    if (!this.stream || !last.linger) {
      this.teardown('no watches left');
      return;
    }
    this.stopPing();
    this.stopLinger();
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined;
      if (this.targets.size === 0) this.teardown('no watches left');
    }, LINGER_MS);
    this.lingerTimer.unref();
  }

  /** Whether the stream was lingering (see idle()); it no longer is. */
  private stopLinger(): boolean {
    if (!this.lingerTimer) return false;
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    return true;
  }

  get size(): number {
    return this.targets.size;
  }

  /** The server answered a create with the id we gave it: a member, where a watch joins no other. */
  get onMember(): boolean {
    return this.ownIds;
  }

  private onRebuilt = (): void => {
    if (this.stream && this.generation !== this.conn.generation) this.broken(new Error('client rebuilt'), 0);
  };

  /** The watchdog's read meant to prove this stream's member was answered elsewhere: the stream checks itself now (see tick). */
  private onUnproven = (member: string): void => {
    if (!this.stream || this.probe || this.conn.client.watchMember !== member) return;
    debug("the watchdog's read did not reach this stream's member %s: checking the stream", member);
    this.sendProbe(performance.now(), false, undefined);
  };

  private open(): void {
    if (this.closed || this.opening || this.stream || this.targets.size === 0) return;
    this.opening = true;
    const generation = this.conn.generation;
    this.conn.client
      .watchStream()
      .then((stream) => {
        this.opening = false;
        if (this.closed || this.targets.size === 0 || generation !== this.conn.generation) {
          stream.cancel();
          if (!this.closed) this.open();
          return;
        }
        this.stream = stream;
        this.generation = generation;
        this.floor = this.conn.floor;
        stream.on('data', (res) => this.onResponse(stream, res));
        stream.on('error', (err) => this.onStreamEnd(stream, err));
        stream.on('end', () => this.onStreamEnd(stream, new Error('watch stream ended')));
        debug('stream open (generation %d), %d watch(es)%s', generation, this.targets.size, this.serialCreates ? ', one create at a time' : '');
        for (const [id, target] of this.targets) this.create(id, target);
        this.startPing();
      })
      .catch((err: Error) => {
        this.opening = false;
        this.scheduleReopen(err);
      });
  }

  /** Sends a create now, or (with serialCreates, while another is in flight) queues it. */
  private create(id: number, target: WatchTarget | undefined): void {
    if (!this.stream) return;
    if (this.serialCreates && this.pendingCreates.length > 0) this.createQueue.push({ id, target });
    else this.sendCreate(id, target);
  }

  private sendQueued(): void {
    while (this.stream && this.pendingCreates.length === 0) {
      const next = this.createQueue.shift();
      if (!next) return;
      // A target removed (or re-created under a new id) while it waited is not sent.
      if (next.target === undefined || this.targets.get(next.id) === next.target) this.sendCreate(next.id, next.target);
    }
  }

  /** `target` undefined: the canary, a watch of one key from now, cancelled as soon as it is created. */
  private sendCreate(id: number, target: WatchTarget | undefined): void {
    const canaryKey = target === undefined ? this.targets.values().next().value?.key : undefined;
    if (target === undefined && canaryKey === undefined) return;
    const next = target?.nextRevision ?? 0;
    const exact = target !== undefined && this.exactStart.has(target);
    if (target) this.exactStart.delete(target);
    // One revision early (seen already, so never in the future: etcd >= 3.5.22 answers no
    // progress request while a watch's start is ahead of it); its events are dropped on
    // arrival. Only on a member: etcd's grpc-proxy answers no progress request anyway, and it
    // lets a new watch join its watch on etcd only if that one is not ahead of the new one's
    // start, which one revision early is once an event of the range has passed. Before the
    // server is known, from its own revision; on a member it is created again one early.
    const blind = target !== undefined && !this.ownIds && !this.serialCreates;
    const startRevision = target === undefined ? 0 : exact || !this.ownIds || this.serialCreates || next <= 1 ? next : next - 1;
    this.sent.set(id, { target, skipBelow: target === undefined ? 0 : next, startRevision, blind, progressSeq: this.progressSeq, floor: this.conn.floor, heardAt: performance.now() });
    this.pendingCreates.push(id);
    if (target) debug('watch %d %s from revision %d (asking for %d)', id, target.name, next, startRevision);
    this.write({
      create_request: target
        ? {
            key: Buffer.concat([target.key, NUL]),
            range_end: this.respelled.has(target) ? Buffer.concat([target.key, FF]) : target.rangeEnd,
            start_revision: startRevision,
            watch_id: id,
            filters: target.filters,
            progress_notify: true,
          }
        : { key: canaryKey, start_revision: 0, watch_id: id },
    });
  }

  /** A create was answered with watch id `serverId`, not ours: the server (etcd's grpc-proxy) numbers watches itself. */
  private serverNumbers(serverId: number): void {
    this.serialCreates = true;
    this.conn.markThroughProxy(`watch id ${serverId} chosen by the server`);
    debug('the server answered a create with watch id %d of its own (a grpc-proxy?): one create at a time from now on', serverId);
  }

  /** Cancels watch `id` (the server's `serverId`) and creates `target` again, under a new id, from its `nextRevision`. */
  private renew(id: number, serverId: number, target: WatchTarget): void {
    this.forget(id);
    this.write({ cancel_request: { watch_id: serverId } });
    this.targets.delete(id);
    const fresh = this.nextId++;
    this.ids.set(target, fresh);
    this.targets.set(fresh, target);
    this.create(fresh, target);
  }

  /**
   * etcd ended the grpc-proxy's watch that `lost` was in, for a compaction. Another watch of
   * ours of the same range and spelling may have joined that dead watch (the proxy answers a
   * create that joins at once, itself), or may yet: for example the second of a registry's two
   * watches of a service it both lists and registers in, created right after the first. They
   * are created again under the other spelling, from where they stand: now if their create was
   * answered, once it is if it is in flight; those still queued go out under it. Even one that
   * heard events: the proxy merges a watch of fewer than 5 clients into the dead one at its next
   * answer.
   */
  private renewJoined(lost: WatchTarget): void {
    const respelled = this.respelled.has(lost);
    const same = (t: WatchTarget): boolean => t !== lost && this.respelled.has(t) === respelled && t.key.equals(lost.key) && t.rangeEnd.equals(lost.rangeEnd);
    for (const q of this.createQueue) if (q.target && this.targets.get(q.id) === q.target && same(q.target)) this.respell(q.target);
    for (const [id, sent] of this.sent) {
      const target = sent.target;
      if (!target || this.targets.get(id) !== target || !same(target)) continue;
      if (sent.serverId === undefined) {
        sent.rejoin = true;
        continue;
      }
      debug('watch %d %s may have joined the watch etcd ended for %s: created again', id, target.name, lost.name);
      this.respell(target);
      this.renew(id, sent.serverId, target);
    }
  }

  /** The target's next create goes out under the other spelling of its range. */
  private respell(target: WatchTarget): void {
    if (this.respelled.has(target)) this.respelled.delete(target);
    else this.respelled.add(target);
  }

  /** Cancels a watch of ours on the server, now or once its create is answered. */
  private cancel(id: number): void {
    const sent = this.sent.get(id);
    if (!sent) {
      this.createQueue = this.createQueue.filter((q) => q.id !== id);
      return;
    }
    if (sent.serverId === undefined && this.serialCreates) {
      sent.cancelOnCreate = true;
      return;
    }
    this.forget(id);
    this.write({ cancel_request: { watch_id: sent.serverId ?? id } });
  }

  private forget(id: number): void {
    const sent = this.sent.get(id);
    this.sent.delete(id);
    if (sent?.serverId !== undefined && this.byServer.get(sent.serverId) === id) this.byServer.delete(sent.serverId);
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
    this.heard++;
    this.heardAt = performance.now();
    if (this.backoff !== this.freshBackoff) this.backoff = this.freshBackoff = cappedBackoff().next();
    const serverId = Number(res.watch_id);
    const revision = Number(res.header.revision);
    // etcd answers creates in order; 3.4 answers one it refused with id -1. With
    // serialCreates only one is in flight, whatever id the server gave it.
    let i = !res.created || this.pendingCreates.length === 0 ? -1 : serverId === ALL_WATCHES || this.serialCreates ? 0 : this.pendingCreates.indexOf(serverId);
    // An id we never sent: the server numbers the watches itself (etcd's grpc-proxy). With
    // one create in flight and nothing else on the stream, the answer can only be its own.
    const sole = i < 0 && res.created && this.pendingCreates.length === 1 && this.sent.size === 1;
    if (sole) i = 0;
    const created = i < 0 ? undefined : this.sent.get(this.pendingCreates[i]!);
    // A create's header is etcd's answer to it: one the proxy made up has no cluster id, and
    // its revision is the watch's start (vouched for only below that start, or for the canary).
    const vouches = res.created && created !== undefined && (created.startRevision === 0 || revision < created.startRevision);
    // A stream opened before a confirmed reset (through a grpc-proxy it outlives etcd's
    // restart) answers from the new history: checked against what the reset's read saw.
    if (created === undefined && !this.conn.isCurrent(this.floor)) this.floor = this.conn.resetFloor;
    this.conn.checkHeader(res.header, vouches, created?.floor ?? this.floor);
    let id: number | undefined;
    if (res.created) {
      if (this.pendingCreates.length === 0) return;
      if (sole && !this.serialCreates) this.serverNumbers(serverId);
      if (i < 0) {
        // Several creates were in flight: the ids of the other answers cannot be trusted.
        // Start again, one create at a time.
        if (!this.serialCreates) {
          this.serverNumbers(serverId);
          this.broken(new Error(`watch id ${serverId} chosen by the server`), 0);
        }
        return;
      }
      [id] = this.pendingCreates.splice(i, 1) as [number];
      if (!this.serialCreates && serverId === id) this.ownIds = true;
      const sent = this.sent.get(id);
      let rejoined = false;
      if (sent && !res.canceled) {
        sent.serverId = serverId;
        this.byServer.set(serverId, id);
        if (sent.cancelOnCreate) {
          this.forget(id);
          this.write({ cancel_request: { watch_id: serverId } });
          if (sent.rejoin && sent.target) this.respell(sent.target);
        } else if (sent.rejoin && sent.target && this.targets.get(id) === sent.target) {
          // Before the next queued create goes out: the cancel lets the proxy drop the dead watch.
          debug('watch %d %s may have joined a watch etcd ended: created again', id, sent.target.name);
          this.respell(sent.target);
          this.renew(id, serverId, sent.target);
          rejoined = true;
        }
      } else if (sent?.cancelOnCreate) {
        // Refused as it was created (a missing permission): nothing to cancel on the server.
        this.forget(id);
      }
      if (this.serialCreates) this.sendQueued();
      if (!sent || sent.cancelOnCreate || rejoined) return;
    } else if (serverId === ALL_WATCHES) {
      id = ALL_WATCHES;
    } else {
      id = this.byServer.get(serverId) ?? (this.serialCreates ? undefined : serverId);
    }
    if (id === ALL_WATCHES) {
      this.onProgress(revision);
      return;
    }
    if (id === undefined) return;
    const sent = this.sent.get(id);
    if (sent) sent.heardAt = this.heardAt;
    if (sent && sent.target === undefined) {
      this.onCanary(id, sent, res);
      return;
    }
    const target = this.targets.get(id);
    if (!target) return; // removed while the response was in flight
    if (res.canceled) {
      this.forget(id);
      const compacted = Number(res.compact_revision) > 0;
      if (compacted && this.serialCreates) this.renewJoined(target);
      if (compacted) this.respell(target);
      if (compacted && sent && sent.startRevision < sent.skipBelow && Number(res.compact_revision) <= sent.skipBelow) {
        // Asked for one revision early, and that one was just compacted: the revision the
        // watch needs is still there. Ask for it exactly (under a new id: etcd may hold the old one).
        debug('watch %d %s: revision %d compacted, asking for %d exactly', id, target.name, sent.startRevision, sent.skipBelow);
        this.exactStart.add(target);
        this.renew(id, serverId, target);
        return;
      }
      // Through a grpc-proxy, etcd ended the proxy's watch of the range, and ours stays in it
      // until cancelled: after a compaction (answered with revision 0) any later create of the
      // range would join that dead watch and never hear of a change. A member ignores it.
      if (serverId !== ALL_WATCHES) this.write({ cancel_request: { watch_id: serverId } });
      this.targets.delete(id);
      this.ids.delete(target);
      const reason = compacted
        ? `revision ${target.nextRevision} was compacted (etcd keeps history from ${res.compact_revision})`
        : res.cancel_reason || 'canceled by etcd';
      debug('watch %d %s lost: %s', id, target.name, reason);
      this.guard(() => target.onLost(reason, compacted));
      if (!compacted && watchRefusal(reason) !== undefined) this.broken(new Error(`etcd refused watch ${target.name}: ${reason}`));
      else if (this.targets.size === 0 && this.stream === stream) this.idle(target);
      return;
    }
    if (res.created) {
      // A watch resumed from revision N on an etcd whose history ends before N-1:
      // the events we saw are not in this etcd's history any more.
      if (revision < target.nextRevision - 1) {
        this.conn.reportReset(`watch ${target.name} resumed at revision ${target.nextRevision}, but etcd is at ${revision}`);
      }
      if (sent && sent.startRevision <= revision) sent.catchingUpTo = revision;
      if (sent?.blind && this.ownIds && target.nextRevision > 1) {
        debug('watch %d %s: a member, created again from revision %d, one early', id, target.name, target.nextRevision - 1);
        this.renew(id, serverId, target);
      }
      target.onCreated?.();
      return;
    }
    if (sent && !sent.live && sent.target) {
      sent.live = true;
      this.silenceFactor.delete(sent.target);
    }
    if (res.events.length > 0) {
      // The watch started one revision early: what is below skipBelow was delivered before.
      // (Copied only when some are below it: the first response of a watch, at most.)
      const skip = sent?.skipBelow ?? 0;
      let events = res.events;
      for (const e of events) {
        if (Number(e.kv.mod_revision) < skip) {
          events = events.filter((x) => Number(x.kv.mod_revision) >= skip);
          break;
        }
      }
      if (events.length === 0) return;
      const last = Number(events[events.length - 1]!.kv.mod_revision);
      target.nextRevision = last + 1;
      if (sent?.catchingUpTo !== undefined && last >= sent.catchingUpTo) sent.catchingUpTo = undefined;
      // An event's revision is one etcd wrote (a header's may be a grpc-proxy's own).
      this.conn.vouch(last);
      try {
        target.onEvents(events);
      } catch (e) {
        this.onError(e as Error);
      }
    } else {
      target.nextRevision = Math.max(target.nextRevision, revision + 1);
    }
  }

  /**
   * An answer to a progress request: every watch created before the request was sent
   * has seen everything up to `revision` (the answer may belong to any request sent
   * since the last answer, so only the watches created before the first of those count).
   */
  private onProgress(revision: number): void {
    this.progressAnswers++;
    this.progressMisses = 0;
    for (const sent of this.sent.values()) {
      if (sent.target && sent.serverId !== undefined && sent.progressSeq <= this.progressFrom && sent.catchingUpTo === undefined) {
        sent.target.nextRevision = Math.max(sent.target.nextRevision, revision + 1);
      }
    }
    this.progressFrom = this.progressSeq;
  }

  private onCanary(id: number, sent: Sent, res: IWatchResponse): void {
    if (res.canceled) {
      this.forget(id);
    } else if (res.created && sent.serverId !== undefined) {
      this.forget(id);
      this.write({ cancel_request: { watch_id: sent.serverId } });
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
    if (stream !== this.stream) return;
    // Through etcd's grpc-proxy the watches that come back may join watches the proxy holds
    // at revisions etcd (restored empty meanwhile) no longer has, answered by the proxy
    // itself: the connection's linearizable read, which vouches for the revision, comes next.
    if (this.serialCreates) this.conn.vouchSoon(`watch stream through a grpc-proxy ended: ${err.message}`);
    this.broken(err);
  }

  /** Drops the stream and reopens it (after `delayMs`, by default the next backoff step). */
  private broken(err: Error, delayMs?: number): void {
    this.teardown(err.message);
    if (!this.closed && this.targets.size > 0) this.scheduleReopen(err, delayMs);
  }

  private teardown(reason: string): void {
    const stream = this.stream;
    this.stream = undefined;
    this.sent = new Map();
    this.byServer = new Map();
    this.pendingCreates = [];
    this.createQueue = [];
    this.progressSeq = 0;
    this.progressFrom = 0;
    this.heard = 0;
    this.progressAnswers = 0;
    this.stopPing();
    this.stopLinger();
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

  /**
   * Every request timeout: a probe that went unanswered for a request timeout is
   * followed by a canary if it had none; an unanswered canary means the stream is dead.
   * Any response on the stream answers a probe; a probe goes out once the stream has
   * been silent for STREAM_CHECK_MS.
   */
  private startPing(): void {
    this.stopPing();
    this.heardAt = performance.now();
    const timeout = this.conn.requestTimeoutMs;
    this.pingTimer = setInterval(() => this.tick(timeout), timeout);
    this.pingTimer.unref();
  }

  private tick(timeout: number): void {
    if (!this.stream) return;
    const now = performance.now();
    if (this.serialCreates) this.renewSilent(now);
    const probe = this.probe;
    if (probe) {
      if (this.heard > probe.heard) {
        if (!probe.blind && probe.progressAnswers !== undefined && this.progressAnswers === probe.progressAnswers) this.progressMisses++;
        this.probe = undefined;
      } else if (now - probe.sentAt < timeout) {
        return;
      } else if (!probe.canary) {
        debug('no answer to a progress request within %d ms: asking with a canary watch', timeout);
        this.sendProbe(now, true, probe.progressAnswers);
        return;
      } else {
        debug('no answer on the watch stream within %d ms of a canary watch: stream is dead', timeout);
        this.conn.markUnreachable(new Error('watch stream stopped answering'));
        this.conn.rebuild('watch stream stopped answering');
        this.broken(new Error('watch stream stopped answering'));
        return;
      }
    }
    // A create not answered yet is a question etcd owes an answer to: checked at once.
    if (this.pendingCreates.length === 0 && now - this.heardAt < STREAM_CHECK_MS) return;
    this.sendProbe(now, false, undefined);
  }

  /**
   * Through a grpc-proxy, a watch that heard nothing for silenceMs may be in a watch the proxy
   * keeps after etcd ended it (see the top of the file): cancelled, which also lets the proxy
   * drop that dead watch, and created again from where it stands, under the other spelling.
   */
  private renewSilent(now: number): void {
    for (const [id, sent] of this.sent) {
      const target = sent.target;
      const factor = target ? (this.silenceFactor.get(target) ?? 1) : 1;
      if (!target || sent.serverId === undefined || now - sent.heardAt < this.silenceMs * factor || this.targets.get(id) !== target) continue;
      debug('watch %d %s heard nothing for %d ms through a grpc-proxy: created again', id, target.name, Math.round(now - sent.heardAt));
      this.silenceFactor.set(target, Math.min(16, factor * 2));
      this.respell(target);
      this.renew(id, sent.serverId, target);
    }
  }

  /** `progressAnswers`: the count when the progress request of the probe being escalated was sent. */
  private sendProbe(now: number, escalate: boolean, progressAnswers: number | undefined): void {
    let progress = false;
    if (!escalate) {
      this.probes++;
      progress = this.progressMisses < PROGRESS_MISSES || this.probes % PROGRESS_RETRY_PROBES === 0;
    }
    const canary = escalate || !progress;
    if (progress) {
      // Written before the canary: a canary in the future would keep etcd from answering it.
      this.write({ progress_request: {} });
      this.progressSeq++;
      progressAnswers = this.progressAnswers;
    }
    // One canary at a time, sent or (with serialCreates) waiting behind the create in flight.
    if (canary && ![...this.sent.values()].some((s) => s.target === undefined) && !this.createQueue.some((q) => q.target === undefined)) this.create(this.nextId++, undefined);
    const blind = (escalate && this.probe?.blind === true) || this.pendingCreates.some((id) => this.sent.get(id)?.blind === true);
    this.probe = { sentAt: now, heard: this.heard, canary, progressAnswers, blind };
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    this.probe = undefined;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.off('rebuilt', this.onRebuilt);
    this.conn.off('unproven', this.onUnproven);
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.teardown('closed');
    this.targets.clear();
    this.ids.clear();
  }
}
