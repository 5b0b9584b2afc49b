import { describe, expect, it } from 'vitest';
import { bootstrapRatio } from '../../bench/stats';

/** A heavy-tailed sample (as the bench's latencies are), from a fixed generator. */
function sample(n: number, scale: number, seed: number): number[] {
  let s = seed;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    // mulberry32
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    const u = ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
    out.push(scale / Math.sqrt(1 - u)); // Pareto, alpha 2
  }
  return out;
}

describe('bootstrapRatio', () => {
  it('brackets the ratio of the percentiles, and only noise wide', () => {
    const a = sample(6000, 2, 1);
    const b = sample(6000, 1, 2);
    const { lo, hi } = bootstrapRatio(a, b, 99);
    expect(lo).toBeGreaterThan(1.5);
    expect(hi).toBeLessThan(2.6);
    expect(lo).toBeLessThan(hi);
  });

  it('is the same for the same samples (a fixed seed), and its interval narrows with more of them', () => {
    const a = sample(2000, 1, 3);
    const b = sample(2000, 1, 4);
    expect(bootstrapRatio(a, b, 99)).toEqual(bootstrapRatio(a, b, 99));
    const wide = bootstrapRatio(a, b, 99);
    const narrow = bootstrapRatio(sample(20_000, 1, 3), sample(20_000, 1, 4), 99);
    expect(narrow.hi - narrow.lo).toBeLessThan(wide.hi - wide.lo);
    expect(narrow.lo).toBeLessThan(1.1);
    expect(narrow.hi).toBeGreaterThan(0.9);
  });
});
