import { describe, expect, it } from 'vitest';
import { ChurnMap } from '../../lib/churn-map';
import { ServiceList, type ListEntry, type ListView } from '../../lib/discover/service-list';
import type { Endpoint } from '../../lib/types';

function entry(key: string, v: number): ListEntry {
  const endpoint: Endpoint = Object.freeze({ service: 'svc', address: key, metadata: Object.freeze({ v: String(v) }), key });
  return { endpoint, value: `${key}=${v}` };
}

/** The list as the old ChurnMap-based implementation ordered it. */
function reference(map: ChurnMap<ListEntry>): Endpoint[] {
  const out: Endpoint[] = [];
  map.forEach((e) => out.push(e.endpoint));
  return out;
}

describe('ServiceList', () => {
  it('keeps the order of the ChurnMap it replaced, and every view keeps the list as it was when taken', () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const list = new ServiceList('svc');
    const model = new ChurnMap<ListEntry>();
    const views: { view: ListView; expected: Endpoint[]; readNow: boolean }[] = [];
    for (let step = 0; step < 3000; step++) {
      const added: Endpoint[] = [];
      const removed: Endpoint[] = [];
      const ops = 1 + rand(4);
      for (let k = 0; k < ops; k++) {
        const key = `k${rand(step < 1500 ? 400 : 60)}`;
        const put = rand(3) !== 0;
        const e = put ? entry(key, rand(3)) : undefined;
        list.set(key, e, added, removed);
        if (e) {
          const old = model.get(key);
          if (!old || old.value !== e.value) model.set(key, e);
        } else model.delete(key);
      }
      list.commit(added, removed);
      const expected = reference(model);
      expect(list.size).toBe(expected.length);
      if (step % 7 === 0) expect(list.endpoints).toEqual(expected);
      if (step % 3 === 0) {
        const view = list.view();
        const readNow = step % 2 === 0;
        if (readNow) expect(view.endpoints).toEqual(expected);
        views.push({ view, expected, readNow });
      }
      expect(list.keys()).toEqual(expected.map((e) => e.key));
    }
    for (const { view, expected } of views) expect(view.endpoints).toEqual(expected);
  });

  it('a view read before the next change is the list\'s own array, and frozen', () => {
    const list = new ServiceList('svc');
    const added: Endpoint[] = [];
    for (let i = 0; i < 300; i++) list.set(`k${i}`, entry(`k${i}`, 0), added, []);
    list.commit(added, []);
    const view = list.view();
    expect(view.endpoints).toBe(list.endpoints);
    expect(Object.isFrozen(view.endpoints)).toBe(true);
    const before = view.endpoints;
    const r: Endpoint[] = [];
    list.set('k5', undefined, [], r);
    list.commit([], r);
    expect(list.endpoints).toHaveLength(299);
    expect(view.endpoints).toBe(before);
    expect(before).toHaveLength(300);
  });

  it('setAll() into an empty list is set() key by key: same order, changes and views, then the same under later writes', () => {
    for (const n of [1, 10, 128, 129, 300]) {
      const keys = Array.from({ length: n }, (_v, i) => `k${i}`);
      const entries = keys.map((k) => entry(k, 0));
      const bulk = new ServiceList('svc');
      const single = new ServiceList('svc');
      const early = bulk.view(); // a view of the empty list keeps seeing it empty
      const added: Endpoint[] = [];
      bulk.setAll(keys, entries, added, []);
      bulk.commit(added, []);
      const expectedAdded: Endpoint[] = [];
      for (let i = 0; i < n; i++) single.set(keys[i]!, entries[i], expectedAdded, []);
      single.commit(expectedAdded, []);
      expect(added).toEqual(expectedAdded);
      expect(bulk.endpoints).toEqual(single.endpoints);
      expect(bulk.keys()).toEqual(keys);
      expect(early.endpoints).toEqual([]);
      const view = bulk.view();
      const before = [...bulk.endpoints];
      for (const list of [bulk, single]) {
        const a: Endpoint[] = [];
        const r: Endpoint[] = [];
        list.set('k0', undefined, a, r);
        list.set(`k${n - 1}`, entry(`k${n - 1}`, 1), a, r);
        list.set('new', entry('new', 0), a, r);
        list.commit(a, r);
      }
      expect(bulk.endpoints).toEqual(single.endpoints);
      expect(bulk.get('new')?.value).toBe('new=0');
      expect(view.endpoints).toEqual(before);
      // Into a list that already has slots, setAll() is set() itself.
      const a: Endpoint[] = [];
      bulk.setAll(['k1', 'x'], [entry('k1', 5), entry('x', 0)], a, []);
      expect(a.map((e) => e.key)).toEqual(['k1', 'x']);
    }
  });
});
