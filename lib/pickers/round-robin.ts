/**
 * Round-robin over a circular doubly linked list with a cursor (the next node
 * to pick) and a key → node map.
 *
 * - pick: O(1), no allocation; with a fixed list, k×n picks give each endpoint
 *   exactly k.
 * - add: O(1); a new endpoint is linked just before the cursor, i.e. at the
 *   end of the current round, so it neither resets the cursor nor gets a
 *   burst: after adding one endpoint to n, the next n+1 picks hit n+1
 *   distinct endpoints.
 * - remove: O(1), order kept; removing the endpoint under the cursor moves the
 *   cursor to its successor.
 * - replace (same key): the node's endpoint is swapped in place.
 *
 * When the list goes from empty to non-empty, the cursor starts at a random
 * position so that many clients started together don't all begin with the
 * same endpoint.
 */
import type { Endpoint } from '../types';
import { normalizeChange } from './changes';
import type { ExcludePredicate, Picker, CreatePickerOptions, PickOptions, RandomSource } from './types';
import { ChurnMap } from '../churn-map';

class Node {
  prev: Node = this;
  next: Node = this;
  constructor(public endpoint: Endpoint) {}
}

export class RoundRobinPicker implements Picker {
  readonly strategy = 'round-robin' as const;
  private _lastAllExcluded = false;
  private cursor: Node | undefined = undefined;
  private readonly nodes = new ChurnMap<Node>();
  private readonly random: RandomSource;

  constructor(initial: readonly Endpoint[] = [], options: CreatePickerOptions = {}) {
    this.random = options.random ?? Math.random;
    if (initial.length > 0) this.update(initial, []);
  }

  get size(): number {
    return this.nodes.size;
  }

  get lastAllExcluded(): boolean {
    return this._lastAllExcluded;
  }

  update(added: readonly Endpoint[], removed: readonly Endpoint[]): void {
    const wasEmpty = this.nodes.size === 0;
    const { removedKeys, upserts } = normalizeChange(added, removed);
    for (const key of removedKeys) {
      const node = this.nodes.get(key);
      if (node === undefined) continue;
      this.nodes.delete(key);
      if (this.nodes.size === 0) {
        this.cursor = undefined;
        continue;
      }
      node.prev.next = node.next;
      node.next.prev = node.prev;
      if (this.cursor === node) this.cursor = node.next;
    }
    for (const e of upserts) {
      const existing = this.nodes.get(e.key);
      if (existing !== undefined) {
        existing.endpoint = e;
        continue;
      }
      const node = new Node(e);
      const cursor = this.cursor;
      if (cursor === undefined) {
        this.cursor = node; // a ring of one
      } else {
        node.prev = cursor.prev;
        node.next = cursor;
        cursor.prev.next = node;
        cursor.prev = node;
      }
      this.nodes.set(e.key, node);
    }
    if (wasEmpty && this.nodes.size > 1) {
      let steps = Math.floor(this.random() * this.nodes.size);
      if (!(steps >= 0 && steps < this.nodes.size)) steps = 0;
      let c = this.cursor!;
      while (steps-- > 0) c = c.next;
      this.cursor = c;
    }
  }

  pick(_options?: PickOptions, exclude?: ExcludePredicate): Endpoint | undefined {
    const cursor = this.cursor;
    this._lastAllExcluded = false;
    if (cursor === undefined) return undefined;
    if (exclude !== undefined) {
      let node = cursor;
      for (let i = this.nodes.size; i > 0; i--) {
        if (!exclude(node.endpoint)) {
          this.cursor = node.next;
          return node.endpoint;
        }
        node = node.next;
      }
      this._lastAllExcluded = true;
    }
    this.cursor = cursor.next;
    return cursor.endpoint;
  }
}
