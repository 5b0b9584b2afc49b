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
const BLOCK = 512;

interface Block {
  readonly hash: Int32Array;
  readonly owner: Int32Array;
  n: number;
}

function newBlock(): Block {
  return { hash: new Int32Array(BLOCK), owner: new Int32Array(BLOCK), n: 0 };
}

export class ConsistentHashPicker implements Picker {
  readonly strategy = 'consistent-hash' as const;
  private _lastAllExcluded = false;
  /** The ring in blocks, each non-empty and sorted, in ring order. */
  private blocks: Block[] = [];
  /** The last hash of each block (contiguous, for the binary search over blocks). */
  private lasts = new Int32Array(0);
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
      if (this.blocks.length > 8 && this.total * 4 < this.blocks.length * BLOCK) this.repack();
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
    const count = live.length * V;
    const hash = new Int32Array(count);
    const owner = new Int32Array(count);
    let k = 0;
    for (const s of live) {
      const state = fnv1a(FNV_OFFSET, `${slots[s]!.key}#`);
      for (let v = 0; v < V; v++, k++) {
        hash[k] = pointHash(state, v);
        owner[k] = s;
      }
    }
    sortRing(hash, owner, slots);
    const blocks: Block[] = [];
    const fill = BLOCK >> 1;
    for (let at = 0; at < count; at += fill) {
      const b = newBlock();
      const end = Math.min(count, at + fill);
      b.hash.set(hash.subarray(at, end));
      b.owner.set(owner.subarray(at, end));
      b.n = end - at;
      blocks.push(b);
    }
    this.blocks = blocks;
    this.total = count;
    this.syncLasts();
  }

  /** Blocks half full again after many removals. */
  private repack(): void {
    const blocks: Block[] = [];
    const fill = BLOCK >> 1;
    let out = newBlock();
    for (const b of this.blocks) {
      for (let i = 0; i < b.n; i++) {
        if (out.n === fill) {
          blocks.push(out);
          out = newBlock();
        }
        out.hash[out.n] = b.hash[i]!;
        out.owner[out.n++] = b.owner[i]!;
      }
    }
    if (out.n > 0) blocks.push(out);
    this.blocks = blocks;
    this.syncLasts();
  }

  private syncLasts(): void {
    const blocks = this.blocks;
    if (this.lasts.length < blocks.length) this.lasts = new Int32Array(blocks.length * 2);
    for (let b = 0; b < blocks.length; b++) this.lasts[b] = blocks[b]!.hash[blocks[b]!.n - 1]!;
  }

  /** Is the point (h, owner o) ordered before (h2, key2)? */
  private before(h: number, o: number, h2: number, key2: string): boolean {
    return h < h2 || (h === h2 && this.slots[o]!.key < key2);
  }

  /** The first block whose last point is not before (h, key), or blocks.length. */
  private blockFor(h: number, key: string): number {
    const blocks = this.blocks;
    const nb = blocks.length;
    let lo = lowerBound(this.lasts, h, 0, nb);
    while (lo < nb && this.lasts[lo] === h) {
      const b = blocks[lo]!;
      if (!this.before(h, b.owner[b.n - 1]!, h, key)) break;
      lo++;
    }
    return lo;
  }

  /** The first index in block b not before (h, key). */
  private indexIn(b: Block, h: number, key: string): number {
    let lo = lowerBound(b.hash, h, 0, b.n);
    while (lo < b.n && b.hash[lo] === h && this.slots[b.owner[lo]!]!.key < key) lo++;
    return lo;
  }

  private addPoints(s: number): void {
    const key = this.slots[s]!.key;
    const state = fnv1a(FNV_OFFSET, `${key}#`);
    for (let v = 0; v < VIRTUAL_NODES; v++) {
      const h = pointHash(state, v);
      if (this.blocks.length === 0) {
        this.blocks.push(newBlock());
        this.syncLasts();
      }
      let bi = this.blockFor(h, key);
      if (bi === this.blocks.length) bi--; // after every point: the end of the last block
      let b = this.blocks[bi]!;
      let i = this.indexIn(b, h, key);
      if (b.n === BLOCK) {
        const half = BLOCK >> 1;
        const upper = newBlock();
        upper.hash.set(b.hash.subarray(half, BLOCK));
        upper.owner.set(b.owner.subarray(half, BLOCK));
        upper.n = BLOCK - half;
        b.n = half;
        this.blocks.splice(bi + 1, 0, upper);
        this.syncLasts();
        if (i > half) {
          b = upper;
          i -= half;
          bi++;
        }
      }
      b.hash.copyWithin(i + 1, i, b.n);
      b.owner.copyWithin(i + 1, i, b.n);
      b.hash[i] = h;
      b.owner[i] = s;
      b.n++;
      this.total++;
      this.lasts[bi] = b.hash[b.n - 1]!;
    }
  }

  private removePoints(s: number): void {
    const key = this.slots[s]!.key;
    const state = fnv1a(FNV_OFFSET, `${key}#`);
    for (let v = 0; v < VIRTUAL_NODES; v++) {
      const h = pointHash(state, v);
      const bi = this.blockFor(h, key);
      const b = this.blocks[bi];
      const i = b === undefined ? 0 : this.indexIn(b, h, key);
      if (b === undefined || i === b.n || b.hash[i] !== h || b.owner[i] !== s) {
        throw new Error('consistent-hash ring is inconsistent (a point of a removed endpoint is missing)');
      }
      b.hash.copyWithin(i, i + 1, b.n);
      b.owner.copyWithin(i, i + 1, b.n);
      b.n--;
      this.total--;
      if (b.n === 0) {
        this.blocks.splice(bi, 1);
        this.syncLasts();
      } else this.lasts[bi] = b.hash[b.n - 1]!;
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
    const blocks = this.blocks;
    if (this.total === 0) {
      this._lastAllExcluded = false;
      return undefined;
    }
    // First point with hash >= h, wrapping to the first point.
    const h = hashInt32(key);
    let bi = lowerBound(this.lasts, h, 0, blocks.length);
    let i = 0;
    if (bi === blocks.length) bi = 0;
    else i = lowerBound(blocks[bi]!.hash, h, 0, blocks[bi]!.n);
    const primary = this.slots[blocks[bi]!.owner[i]!]!;
    if (exclude === undefined || !exclude(primary)) {
      this._lastAllExcluded = false;
      return primary;
    }
    return this.walk(bi, i, primary, exclude);
  }

  /** Walks clockwise from point i of block bi to the next distinct endpoint that is not excluded. */
  private walk(bi: number, i: number, primary: Endpoint, exclude: ExcludePredicate): Endpoint {
    const blocks = this.blocks;
    const n = this.total;
    const size = this.slotByKey.size;
    const seen = this.seen;
    if (++this.stamp === 0x7fffffff) {
      seen.fill(0);
      this.stamp = 1;
    }
    const stamp = this.stamp;
    let block = blocks[bi]!;
    seen[block.owner[i]!] = stamp;
    let distinct = 1;
    for (let steps = 1; steps < n && distinct < size; steps++) {
      if (++i === block.n) {
        i = 0;
        if (++bi === blocks.length) bi = 0;
        block = blocks[bi]!;
      }
      const s = block.owner[i]!;
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
