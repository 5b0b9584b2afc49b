/** Percentiles, summaries and number formatting shared by every figure. */

export interface Summary {
  /** Number of samples. */
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile (p in [0, 100]) of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Every summary computed while a figure runs, for results.json (see collectSummaries). */
let collected: { label: string; summary: Summary }[] | undefined;

/** Starts recording every summarize() call; returns what was recorded since, on the next call to stop. */
export function collectSummaries(): () => { label: string; summary: Summary }[] {
  const mine: { label: string; summary: Summary }[] = [];
  collected = mine;
  return () => {
    if (collected === mine) collected = undefined;
    return mine.map((c) => ({ label: c.label, summary: roundSummary(c.summary) }));
  };
}

export function summarize(samples: readonly number[], label?: string): Summary {
  const summary = summarizeOnly(samples);
  if (collected) collected.push({ label: label ?? `#${collected.length + 1}`, summary });
  return summary;
}

function summarizeOnly(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    min: sorted[0] ?? NaN,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? NaN,
    mean: sorted.length > 0 ? sum / sorted.length : NaN,
  };
}

export function median(samples: readonly number[]): number {
  return percentile(
    [...samples].sort((a, b) => a - b),
    50,
  );
}

/** Monotonic clock in milliseconds (fractional). Same clock in every process of the machine. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** hrtime (ns, as a bigint or its decimal string) → ms as a number. */
export function nsToMs(ns: bigint | string): number {
  return Number(typeof ns === 'string' ? BigInt(ns) : ns) / 1e6;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * How far noise moves a ratio of two percentiles: the 5th and 95th percentile of
 * `percentile(a) / percentile(b)` over `rounds` bootstrap resamples of both (each drawn with
 * replacement, as many as it has), from a fixed seed so that a run's interval can be recomputed.
 */
export function bootstrapRatio(a: readonly number[], b: readonly number[], p: number, rounds = 400, seed = 1): { lo: number; hi: number } {
  let state = seed >>> 0 || 1;
  // xorshift32: enough for resampling, and the same in every run.
  const next = (n: number): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  const resampled = (x: readonly number[]): number => {
    const out = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = x[next(x.length)]!;
    return percentile(out.sort(), p);
  };
  const ratios: number[] = [];
  for (let i = 0; i < rounds; i++) ratios.push(resampled(a) / resampled(b));
  ratios.sort((x, y) => x - y);
  return { lo: percentile(ratios, 5), hi: percentile(ratios, 95) };
}

/** Fisher–Yates shuffle in place. */
export function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

// ---- formatting ------------------------------------------------------------------------

/** Milliseconds with 2–3 significant digits: `0.842 ms`, `12.3 ms`, `2.41 s`. */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '—';
  if (Math.abs(ms) >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (Math.abs(ms) >= 100) return `${ms.toFixed(0)} ms`;
  if (Math.abs(ms) >= 10) return `${ms.toFixed(1)} ms`;
  if (Math.abs(ms) >= 1) return `${ms.toFixed(2)} ms`;
  if (Math.abs(ms) >= 0.01) return `${ms.toFixed(3)} ms`;
  return `${(ms * 1000).toFixed(2)} µs`;
}

/** Microseconds or nanoseconds for tiny costs. */
export function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return '—';
  if (ns >= 1e6) return fmtMs(ns / 1e6);
  if (ns >= 1000) return `${(ns / 1000).toFixed(ns >= 1e4 ? 0 : 1)} µs`;
  return `${ns.toFixed(ns >= 100 ? 0 : 1)} ns`;
}

/** Rates: `12.3 M/s`, `45.6 k/s`, `789 /s`. */
export function fmtRate(perSecond: number): string {
  if (!Number.isFinite(perSecond)) return '—';
  if (perSecond >= 1e9) return `${(perSecond / 1e9).toFixed(2)} G/s`;
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(perSecond >= 1e8 ? 0 : 1)} M/s`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(perSecond >= 1e5 ? 0 : 1)} k/s`;
  return `${perSecond.toFixed(perSecond >= 10 ? 0 : 2)} /s`;
}

export function fmtBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '—';
  if (Math.abs(bytes) >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  if (Math.abs(bytes) >= 1024) return `${(bytes / 1024).toFixed(2)} KiB`;
  return `${bytes.toFixed(0)} B`;
}

export function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return '—';
  if (r >= 1e6) return `${(r / 1e6).toFixed(1)}M×`;
  if (r >= 1e4) return `${(r / 1e3).toFixed(0)}k×`;
  if (r >= 100) return `${r.toFixed(0)}×`;
  return `${r.toFixed(2)}×`;
}

/** `p50 / p99` of a summary in ms. */
export function fmtP(s: Summary | undefined): string {
  if (!s || s.n === 0) return '—';
  return `${fmtMs(s.p50)} / ${fmtMs(s.p99)}`;
}

/** Rounds floats for the JSON file (4 significant digits is plenty for noisy timings). */
export function round(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const digits = Math.max(0, 4 - Math.ceil(Math.log10(Math.abs(x))));
  return Number(x.toFixed(Math.min(digits, 9)));
}

export function roundSummary(s: Summary): Summary {
  return {
    n: s.n,
    min: round(s.min),
    p50: round(s.p50),
    p90: round(s.p90),
    p99: round(s.p99),
    max: round(s.max),
    mean: round(s.mean),
  };
}
