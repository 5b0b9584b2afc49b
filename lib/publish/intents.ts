/**
 * What this registry wants each of its keys to be, and what it knows etcd holds.
 * Pure bookkeeping, no I/O: the keeper's writer asks it what to write next and
 * tells it what etcd confirmed.
 *
 * Every register() and unregister() is a call with a token from one clock that
 * never repeats (not per key: a key removed and added again must not reuse an
 * old number, or a stale write would pass for the new one). A write carries the
 * token of the state it was built from, and its confirmation settles only that
 * state and older ones, so a write overtaken by a newer call can neither clear
 * the newer call nor abandon it.
 *
 * An owned key can be withheld from etcd without being given up: paused (by the
 * application) or not healthy (its health check fails, or has not passed yet).
 * Its target in etcd is then "absent", while the registry keeps owning it and
 * its lease stays alive; it is written again once listed. Listing changes move
 * the write token, never the call token: a failing register() is judged against
 * the calls only.
 *
 * The owned and owed keys (sets) and how many keys are pending, owed a put,
 * recovering or owed for a call (counts) are kept as entries change, so every
 * question the writer asks per call is O(1) however many keys there are.
 */
import { RegistryError } from '../errors';
import type { Endpoint } from '../types';

const NONE: readonly string[] = Object.freeze([]);

/** Forgotten keys remembered for their late events: past this, the oldest go (a later event of theirs costs one delete that finds nothing). */
const FORGOTTEN_MAX = 4096;

/** An endpoint as written: the Endpoint and its encoded value (JSON, written as UTF-8). */
export interface Registration {
  readonly endpoint: Endpoint;
  readonly value: string;
}

export type IntentKind = 'put' | 'delete';

interface Waiter {
  readonly token: number;
  /** 'put': a register(); 'delete': an unregister(); 'list': a pause() or resume(). */
  readonly kind: IntentKind | 'list';
  /** What the call asked for: what the key falls back to if a newer call fails. */
  readonly want: Registration | undefined;
  resolve(): void;
  reject(error: Error): void;
}

interface Entry {
  readonly key: string;
  /** The latest call: a registration, or undefined for "absent". */
  want: Registration | undefined;
  /** Taken out of etcd by the application (pause()), still owned. */
  paused: boolean;
  /** Its health check passes (true when it has none). */
  healthy: boolean;
  /** Token of the latest register() or unregister(), or of the fallback after one failed. */
  call: number;
  /** Token of the call `want` comes from: the latest call, or the one a failed call fell back to. */
  source: number;
  /** Token of the latest state to write (a call, or a listing change). */
  token: number;
  /** Token of the latest state etcd confirmed; below `token` (or 0 after a loss) means a write is owed. */
  applied: number;
  /** The registration last confirmed in etcd (or accepted while paused) for a call that stands. */
  registered: Registration | undefined;
  /**
   * Puts of this key that may be in etcd, on some lease of ours: those sent and not refused by
   * etcd before it applied them (a permission it checks first), and those seen there late,
   * since the last confirmed delete of ours in the history etcd has now.
   */
  sent: number;
  /** As `sent`, in any history: a data loss may bring back one a confirmed delete had removed (a restored backup). */
  ever: number;
  /** A delete of this key is in flight: delete events are ours until it is answered. */
  deleting: number;
  /** Revision of our last confirmed put: deletes older than it are not news. */
  putRevision: number;
  /** Revision of our last confirmed delete: a delete event at or below it is ours. */
  deleteRevision: number;
  /**
   * Revision of the latest change that was not what the key should be (a put of ours, or a delete
   * before the key's first confirmed put): a confirmed put older than it does not count.
   */
  lateRevision: number;
  /**
   * Revision of the latest put of ours seen late that was what the key should hold: a delete of
   * ours confirmed below it leaves that put there (unlike lateRevision, a put below it counts).
   */
  heldRevision: number;
  /** Someone else deleted the key: the next confirmed put of the latest state is a restore. */
  restoring: boolean;
  /** Owed again because of a recovery (lease lost, data loss, foreign delete, late put), not a call. */
  recovering: boolean;
  /** The registrations of register() calls withdrawn (timed out, refused): a put of one answers no call. */
  withdrawn: WeakSet<Registration> | undefined;
  /** What the newest call that succeeded asked for, and its token: what a failed newer call falls back to. */
  settled: Registration | undefined;
  settledToken: number;
  /** Writes issued before this (a lease loss, a data loss, a foreign delete) do not count as applied. */
  staleSince: number;
  waiters: Waiter[];
  /** Which of the counts count this entry: bit 1 << PENDING, PUTS_OWED, RECOVERING, CALLS_OWED. */
  counted: number;
}

/** Indexes of Intents.counts, and bits (1 << index) of Entry.counted. */
const PENDING = 0;
const PUTS_OWED = 1;
const RECOVERING = 2;
const CALLS_OWED = 3;

/** One write owed to etcd, as of a token. */
export interface Write {
  readonly key: string;
  readonly token: number;
  /** When the write was taken, on the same clock as tokens. */
  readonly issued: number;
  /** undefined: delete the key. */
  readonly want: Registration | undefined;
}

/** What a confirmed put changed, for the keeper's events. */
export interface Settled {
  /** The first confirmed write of this registration (not a re-put of one already confirmed). */
  readonly first: boolean;
  /** The put back of a key someone else deleted. */
  readonly restored: boolean;
}

export class Intents {
  /** `groupOf`: the group (service) a key belongs to, counted by tracks(). */
  constructor(private readonly groupOf: (key: string) => string | undefined = () => undefined) {}

  private readonly entries = new Map<string, Entry>();
  /** Keys whose latest call is a registration. */
  private readonly owned = new Set<string>();
  /** Keys with a write owed (applied < token). */
  private readonly owedKeys = new Set<string>();
  /**
   * How many keys are, by index (its bit in Entry.counted): owned with the latest registration not
   * confirmed yet (PENDING); listed with a put owed (PUTS_OWED); owed again by a recovery
   * (RECOVERING); owed because of a call or a listing change, not only a recovery (CALLS_OWED).
   * Only whether any is asked: counts, where sets cost a hash insert each on every call.
   */
  private readonly counts = [0, 0, 0, 0];
  /**
   * Keys forgotten once their delete was confirmed, with the latest revision of ours each had
   * (put or delete). The self-watch trails the answers to our writes: the event of a put
   * confirmed before the delete may come after the key is forgotten, and is history, not a
   * put that landed late. A key leaves when its delete event comes (or a newer call takes it
   * up again); the oldest go past FORGOTTEN_MAX.
   */
  private readonly forgotten = new Map<string, number>();
  /** Keys tracked per group (a service): what the keeper's self-watch of a group waits on. */
  private readonly groups = new Map<string, number>();
  /** Groups whose last key was forgotten since takeEmptied(). */
  private readonly emptied = new Set<string>();
  /** One clock for tokens and write issue times: never repeats. */
  private clock = 0;
  /** Writes issued before this clock (before etcd lost its data) tell no revision of the history etcd has now. */
  private revisionsFrom = 0;

  /** Endpoints this registry owns, in registration order. */
  get endpoints(): Endpoint[] {
    return Array.from(this.owned, (key) => this.entries.get(key)!.want!.endpoint);
  }

  get ownedCount(): number {
    return this.owned.size;
  }

  /** A write is owed for some key. */
  get dirty(): boolean {
    return this.owedKeys.size > 0;
  }

  /** Some owned key waits for the first confirmed write of its latest registration. */
  get pending(): boolean {
    return this.counts[PENDING]! > 0;
  }

  /** Some listed key must be (re)written before everything is in etcd. */
  get putsOwed(): boolean {
    return this.counts[PUTS_OWED]! > 0;
  }

  /** Some key registered in etcd is being written again after a recovery. */
  get recovering(): boolean {
    return this.counts[RECOVERING]! > 0;
  }

  /** Some owed write answers a call (so it is not paced like recovery writes). */
  get callsOwed(): boolean {
    return this.counts[CALLS_OWED]! > 0;
  }

  /** The owned endpoint with this key. */
  endpoint(key: string): Endpoint | undefined {
    return this.entries.get(key)?.want?.endpoint;
  }

  /**
   * The endpoints of the registrations the key holds or may still fall back to: its latest
   * call, the calls still waiting, the last one that succeeded and the last one confirmed.
   */
  registrations(key: string): Endpoint[] {
    const entry = this.entries.get(key);
    if (!entry) return [];
    const out: Endpoint[] = [];
    for (const r of [entry.want, entry.settled, entry.registered]) if (r) out.push(r.endpoint);
    for (const w of entry.waiters) if (w.want) out.push(w.want.endpoint);
    return out;
  }

  /**
   * Some key of `group` is tracked: owned, or not yet settled in etcd (a delete
   * owed or in flight, a call waiting).
   */
  tracks(group: string): boolean {
    return this.groups.has(group);
  }

  /** The groups whose last tracked key was forgotten since the last call (tracks() tells whether one is still empty). */
  takeEmptied(): readonly string[] {
    if (this.emptied.size === 0) return NONE;
    const out = Array.from(this.emptied);
    this.emptied.clear();
    return out;
  }

  /** The owned key is paused. */
  isPaused(key: string): boolean {
    return this.entries.get(key)?.paused === true;
  }

  private entry(key: string): Entry {
    let entry = this.entries.get(key);
    if (!entry) {
      entry = {
        key,
        want: undefined,
        paused: false,
        healthy: true,
        call: 0,
        source: 0,
        token: 0,
        applied: 0,
        registered: undefined,
        sent: 0,
        ever: 0,
        deleting: 0,
        putRevision: 0,
        deleteRevision: 0,
        lateRevision: 0,
        heldRevision: 0,
        restoring: false,
        recovering: false,
        withdrawn: undefined,
        settled: undefined,
        settledToken: 0,
        staleSince: 0,
        waiters: [],
        counted: 0,
      };
      this.entries.set(key, entry);
      const group = this.groupOf(key);
      if (group !== undefined) this.groups.set(group, (this.groups.get(group) ?? 0) + 1);
      // Taken up again: its own writes date its events from now on (a revision remembered
      // from before could also be from a history etcd has since lost without our noticing).
      this.forgotten.delete(key);
    }
    return entry;
  }

  /**
   * A new register() (`want`) or unregister() (undefined); `done` settles when
   * etcd confirms it (or a newer call that supersedes it). `healthy` false: a
   * registration held back until setHealthy(true) (a health check that has not
   * passed yet); only for a key not owned yet.
   */
  intend(key: string, want: Registration | undefined, healthy = true): { token: number; done: Promise<void> } {
    const token = ++this.clock;
    const entry = this.entry(key);
    // A key given up and taken again starts over: listed unless its new check says otherwise.
    if (!entry.want && want) {
      entry.paused = false;
      entry.healthy = healthy;
    }
    entry.want = want;
    entry.call = entry.source = token;
    entry.token = token;
    entry.recovering = false;
    const kind: IntentKind = want ? 'put' : 'delete';
    const done = new Promise<void>((resolve, reject) => entry.waiters.push({ token, kind, want, resolve, reject }));
    // Registered while paused: accepted now, written on resume().
    if (want && entry.paused) {
      entry.registered = want;
      this.accept(entry, token);
    }
    this.update(entry);
    return { token, done };
  }

  /**
   * Takes an owned key out of etcd (`paused`) or puts it back; undefined if the
   * key is not owned. `done` settles once etcd holds the result (at once when
   * nothing changes, or when the key waits for its health check).
   */
  setPaused(key: string, paused: boolean): Promise<void> | undefined {
    const entry = this.entries.get(key);
    if (!entry?.want) return undefined;
    return this.relist(entry, () => (entry.paused = paused));
  }

  /** The key's health check passes or fails: it is listed only while it passes (and is not paused). */
  setHealthy(key: string, healthy: boolean): void {
    const entry = this.entries.get(key);
    if (!entry?.want || entry.healthy === healthy) return;
    this.relist(entry, () => (entry.healthy = healthy)).catch(() => undefined);
  }

  private relist(entry: Entry, change: () => void): Promise<void> {
    const before = target(entry);
    change();
    const after = target(entry);
    if (before === after && entry.applied >= entry.token) {
      // Still out of etcd, now by a pause: a registration waiting for its health check is accepted.
      if (!after) {
        this.release(entry, entry.token, 'delete');
        this.update(entry);
      }
      return Promise.resolve();
    }
    const token = ++this.clock;
    entry.token = token;
    entry.recovering = false;
    // Nothing to wait for while the key waits for its health check: it is written when that passes.
    const done =
      !after && entry.want && !entry.healthy && !entry.paused
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => entry.waiters.push({ token, kind: 'list', want: entry.want, resolve, reject }));
    this.update(entry);
    return done;
  }

  /**
   * The call with token `token` failed (timed out, refused): its waiters (and
   * older ones of the same kind) reject with `error`. Unless a newer call came
   * meanwhile, the key falls back to what the calls before it asked for: the
   * newest older call still standing (an unregister() not yet confirmed, or a
   * register() when an unregister() failed), else what the newest call that
   * succeeded asked for: the previous registration (put again, in case the failed
   * put landed) or absent (deleted, in case it landed). The same holds when the
   * call that failed is one an earlier failure fell back to. Returns false when
   * what the key holds does not come from the failed call (a newer call).
   */
  withdraw(key: string, token: number, kind: IntentKind, error: Error): boolean {
    const entry = this.entries.get(key);
    if (!entry) return false;
    const failed = (w: Waiter): boolean => w.token <= token && w.kind === kind;
    // The key falls back when what it holds came from a call that failed now: the latest
    // call, or a call an earlier failure fell back to.
    let fallBack = false;
    for (const w of entry.waiters) {
      if (!failed(w)) continue;
      w.reject(error);
      if (w.kind === 'put' && w.want) (entry.withdrawn ??= new WeakSet()).add(w.want);
      if (w.token === entry.source) fallBack = true;
    }
    entry.waiters = entry.waiters.filter((w) => !failed(w));
    if (fallBack) {
      let standing: Waiter | undefined;
      for (const w of entry.waiters) if (w.kind !== 'list' && (!standing || w.token > standing.token)) standing = w;
      entry.want = standing ? standing.want : entry.settled;
      entry.source = standing ? standing.token : entry.settledToken;
      // Back to a registration whose call succeeded, while paused: accepted, as it was then
      // (written on resume), not a registration pending for ever.
      if (!standing && entry.paused && entry.want) entry.registered = entry.want;
      entry.call = entry.token = ++this.clock;
      entry.recovering = false;
    }
    this.update(entry);
    return fallBack;
  }

  /** The writes owed, oldest first: at most `max` puts and `max` deletes. */
  owed(max: number): { puts: Write[]; deletes: Write[] } {
    const puts: Write[] = [];
    const deletes: Write[] = [];
    const issued = ++this.clock;
    for (const key of this.owedKeys) {
      const e = this.entries.get(key)!;
      const want = target(e);
      const list = want ? puts : deletes;
      if (list.length < max) list.push({ key, token: e.token, issued, want });
      if (puts.length >= max && deletes.length >= max) break;
    }
    return { puts, deletes };
  }

  /** These writes are about to be sent. */
  sending(writes: readonly Write[]): void {
    for (const w of writes) {
      const entry = this.entries.get(w.key);
      if (!entry) continue;
      if (w.want) mayHold(entry);
      else entry.deleting++;
    }
  }

  /**
   * etcd refused these puts, sent with sending(), before applying them: they are not in etcd (a
   * key no other put of ours may have reached needs no delete).
   */
  unapplied(writes: readonly Write[]): void {
    for (const w of writes) {
      const entry = this.entries.get(w.key);
      if (!entry || !w.want) continue;
      if (entry.sent > 0) entry.sent--;
      if (entry.ever > 0) entry.ever--;
    }
  }

  /** A delete sent with sending() was answered (confirmed or not). */
  deleteAnswered(write: Write): void {
    const entry = this.entries.get(write.key);
    if (!entry || entry.deleting === 0) return;
    // The last one out: an entry given up meanwhile (unregistered, nothing owed) is forgotten now.
    if (--entry.deleting === 0) this.update(entry);
  }

  /** etcd confirmed `write` at `revision`. Undefined if the write was already superseded as applied. */
  confirm(write: Write, revision = 0): Settled | undefined {
    const entry = this.entries.get(write.key);
    if (!entry) return undefined;
    // A key's writes are confirmed in the order they were sent (one writer, one step at a
    // time): the latest dates its events, and a revision of ours above it is from a history
    // etcd lost without a confirmed reset (it would hide a foreign delete). A write issued
    // before a confirmed loss may be answered from the lost history: it dates nothing.
    if (revision > 0 && write.issued >= this.revisionsFrom) {
      if (write.want) entry.putRevision = revision;
      else entry.deleteRevision = revision;
      if (entry.putRevision > revision) entry.putRevision = 0;
      if (entry.deleteRevision > revision) entry.deleteRevision = 0;
    }
    // A confirmed delete leaves none of our puts there (one round at a time: none is on its way),
    // unless one landed late after it (its event may come before the delete's answer; one that
    // comes after is counted again by latePut()). One answered from a lost history removed
    // nothing from the history etcd has now.
    if (!write.want && write.issued >= this.revisionsFrom && revision >= entry.lateRevision && revision >= entry.heldRevision) entry.sent = 0;
    if (write.token <= entry.applied) return undefined;
    // Written before the key went stale (on a lost lease, before a wipe), or overwritten
    // by an older put of ours that landed late (see latePut): the calls it answers are
    // answered, but the key is still owed.
    const current = write.issued >= entry.staleSince && !(write.want && revision < entry.lateRevision);
    // The put of a register() that was withdrawn (timed out, refused) while it was in flight:
    // its callers were told it failed, so it is not what a later failure falls back to (the
    // key falls back as withdraw() decided, and is written so once more).
    const dead = write.want !== undefined && write.want !== entry.want && entry.withdrawn?.has(write.want) === true;
    const first = write.want !== undefined && entry.registered !== write.want && !dead;
    const restored = current && write.want !== undefined && entry.restoring && write.token === entry.token;
    if (restored) entry.restoring = false;
    if (current) entry.applied = write.token;
    // (A dead put answers nobody: the calls still waiting are answered by the write of the fallback.)
    if (!dead) {
      if (write.want) {
        // An older put does not demote a newer registration already confirmed (or accepted while paused).
        if (write.token >= entry.call || !entry.want || entry.registered !== entry.want) entry.registered = write.want;
      } else if (!entry.want && write.token >= entry.call) {
        // Only the delete of an unregistration forgets the registration: a key withheld (paused, unhealthy) is still registered.
        entry.registered = undefined;
      }
      this.release(entry, write.token, write.want ? 'put' : 'delete');
    }
    this.update(entry);
    return { first: first && !restored, restored };
  }

  /**
   * etcd refused `write` (not a matter of reachability): the calls that asked for
   * it fail with `error`, and the key falls back as in withdraw().
   */
  refuse(write: Write, error: Error, unapplied: boolean): void {
    const entry = this.entries.get(write.key);
    if (!entry) return;
    if (unapplied) this.unapplied([write]);
    if (write.token > entry.call) {
      // A listing change (pause, resume, health): its callers fail; the write stays owed,
      // retried with backoff (and reported) while etcd refuses it.
      const failed = (w: Waiter): boolean => w.kind === 'list' && w.token <= write.token;
      for (const w of entry.waiters) if (failed(w)) w.reject(error);
      entry.waiters = entry.waiters.filter((w) => !failed(w));
      return;
    }
    const kind: IntentKind = write.token === entry.call ? (entry.want ? 'put' : 'delete') : write.want ? 'put' : 'delete';
    this.withdraw(write.key, write.token, kind, error);
  }

  /** Every listed key (or those `filter` picks) must be written again: returns how many. */
  staleAll(filter?: (endpoint: Endpoint) => boolean): number {
    let n = 0;
    const now = ++this.clock;
    for (const key of this.owned) {
      const e = this.entries.get(key)!;
      if (!target(e) || (filter && !filter(e.want!.endpoint))) continue;
      e.applied = 0;
      e.staleSince = now;
      // What the caller was told is in etcd is being put back: a recovery.
      if (e.registered === e.want) e.recovering = true;
      this.update(e);
      n++;
    }
    return n;
  }

  /**
   * `key` was deleted at `revision`: if we still list it, it was confirmed, the
   * delete is newer than our last put and is not one of ours, it is owed again.
   */
  deletedByOther(key: string, revision: number): boolean {
    const entry = this.entries.get(key);
    if (!entry) {
      // Our own delete of a forgotten key, as its event: nothing of it is left to come.
      const last = this.forgotten.get(key);
      if (last !== undefined && revision >= last) this.forgotten.delete(key);
      return false;
    }
    if (!target(entry)) return false;
    if (revision <= entry.putRevision || revision <= entry.deleteRevision || entry.deleting > 0) return false;
    if (!entry.registered) {
      // Its put not confirmed yet (the event may come first): if it lands below this delete (a
      // late one of ours, or someone else's), it is gone, and stays owed (see confirm()).
      entry.lateRevision = Math.max(entry.lateRevision, revision);
      return false;
    }
    entry.restoring = true;
    entry.recovering = true;
    entry.applied = 0;
    entry.staleSince = ++this.clock;
    this.update(entry);
    return true;
  }

  /**
   * etcd applied a put of ours to `key` at `revision` with `value` (a put that got
   * no answer, applied when a stalled member or etcd read it: it gets a fresh
   * deadline there). If that is not what the key should hold (absent, or another
   * value) and it is newer than our last confirmed put, the key is owed again.
   */
  latePut(key: string, value: Buffer, revision: number): boolean {
    const known = this.entries.get(key);
    // At or below a confirmed write of ours the put is history: that write came after it.
    const latest = known ? Math.max(known.putRevision, known.deleteRevision) : (this.forgotten.get(key) ?? 0);
    if (revision <= latest) return false;
    const ours = target(known)?.value;
    if (ours !== undefined && value.equals(Buffer.from(ours))) {
      // What the key should hold: nothing to write, but a put of ours is there (a pause or an
      // unregister() later must delete it, though a delete of ours below it is confirmed later:
      // its event may come before that delete's answer).
      mayHold(known!);
      known!.heldRevision = Math.max(known!.heldRevision, revision);
      return false;
    }
    // A key we no longer track is deleted again.
    const entry = this.foundPut(key);
    entry.applied = 0;
    entry.lateRevision = Math.max(entry.lateRevision, revision);
    // A delete in flight may have run before the late put: it does not count (a put's revision tells).
    if (!target(entry)) entry.staleSince = ++this.clock;
    this.update(entry);
    return true;
  }

  /**
   * etcd lost its data: its revisions start again from lower numbers, so the revisions
   * remembered per key (our last put, our last delete, a late put) say nothing any more. It
   * may hold any put of ours again (restored from a backup, on a lease of ours it restored
   * too): a key not listed that one reached is owed a delete. Returns how many are.
   */
  forgetRevisions(): number {
    this.forgotten.clear();
    this.revisionsFrom = ++this.clock;
    let n = 0;
    for (const e of this.entries.values()) {
      e.putRevision = e.deleteRevision = e.lateRevision = e.heldRevision = 0;
      e.sent = e.ever;
      if (target(e) || e.ever === 0) continue;
      // Owed already for a call still waiting (a pause() whose delete is not sent yet): not paced as recovery.
      if (e.applied >= e.token || e.waiters.length === 0) e.recovering = true;
      e.applied = 0;
      e.staleSince = this.revisionsFrom;
      this.update(e);
      n++;
    }
    return n;
  }

  /**
   * etcd holds `key` on a lease of ours, found by asking the lease after a data loss: a backup
   * may bring back a put of ours a confirmed delete had removed, of a key given up and forgotten
   * since, or withheld (paused, unhealthy) by an entry that never sent it. A key not listed is
   * deleted again, as a recovery (true when that is new); a listed one is being put back already.
   */
  heldOnLease(key: string): boolean {
    const known = this.entries.has(key);
    const entry = this.foundPut(key);
    const owed = known && (target(entry) !== undefined || entry.applied < entry.token);
    if (!owed) {
      entry.applied = 0;
      entry.staleSince = ++this.clock;
      entry.recovering = true;
    }
    this.update(entry);
    return !owed;
  }

  /**
   * The entry of a key a put of ours was found on in etcd (seen late, or on a lease of ours),
   * counted as holding it; a key not tracked is taken up as an unregistration of its own.
   */
  private foundPut(key: string): Entry {
    let entry = this.entries.get(key);
    if (!entry) {
      entry = this.entry(key);
      entry.token = entry.call = ++this.clock;
    }
    mayHold(entry);
    return entry;
  }

  /** On close: pending registrations fail; pending unregistrations, pauses and resumes succeed (the revoke removes the keys). */
  closeAll(error: Error): void {
    for (const e of this.entries.values()) {
      for (const w of e.waiters) {
        if (w.kind === 'put') w.reject(error);
        else w.resolve();
      }
      e.waiters = [];
    }
  }

  /**
   * Settles the waiters as old as `token` once etcd holds `written`: a put answers
   * every call (an unregister it superseded included); a delete answers
   * unregistrations, pauses and resumes, and fails a registration only if the key
   * was given up. A registration withheld by a pause is accepted (it is written on
   * resume); one withheld by its health check waits for the check to pass.
   */
  private release(entry: Entry, token: number, written: IntentKind): void {
    const kept: Waiter[] = [];
    for (const w of entry.waiters) {
      if (w.token > token) kept.push(w);
      else if (written === 'put' || w.kind !== 'put') this.resolve(entry, w);
      else if (!entry.want) w.reject(new RegistryError('ERR_NOT_REGISTERED', `${entry.key} was unregistered before it reached etcd`));
      else if (entry.paused) {
        entry.registered = entry.want;
        this.resolve(entry, w);
      } else kept.push(w);
    }
    entry.waiters = kept;
  }

  /** Answers a call: the newest that succeeded is what a failed newer one falls back to. */
  private resolve(entry: Entry, w: Waiter): void {
    if (w.kind !== 'list' && w.token > entry.settledToken) {
      entry.settled = w.want;
      entry.settledToken = w.token;
    }
    w.resolve();
  }

  /**
   * A registration accepted while paused: the calls as old as `token` are answered
   * (an unregister() it supersedes included); a pause() or resume() still waits for
   * etcd to hold what it asked.
   */
  private accept(entry: Entry, token: number): void {
    const kept: Waiter[] = [];
    for (const w of entry.waiters) {
      if (w.token > token || w.kind === 'list') kept.push(w);
      else this.resolve(entry, w);
    }
    entry.waiters = kept;
  }

  /** Brings the sets up to date with one entry, and forgets it once absent and settled. */
  private update(entry: Entry): void {
    const { key } = entry;
    // A delete of a key never sent anywhere has nothing to do in etcd.
    if (!target(entry) && entry.sent === 0 && entry.applied < entry.token) {
      entry.applied = entry.token;
      if (!entry.want) entry.registered = undefined;
      this.release(entry, entry.token, 'delete');
    }
    const owed = entry.applied < entry.token;
    if (!owed) entry.recovering = false;
    const listed = target(entry) !== undefined;
    toggle(this.owned, key, entry.want !== undefined);
    toggle(this.owedKeys, key, owed);
    const counted =
      (entry.want !== undefined && entry.registered !== entry.want ? 1 << PENDING : 0) |
      (listed && owed ? 1 << PUTS_OWED : 0) |
      (owed && entry.recovering ? 1 << RECOVERING : 0) |
      (owed && !entry.recovering ? 1 << CALLS_OWED : 0);
    const changed = counted ^ entry.counted;
    if (changed !== 0) {
      for (let i = 0; i < this.counts.length; i++) if (changed & (1 << i)) this.counts[i]! += counted & (1 << i) ? 1 : -1;
      entry.counted = counted;
    }
    if (!entry.want && !owed && entry.waiters.length === 0 && entry.deleting === 0) this.forget(entry);
  }

  private forget(entry: Entry): void {
    this.entries.delete(entry.key);
    const group = this.groupOf(entry.key);
    const left = group === undefined ? 0 : (this.groups.get(group) ?? 1) - 1;
    if (left > 0) this.groups.set(group!, left);
    else if (group !== undefined) {
      this.groups.delete(group);
      this.emptied.add(group);
    }
    const latest = Math.max(entry.putRevision, entry.deleteRevision, entry.lateRevision, entry.heldRevision);
    if (latest === 0) return;
    this.forgotten.set(entry.key, latest);
    if (this.forgotten.size > FORGOTTEN_MAX) this.forgotten.delete(this.forgotten.keys().next().value!);
  }
}

/** A put of ours may be in etcd under the key: counted in the history etcd has now, and in any. */
function mayHold(entry: Entry): void {
  entry.sent++;
  entry.ever++;
}

/** What etcd should hold under the key: the registration while it is listed, else nothing. */
function target(entry: Entry | undefined): Registration | undefined {
  return entry?.want && !entry.paused && entry.healthy ? entry.want : undefined;
}

function toggle(set: Set<string>, key: string, on: boolean): void {
  if (on) set.add(key);
  else set.delete(key);
}
