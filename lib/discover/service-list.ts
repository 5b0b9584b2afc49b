/**
 * The local endpoint list of one service. Pure: no I/O. Changes are applied
 * incrementally; pickers are updated with exactly what changed; the frozen
 * array handed out stays the same until the next change.
 *
 * Storage: the entries in insertion order in fixed-size chunks (a deleted
 * entry leaves a hole that a later set() of the same key fills in place; holes
 * are swept out when they outnumber the live entries, amortized O(1)), and a
 * Map from key to slot that is never deleted from between sweeps (V8's Map
 * keeps a deleted entry in its bucket chain until the next rehash: a flapping
 * key would make every operation on it slower and slower).
 *
 * `view()` is an O(1) snapshot of the list as it is now (what a `change` event
 * carries): the chunks are shared copy-on-write, so the next change copies
 * only the chunk it writes and the chunk table, never the whole list. The
 * snapshot's array is built on first read: one copy, shared by every reader,
 * and the very same array as `endpoints` while the list has not changed.
 */
import { createPicker, type Picker, type Strategy } from '../pickers';
import type { Endpoint } from '../types';

export interface ListEntry {
  readonly endpoint: Endpoint;
  /** The raw value, to tell a real change from a rewrite of the same record. */
  readonly value: string;
}

type Chunk = (ListEntry | undefined)[];

const SHIFT = 7;
const CHUNK = 1 << SHIFT;
const MASK = CHUNK - 1;

/** The list at one moment; its array is built on first read. */
export interface ListView {
  readonly endpoints: readonly Endpoint[];
}

class Snapshot implements ListView {
  private built: readonly Endpoint[] | undefined;

  constructor(
    private readonly list: ServiceList,
    readonly version: number,
    private readonly chunks: readonly Chunk[],
    private readonly length: number,
    private readonly live: number,
  ) {}

  get endpoints(): readonly Endpoint[] {
    if (this.built) return this.built;
    // Unchanged since: the list's own cached array (shared with every other reader).
    this.built = this.list.version === this.version ? this.list.endpoints : collect(this.chunks, this.length, this.live);
    return this.built;
  }
}

function collect(chunks: readonly Chunk[], length: number, live: number): readonly Endpoint[] {
  const list = new Array<Endpoint>(live);
  let k = 0;
  for (let c = 0, base = 0; base < length; c++, base += CHUNK) {
    const chunk = chunks[c]!;
    const end = Math.min(CHUNK, length - base);
    for (let i = 0; i < end; i++) {
      const e = chunk[i];
      if (e !== undefined) list[k++] = e.endpoint;
    }
  }
  return Object.freeze(list);
}

export class ServiceList {
  private chunks: Chunk[] = [];
  /**
   * Epoch in which each chunk was copied (or made): a chunk of an older epoch
   * may be shared with a view. Undefined until the first view (no chunk is shared
   * before): a list that never had a view pays nothing for it.
   */
  private chunkEpoch: number[] | undefined;
  private epoch = 0;
  /** The chunk table is referenced by a view: copy it before writing. */
  private tableShared = false;
  private index = new Map<string, number>();
  private length = 0;
  private dead = 0;
  private snapshot: readonly Endpoint[] | undefined;
  private lastView: Snapshot | undefined;
  private readonly pickers = new Map<Strategy, Picker>();
  /** Bumped on every write. */
  version = 0;
  /** Filled from etcd at least once: later differences are changes, the first fill is not. */
  synced = false;
  /**
   * No watch feeds it for now (its own view released while the whole-registry view has not
   * synced yet): kept for that view to fill, never served meanwhile.
   */
  stale = false;
  /** Read (endpoints(), pick(), …) since the idle sweep last looked: set on every read, cleared by the sweep. */
  used = false;

  constructor(readonly service: string) {}

  get size(): number {
    return this.length - this.dead;
  }

  /** The current list; the same frozen array until the next change. */
  get endpoints(): readonly Endpoint[] {
    if (!this.snapshot) this.snapshot = collect(this.chunks, this.length, this.size);
    return this.snapshot;
  }

  /** An O(1) snapshot of the list as it is now; its `endpoints` is built on first read. */
  view(): ListView {
    if (this.lastView?.version === this.version) return this.lastView;
    this.chunkEpoch ??= [];
    this.tableShared = true;
    this.epoch++;
    this.lastView = new Snapshot(this, this.version, this.chunks, this.length, this.size);
    return this.lastView;
  }

  keys(): string[] {
    const keys: string[] = [];
    this.index.forEach((slot, key) => {
      if (this.read(slot) !== undefined) keys.push(key);
    });
    return keys;
  }

  get(key: string): ListEntry | undefined {
    const slot = this.index.get(key);
    return slot === undefined ? undefined : this.read(slot);
  }

  /** The picker for a strategy, created on first use from the current list and kept up to date after. */
  picker(strategy: Strategy): Picker {
    let picker = this.pickers.get(strategy);
    if (!picker) {
      picker = createPicker(strategy, this.endpoints);
      this.pickers.set(strategy, picker);
    }
    return picker;
  }

  /** The picker of a strategy already in use, or undefined: never creates one. */
  existingPicker(strategy: Strategy): Picker | undefined {
    return this.pickers.get(strategy);
  }

  /** Puts (entry) or deletes (undefined) one key; records what changed in `added` / `removed`. */
  set(key: string, entry: ListEntry | undefined, added: Endpoint[], removed: Endpoint[]): void {
    const slot = this.index.get(key);
    const old = slot === undefined ? undefined : this.read(slot);
    if (old && entry && old.value === entry.value) return;
    if (old) removed.push(old.endpoint);
    if (entry) {
      if (slot === undefined) {
        this.index.set(key, this.length);
        this.write(this.length++, entry);
      } else {
        if (!old) this.dead--;
        this.write(slot, entry);
      }
      added.push(entry.endpoint);
    } else if (old) {
      this.write(slot!, undefined);
      this.dead++;
      if (this.dead > 32 && this.dead > this.length / 2) this.sweep();
    }
  }

  /**
   * set() of every `keys[i]` to `entries[i]` (no key twice), in order; into a list that has
   * no slot yet (the first read of a service), the chunks are built at once.
   */
  setAll(keys: readonly string[], entries: readonly ListEntry[], added: Endpoint[], removed: Endpoint[]): void {
    const n = keys.length;
    if (this.length !== 0 || n === 0) {
      for (let i = 0; i < n; i++) this.set(keys[i]!, entries[i], added, removed);
      return;
    }
    const chunks: Chunk[] = [];
    for (let base = 0, c = 0; base < n; base += CHUNK, c++) {
      chunks.push(entries.slice(base, base + CHUNK));
      if (this.chunkEpoch) this.chunkEpoch[c] = this.epoch;
    }
    for (let i = 0; i < n; i++) {
      this.index.set(keys[i]!, i);
      added.push(entries[i]!.endpoint);
    }
    this.chunks = chunks; // a new table: the old (empty) one may be in a view
    this.tableShared = false;
    this.length = n;
    this.version++;
    this.snapshot = undefined;
  }

  /** Tells the pickers and drops the cached array after a batch of set() calls. */
  commit(added: readonly Endpoint[], removed: readonly Endpoint[]): void {
    if (added.length === 0 && removed.length === 0) return;
    this.snapshot = undefined;
    for (const picker of this.pickers.values()) picker.update(added, removed);
  }

  private read(slot: number): ListEntry | undefined {
    return this.chunks[slot >> SHIFT]![slot & MASK];
  }

  private write(slot: number, entry: ListEntry | undefined): void {
    this.version++;
    this.snapshot = undefined;
    if (this.tableShared) {
      this.chunks = this.chunks.slice();
      this.tableShared = false;
    }
    const c = slot >> SHIFT;
    let chunk = this.chunks[c];
    if (chunk === undefined) {
      chunk = [entry];
      if (c === 0) this.chunks = [chunk]; // exact size: most lists are small
      else this.chunks[c] = chunk;
      if (this.chunkEpoch) this.chunkEpoch[c] = this.epoch;
      return;
    }
    if (this.chunkEpoch && this.chunkEpoch[c] !== this.epoch) {
      chunk = chunk.slice();
      this.chunks[c] = chunk;
      this.chunkEpoch[c] = this.epoch;
    }
    chunk[slot & MASK] = entry;
  }

  /** Drops the holes (live entries keep their order); views keep the old chunks. */
  private sweep(): void {
    const chunks: Chunk[] = [];
    const index = new Map<string, number>();
    let n = 0;
    this.index.forEach((slot, key) => {
      const e = this.read(slot);
      if (e === undefined) return;
      const c = n >> SHIFT;
      (chunks[c] ??= [])[n & MASK] = e;
      index.set(key, n++);
    });
    this.epoch++;
    this.chunks = chunks;
    this.chunkEpoch = undefined; // the new chunks are in no view
    this.tableShared = false;
    this.index = index;
    this.length = n;
    this.dead = 0;
    this.version++;
    this.snapshot = undefined;
  }
}
