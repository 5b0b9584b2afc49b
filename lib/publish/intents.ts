/**
 * What this registry wants each of its keys to be, and what it knows etcd holds.
 * Pure bookkeeping, no I/O: the keeper's writer asks it what to write next and
 * tells it what etcd confirmed.
 *
 * Every register() and unregister() is an intent with a token from one counter
 * that never repeats (not per key: a key removed and added again must not reuse
 * an old number, or a stale write would pass for the new one). A write carries
 * the token of the intent it was built from, and its confirmation settles only
 * that intent and older ones, so a write overtaken by a newer call can neither
 * clear the newer intent nor abandon it.
 *
 * The sets of owed and pending keys are kept as entries change, so every
 * question the writer asks per call is O(1) however many keys there are.
 */
import { RegistryError } from '../errors';
import type { Endpoint } from '../types';

/** An endpoint as written: the Endpoint and its encoded value. */
export interface Registration {
  readonly endpoint: Endpoint;
  readonly value: Buffer;
}

export type IntentKind = 'put' | 'delete';

interface Waiter {
  readonly token: number;
  readonly kind: IntentKind;
  /** What the call asked for: what the key falls back to if a newer call fails. */
  readonly want: Registration | undefined;
  resolve(): void;
  reject(error: Error): void;
}

interface Entry {
  readonly key: string;
  /** The latest intent: a registration, or undefined for "absent". */
  want: Registration | undefined;
  /** Token of the latest intent. */
  token: number;
  /** Token of the latest intent etcd confirmed; below `token` (or 0 after a loss) means a write is owed. */
  applied: number;
  /** The registration last confirmed in etcd: what a failed newer call falls back to. */
  registered: Registration | undefined;
  /** A put of this key was sent at least once (it may be in etcd, on some lease of ours). */
  sent: boolean;
  /** Revision of our last confirmed put: deletes older than it are not news. */
  putRevision: number;
  /** Revision of the latest put of ours that was not what the key should be: a confirmed put older than it does not count. */
  lateRevision: number;
  /** Someone else deleted the key: the next confirmed put of the latest intent is a restore. */
  restoring: boolean;
  /** Writes issued before this (a lease loss, a data loss, a foreign delete) do not count as applied. */
  staleSince: number;
  waiters: Waiter[];
}

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
  private readonly entries = new Map<string, Entry>();
  /** Keys whose latest intent is a registration. */
  private readonly owned = new Set<string>();
  /** Keys with a write owed (applied < token). */
  private readonly owedKeys = new Set<string>();
  /** Owned keys whose latest registration is not confirmed yet. */
  private readonly pendingKeys = new Set<string>();
  /** Owned keys with a put owed. */
  private readonly putsOwedKeys = new Set<string>();
  /** One clock for tokens and write issue times: never repeats. */
  private clock = 0;

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
    return this.pendingKeys.size > 0;
  }

  /** Some owned key must be (re)written before everything is in etcd. */
  get putsOwed(): boolean {
    return this.putsOwedKeys.size > 0;
  }

  /** The owned endpoint with this key. */
  endpoint(key: string): Endpoint | undefined {
    return this.entries.get(key)?.want?.endpoint;
  }

  /** A new intent; `done` settles when etcd confirms it (or a newer intent that supersedes it). */
  intend(key: string, want: Registration | undefined): { token: number; done: Promise<void> } {
    const token = ++this.clock;
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { key, want, token, applied: 0, registered: undefined, sent: false, putRevision: 0, lateRevision: 0, restoring: false, staleSince: 0, waiters: [] };
      this.entries.set(key, entry);
    }
    entry.want = want;
    entry.token = token;
    const e = entry;
    const kind: IntentKind = want ? 'put' : 'delete';
    const done = new Promise<void>((resolve, reject) => e.waiters.push({ token, kind, want, resolve, reject }));
    this.update(entry);
    return { token, done };
  }

  /**
   * The call with intent `token` failed (timed out, refused): its waiters (and
   * older ones of the same kind) reject with `error`. If nothing newer was asked
   * meanwhile, the key falls back to what the calls before it asked for: the
   * newest older call still standing (an unregister() not yet confirmed, or a
   * register() when an unregister() failed), else what was last confirmed: the
   * previous registration (put again, in case the failed put landed) or absent
   * (deleted, in case it landed). Returns false when a newer intent already
   * superseded it.
   */
  withdraw(key: string, token: number, kind: IntentKind, error: Error): boolean {
    const entry = this.entries.get(key);
    if (!entry) return false;
    const failed = (w: Waiter): boolean => w.token <= token && w.kind === kind;
    for (const w of entry.waiters) if (failed(w)) w.reject(error);
    entry.waiters = entry.waiters.filter((w) => !failed(w));
    const latest = entry.token === token;
    if (latest) {
      // Every waiter left is of the other kind and older than the failed call.
      const standing = entry.waiters.reduce<Waiter | undefined>((newest, w) => (newest && newest.token > w.token ? newest : w), undefined);
      entry.want = standing ? standing.want : entry.registered;
      entry.token = ++this.clock;
    }
    this.update(entry);
    return latest;
  }

  /** The writes owed, oldest first: at most `max` puts and `max` deletes. */
  owed(max: number): { puts: Write[]; deletes: Write[] } {
    const puts: Write[] = [];
    const deletes: Write[] = [];
    const issued = ++this.clock;
    for (const key of this.owedKeys) {
      const e = this.entries.get(key)!;
      const list = e.want ? puts : deletes;
      if (list.length < max) list.push({ key, token: e.token, issued, want: e.want });
      if (puts.length >= max && deletes.length >= max) break;
    }
    return { puts, deletes };
  }

  /** These puts are about to be sent. */
  sending(writes: readonly Write[]): void {
    for (const w of writes) {
      const entry = this.entries.get(w.key);
      if (entry) entry.sent = true;
    }
  }

  /** etcd confirmed `write` (at `revision` for a put). Undefined if the write was already superseded as applied. */
  confirm(write: Write, revision = 0): Settled | undefined {
    const entry = this.entries.get(write.key);
    if (!entry || write.token <= entry.applied) return undefined;
    // Written before the key went stale (on a lost lease, before a wipe): the
    // calls it answers are answered, but the key is still owed.
    // A put that etcd applied before an older put of ours landed late (see latePut) is overwritten.
    const current = write.issued >= entry.staleSince && !(write.want && revision < entry.lateRevision);
    const first = write.want !== undefined && entry.registered !== write.want;
    const restored = current && write.want !== undefined && entry.restoring && write.token === entry.token;
    if (write.want) entry.putRevision = Math.max(entry.putRevision, revision);
    if (restored) entry.restoring = false;
    if (current) entry.applied = write.token;
    entry.registered = write.want;
    const kept: Waiter[] = [];
    for (const w of entry.waiters) {
      if (w.token > write.token) kept.push(w);
      else if (w.kind === 'put' && !write.want) w.reject(new RegistryError('ERR_NOT_REGISTERED', `${entry.key} was unregistered before it reached etcd`));
      else w.resolve();
    }
    entry.waiters = kept;
    this.update(entry);
    return { first: first && !restored, restored };
  }

  /**
   * etcd refused `write` (not a matter of reachability): the calls that asked for
   * it fail with `error`, and the key falls back as in withdraw().
   */
  refuse(write: Write, error: Error): void {
    this.withdraw(write.key, write.token, write.want ? 'put' : 'delete', error);
  }

  /** Every owned key (or those `filter` picks) must be written again: returns how many. */
  staleAll(filter?: (endpoint: Endpoint) => boolean): number {
    let n = 0;
    const now = ++this.clock;
    for (const key of this.owned) {
      const e = this.entries.get(key)!;
      if (filter && !filter(e.want!.endpoint)) continue;
      e.applied = 0;
      e.staleSince = now;
      this.update(e);
      n++;
    }
    return n;
  }

  /**
   * Someone else deleted `key` at `revision`: if we still own it, it was
   * confirmed, and the delete is newer than our last put, it is owed again.
   */
  deletedByOther(key: string, revision: number): boolean {
    const entry = this.entries.get(key);
    if (!entry?.want || !entry.registered || revision <= entry.putRevision) return false;
    entry.restoring = true;
    entry.applied = 0;
    entry.staleSince = ++this.clock;
    this.update(entry);
    return true;
  }

  /**
   * etcd applied a put of ours to `key` at `revision` with `value`: if that is not
   * what the key should be (absent, or another value) and it is newer than our
   * last confirmed put, the key is owed again. Returns whether it is.
   */
  latePut(key: string, value: Buffer, revision: number): boolean {
    let entry = this.entries.get(key);
    if (entry && (revision <= entry.putRevision || entry.want?.value.equals(value))) return false;
    if (!entry) {
      // A key we no longer track: delete it.
      entry = { key, want: undefined, token: ++this.clock, applied: 0, registered: undefined, sent: true, putRevision: 0, lateRevision: revision, restoring: false, staleSince: 0, waiters: [] };
      this.entries.set(key, entry);
    }
    entry.sent = true;
    entry.applied = 0;
    entry.lateRevision = Math.max(entry.lateRevision, revision);
    // A delete in flight may have run before the late put: it does not count (a put's revision tells).
    if (!entry.want) entry.staleSince = ++this.clock;
    this.update(entry);
    return true;
  }

  /** On close: pending registrations fail; pending unregistrations succeed (the revoke removes the keys). */
  closeAll(error: Error): void {
    for (const e of this.entries.values()) {
      for (const w of e.waiters) {
        if (w.kind === 'put') w.reject(error);
        else w.resolve();
      }
      e.waiters = [];
    }
  }

  /** Brings the sets up to date with one entry, and forgets it once absent and settled. */
  private update(entry: Entry): void {
    const { key } = entry;
    // A delete of a key never sent anywhere has nothing to do in etcd.
    if (!entry.want && !entry.sent && entry.applied < entry.token) {
      entry.applied = entry.token;
      entry.registered = undefined;
      for (const w of entry.waiters) {
        if (w.kind === 'put') w.reject(new RegistryError('ERR_NOT_REGISTERED', `${key} was unregistered before it reached etcd`));
        else w.resolve();
      }
      entry.waiters = [];
    }
    const owed = entry.applied < entry.token;
    toggle(this.owned, key, entry.want !== undefined);
    toggle(this.owedKeys, key, owed);
    toggle(this.pendingKeys, key, entry.want !== undefined && entry.registered !== entry.want);
    toggle(this.putsOwedKeys, key, entry.want !== undefined && owed);
    if (!entry.want && !owed && entry.waiters.length === 0) this.entries.delete(key);
  }
}

function toggle(set: Set<string>, key: string, on: boolean): void {
  if (on) set.add(key);
  else set.delete(key);
}
