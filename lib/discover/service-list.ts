/**
 * The local endpoint list of one service. Pure: no I/O. Changes are applied
 * incrementally (a Map keyed by etcd key); pickers are updated with exactly
 * what changed; the frozen array handed out stays the same until the next change.
 */
import { ChurnMap } from '../churn-map';
import { createPicker, type Picker, type Strategy } from '../pickers';
import type { Endpoint } from '../types';

export interface ListEntry {
  readonly endpoint: Endpoint;
  /** The raw value, to tell a real change from a rewrite of the same record. */
  readonly value: string;
}

export class ServiceList {
  private readonly entries = new ChurnMap<ListEntry>();
  private snapshot: readonly Endpoint[] | undefined;
  private readonly pickers = new Map<Strategy, Picker>();
  /** Filled from etcd at least once: later differences are changes, the first fill is not. */
  synced = false;
  /** Read (endpoints(), pick(), …) since the idle sweep last looked: set on every read, cleared by the sweep. */
  used = false;

  constructor(readonly service: string) {}

  get size(): number {
    return this.entries.size;
  }

  /** The current list; the same frozen array until the next change. */
  get endpoints(): readonly Endpoint[] {
    if (!this.snapshot) {
      const list: Endpoint[] = [];
      this.entries.forEach((e) => list.push(e.endpoint));
      this.snapshot = Object.freeze(list);
    }
    return this.snapshot;
  }

  keys(): string[] {
    return this.entries.keys();
  }

  get(key: string): ListEntry | undefined {
    return this.entries.get(key);
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
    const old = this.entries.get(key);
    if (old && entry && old.value === entry.value) return;
    if (old) removed.push(old.endpoint);
    if (entry) {
      this.entries.set(key, entry);
      added.push(entry.endpoint);
    } else if (old) {
      this.entries.delete(key);
    }
  }

  /** Tells the pickers and drops the cached array after a batch of set() calls. */
  commit(added: readonly Endpoint[], removed: readonly Endpoint[]): void {
    if (added.length === 0 && removed.length === 0) return;
    this.snapshot = undefined;
    for (const picker of this.pickers.values()) picker.update(added, removed);
  }
}
