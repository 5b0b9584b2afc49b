/**
 * Consistent hashing on a ring of virtual nodes.
 *
 * Each endpoint owns VIRTUAL_NODES points, `hash32(endpoint.key + '#' + i)`.
 * The ring is two parallel sorted typed arrays (point hash as a signed int32
 * — the order is a rotation of the unsigned one — and owner slot),
 * ordered by (hash, owner key) so that it does not depend on the order of
 * changes. A change locates the removed endpoints' points by binary search,
 * sorts only the new endpoints' points and merges them in, copying the rest
 * of the ring in runs — never a re-sort of the ring: O(N + k·V·log N) for k
 * endpoints changed out of N points. A replace (same key) only swaps the
 * endpoint in its slot: same points, same ring.
 *
 * A key maps to the first point at or after its hash (wrapping), found by
 * binary search. When that endpoint is excluded, the walk goes clockwise to the
 * next distinct non-excluded endpoint, so a marked-down endpoint's keys spread
 * over the others deterministically.
 */
import { RegistryError, quote } from '../errors';
import type { Endpoint } from '../types';
import { normalizeChange } from './changes';
import { FNV_OFFSET, fnv1a, hashInt32, hashWithIndex } from './hash';
import type { ExcludePredicate, Picker, PickOptions } from './types';
import { ChurnMap } from '../churn-map';

/**
 * Points per endpoint. Measured over 52,800 random endpoints (n = 3…50): the
 * largest share was 1.25/n (160 points reach 1.37/n), so adding or removing
 * one endpoint remaps at most ~1.25/n of the keys.
 */
export const VIRTUAL_NODES = 320;

const EMPTY_POINTS = new Int32Array(0);
const EMPTY_OWNERS = new Int32Array(0);

export class ConsistentHashPicker implements Picker {
  readonly strategy = 'consistent-hash' as const;
  private _lastAllExcluded = false;
  private points: Int32Array = EMPTY_POINTS;
  private owners: Int32Array = EMPTY_OWNERS;
  private readonly slots: (Endpoint | undefined)[] = [];
  private readonly slotByKey = new ChurnMap<number>();
  private readonly freeSlots: number[] = [];
  /** Per-slot visit stamps for the exclusion walk (avoids asking `exclude` twice). */
  private seen = new Int32Array(0);
  private stamp = 0;

  constructor(initial: readonly Endpoint[] = []) {
    if (initial.length > 0) this.update(initial, []);
  }

  get size(): number {
    return this.slotByKey.size;
  }

  get lastAllExcluded(): boolean {
    return this._lastAllExcluded;
  }

  update(added: readonly Endpoint[], removed: readonly Endpoint[]): void {
    const { removedKeys, upserts } = normalizeChange(added, removed);
    const dead: number[] = [];
    for (const key of removedKeys) {
      const slot = this.slotByKey.get(key);
      if (slot === undefined) continue;
      this.slotByKey.delete(key);
      dead.push(slot);
    }
    const fresh: number[] = [];
    for (const e of upserts) {
      const slot = this.slotByKey.get(e.key);
      if (slot !== undefined) {
        this.slots[slot] = e; // replace: same key, same points
        continue;
      }
      const s = this.freeSlots.pop() ?? this.slots.length;
      this.slots[s] = e;
      this.slotByKey.set(e.key, s);
      fresh.push(s);
    }
    if (dead.length === 0 && fresh.length === 0) return;
    this.spliceRing(dead, fresh);
    for (const s of dead) {
      this.slots[s] = undefined;
      this.freeSlots.push(s);
    }
    if (this.seen.length < this.slots.length) {
      const seen = new Int32Array(Math.max(8, this.slots.length * 2));
      seen.set(this.seen);
      this.seen = seen;
    }
  }

  /**
   * Drops the points of the `dead` slots and inserts those of the `fresh`
   * ones. The dead points are located by binary search (their hashes are
   * recomputed from their keys) and the new ones sorted on their own, so the
   * rest of the ring is copied in runs: O(k·V·log N) plus one copy of the ring.
   */
  private spliceRing(dead: readonly number[], fresh: readonly number[]): void {
    const V = VIRTUAL_NODES;
    const slots = this.slots;
    const oldHash = this.points;
    const oldOwner = this.owners;
    const oldLen = oldHash.length;

    // Positions of the dead points in the old ring, ascending.
    const deadCount = dead.length * V;
    const deadPos = new Int32Array(deadCount);
    const taken = deadCount > 0 ? new Uint8Array(oldLen) : undefined;
    let d = 0;
    for (const s of dead) {
      const state = fnv1a(FNV_OFFSET, `${slots[s]!.key}#`);
      for (let v = 0; v < V; v++) {
        let pos = lowerBound(oldHash, hashWithIndex(state, v), 0, oldLen);
        while (pos < oldLen && (oldOwner[pos] !== s || taken![pos] === 1)) pos++; // within the run of equal hashes
        if (pos === oldLen) throw new Error('consistent-hash ring is inconsistent (a point of a removed endpoint is missing)');
        taken![pos] = 1;
        deadPos[d++] = pos;
      }
    }
    deadPos.sort();

    // The new points, sorted by (hash, owner key).
    const addCount = fresh.length * V;
    const addHash = new Int32Array(addCount);
    const addOwner = new Int32Array(addCount);
    let k = 0;
    for (const s of fresh) {
      const state = fnv1a(FNV_OFFSET, `${slots[s]!.key}#`);
      for (let v = 0; v < V; v++, k++) {
        addHash[k] = hashWithIndex(state, v);
        addOwner[k] = s;
      }
    }
    const order = sortedOrder(addHash, addOwner, slots);

    // Merge: copy the old ring in runs, skipping dead points, inserting new ones.
    const total = oldLen - deadCount + addCount;
    const points = new Int32Array(total);
    const owners = new Int32Array(total);
    let i = 0; // next old point
    let o = 0; // next output point
    d = 0; // next dead position
    let nextDead = deadCount > 0 ? deadPos[0]! : oldLen;
    for (let j = 0; j <= addCount; j++) {
      let end = oldLen;
      let h = 0;
      let s = 0;
      if (j < addCount) {
        const idx = order[j]!;
        h = addHash[idx]!;
        s = addOwner[idx]!;
        // After every old point ordered before (h, key): hash < h, or hash = h and a smaller key.
        end = upperBound(oldHash, h, i, oldLen);
        if (end > i && oldHash[end - 1] === h) {
          const key = slots[s]!.key;
          while (end > i && oldHash[end - 1] === h && slots[oldOwner[end - 1]!]!.key > key) end--;
        }
      }
      // Copy old[i, end), skipping the dead points.
      while (i < end) {
        if (i === nextDead) {
          i++;
          d++;
          nextDead = d < deadCount ? deadPos[d]! : oldLen;
          continue;
        }
        const stop = nextDead < end ? nextDead : end;
        if (stop - i > 64) {
          points.set(oldHash.subarray(i, stop), o);
          owners.set(oldOwner.subarray(i, stop), o);
          o += stop - i;
          i = stop;
        } else {
          for (; i < stop; i++, o++) {
            points[o] = oldHash[i]!;
            owners[o] = oldOwner[i]!;
          }
        }
      }
      if (j < addCount) {
        points[o] = h;
        owners[o] = s;
        o++;
      }
    }
    this.points = points;
    this.owners = owners;
  }

  pick(options?: PickOptions, exclude?: ExcludePredicate): Endpoint | undefined {
    const key = options?.key;
    if (typeof key !== 'string') {
      throw new RegistryError(
        'ERR_INVALID_ARGUMENT',
        `the consistent-hash strategy needs options.key (a string), got ${quote(key)}`,
      );
    }
    const points = this.points;
    const n = points.length;
    if (n === 0) {
      this._lastAllExcluded = false;
      return undefined;
    }
    // First point with hash >= h, wrapping to 0.
    const at = lowerBound(points, hashInt32(key), 0, n);
    const start = at === n ? 0 : at;
    const owners = this.owners;
    const primary = this.slots[owners[start]!]!;
    if (exclude === undefined || !exclude(primary)) {
      this._lastAllExcluded = false;
      return primary;
    }
    return this.walk(start, primary, exclude);
  }

  /** Walks clockwise from `start` to the next distinct endpoint that is not excluded. */
  private walk(start: number, primary: Endpoint, exclude: ExcludePredicate): Endpoint {
    const owners = this.owners;
    const n = owners.length;
    const size = this.slotByKey.size;
    const seen = this.seen;
    if (++this.stamp === 0x7fffffff) {
      seen.fill(0);
      this.stamp = 1;
    }
    const stamp = this.stamp;
    seen[owners[start]!] = stamp;
    let distinct = 1;
    let j = start;
    for (let steps = 1; steps < n && distinct < size; steps++) {
      if (++j === n) j = 0;
      const s = owners[j]!;
      if (seen[s] === stamp) continue;
      seen[s] = stamp;
      distinct++;
      const e = this.slots[s]!;
      if (!exclude(e)) {
        this._lastAllExcluded = false;
        return e;
      }
    }
    this._lastAllExcluded = true;
    return primary;
  }
}

/** The first index in [lo, hi) whose value is ≥ h (hi if none). */
function lowerBound(a: Int32Array, h: number, lo: number, hi: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < h) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The first index in [lo, hi) whose value is > h (hi if none). */
function upperBound(a: Int32Array, h: number, lo: number, hi: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! <= h) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Indices of the points sorted by (hash, owner key). */
function sortedOrder(hash: Int32Array, owner: Int32Array, slots: readonly (Endpoint | undefined)[]): Int32Array {
  const n = hash.length;
  const order = new Int32Array(n);
  if (n < 2 ** 21) {
    // Native numeric sort of (hash, index) packed in a double (2^32 · 2^21 ≤ 2^53).
    const packed = new Float64Array(n);
    for (let i = 0; i < n; i++) packed[i] = (hash[i]! + 2 ** 31) * 2 ** 21 + i;
    packed.sort();
    for (let i = 0; i < n; i++) order[i] = packed[i]! % 2 ** 21;
  } else {
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => hash[a]! - hash[b]!);
  }
  // Equal hashes (rare): order by owner key, so that the ring does not depend on history.
  for (let i = 1; i < n; i++) {
    if (hash[order[i]!] !== hash[order[i - 1]!]) continue;
    let end = i + 1;
    while (end < n && hash[order[end]!] === hash[order[i]!]) end++;
    const run = Array.from(order.subarray(i - 1, end)).sort((a, b) => {
      const ka = slots[owner[a]!]!.key;
      const kb = slots[owner[b]!]!.key;
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
    order.set(run, i - 1);
    i = end - 1;
  }
  return order;
}
