/**
 * Uniform random pick over a dense array (swap-remove on removal): O(1) pick,
 * update and replace, no allocation per pick.
 *
 * With an `exclude` predicate: a few rejection-sampling draws (uniform among
 * the non-excluded when one succeeds), then a single reservoir-sampling scan
 * (also uniform among the non-excluded, O(n)); if everything is excluded, a
 * uniform pick among all.
 */
import type { Endpoint } from '../types';
import { normalizeChange } from './changes';
import { EndpointList } from './endpoint-list';
import type { ExcludePredicate, Picker, CreatePickerOptions, PickOptions, RandomSource } from './types';

/** Rejection-sampling draws before the exact O(n) scan. */
export const REJECTION_ATTEMPTS = 4;

export class RandomPicker implements Picker {
  readonly strategy = 'random' as const;
  private _lastAllExcluded = false;
  private readonly list = new EndpointList();
  /** Undefined for Math.random, which is then called directly (inlined, no boxed result). */
  private readonly customRandom: RandomSource | undefined;

  constructor(initial: readonly Endpoint[] = [], options: CreatePickerOptions = {}) {
    this.customRandom = options.random;
    if (initial.length > 0) this.update(initial, []);
  }

  get size(): number {
    return this.list.size;
  }

  get lastAllExcluded(): boolean {
    return this._lastAllExcluded;
  }

  update(added: readonly Endpoint[], removed: readonly Endpoint[]): void {
    const { removedKeys, upserts } = normalizeChange(added, removed);
    for (const key of removedKeys) {
      const i = this.list.indexOf(key);
      if (i >= 0) this.list.swapRemove(i);
    }
    for (const e of upserts) {
      const i = this.list.indexOf(e.key);
      if (i >= 0) this.list.set(i, e);
      else this.list.push(e);
    }
  }

  pick(_options?: PickOptions, exclude?: ExcludePredicate): Endpoint | undefined {
    this._lastAllExcluded = false;
    const n = this.list.size;
    if (n === 0) return undefined;
    const first = this.list.at(this.draw(n));
    if (exclude === undefined || !exclude(first)) return first;
    for (let attempt = 1; attempt < REJECTION_ATTEMPTS; attempt++) {
      const e = this.list.at(this.draw(n));
      if (!exclude(e)) return e;
    }
    // Exact fallback: reservoir sampling over the non-excluded.
    const random = this.customRandom ?? Math.random;
    let candidates = 0;
    let chosen: Endpoint | undefined;
    for (let i = 0; i < n; i++) {
      const e = this.list.at(i);
      if (exclude(e)) continue;
      candidates++;
      if (random() * candidates < 1) chosen = e;
    }
    if (chosen !== undefined) return chosen;
    this._lastAllExcluded = true;
    return first;
  }

  private draw(n: number): number {
    const r = (this.customRandom === undefined ? Math.random() : this.customRandom());
    const i = Math.floor(r * n);
    return i >= 0 && i < n ? i : n - 1;
  }
}
