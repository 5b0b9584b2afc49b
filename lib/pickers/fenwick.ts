/**
 * A Fenwick (binary indexed) tree of non-negative float weights over slots
 * 0…capacity-1, for O(log n) weighted sampling.
 *
 * Point updates do not add a delta to the covering nodes (floating-point
 * deltas drift: 1 + 1e17 - 1e17 is 0); each covering node is recomputed from
 * its children in a fixed order, so every node — and the total — is a function
 * of the current weights only, whatever the history. O(log² n) per update.
 */
export class FenwickTree {
  /** 1-based; tree[j] = sum of weights (j - lowbit(j), j]. */
  private tree: Float64Array;
  private weights: Float64Array;
  /** A power of two; every node up to it is maintained. */
  private capacity: number;

  constructor(initialCapacity = 8) {
    let cap = 1;
    while (cap < initialCapacity) cap *= 2;
    this.capacity = cap;
    this.tree = new Float64Array(cap + 1);
    this.weights = new Float64Array(cap);
  }

  /** The sum of all weights. */
  get total(): number {
    return this.tree[this.capacity]!;
  }

  weight(index: number): number {
    return index < this.capacity ? this.weights[index]! : 0;
  }

  set(index: number, weight: number): void {
    if (index >= this.capacity) {
      if (weight === 0) return;
      this.grow(index + 1);
    }
    this.weights[index] = weight;
    const cap = this.capacity;
    const tree = this.tree;
    const weights = this.weights;
    for (let j = index + 1; j <= cap; j += j & -j) {
      let sum = weights[j - 1]!;
      const low = j & -j;
      for (let step = 1; step < low; step *= 2) sum += tree[j - step]!;
      tree[j] = sum;
    }
  }

  /**
   * The index i whose interval [prefix(i), prefix(i) + weight(i)) holds
   * `target` (0 ≤ target < total); zero-weight slots are never returned except
   * through rounding at the very edge, so callers check the weight. May return
   * `capacity` when target ≥ total.
   */
  find(target: number): number {
    const tree = this.tree;
    const cap = this.capacity;
    let pos = 0;
    let rest = target;
    for (let step = cap; step > 0; step >>= 1) {
      const next = pos + step;
      if (next <= cap && tree[next]! <= rest) {
        pos = next;
        rest -= tree[next]!;
      }
    }
    return pos;
  }

  private grow(minCapacity: number): void {
    let cap = this.capacity;
    while (cap < minCapacity) {
      // Nodes (cap, 2cap) cover only zero weights; node 2cap covers everything.
      const tree = new Float64Array(cap * 2 + 1);
      tree.set(this.tree);
      tree[cap * 2] = this.tree[cap]!;
      this.tree = tree;
      cap *= 2;
    }
    const weights = new Float64Array(cap);
    weights.set(this.weights);
    this.weights = weights;
    this.capacity = cap;
  }
}
