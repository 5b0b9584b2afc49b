/**
 * Load-aware pickers, both "power of two choices" over a dense array: two
 * distinct endpoints drawn at random, the less loaded one taken.
 *
 * - least-request: load = requests in flight (ties: the first drawn).
 * - least-latency: load = peak-EWMA latency × (requests in flight + 1) (see
 *   lib/choose/load.ts).
 *
 * O(1) and allocation-free per pick, update O(1) per endpoint. Each endpoint
 * has an EndpointLoad, kept while its key stays in the list (a metadata
 * update keeps it). The loads are fed by `begin(key)` … `end()` (the Registry's
 * begin(), and fetch() through it).
 *
 * With an `exclude` predicate: a few draws of pairs; if every drawn endpoint
 * was excluded, one O(n) scan for the least loaded of the others; if
 * everything is excluded, a pick among all.
 */
import { EndpointLoad } from '../choose/load';
import type { Endpoint } from '../types';
import { normalizeChange } from './changes';
import { EndpointList } from './endpoint-list';
import type { CreatePickerOptions, ExcludePredicate, Picker, PickOptions, RandomSource } from './types';

/** Pair draws before the exact O(n) scan when endpoints are excluded. */
export const PAIR_ATTEMPTS = 4;

export type LoadStrategy = 'least-request' | 'least-latency';

export class LeastLoadedPicker implements Picker {
  private _lastAllExcluded = false;
  private readonly list = new EndpointList();
  /** Parallel to `list`. */
  private readonly loads: EndpointLoad[] = [];
  private readonly customRandom: RandomSource | undefined;
  private readonly latency: boolean;

  constructor(
    readonly strategy: LoadStrategy,
    initial: readonly Endpoint[] = [],
    options: CreatePickerOptions = {},
  ) {
    this.customRandom = options.random;
    this.latency = strategy === 'least-latency';
    if (initial.length > 0) this.update(initial, []);
  }

  get size(): number {
    return this.list.size;
  }

  get lastAllExcluded(): boolean {
    return this._lastAllExcluded;
  }

  /** The load of the endpoint with this key, or undefined when it is not in the list. */
  load(key: string): EndpointLoad | undefined {
    const i = this.list.indexOf(key);
    return i < 0 ? undefined : this.loads[i];
  }

  update(added: readonly Endpoint[], removed: readonly Endpoint[]): void {
    const { removedKeys, upserts } = normalizeChange(added, removed);
    for (const key of removedKeys) {
      const i = this.list.indexOf(key);
      if (i < 0) continue;
      const moved = this.list.swapRemove(i);
      const last = this.loads.pop()!;
      if (moved >= 0) this.loads[i] = last;
    }
    for (const e of upserts) {
      const i = this.list.indexOf(e.key);
      if (i >= 0) {
        this.list.set(i, e);
      } else {
        this.list.push(e);
        this.loads.push(new EndpointLoad());
      }
    }
  }

  pick(_options?: PickOptions, exclude?: ExcludePredicate): Endpoint | undefined {
    this._lastAllExcluded = false;
    const n = this.list.size;
    if (n === 0) return undefined;
    if (n === 1) {
      const only = this.list.at(0);
      if (exclude !== undefined && exclude(only)) this._lastAllExcluded = true;
      return only;
    }
    const now = this.latency ? performance.now() : 0;
    let firstDrawn = -1;
    for (let attempt = 0; attempt < (exclude === undefined ? 1 : PAIR_ATTEMPTS); attempt++) {
      const a = this.draw(n);
      let b = this.draw(n - 1);
      if (b >= a) b++;
      if (firstDrawn < 0) firstDrawn = a;
      const aOk = exclude === undefined || !exclude(this.list.at(a));
      const bOk = exclude === undefined || !exclude(this.list.at(b));
      if (aOk && bOk) return this.list.at(this.less(a, b, now) ? a : b);
      if (aOk) return this.list.at(a);
      if (bOk) return this.list.at(b);
    }
    // Exact fallback: the least loaded of the non-excluded.
    let best = -1;
    for (let i = 0; i < n; i++) {
      if (exclude!(this.list.at(i))) continue;
      if (best < 0 || this.less(i, best, now)) best = i;
    }
    if (best >= 0) return this.list.at(best);
    this._lastAllExcluded = true;
    return this.list.at(firstDrawn);
  }

  /** Whether endpoint `a` is less loaded than `b` (ties go to `a`). */
  private less(a: number, b: number, now: number): boolean {
    const la = this.loads[a]!;
    const lb = this.loads[b]!;
    return this.latency ? la.cost(now) <= lb.cost(now) : la.inflight <= lb.inflight;
  }

  private draw(n: number): number {
    const r = this.customRandom === undefined ? Math.random() : this.customRandom();
    const i = Math.floor(r * n);
    return i >= 0 && i < n ? i : n - 1;
  }
}
