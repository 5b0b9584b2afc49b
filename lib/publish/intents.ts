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
 * An owned key can be withheld from etcd without being given up: paused (by
 * the application) or not healthy (its health check fails, or has not passed
 * yet). Its target in etcd is then "absent", while the registry keeps owning
 * it and its lease stays alive; it is written again once listed.
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
  resolve(): void;
  reject(error: Error): void;
}

interface Entry {
  readonly key: string;
  /** The latest intent: a registration, or undefined for "absent". */
  want: Registration | undefined;
  /** Taken out of etcd by the application (pause()), still owned. */
  paused: boolean;
  /** Its health check passes (true when it has none). */
  healthy: boolean;
  /** Token of the latest intent. */
  token: number;
  /** Token of the latest intent etcd confirmed; below `token` (or 0 after a loss) means a write is owed. */
  applied: number;
  /** The registration last confirmed in etcd (or accepted while paused): what a failed newer call falls back to. */
  registered: Registration | undefined;
  /** A put of this key was sent at least once (it may be in etcd, on some lease of ours). */
  sent: boolean;
  /** Revision of our last confirmed put: deletes older than it are not news. */
  putRevision: number;
  /** Someone else deleted the key: the next confirmed put of the latest intent is a restore. */
  restoring: boolean;
  /** Writes issued before this (a lease loss, a data loss, a foreign delete) do not count as applied. */
  staleSince: number;
  /**
   * A put of this key got no answer: etcd may still apply it, late (a request held in
   * a stalled etcd's socket is given a fresh deadline when it is finally read). Kept
   * for good, so that such a put is undone whenever it lands.
   */
  uncertain: boolean;
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

  /** The owned key is paused. */
  isPaused(key: string): boolean {
    return this.entries.get(key)?.paused === true;
  }

  /**
   * A new intent; `done` settles when etcd confirms it (or a newer intent that
   * supersedes it). `healthy` false: a registration held back until
   * setHealthy(true) (a health check that has not passed yet); a new key only.
   */
  intend(key: string, want: Registration | undefined, healthy = true): { token: number; done: Promise<void> } {
    const token = ++this.clock;
    let entry = this.entries.get(key);
    if (!entry) {
      entry = {
        key,
        want,
        paused: false,
        healthy,
        token,
        applied: 0,
        registered: undefined,
        sent: false,
        putRevision: 0,
        restoring: false,
        staleSince: 0,
        uncertain: false,
        waiters: [],
      };
      this.entries.set(key, entry);
    }
    // A key given up and taken again starts over: listed unless its new check says otherwise.
    if (!entry.want && want) {
      entry.paused = false;
      entry.healthy = healthy;
    }
    entry.want = want;
    entry.token = token;
    const e = entry;
    const kind: IntentKind = want ? 'put' : 'delete';
    const done = new Promise<void>((resolve, reject) => e.waiters.push({ token, kind, resolve, reject }));
    // Registered while paused: accepted now, written on resume().
    if (want && entry.paused) {
      entry.registered = want;
      this.release(entry, token, 'put');
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
    if (before === after && entry.applied >= entry.token) return Promise.resolve();
    const token = ++this.clock;
    entry.token = token;
    // Nothing to wait for while the key waits for its health check: it is written when that passes.
    const kind: IntentKind = after ? 'put' : 'delete';
    const done = !after && entry.want && !entry.healthy && !entry.paused
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => entry.waiters.push({ token, kind, resolve, reject }));
    this.update(entry);
    return done;
  }

  /**
   * The call with intent `token` failed (timed out, refused): its waiters (and
   * older ones of the same kind) reject with `error`. If nothing newer was asked
   * meanwhile, the key falls back to what was last confirmed: the previous
   * registration (put again, in case the failed put landed) or absent (deleted,
   * in case it landed). Returns false when a newer intent already superseded it.
   */
  withdraw(key: string, token: number, kind: IntentKind, error: Error): boolean {
    const entry = this.entries.get(key);
    if (!entry) return false;
    const failed = (w: Waiter): boolean => w.token <= token && w.kind === kind;
    for (const w of entry.waiters) if (failed(w)) w.reject(error);
    entry.waiters = entry.waiters.filter((w) => !failed(w));
    const latest = entry.token === token;
    if (latest) {
      entry.want = entry.registered;
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
      const want = target(e);
      const list = want ? puts : deletes;
      if (list.length < max) list.push({ key, token: e.token, issued, want });
      if (puts.length >= max && deletes.length >= max) break;
    }
    return { puts, deletes };
  }

  /** These puts got no answer: they may land later. */
  unanswered(writes: readonly Write[]): void {
    for (const w of writes) {
      const entry = this.entries.get(w.key);
      if (entry) entry.uncertain = true;
    }
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
    const current = write.issued >= entry.staleSince;
    const first = write.want !== undefined && entry.registered !== write.want;
    const restored = current && write.want !== undefined && entry.restoring && write.token === entry.token;
    if (write.want) entry.putRevision = Math.max(entry.putRevision, revision);
    if (restored) entry.restoring = false;
    if (current) entry.applied = write.token;
    // A key withheld (paused, unhealthy) is still registered: only an unregistration forgets it.
    if (write.want || !entry.want) entry.registered = write.want;
    this.release(entry, write.token, write.want ? 'put' : 'delete');
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
    if (!entry || !target(entry) || !entry.registered || revision <= entry.putRevision) return false;
    entry.restoring = true;
    entry.applied = 0;
    entry.staleSince = ++this.clock;
    this.update(entry);
    return true;
  }

  /**
   * etcd applied a put of ours of `key` at `revision` with `value`. If a put of the
   * key once went unanswered, and this is not what the key should hold (that put,
   * landed late: an older value, or a key given up since) and it is newer than our
   * last confirmed put, a write is owed again. Returns true if so.
   */
  strayPut(key: string, revision: number, value: Buffer): boolean {
    const entry = this.entries.get(key);
    if (!entry?.uncertain) return false;
    const wanted = target(entry);
    if ((wanted && wanted.value.equals(value)) || revision <= entry.putRevision) return false;
    entry.applied = 0;
    entry.staleSince = ++this.clock;
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

  /**
   * Settles the waiters as old as `token` once etcd holds `written`: a put answers
   * every call (an unregister it superseded included); a delete answers
   * unregistrations and pauses, and fails a registration only if the key was
   * given up (a withheld key's registrations wait for it to be listed).
   */
  private release(entry: Entry, token: number, written: IntentKind): void {
    const kept: Waiter[] = [];
    for (const w of entry.waiters) {
      if (w.token > token || (written === 'delete' && w.kind === 'put' && entry.want)) kept.push(w);
      else if (written === 'delete' && w.kind === 'put') w.reject(new RegistryError('ERR_NOT_REGISTERED', `${entry.key} was unregistered before it reached etcd`));
      else w.resolve();
    }
    entry.waiters = kept;
  }

  /** Brings the sets up to date with one entry, and forgets it once absent and settled. */
  private update(entry: Entry): void {
    const { key } = entry;
    // A delete of a key never sent anywhere has nothing to do in etcd.
    if (!target(entry) && !entry.sent && entry.applied < entry.token) {
      entry.applied = entry.token;
      if (!entry.want) entry.registered = undefined;
      this.release(entry, entry.token, 'delete');
    }
    const owed = entry.applied < entry.token;
    toggle(this.owned, key, entry.want !== undefined);
    toggle(this.owedKeys, key, owed);
    toggle(this.pendingKeys, key, entry.want !== undefined && entry.registered !== entry.want);
    toggle(this.putsOwedKeys, key, target(entry) !== undefined && owed);
    if (!entry.want && !owed && entry.waiters.length === 0 && !entry.uncertain) this.entries.delete(key);
  }
}

/** What etcd should hold under the key: the registration while it is listed, else nothing. */
function target(entry: Entry | undefined): Registration | undefined {
  return entry?.want && !entry.paused && entry.healthy ? entry.want : undefined;
}

function toggle(set: Set<string>, key: string, on: boolean): void {
  if (on) set.add(key);
  else set.delete(key);
}
