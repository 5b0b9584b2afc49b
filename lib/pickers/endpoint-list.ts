/**
 * A dense array of endpoints with a key → index map: O(1) lookup, append,
 * in-place replace and swap-remove (the last endpoint moves into the hole).
 * Order is not preserved by removal; callers that keep parallel arrays mirror
 * the move reported by `swapRemove`.
 */
import type { Endpoint } from '../types';
import { ChurnMap } from '../churn-map';

export class EndpointList {
  private readonly items: Endpoint[] = [];
  private readonly indexByKey = new ChurnMap<number>();

  get size(): number {
    return this.items.length;
  }

  /** The endpoint at `index` (0 ≤ index < size). */
  at(index: number): Endpoint {
    return this.items[index]!;
  }

  /** The index of the endpoint with this key, or -1. */
  indexOf(key: string): number {
    return this.indexByKey.get(key) ?? -1;
  }

  /** Appends an endpoint whose key is not present; returns its index. */
  push(endpoint: Endpoint): number {
    const index = this.items.length;
    this.items.push(endpoint);
    this.indexByKey.set(endpoint.key, index);
    return index;
  }

  /** Replaces the endpoint at `index` by one with the same key. */
  set(index: number, endpoint: Endpoint): void {
    this.items[index] = endpoint;
  }

  /**
   * Removes the endpoint at `index` by moving the last one into its place.
   * Returns the former index of the endpoint that moved (the old last index),
   * or -1 when `index` was the last one and nothing moved.
   */
  swapRemove(index: number): number {
    const last = this.items.length - 1;
    this.indexByKey.delete(this.items[index]!.key);
    if (index === last) {
      this.items.pop();
      return -1;
    }
    const moved = this.items.pop()!;
    this.items[index] = moved;
    this.indexByKey.set(moved.key, index);
    return last;
  }
}
