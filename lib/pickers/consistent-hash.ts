/**
 * Consistent hashing on a ring of virtual nodes.
 *
 * Each endpoint owns VIRTUAL_NODES points, `hash32(endpoint.key + '#' + i)`.
 * The ring is ordered by (point hash as a signed int32 — the order is a
 * rotation of the unsigned one — then owner key), so that it does not depend
 * on the order of changes. It is kept in blocks: a list of small sorted blocks
 * (two parallel typed arrays each: hash and owner slot, at most BLOCK points),
 * in ring order. A change inserts or removes each of its points in its block
 * (binary search over the blocks, then within the block, then a memmove of at
 * most BLOCK entries): O(k·V·(log N + BLOCK)) for k endpoints changed, whatever
 * the size of the ring (a full block splits in two; empty blocks go; a ring
 * that became sparse is repacked, amortized O(1)). A change of many endpoints
 * at once (the first fill, a resync) rebuilds the ring with one sort instead.
 * A replace (same key) only swaps the endpoint in its slot: same points, same ring.
 *
 * The points and their order are those of the flat sorted ring this replaced
 * (0.1.0): every key maps to the same endpoint as before.
 *
 * A key maps to the first point at or after its hash (wrapping), found by
 * binary search. When that endpoint is excluded, the walk goes clockwise to the
 * next distinct non-excluded endpoint, so a marked-down endpoint's keys spread
 * over the others deterministically.
 */
import { RegistryError, quote } from '../errors';
import type { Endpoint } from '../types';
import { normalizeChange } from './changes';
import { FNV_OFFSET, fnv1a, hashInt32 } from './hash';
import type { ExcludePredicate, Picker, PickOptions } from './types';
import { ChurnMap } from '../churn-map';

/**
 * Points per endpoint. Measured over 52,800 random endpoints (n = 3…50): the
 * largest share was 1.25/n (160 points reach 1.37/n), so adding or removing
 * one endpoint remaps at most ~1.25/n of the keys.
 */
export const VIRTUAL_NODES = 320;

const FNV_PRIME = 0x01000193;

/**
 * `pointHash(state, v)` of ./hash for 0 ≤ v < 1000 (the virtual node
 * numbers), with integer arithmetic only: the same value, 3–4× faster.
 */
export function pointHash(state: number, v: number): number {
  let h = state;
  if (v >= 100) h = Math.imul(h ^ (0x30 + ((v / 100) | 0)), FNV_PRIME);
  if (v >= 10) h = Math.imul(h ^ (0x30 + (((v / 10) | 0) % 10)), FNV_PRIME);
  h = Math.imul(h ^ (0x30 + (v % 10)), FNV_PRIME);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** Points per block at most; a full block splits in two halves. */
const BLOCK = 256;
/** A rebuild fills blocks to 3/4, so that inserts split blocks rarely. */
const FILL = (BLOCK * 3) >> 2;

export class ConsistentHashPicker implements Picker {
  readonly strategy = 'consistent-hash' as const;
  private _lastAllExcluded = false;
  // The ring in blocks of up to BLOCK points, each block sorted, the blocks in
  // ring order. Physical block p holds its points at [p·BLOCK, p·BLOCK + count[p])
  // of H (hash) and O (owner slot); the k-th block of the ring is phys[k], and
  // lasts[k] is its last hash (the binary search over blocks reads only lasts).
  private H = new Int32Array(0);
  private O = new Int32Array(0);
  private count = new Int32Array(0);
  private phys = new Int32Array(0);
  private lasts = new Int32Array(0);
  /** Blocks in the ring. */
  private nb = 0;
  /** Physical blocks ever handed out (≤ capacity); freed ones are in freeBlocks. */
  private used = 0;
  private readonly freeBlocks: number[] = [];
  private total = 0;
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

  /** Points on the ring (VIRTUAL_NODES per endpoint). */
  get points(): number {
    return this.total;
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
    const changed = (dead.length + fresh.length) * VIRTUAL_NODES;
    if (changed * 8 > this.total) {
      for (const s of dead) this.slots[s] = undefined;
      this.rebuild();
    } else {
      for (const s of dead) this.removePoints(s);
      for (const s of dead) this.slots[s] = undefined;
      for (const s of fresh) this.addPoints(s);
      if (this.nb > 8 && this.total * 4 < this.nb * BLOCK) this.repack();
    }
    for (const s of dead) this.freeSlots.push(s);
    if (this.seen.length < this.slots.length) {
      const seen = new Int32Array(Math.max(8, this.slots.length * 2));
      seen.set(this.seen);
      this.seen = seen;
    }
  }

  /** The whole ring again from the live endpoints: one sort. */
  private rebuild(): void {
    const V = VIRTUAL_NODES;
    const slots = this.slots;
    const live: number[] = [];
    this.slotByKey.forEach((s) => live.push(s));
    const n = live.length * V;
    const hash = new Int32Array(n);
    const owner = new Int32Array(n);
    let k = 0;
    for (const s of live) {
      const state = fnv1a(FNV_OFFSET, `${slots[s]!.key}#`);
      for (let v = 0; v < V; v++, k++) {
        hash[k] = pointHash(state, v);
        owner[k] = s;
      }
    }
    sortRing(hash, owner, slots);
    this.load(hash, owner);
  }

  /** Blocks 3/4 full again after many removals. */
  private repack(): void {
    const hash = new Int32Array(this.total);
    const owner = new Int32Array(this.total);
    let k = 0;
    for (let b = 0; b < this.nb; b++) {
      const base = this.phys[b]! * BLOCK;
      const n = this.count[this.phys[b]!]!;
      hash.set(this.H.subarray(base, base + n), k);
      owner.set(this.O.subarray(base, base + n), k);
      k += n;
    }
    this.load(hash, owner);
  }

  /** New blocks from a sorted ring, each FILL points (the last one fewer). */
  private load(hash: Int32Array, owner: Int32Array): void {
    const n = hash.length;
    const nb = Math.ceil(n / FILL);
    this.allocate(nb + (nb >> 2) + 4);
    for (let b = 0; b < nb; b++) {
      const at = b * FILL;
      const end = Math.min(n, at + FILL);
      this.H.set(hash.subarray(at, end), b * BLOCK);
      this.O.set(owner.subarray(at, end), b * BLOCK);
      this.count[b] = end - at;
      this.phys[b] = b;
      this.lasts[b] = hash[end - 1]!;
    }
    this.nb = nb;
    this.used = nb;
    this.freeBlocks.length = 0;
    this.total = n;
  }

  /** Fresh, empty storage for `capacity` blocks. */
  private allocate(capacity: number): void {
    this.H = new Int32Array(capacity * BLOCK);
    this.O = new Int32Array(capacity * BLOCK);
    this.count = new Int32Array(capacity);
    this.phys = new Int32Array(capacity);
    this.lasts = new Int32Array(capacity);
  }

  /** A physical block for a new block of the ring (growing the storage by half when full). */
  private newBlock(): number {
    const free = this.freeBlocks.pop();
    if (free !== undefined) return free;
    const capacity = this.count.length;
    if (this.used === capacity) {
      const more = capacity + (capacity >> 1) + 4;
      const { H, O, count, phys, lasts } = this;
      this.allocate(more);
      this.H.set(H);
      this.O.set(O);
      this.count.set(count);
      this.phys.set(phys);
      this.lasts.set(lasts);
    }
    return this.used++;
  }

  /** Puts physical block p at position k of the ring. */
  private insertBlock(k: number, p: number): void {
    this.phys.copyWithin(k + 1, k, this.nb);
    this.lasts.copyWithin(k + 1, k, this.nb);
    this.phys[k] = p;
    this.nb++;
  }

  private removeBlock(k: number): void {
    this.freeBlocks.push(this.phys[k]!);
    this.phys.copyWithin(k, k + 1, this.nb);
    this.lasts.copyWithin(k, k + 1, this.nb);
    this.nb--;
  }

  /** The first block whose last point is not ordered before (h, key) — by hash, then owner key — or nb. */
  private blockFor(h: number, key: string): number {
    const nb = this.nb;
    let k = lowerBound(this.lasts, h, 0, nb);
    while (k < nb && this.lasts[k] === h) {
      const p = this.phys[k]!;
      if (this.slots[this.O[p * BLOCK + this.count[p]! - 1]!]!.key >= key) break;
      k++;
    }
    return k;
  }

  /** The first index in [lo, hi) of H not ordered before (h, key). */
  private indexIn(lo: number, hi: number, h: number, key: string): number {
    let i = lowerBound(this.H, h, lo, hi);
    while (i < hi && this.H[i] === h && this.slots[this.O[i]!]!.key < key) i++;
    return i;
  }

  private addPoints(s: number): void {
    const key = this.slots[s]!.key;
    const state = fnv1a(FNV_OFFSET, `${key}#`);
    for (let v = 0; v < VIRTUAL_NODES; v++) {
      const h = pointHash(state, v);
      if (this.nb === 0) {
        const p = this.newBlock();
        this.count[p] = 0;
        this.insertBlock(0, p);
      }
      let k = this.blockFor(h, key);
      if (k === this.nb) k--; // after every point: the end of the last block
      let p = this.phys[k]!;
      let base = p * BLOCK;
      let n = this.count[p]!;
      let i = this.indexIn(base, base + n, h, key) - base;
      if (n === BLOCK) {
        const half = BLOCK >> 1;
        const q = this.newBlock(); // may reallocate H and O
        this.H.copyWithin(q * BLOCK, base + half, base + BLOCK);
        this.O.copyWithin(q * BLOCK, base + half, base + BLOCK);
        this.count[q] = BLOCK - half;
        this.count[p] = half;
        this.insertBlock(k + 1, q);
        this.lasts[k] = this.H[base + half - 1]!;
        this.lasts[k + 1] = this.H[q * BLOCK + BLOCK - half - 1]!;
        if (i > half) {
          k++;
          p = q;
          base = q * BLOCK;
          i -= half;
        }
        n = this.count[p]!;
      }
      const H = this.H;
      const O = this.O;
      H.copyWithin(base + i + 1, base + i, base + n);
      O.copyWithin(base + i + 1, base + i, base + n);
      H[base + i] = h;
      O[base + i] = s;
      this.count[p] = n + 1;
      this.lasts[k] = H[base + n]!;
      this.total++;
    }
  }

  private removePoints(s: number): void {
    const key = this.slots[s]!.key;
    const state = fnv1a(FNV_OFFSET, `${key}#`);
    const H = this.H;
    const O = this.O;
    for (let v = 0; v < VIRTUAL_NODES; v++) {
      const h = pointHash(state, v);
      const k = this.blockFor(h, key);
      const p = k < this.nb ? this.phys[k]! : -1;
      const base = p * BLOCK;
      const n = p >= 0 ? this.count[p]! : 0;
      const i = p >= 0 ? this.indexIn(base, base + n, h, key) - base : 0;
      if (p < 0 || i === n || H[base + i] !== h || O[base + i] !== s) {
        throw new Error('consistent-hash ring is inconsistent (a point of a removed endpoint is missing)');
      }
      H.copyWithin(base + i, base + i + 1, base + n);
      O.copyWithin(base + i, base + i + 1, base + n);
      this.count[p] = n - 1;
      this.total--;
      if (n === 1) this.removeBlock(k);
      else this.lasts[k] = H[base + n - 2]!;
    }
  }

  pick(options?: PickOptions, exclude?: ExcludePredicate): Endpoint | undefined {
    const key = options?.key;
    if (typeof key !== 'string') {
      throw new RegistryError(
        'ERR_INVALID_ARGUMENT',
        `the consistent-hash strategy needs options.key (a string), got ${quote(key)}`,
      );
    }
    if (this.total === 0) {
      this._lastAllExcluded = false;
      return undefined;
    }
    // First point with hash >= h, wrapping to the first point.
    const h = hashInt32(key);
    let k = lowerBound(this.lasts, h, 0, this.nb);
    let i = 0;
    if (k === this.nb) k = 0;
    else {
      const base = this.phys[k]! * BLOCK;
      i = lowerBound(this.H, h, base, base + this.count[this.phys[k]!]!) - base;
    }
    const primary = this.slots[this.O[this.phys[k]! * BLOCK + i]!]!;
    if (exclude === undefined || !exclude(primary)) {
      this._lastAllExcluded = false;
      return primary;
    }
    return this.walk(k, i, primary, exclude);
  }

  /** Walks clockwise from point i of the ring's block k to the next distinct endpoint that is not excluded. */
  private walk(k: number, i: number, primary: Endpoint, exclude: ExcludePredicate): Endpoint {
    const n = this.total;
    const size = this.slotByKey.size;
    const seen = this.seen;
    if (++this.stamp === 0x7fffffff) {
      seen.fill(0);
      this.stamp = 1;
    }
    const stamp = this.stamp;
    let p = this.phys[k]!;
    seen[this.O[p * BLOCK + i]!] = stamp;
    let distinct = 1;
    for (let steps = 1; steps < n && distinct < size; steps++) {
      if (++i === this.count[p]) {
        i = 0;
        if (++k === this.nb) k = 0;
        p = this.phys[k]!;
      }
      const s = this.O[p * BLOCK + i]!;
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

/**
 * Sorts the points (hash[i], owner[i]) by (hash, owner key) in place: a native
 * numeric sort of (hash, owner slot) packed in a double (2^32 · 2^21 ≤ 2^53),
 * then the rare runs of equal hashes ordered by owner key.
 */
function sortRing(hash: Int32Array, owner: Int32Array, slots: readonly (Endpoint | undefined)[]): void {
  const n = hash.length;
  if (slots.length >= 2 ** 21) {
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => {
      if (hash[a] !== hash[b]) return hash[a]! - hash[b]!;
      const ka = slots[owner[a]!]!.key;
      const kb = slots[owner[b]!]!.key;
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
    const h = Int32Array.from(order, (i) => hash[i]!);
    const o = Int32Array.from(order, (i) => owner[i]!);
    hash.set(h);
    owner.set(o);
    return;
  }
  const packed = new Float64Array(n);
  for (let i = 0; i < n; i++) packed[i] = (hash[i]! + 2 ** 31) * 2 ** 21 + owner[i]!;
  packed.sort();
  for (let i = 0; i < n; i++) {
    const p = packed[i]!;
    const o = p % 2 ** 21;
    owner[i] = o;
    hash[i] = (p - o) / 2 ** 21 - 2 ** 31;
  }
  for (let i = 1; i < n; i++) {
    if (hash[i] !== hash[i - 1]) continue;
    let end = i + 1;
    while (end < n && hash[end] === hash[i]) end++;
    const run = Array.from(owner.subarray(i - 1, end)).sort((a, b) => {
      const ka = slots[a]!.key;
      const kb = slots[b]!.key;
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
    owner.set(run, i - 1);
    i = end - 1;
  }
}
