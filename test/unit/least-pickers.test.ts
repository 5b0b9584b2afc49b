import { describe, expect, it } from 'vitest';
import { EndpointLoad, DECAY_MS, FAILURE_PENALTY_MS, INITIAL_LATENCY_MS, LeastLoadedPicker, createPicker } from '../../lib/pickers';
import type { Endpoint } from '../../lib/types';
import { seededRandom } from '../support/random';

function ep(i: number, metadata: Record<string, unknown> = {}): Endpoint {
  const address = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;
  return { service: 'svc', address, metadata, key: `/registry/services/svc/${address}` };
}
const eps = (n: number): Endpoint[] => Array.from({ length: n }, (_, i) => ep(i));

describe('EndpointLoad (peak EWMA)', () => {
  it('starts at the initial estimate, jumps to a slower sample at once, decays towards faster ones', () => {
    const load = new EndpointLoad();
    expect(load.latency(0)).toBe(INITIAL_LATENCY_MS);
    load.begin();
    expect(load.cost(0)).toBe(INITIAL_LATENCY_MS * 2);
    load.end(5, true, 0);
    expect(load.inflight).toBe(0);
    expect(load.latency(0)).toBe(5);
    load.end(800, true, 10); // peak: at once
    expect(load.latency(10)).toBe(800);
    // fast samples pull it down, about 63 % of the way after DECAY_MS of them
    let t = 10;
    while (t < 10 + DECAY_MS) {
      t += 10;
      load.end(5, true, t);
    }
    expect(load.latency(t)).toBeLessThan(800 * 0.4);
    expect(load.latency(t)).toBeGreaterThan(5);
  });

  it('decays towards 0 without samples (an idle slow endpoint is tried again), and counts a failure as at least the penalty', () => {
    const load = new EndpointLoad();
    load.end(500, true, 0);
    expect(load.latency(DECAY_MS)).toBeCloseTo(500 / Math.E, 5);
    const failing = new EndpointLoad();
    failing.end(2, false, 0);
    expect(failing.latency(0)).toBe(FAILURE_PENALTY_MS);
  });
});

describe.each(['least-request', 'least-latency'] as const)('%s', (strategy) => {
  it('prefers the less loaded of two', () => {
    const picker = createPicker(strategy, eps(2), { random: seededRandom(1) }) as LeastLoadedPicker;
    picker.load(ep(0).key)!.begin();
    picker.load(ep(0).key)!.begin();
    for (let i = 0; i < 50; i++) expect(picker.pick()?.key).toBe(ep(1).key);
  });

  it('keeps the load of an endpoint across a metadata update, drops it on removal, and follows swap-removes', () => {
    const picker = createPicker(strategy, eps(4), { random: seededRandom(2) }) as LeastLoadedPicker;
    const load = picker.load(ep(1).key)!;
    load.begin();
    picker.update([ep(1, { v: 2 })], [ep(1)]);
    expect(picker.load(ep(1).key)).toBe(load);
    const last = picker.load(ep(3).key)!;
    picker.update([], [ep(0)]);
    expect(picker.load(ep(0).key)).toBeUndefined();
    expect(picker.load(ep(3).key)).toBe(last);
    expect(picker.size).toBe(3);
  });

  it('skips excluded endpoints, scanning when the pairs drawn are excluded; all excluded: picks one anyway', () => {
    const picker = createPicker(strategy, eps(100), { random: seededRandom(3) });
    const only = ep(42).key;
    for (let i = 0; i < 100; i++) expect(picker.pick(undefined, (e) => e.key !== only)?.key).toBe(only);
    expect(picker.lastAllExcluded).toBe(false);
    expect(picker.pick(undefined, () => true)).toBeDefined();
    expect(picker.lastAllExcluded).toBe(true);
  });

  it('spreads evenly when every endpoint is equally loaded', () => {
    const picker = createPicker(strategy, eps(10), { random: seededRandom(4) });
    const counts = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const k = picker.pick()!.key;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect(counts.size).toBe(10);
    for (const c of counts.values()) expect(c).toBeGreaterThan(700);
  });

  it('picks in constant time at 10,000 endpoints, and allocates nothing per pick', () => {
    const small = createPicker(strategy, eps(10));
    const big = createPicker(strategy, eps(10_000));
    const time = (p: ReturnType<typeof createPicker>): number => {
      for (let i = 0; i < 20_000; i++) p.pick();
      const t0 = performance.now();
      for (let i = 0; i < 200_000; i++) p.pick();
      return performance.now() - t0;
    };
    time(small);
    const tSmall = time(small);
    const tBig = time(big);
    // O(1): a large list costs at most a few times a small one (cache misses), not 1000×.
    expect(tBig).toBeLessThan(Math.max(tSmall, 5) * 10);
    // 200,000 picks allocating even 16 bytes each would be 3.2 MB, every time. The test's own
    // worker allocates now and then too: of three runs, the least grown is the picks' own.
    const grown = Math.min(
      ...[0, 1, 2].map(() => {
        global.gc?.();
        const before = process.memoryUsage().heapUsed;
        for (let i = 0; i < 200_000; i++) big.pick();
        return process.memoryUsage().heapUsed - before;
      }),
    );
    expect(grown).toBeLessThan(1_000_000);
  });
});

describe('least-latency with a slow endpoint', () => {
  it('sends the slow endpoint almost nothing once it has answered slowly', () => {
    const picker = createPicker('least-latency', eps(10), { random: seededRandom(5) }) as LeastLoadedPicker;
    const now = performance.now();
    for (let i = 0; i < 10; i++) picker.load(ep(i).key)!.end(i === 3 ? 1000 : 5, true, now);
    let slow = 0;
    for (let i = 0; i < 10_000; i++) if (picker.pick()!.key === ep(3).key) slow++;
    expect(slow).toBe(0);
  });
});
