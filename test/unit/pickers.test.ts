import { describe, expect, it } from 'vitest';
import { RegistryError } from '../../lib/errors';
import {
  ConsistentHashPicker,
  DEFAULT_WEIGHT,
  MAX_WEIGHT,
  STRATEGIES,
  VIRTUAL_NODES,
  createPicker,
  hash32,
  isStrategy,
  weightOf,
  type Picker,
  type Strategy,
} from '../../lib/pickers';
import { FenwickTree } from '../../lib/pickers/fenwick';
import { FNV_OFFSET, fnv1a, hashInt32, hashWithIndex } from '../../lib/pickers/hash';
import type { Endpoint } from '../../lib/types';
import { seededRandom } from '../support/random';

// ---------------------------------------------------------------------------
// helpers

/** A synthetic endpoint; `i` makes the key and address unique. */
function ep(i: number, metadata: Record<string, unknown> = {}, service = 'svc'): Endpoint {
  const address = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;
  return { service, address, metadata, key: `/registry/services/${service}/${address}` };
}

/** The `i` an endpoint was made from. */
function idOf(e: Endpoint): number {
  const [, a, b, c] = e.address.split(':')[0]!.split('.').map(Number);
  return (a! << 16) | (b! << 8) | c!;
}

const eps = (from: number, to: number, metadata: Record<string, unknown> = {}): Endpoint[] => {
  const out: Endpoint[] = [];
  for (let i = from; i < to; i++) out.push(ep(i, metadata));
  return out;
};

function expectInvalidArgument(run: () => unknown, ...fragments: string[]): void {
  let err: unknown;
  try {
    run();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(RegistryError);
  expect((err as RegistryError).code).toBe('ERR_INVALID_ARGUMENT');
  for (const f of fragments) expect((err as RegistryError).message).toContain(f);
}

/** Counts picks by endpoint key. */
function countPicks(picker: Picker, picks: number, exclude?: (e: Endpoint) => boolean, key?: (i: number) => string) {
  const counts = new Map<string, number>();
  for (let i = 0; i < picks; i++) {
    const e = picker.pick(key ? { key: key(i) } : undefined, exclude);
    if (e === undefined) throw new Error(`pick ${i} returned undefined`);
    counts.set(e.key, (counts.get(e.key) ?? 0) + 1);
  }
  return counts;
}

/** Each count within ±5σ of the binomial expectation N·p. */
function expectBinomial(count: number, picks: number, p: number): void {
  const sigma = Math.sqrt(picks * p * (1 - p));
  expect(Math.abs(count - picks * p)).toBeLessThanOrEqual(5 * sigma);
}

const keyOf = (i: number) => `user-${i}`;

// ---------------------------------------------------------------------------

describe('createPicker', () => {
  it('knows the six strategies', () => {
    expect([...STRATEGIES]).toEqual(['round-robin', 'random', 'consistent-hash', 'weighted', 'least-request', 'least-latency']);
    for (const s of STRATEGIES) {
      expect(isStrategy(s)).toBe(true);
      const picker = createPicker(s, eps(0, 3));
      expect(picker.strategy).toBe(s);
      expect(picker.size).toBe(3);
    }
    expect(isStrategy('least-loaded')).toBe(false);
    expect(isStrategy(undefined)).toBe(false);
  });

  it('throws ERR_INVALID_ARGUMENT on an unknown strategy, quoting it', () => {
    expectInvalidArgument(() => createPicker('least-loaded' as Strategy), '"least-loaded"', '"round-robin"');
    expectInvalidArgument(() => createPicker(undefined as unknown as Strategy), 'undefined');
    expectInvalidArgument(() => createPicker(42 as unknown as Strategy), '42');
  });

  it('throws ERR_INVALID_ARGUMENT when options.random is not a function', () => {
    expectInvalidArgument(() => createPicker('random', [], { random: 0.5 as unknown as () => number }), '0.5');
  });
});

describe.each(STRATEGIES)('%s: common behaviour', (strategy) => {
  const opts = { key: 'some-user' };

  it('returns undefined when there is no endpoint, before and after changes', () => {
    const picker = createPicker(strategy, [], { random: seededRandom(1) });
    expect(picker.size).toBe(0);
    expect(picker.pick(opts)).toBeUndefined();
    expect(picker.pick(opts, () => true)).toBeUndefined();
    expect(picker.lastAllExcluded).toBe(false);
    picker.update(eps(0, 3), []);
    expect(picker.pick(opts)).toBeDefined();
    picker.update([], eps(0, 3));
    expect(picker.size).toBe(0);
    expect(picker.pick(opts)).toBeUndefined();
    picker.update([ep(7)], []);
    expect(picker.pick(opts)).toBe(picker.pick(opts)); // one endpoint: always it
    expect(picker.pick(opts)?.key).toBe(ep(7).key);
  });

  it('ignores unknown removals and de-duplicates keys (added with an existing key replaces it)', () => {
    const picker = createPicker(strategy, eps(0, 4), { random: seededRandom(2) });
    picker.update([], [ep(99), ep(99)]);
    expect(picker.size).toBe(4);
    picker.update([ep(5), ep(5, { v: 2 })], [ep(1), ep(1)]);
    expect(picker.size).toBe(4);
    const seen = new Set<Endpoint>();
    for (let i = 0; i < 2000; i++) seen.add(picker.pick({ key: keyOf(i) })!);
    expect([...seen].map((e) => e.key).sort()).toEqual([ep(0), ep(2), ep(3), ep(5)].map((e) => e.key).sort());
    // the last of duplicate additions wins
    expect([...seen].find((e) => e.key === ep(5).key)!.metadata).toEqual({ v: 2 });
  });

  it('replaces an endpoint whose metadata changed (removed+added, or just added), returning the new object', () => {
    const picker = createPicker(strategy, eps(0, 3, { v: 1 }), { random: seededRandom(3) });
    const v2 = ep(1, { v: 2 });
    picker.update([v2], [ep(1, { v: 1 })]);
    expect(picker.size).toBe(3);
    const v3 = ep(2, { v: 3 });
    picker.update([v3], []);
    expect(picker.size).toBe(3);
    const seen = new Set<Endpoint>();
    for (let i = 0; i < 2000; i++) seen.add(picker.pick({ key: keyOf(i) })!);
    expect(seen.size).toBe(3);
    expect(seen.has(v2)).toBe(true);
    expect(seen.has(v3)).toBe(true);
  });

  it('never picks an excluded endpoint while another one is available', () => {
    const picker = createPicker(strategy, eps(0, 10), { random: seededRandom(4) });
    const down = new Set([ep(0).key, ep(3).key, ep(4).key, ep(9).key]);
    const exclude = (e: Endpoint) => down.has(e.key);
    const seen = new Set<string>();
    for (let i = 0; i < 5000; i++) {
      const e = picker.pick({ key: keyOf(i) }, exclude)!;
      expect(down.has(e.key)).toBe(false);
      expect(picker.lastAllExcluded).toBe(false);
      seen.add(e.key);
    }
    expect(seen.size).toBe(6);

    // only one endpoint left up (forces the slow paths)
    const up = ep(6).key;
    for (let i = 0; i < 2000; i++) {
      expect(picker.pick({ key: keyOf(i) }, (e) => e.key !== up)!.key).toBe(up);
      expect(picker.lastAllExcluded).toBe(false);
    }

    // the list changes between calls: a new endpoint is eligible, a removed one is gone
    picker.update([ep(10)], [ep(6)]);
    for (let i = 0; i < 2000; i++) {
      const e = picker.pick({ key: keyOf(i) }, (e) => e.key !== ep(10).key && e.key !== ep(6).key)!;
      expect(e.key).toBe(ep(10).key);
    }
  });

  it('picks among all endpoints when every one is excluded, and says so', () => {
    const picker = createPicker(strategy, eps(0, 5), { random: seededRandom(5) });
    const seen = new Set<string>();
    let calls = 0;
    for (let i = 0; i < 2000; i++) {
      const e = picker.pick({ key: keyOf(i) }, () => (calls++, true));
      expect(e).toBeDefined();
      expect(picker.lastAllExcluded).toBe(true);
      seen.add(e!.key);
    }
    expect(seen.size).toBe(5);
    expect(calls).toBeGreaterThan(0);
    // the flag describes the last pick only
    picker.pick({ key: 'x' }, () => false);
    expect(picker.lastAllExcluded).toBe(false);
    picker.pick({ key: 'x' }, () => true);
    expect(picker.lastAllExcluded).toBe(true);
    picker.pick({ key: 'x' });
    expect(picker.lastAllExcluded).toBe(false);
  });

  it('returns the registered Endpoint objects themselves', () => {
    const list = eps(0, 4);
    const picker = createPicker(strategy, list, { random: seededRandom(6) });
    for (let i = 0; i < 100; i++) expect(list).toContain(picker.pick({ key: keyOf(i) }));
  });
});

// ---------------------------------------------------------------------------

describe('round-robin', () => {
  /** The next `count` picks, as keys. */
  const next = (picker: Picker, count: number, exclude?: (e: Endpoint) => boolean) =>
    Array.from({ length: count }, () => picker.pick(undefined, exclude)!.key);

  it('is exactly fair over a fixed list: k×n picks give each endpoint exactly k', () => {
    for (const n of [1, 2, 7, 32]) {
      const picker = createPicker('round-robin', eps(0, n), { random: seededRandom(n) });
      next(picker, 3); // any starting point
      const counts = countPicks(picker, 50 * n);
      expect(counts.size).toBe(n);
      for (const c of counts.values()) expect(c).toBe(50);
    }
  });

  it('is exactly fair again over a fixed list reached through changes', () => {
    const picker = createPicker('round-robin', eps(0, 6), { random: seededRandom(7) });
    next(picker, 4);
    picker.update(eps(6, 9), [ep(1), ep(4)]);
    next(picker, 2);
    picker.update([ep(20)], [ep(7)]);
    const counts = countPicks(picker, 40 * picker.size);
    expect(counts.size).toBe(7);
    for (const c of counts.values()) expect(c).toBe(40);
  });

  it('starts at a random position (from options.random)', () => {
    const list = eps(0, 8);
    expect(createPicker('round-robin', list, { random: () => 0 }).pick()).toBe(list[0]);
    expect(createPicker('round-robin', list, { random: () => 0.5 }).pick()).toBe(list[4]);
    expect(createPicker('round-robin', list, { random: () => 0.999 }).pick()).toBe(list[7]);
    const firsts = new Set<Endpoint | undefined>();
    const random = seededRandom(8);
    for (let i = 0; i < 200; i++) firsts.add(createPicker('round-robin', list, { random }).pick());
    expect(firsts.size).toBe(8);
  });

  it('has no burst after an add: with n+1 endpoints, the next n+1 picks are n+1 distinct ones', () => {
    for (let offset = 0; offset < 6; offset++) {
      const picker = createPicker('round-robin', eps(0, 5), { random: seededRandom(offset) });
      next(picker, offset);
      picker.update([ep(100)], []);
      const window = next(picker, 6);
      expect(new Set(window).size).toBe(6);
      expect(window).toContain(ep(100).key);
      // and the rotation stays exact afterwards
      const counts = countPicks(picker, 6 * 10);
      for (const c of counts.values()) expect(c).toBe(10);
    }
  });

  it('does not reset the cursor on add: the current round continues where it was', () => {
    const picker = createPicker('round-robin', eps(0, 5), { random: () => 0 });
    expect(next(picker, 2)).toEqual([ep(0).key, ep(1).key]);
    picker.update([ep(5)], []);
    // the rotation goes on with 2, 3, 4, 0, 1; the newcomer is linked just before the cursor,
    // so it comes last among the next n+1 picks
    expect(next(picker, 8)).toEqual([2, 3, 4, 0, 1, 5, 2, 3].map((i) => ep(i).key));
  });

  it('survives removal of the endpoint under the cursor (the next one takes its turn)', () => {
    const picker = createPicker('round-robin', eps(0, 5), { random: () => 0 });
    expect(next(picker, 2)).toEqual([ep(0).key, ep(1).key]);
    picker.update([], [ep(2)]); // 2 was the next to be picked
    expect(next(picker, 6)).toEqual([3, 4, 0, 1, 3, 4].map((i) => ep(i).key));
    picker.update([], [ep(0)]); // 0 is next
    expect(next(picker, 3)).toEqual([1, 3, 4].map((i) => ep(i).key));
    // removing the rest, down to empty, then adding again
    picker.update([], [ep(1), ep(3), ep(4)]);
    expect(picker.pick()).toBeUndefined();
    picker.update(eps(10, 13), []);
    expect(new Set(next(picker, 3)).size).toBe(3);
  });

  it('after any change, the next size picks are the whole list exactly once (random changes)', () => {
    const random = seededRandom(9);
    const picker = createPicker('round-robin', eps(0, 4), { random });
    const live = new Map(eps(0, 4).map((e) => [e.key, e] as const));
    let nextId = 4;
    for (let step = 0; step < 500; step++) {
      const added: Endpoint[] = [];
      const removed: Endpoint[] = [];
      const adds = Math.floor(random() * 3);
      for (let i = 0; i < adds; i++) added.push(ep(nextId++));
      for (const e of live.values()) if (random() < 0.15) removed.push(e);
      if (random() < 0.3 && live.size > 0) {
        const [first] = live.values(); // metadata change
        if (!removed.includes(first!)) added.push(ep(idOf(first!), { step }));
      }
      picker.update(added, removed);
      for (const e of removed) live.delete(e.key);
      for (const e of added) live.set(e.key, e);
      expect(picker.size).toBe(live.size);
      next(picker, Math.floor(random() * 5));
      const window = next(picker, live.size);
      expect(new Set(window).size).toBe(live.size);
      for (const k of window) expect(live.has(k)).toBe(true);
    }
  });

  it('skips excluded endpoints and stays exactly fair among the others', () => {
    const picker = createPicker('round-robin', eps(0, 8), { random: seededRandom(10) });
    const down = new Set([ep(2).key, ep(3).key, ep(7).key]);
    const counts = countPicks(picker, 5 * 20, (e) => down.has(e.key));
    expect(counts.size).toBe(5);
    for (const c of counts.values()) expect(c).toBe(20);
    // all excluded: the plain rotation goes on
    const all = countPicks(picker, 8 * 3, () => true);
    for (const c of all.values()) expect(c).toBe(3);
  });
});

// ---------------------------------------------------------------------------

describe('random', () => {
  it('is uniform (each count within ±5σ over 100k picks, and chi-square)', () => {
    for (const random of [seededRandom(11), Math.random]) {
      const n = 10;
      const picks = 100_000;
      const counts = countPicks(createPicker('random', eps(0, n), { random }), picks);
      expect(counts.size).toBe(n);
      let chi2 = 0;
      for (const c of counts.values()) {
        expectBinomial(c, picks, 1 / n);
        chi2 += (c - picks / n) ** 2 / (picks / n);
      }
      // 9 degrees of freedom: P(chi2 > 33.7) ≈ 1e-4
      expect(chi2).toBeLessThan(33.7);
    }
  });

  it('stays uniform over the current list as it changes', () => {
    const picker = createPicker('random', eps(0, 10), { random: seededRandom(12) });
    picker.update(eps(10, 13), eps(0, 5)); // now 5..12
    const picks = 80_000;
    const counts = countPicks(picker, picks);
    expect([...counts.keys()].sort()).toEqual(eps(5, 13).map((e) => e.key).sort());
    for (const c of counts.values()) expectBinomial(c, picks, 1 / 8);
  });

  it('is uniform among the non-excluded, including when most are excluded', () => {
    const picker = createPicker('random', eps(0, 10), { random: seededRandom(13) });
    for (const upCount of [9, 5, 2]) {
      const up = new Set(eps(0, upCount).map((e) => e.key));
      const picks = 50_000;
      const counts = countPicks(picker, picks, (e) => !up.has(e.key));
      expect(counts.size).toBe(upCount);
      for (const [k, c] of counts) {
        expect(up.has(k)).toBe(true);
        expectBinomial(c, picks, 1 / upCount);
      }
    }
  });

  it('is uniform among all when all are excluded', () => {
    const picker = createPicker('random', eps(0, 4), { random: seededRandom(14) });
    const picks = 40_000;
    const counts = countPicks(picker, picks, () => true);
    for (const c of counts.values()) expectBinomial(c, picks, 1 / 4);
  });
});

// ---------------------------------------------------------------------------

describe('weighted', () => {
  const w = (i: number, weight: unknown) => ep(i, weight === undefined ? {} : { weight });

  it('reads weights from metadata.weight; invalid values count as 1; large ones are clamped', () => {
    expect(DEFAULT_WEIGHT).toBe(1);
    expect(weightOf(w(0, undefined))).toBe(1);
    expect(weightOf(w(0, 2.5))).toBe(2.5);
    expect(weightOf(w(0, 0))).toBe(0);
    expect(Object.is(weightOf(w(0, -0)), 0)).toBe(true);
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, '3', null, true, {}]) {
      expect(weightOf(w(0, bad))).toBe(1);
    }
    expect(weightOf(w(0, 1e20))).toBe(MAX_WEIGHT);
  });

  it('picks in proportion to the weights (1,2,3,4 → within 2% absolute over 200k picks)', () => {
    const list = [w(1, 1), w(2, 2), w(3, 3), w(4, 4)];
    for (const random of [seededRandom(15), Math.random]) {
      const picks = 200_000;
      const counts = countPicks(createPicker('weighted', list, { random }), picks);
      for (const e of list) {
        const share = (counts.get(e.key) ?? 0) / picks;
        expect(Math.abs(share - (e.metadata.weight as number) / 10)).toBeLessThan(0.02);
        expectBinomial(counts.get(e.key)!, picks, (e.metadata.weight as number) / 10);
      }
    }
  });

  it('never picks weight 0 while another weight is positive', () => {
    const picker = createPicker('weighted', [w(1, 0), w(2, 1), w(3, 0), w(4, 0.001)], { random: seededRandom(16) });
    const counts = countPicks(picker, 200_000);
    expect(counts.has(w(1, 0).key)).toBe(false);
    expect(counts.has(w(3, 0).key)).toBe(false);
    expectBinomial(counts.get(w(4, 0).key)!, 200_000, 0.001 / 1.001);
  });

  it('picks uniformly when all weights are 0', () => {
    const picker = createPicker('weighted', [w(1, 0), w(2, 0), w(3, 0)], { random: seededRandom(17) });
    const counts = countPicks(picker, 60_000);
    expect(counts.size).toBe(3);
    for (const c of counts.values()) expectBinomial(c, 60_000, 1 / 3);
  });

  it('updates a weight when the metadata changes (removed+added or just added)', () => {
    const picker = createPicker('weighted', [w(1, 1), w(2, 1), w(3, 1)], { random: seededRandom(18) });
    picker.update([w(1, 0)], [w(1, 1)]);
    expect(countPicks(picker, 20_000).has(w(1, 0).key)).toBe(false);
    picker.update([w(1, 6)], []);
    const picks = 100_000;
    const counts = countPicks(picker, picks);
    expectBinomial(counts.get(w(1, 0).key)!, picks, 6 / 8);
    expectBinomial(counts.get(w(2, 0).key)!, picks, 1 / 8);
    // invalid → 1
    picker.update([w(1, 'heavy')], []);
    const again = countPicks(picker, picks);
    for (const c of again.values()) expectBinomial(c, picks, 1 / 3);
  });

  it('keeps exact proportions through many incremental changes (swap-remove + Fenwick)', () => {
    const random = seededRandom(19);
    const picker = createPicker('weighted', [], { random });
    const live = new Map<string, Endpoint>();
    let id = 0;
    for (let step = 0; step < 400; step++) {
      const added: Endpoint[] = [];
      const removed: Endpoint[] = [];
      for (let i = 0; i < 3; i++) added.push(w(id++, Math.floor(random() * 5)));
      for (const e of live.values()) if (random() < 0.2) removed.push(e);
      for (const e of live.values()) if (!removed.includes(e) && random() < 0.1) added.push(w(idOf(e), 1e9 * random()));
      picker.update(added, removed);
      for (const e of removed) live.delete(e.key);
      for (const e of added) live.set(e.key, e);
    }
    // end with a small, known set: everything else removed
    picker.update([w(5000, 1), w(5001, 3)], [...live.values()]);
    expect(picker.size).toBe(2);
    const counts = countPicks(picker, 100_000);
    expectBinomial(counts.get(w(5000, 0).key)!, 100_000, 1 / 4);
  });

  it('applies the weights among the non-excluded; all excluded → by weight among all', () => {
    const list = [w(1, 1), w(2, 2), w(3, 3), w(4, 4)];
    const picker = createPicker('weighted', list, { random: seededRandom(20) });
    const picks = 120_000;
    const counts = countPicks(picker, picks, (e) => e.key === list[3]!.key);
    expect(counts.has(list[3]!.key)).toBe(false);
    for (const e of list.slice(0, 3)) expectBinomial(counts.get(e.key)!, picks, (e.metadata.weight as number) / 6);

    const all = countPicks(picker, picks, () => true);
    expect(picker.lastAllExcluded).toBe(true);
    for (const e of list) expectBinomial(all.get(e.key)!, picks, (e.metadata.weight as number) / 10);
  });

  it('prefers a non-excluded weight-0 endpoint (uniformly) over excluded positive ones', () => {
    const list = [w(1, 5), w(2, 0), w(3, 0)];
    const picker = createPicker('weighted', list, { random: seededRandom(21) });
    const counts = countPicks(picker, 20_000, (e) => e.key === list[0]!.key);
    expect(picker.lastAllExcluded).toBe(false);
    expect(counts.size).toBe(2);
    for (const c of counts.values()) expectBinomial(c, 20_000, 1 / 2);
  });
});

describe('FenwickTree', () => {
  it('finds the slot holding a target like a linear scan, through growth and updates', () => {
    const random = seededRandom(22);
    const tree = new FenwickTree(2);
    const weights: number[] = [];
    for (let step = 0; step < 2000; step++) {
      const i = Math.floor(random() * 70);
      const value = random() < 0.3 ? 0 : Math.floor(random() * 10);
      tree.set(i, value);
      while (weights.length <= i) weights.push(0);
      weights[i] = value;
      const total = weights.reduce((a, b) => a + b, 0);
      expect(tree.total).toBe(total); // integers: exact
      if (total === 0) continue;
      const target = Math.floor(random() * total);
      let acc = 0;
      let expected = -1;
      for (let j = 0; j < weights.length; j++) {
        acc += weights[j]!;
        if (target < acc) {
          expected = j;
          break;
        }
      }
      expect(tree.find(target)).toBe(expected);
    }
  });

  it('does not drift: every node is recomputed from the current weights', () => {
    const tree = new FenwickTree();
    tree.set(0, 0.1);
    tree.set(1, 0.2);
    tree.set(2, 0.3);
    const before = tree.total;
    for (let i = 0; i < 1000; i++) {
      tree.set(3, 1e17 * (i + 1));
      tree.set(3, 0);
    }
    expect(tree.total).toBe(before);
    tree.set(1, 0);
    expect(tree.find(0.1)).toBe(2); // slot 1 (weight 0) is skipped
  });
});

// ---------------------------------------------------------------------------

describe('consistent-hash', () => {
  const KEYS = 100_000;
  /** key index → endpoint key, for KEYS keys. */
  const mapping = (picker: Picker, exclude?: (e: Endpoint) => boolean, keys = KEYS) =>
    Array.from({ length: keys }, (_, i) => picker.pick({ key: keyOf(i) }, exclude)!.key);

  it('requires options.key (a string)', () => {
    const picker = createPicker('consistent-hash', eps(0, 3));
    expectInvalidArgument(() => picker.pick(), 'options.key', 'undefined');
    expectInvalidArgument(() => picker.pick({}), 'options.key');
    expectInvalidArgument(() => picker.pick({ key: 42 as unknown as string }), '42');
    expectInvalidArgument(() => createPicker('consistent-hash').pick(), 'options.key'); // even when empty
    expect(picker.pick({ key: '' })).toBeDefined();
  });

  it('maps the same key to the same endpoint, whatever the order of changes', () => {
    const a = createPicker('consistent-hash', eps(0, 12));
    const b = createPicker('consistent-hash');
    b.update(eps(6, 20).reverse(), []);
    b.update(eps(0, 6), eps(12, 20));
    const c = new ConsistentHashPicker(eps(0, 12).reverse());
    expect(b.size).toBe(12);
    const ma = mapping(a, undefined, 20_000);
    expect(mapping(b, undefined, 20_000)).toEqual(ma);
    expect(mapping(c, undefined, 20_000)).toEqual(ma);
    expect(mapping(a, undefined, 20_000)).toEqual(ma); // and across calls
    expect(new Set(ma).size).toBe(12);
  });

  it('is stable across unrelated changes (metadata change of any endpoint)', () => {
    const picker = createPicker('consistent-hash', eps(0, 10));
    const before = mapping(picker, undefined, 20_000);
    picker.update([ep(3, { zone: 'b' })], [ep(3)]);
    picker.update([ep(4, { zone: 'c' })], []);
    expect(mapping(picker, undefined, 20_000)).toEqual(before);
    const e3 = picker.pick({ key: keyOf(before.indexOf(ep(3).key)) });
    expect(e3?.metadata).toEqual({ zone: 'b' });
  });

  it(`uses ${VIRTUAL_NODES} virtual nodes and spreads keys evenly`, () => {
    const n = 10;
    const counts = countPicks(createPicker('consistent-hash', eps(0, n)), KEYS, undefined, keyOf);
    for (const c of counts.values()) {
      expect(c / KEYS).toBeLessThanOrEqual(1.3 / n);
      expect(c / KEYS).toBeGreaterThanOrEqual(0.7 / n);
    }
  });

  it('adding one endpoint to n=10 remaps between 0.5/n and 1.3/n of 100k keys, all to the new one', () => {
    const n = 10;
    const picker = createPicker('consistent-hash', eps(0, n));
    const before = mapping(picker);
    picker.update([ep(n)], []);
    const after = mapping(picker);
    let moved = 0;
    for (let i = 0; i < KEYS; i++) {
      if (before[i] === after[i]) continue;
      moved++;
      expect(after[i]).toBe(ep(n).key);
    }
    expect(moved / KEYS).toBeLessThanOrEqual(1.3 / n);
    expect(moved / KEYS).toBeGreaterThanOrEqual(0.5 / n);
  });

  it('removing one endpoint from n=10 remaps between 0.5/n and 1.3/n of 100k keys, and only its keys', () => {
    const n = 10;
    const picker = createPicker('consistent-hash', eps(0, n));
    const before = mapping(picker);
    const gone = ep(4).key;
    picker.update([], [ep(4)]);
    const after = mapping(picker);
    let moved = 0;
    const heirs = new Set<string>();
    for (let i = 0; i < KEYS; i++) {
      if (before[i] !== gone) {
        expect(after[i]).toBe(before[i]); // keys of the others never move
        continue;
      }
      moved++;
      expect(after[i]).not.toBe(gone);
      heirs.add(after[i]!);
    }
    expect(moved / KEYS).toBeLessThanOrEqual(1.3 / n);
    expect(moved / KEYS).toBeGreaterThanOrEqual(0.5 / n);
    expect(heirs.size).toBeGreaterThanOrEqual(n - 3); // its keys spread over the others
  });

  it('remaps at most 1.3/n when adding or removing one endpoint, for n = 3…50', () => {
    const keys = 20_000;
    const picker = createPicker('consistent-hash', eps(0, 3));
    for (let n = 3; n <= 50; n++) {
      // add endpoint n to 0..n-1
      const before = mapping(picker, undefined, keys);
      picker.update([ep(n)], []);
      const after = mapping(picker, undefined, keys);
      let moved = 0;
      for (let i = 0; i < keys; i++) if (before[i] !== after[i]) moved++;
      expect(moved / keys, `add to n=${n}`).toBeLessThanOrEqual(1.3 / n);
      // remove endpoint (n * 7) % n from the n+1 now present... and add it back
      const victim = ep((n * 7) % n === 0 ? Math.floor(n / 2) : (n * 7) % n);
      picker.update([], [victim]);
      const removedMapping = mapping(picker, undefined, keys);
      let movedOnRemove = 0;
      for (let i = 0; i < keys; i++) if (after[i] !== removedMapping[i]) movedOnRemove++;
      expect(movedOnRemove / keys, `remove from n=${n + 1}`).toBeLessThanOrEqual(1.3 / (n + 1));
      picker.update([victim], []);
      expect(mapping(picker, undefined, 2_000)).toEqual(after.slice(0, 2_000));
    }
  });

  it('walks clockwise past excluded endpoints: the same as a ring without them, deterministically', () => {
    const n = 10;
    const picker = createPicker('consistent-hash', eps(0, n));
    const keys = 30_000;
    const base = mapping(picker, undefined, keys);
    for (const downIdx of [[4], [0, 1, 2], [1, 3, 5, 7, 9], [0, 1, 2, 3, 4, 5, 6, 7, 8]]) {
      const down = new Set(downIdx.map((i) => ep(i).key));
      const exclude = (e: Endpoint) => down.has(e.key);
      const withExclude = mapping(picker, exclude, keys);
      expect(picker.lastAllExcluded).toBe(false);
      const without = createPicker('consistent-hash', eps(0, n).filter((e) => !down.has(e.key)));
      expect(withExclude).toEqual(mapping(without, undefined, keys));
      expect(mapping(picker, exclude, keys)).toEqual(withExclude); // deterministic
      for (let i = 0; i < keys; i++) if (!down.has(base[i]!)) expect(withExclude[i]).toBe(base[i]);
    }
  });

  it('all excluded: the key still maps to its own endpoint, flagged', () => {
    const picker = createPicker('consistent-hash', eps(0, 7));
    const base = mapping(picker, undefined, 5_000);
    let calls = 0;
    const all = mapping(picker, () => (calls++, true), 5_000);
    expect(all).toEqual(base);
    expect(picker.lastAllExcluded).toBe(true);
    expect(calls).toBe(5_000 * 7); // each endpoint asked once per pick
  });
});

describe('hash32', () => {
  /** Reference: FNV-1a over Buffer's UTF-8 bytes, then murmur3 fmix32. */
  function reference(s: string): number {
    let h = 0x811c9dc5;
    for (const b of Buffer.from(s, 'utf8')) h = Math.imul(h ^ b, 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h >>> 0;
  }

  it('hashes the UTF-8 bytes (lone surrogates as U+FFFD, like Buffer)', () => {
    const samples = ['', 'a', 'user-1', 'héllo', '日本語', '😀 emoji', '\ud800', 'x\udc00y', '\ud83d', 'é\u0800\uffff'];
    const random = seededRandom(23);
    for (let i = 0; i < 500; i++) {
      let s = '';
      const len = Math.floor(random() * 12);
      for (let j = 0; j < len; j++) s += String.fromCharCode(Math.floor(random() * 0x10000));
      samples.push(s);
    }
    for (const s of samples) {
      const h = hash32(s);
      expect(h).toBe(reference(s));
      expect(Number.isInteger(h) && h >= 0 && h < 2 ** 32).toBe(true);
      expect(hashInt32(s)).toBe(h | 0);
    }
  });

  it('hashes virtual nodes (prefix state + decimal index) like the whole string', () => {
    for (const key of ['', '/registry/services/svc/10.0.0.1:8080', 'héllo😀']) {
      const state = fnv1a(FNV_OFFSET, `${key}#`);
      for (const i of [0, 1, 9, 10, 11, 99, 100, 101, 319, 999, 1000, 123456]) {
        expect(hashWithIndex(state, i)).toBe(hashInt32(`${key}#${i}`));
      }
    }
  });
});
