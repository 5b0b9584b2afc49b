/**
 * Figure 4: lookups per second from the local list (`endpoints()`, `pick()` for
 * each strategy) at 3 / 100 / 10,000 endpoints, against one raw range read of the
 * service's prefix per lookup (what a client without a local list does).
 *
 * Each local figure is a tight loop timed with the monotonic clock: the iteration
 * count is calibrated so one repetition takes ~100 ms (quick: ~25 ms), then the
 * median of 7 (quick: 3) repetitions is reported. `endpoints()` is async, so its
 * loop awaits every call, as an application would.
 */
import type { Etcd3 } from 'etcd3';
import type { Registry } from '../lib';
import type { Strategy } from '../lib/pickers';
import { fmtRate, fmtRatio, median, nowMs, round } from './stats';
import { address, deletePrefix, putMany, rawClient, registry, uniquePrefix, value, type Figure, type Row } from './support';

const SIZES = [3, 100, 10_000] as const;
const STRATEGIES: readonly Strategy[] = ['round-robin', 'random', 'weighted', 'consistent-hash'];
const KEY_COUNT = 4096; // affinity keys cycled through by consistent-hash

/** Calls `loop(n)` (which must do n operations) with n calibrated to ~targetMs; returns ops/s, median of reps. */
async function opsPerSecond(loop: (n: number) => unknown, targetMs: number, reps: number): Promise<{ median: number; all: number[] }> {
  let n = 1000;
  // warm up and calibrate
  for (;;) {
    const t0 = nowMs();
    await loop(n);
    const dt = nowMs() - t0;
    if (dt >= targetMs / 4) {
      n = Math.max(1, Math.round((n * targetMs) / dt));
      break;
    }
    n *= 4;
  }
  const all: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = nowMs();
    await loop(n);
    const dt = nowMs() - t0;
    all.push((n * 1000) / dt);
  }
  return { median: median(all), all };
}

/** Sequential raw range reads of the whole service prefix: as many as fit in `budgetMs`, at most `max`. */
async function rawReads(client: Etcd3, prefix: string, budgetMs: number, max: number): Promise<{ perSecond: number; reads: number; p50Ms: number }> {
  for (let i = 0; i < 3; i++) await client.getAll().prefix(prefix).exec(); // warm-up
  const times: number[] = [];
  const start = nowMs();
  while (times.length < max && (nowMs() - start < budgetMs || times.length < 5)) {
    const t0 = nowMs();
    await client.getAll().prefix(prefix).exec();
    times.push(nowMs() - t0);
  }
  const elapsed = nowMs() - start;
  return { perSecond: (times.length * 1000) / elapsed, reads: times.length, p50Ms: median(times) };
}

let sink: unknown;

function pickLoop(reg: Registry, service: string, strategy: Strategy): (n: number) => void {
  if (strategy === 'consistent-hash') {
    const keys = Array.from({ length: KEY_COUNT }, (_, i) => `user-${i}`);
    const options = { strategy, key: '' };
    return (n) => {
      let last;
      for (let i = 0; i < n; i++) {
        options.key = keys[i & (KEY_COUNT - 1)]!;
        last = reg.pick(service, options);
      }
      sink = last;
    };
  }
  const options = { strategy };
  return (n) => {
    let last;
    for (let i = 0; i < n; i++) last = reg.pick(service, options);
    sink = last;
  };
}

function endpointsLoop(reg: Registry, service: string): (n: number) => Promise<void> {
  return async (n) => {
    let last;
    for (let i = 0; i < n; i++) last = await reg.endpoints(service);
    sink = last;
  };
}

export const fig4: Figure = async (ctx) => {
  const targetMs = ctx.quick ? 25 : 100;
  const reps = ctx.quick ? 3 : 7;
  const prefix = uniquePrefix('fig4');
  const client = rawClient(ctx.endpoint);
  const reg = registry(ctx.endpoint, prefix);
  const rows: Row[] = [];
  const data: Record<string, unknown> = { unit: 'ops/s', targetMsPerRep: targetMs, reps };
  try {
    let n = 0;
    for (const size of SIZES) {
      await putMany(
        client,
        Array.from({ length: size }, () => {
          const a = address(++n, 5000);
          return [`${prefix}/services/svc-${size}/${a}`, value(a, { weight: 1 + (n % 3) })] as [string, string];
        }),
      );
    }
    for (const size of SIZES) {
      const service = `svc-${size}`;
      const list = await reg.endpoints(service);
      if (list.length !== size) throw new Error(`${service}: expected ${size} endpoints, the registry has ${list.length}`);
      const base = await rawReads(client, `${prefix}/services/${service}/`, ctx.quick ? 300 : 2000, 2000);
      const ours: Record<string, { median: number; all: number[] }> = {};
      ours['endpoints()'] = await opsPerSecond(endpointsLoop(reg, service), targetMs, reps);
      for (const strategy of STRATEGIES) ours[`pick ${strategy}`] = await opsPerSecond(pickLoop(reg, service, strategy), targetMs, reps);
      data[String(size)] = {
        baseline: { perSecond: round(base.perSecond), reads: base.reads, p50Ms: round(base.p50Ms) },
        ours: Object.fromEntries(
          Object.entries(ours).map(([k, v]) => [k, { median: round(v.median), reps: v.all.map(round), ratio: round(v.median / base.perSecond) }]),
        ),
      };
      for (const [what, r] of Object.entries(ours)) {
        const ratio = r.median / base.perSecond;
        const rr = what === 'pick round-robin';
        rows.push({
          figure: '4',
          what: `${what}, ${size.toLocaleString('en-US')} endpoints`,
          ours: fmtRate(r.median),
          baseline: `${fmtRate(base.perSecond)} (range read)`,
          ratio: fmtRatio(ratio),
          target: rr ? '≥ 1,000×; ≥ 10 M/s' : '≥ 1,000×',
          met: ratio >= 1000 && (!rr || r.median >= 10e6),
        });
      }
      ctx.log(`fig4: ${size} endpoints done`);
    }
    void sink;
  } finally {
    await reg.close();
    await deletePrefix(client, `${prefix}/`).catch(() => undefined);
    client.close();
  }
  return { rows, data };
};
