import { describe, expect, it } from 'vitest';
import { ChurnMap } from '../../lib/churn-map';
import { seededRandom } from '../support/random';

const live = <V>(m: ChurnMap<V>): [string, V][] => {
  const out: [string, V][] = [];
  m.forEach((v, k) => out.push([k, v]));
  return out;
};

describe('ChurnMap', () => {
  it('behaves as a Map for get, has, set, delete and size', () => {
    const m = new ChurnMap<number>();
    m.set('a', 1);
    m.set('b', 2);
    expect(m.size).toBe(2);
    expect(m.delete('a')).toBe(true);
    expect(m.delete('a')).toBe(false);
    expect(m.delete('zz')).toBe(false);
    expect(m.has('a')).toBe(false);
    expect(m.get('a')).toBeUndefined();
    expect(m.size).toBe(1);
    m.set('a', 3);
    expect(m.get('a')).toBe(3);
    expect(m.size).toBe(2);
    // A re-added key keeps its first place.
    expect(live(m)).toEqual([['a', 3], ['b', 2]]);
    expect(m.keys()).toEqual(['a', 'b']);
    m.clear();
    expect(m.size).toBe(0);
    expect(live(m)).toEqual([]);
  });

  it('matches a Map under random operations, across many sweeps', () => {
    const rand = seededRandom(7);
    const m = new ChurnMap<number>();
    const model = new Map<string, number>();
    for (let i = 0; i < 50_000; i++) {
      const key = `k${Math.floor(rand() * 300)}`;
      if (rand() < 0.45) {
        expect(m.delete(key)).toBe(model.delete(key));
      } else {
        m.set(key, i);
        model.set(key, i);
      }
      expect(m.size).toBe(model.size);
    }
    expect(new Map(live(m))).toEqual(model);
    for (const [k, v] of model) expect(m.get(k)).toBe(v);
  });
});
