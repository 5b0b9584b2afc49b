/**
 * Weighted random pick: probability proportional to `metadata.weight`.
 *
 * Weights: a finite number ≥ 0 is used as is (values above MAX_WEIGHT are
 * clamped to it, so sums stay finite and precise); anything else — absent,
 * negative, NaN, ±Infinity, a string, … — counts as DEFAULT_WEIGHT (1).
 * Weight 0 means never picked, unless every candidate has weight 0, in which
 * case the pick is uniform among them.
 *
 * Endpoints live in a dense array (swap-remove) with a Fenwick tree of their
 * weights: O(log n) pick, O(log² n) per added/removed/reweighted endpoint, no
 * rebuild per change and no allocation per pick.
 *
 * With an `exclude` predicate the candidates are the non-excluded endpoints
 * (or all of them when every one is excluded, with `lastAllExcluded` set), and
 * the weight rule applies among the candidates: a few rejection-sampling
 * draws, then one exact O(n) weighted-reservoir scan.
 */
import type { Endpoint } from '../types';
import { normalizeChange } from './changes';
import { EndpointList } from './endpoint-list';
import { FenwickTree } from './fenwick';
import type { ExcludePredicate, Picker, CreatePickerOptions, PickOptions, RandomSource } from './types';
import { REJECTION_ATTEMPTS } from './random';

export const DEFAULT_WEIGHT = 1;
export const MAX_WEIGHT = 1e9;

/** The weight of an endpoint, from `metadata.weight` (see the module comment). */
export function weightOf(endpoint: Endpoint): number {
  const w = (endpoint.metadata as Readonly<Record<string, unknown>> | undefined)?.weight;
  if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) return DEFAULT_WEIGHT;
  if (w === 0) return 0; // also turns -0 into 0
  return w > MAX_WEIGHT ? MAX_WEIGHT : w;
}

export class WeightedPicker implements Picker {
  readonly strategy = 'weighted' as const;
  private _lastAllExcluded = false;
  private readonly list = new EndpointList();
  private readonly tree = new FenwickTree();
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
    const tree = this.tree;
    for (const key of removedKeys) {
      const i = this.list.indexOf(key);
      if (i < 0) continue;
      const moved = this.list.swapRemove(i);
      if (moved >= 0) {
        tree.set(i, tree.weight(moved));
        tree.set(moved, 0);
      } else {
        tree.set(i, 0);
      }
    }
    for (const e of upserts) {
      const w = weightOf(e);
      const i = this.list.indexOf(e.key);
      if (i >= 0) {
        this.list.set(i, e);
        if (tree.weight(i) !== w) tree.set(i, w);
      } else {
        tree.set(this.list.push(e), w);
      }
    }
  }

  pick(_options?: PickOptions, exclude?: ExcludePredicate): Endpoint | undefined {
    this._lastAllExcluded = false;
    const n = this.list.size;
    if (n === 0) return undefined;
    let first = -1;
    for (let attempt = 0; attempt < REJECTION_ATTEMPTS; attempt++) {
      const i = this.sample(n);
      if (i < 0) continue;
      const e = this.list.at(i);
      if (exclude === undefined || !exclude(e)) return e;
      if (first < 0) first = i;
    }
    const chosen = this.scan(n, exclude);
    if (chosen !== undefined) return chosen;
    // Every endpoint is excluded: pick among all by weight.
    this._lastAllExcluded = true;
    return first >= 0 ? this.list.at(first) : this.scan(n, undefined);
  }

  /** An index drawn by weight (uniformly when all weights are 0), or -1 on a rounding miss. */
  private sample(n: number): number {
    const total = this.tree.total;
    if (total > 0) {
      const r = (this.customRandom === undefined ? Math.random() : this.customRandom());
      const i = this.tree.find(r * total);
      return i < n && this.tree.weight(i) > 0 ? i : -1;
    }
    const r = (this.customRandom === undefined ? Math.random() : this.customRandom());
    const i = Math.floor(r * n);
    return i >= 0 && i < n ? i : n - 1;
  }

  /** Exact O(n) pick among the non-excluded: by weight, or uniform when their weights are all 0. */
  private scan(n: number, exclude: ExcludePredicate | undefined): Endpoint | undefined {
    const random = this.customRandom ?? Math.random;
    let candidates = 0;
    let uniform: Endpoint | undefined;
    let weightSum = 0;
    let weighted: Endpoint | undefined;
    for (let i = 0; i < n; i++) {
      const e = this.list.at(i);
      if (exclude !== undefined && exclude(e)) continue;
      candidates++;
      if (random() * candidates < 1) uniform = e;
      const w = this.tree.weight(i);
      if (w > 0) {
        weightSum += w;
        if (random() * weightSum < w) weighted = e;
      }
    }
    return weighted ?? uniform;
  }
}
