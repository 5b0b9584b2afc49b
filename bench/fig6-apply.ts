/**
 * Figure 6: the cost of applying one change to a service of 10 vs 10,000 endpoints.
 * It must not grow with the list (no rebuilding per event): target ratio ≤ 1.5.
 *
 * (a) Pure, in memory: a ServiceList (lib/service-list.ts) of N entries with a
 *     round-robin picker created, then set() + commit() of one key, alternately
 *     added and removed, in a calibrated tight loop. The table's ratio is this one.
 *     Also measured: the same plus the `change` event's snapshot (ServiceList.view(),
 *     what onListChange takes) with a listener that reads only added/removed
 *     (target ratio ≤ 2) or also `event.endpoints` (built on first read: one
 *     copy of the list), and with each other picker.
 * (b) End to end, in this process: a raw put / delete by a separate etcd3 client
 *     → the registry's `change` event, for a service of 10 vs 10,000 endpoints,
 *     with a listener that only stamps the clock, and one that also walks
 *     `event.endpoints`.
 */
import { ServiceList, type ListEntry } from '../lib/discover/service-list';
import type { Strategy } from '../lib/pickers';
import type { Endpoint } from '../lib/types';
import { fmtNs, fmtP, fmtRatio, median, nowMs, round, roundSummary, shuffle, summarize } from './stats';
import { address, deletePrefix, putMany, rawClient, registry, uniquePrefix, value, type Figure, type Row } from './support';

const SIZES = [10, 10_000] as const;

function entry(service: string, i: number): [string, ListEntry] {
  const a = address(i, 3000);
  const key = `bench/services/${service}/${a}`;
  const endpoint: Endpoint = Object.freeze({ service, address: a, metadata: Object.freeze({ zone: `zone-${i % 3}` }), key });
  return [key, { endpoint, value: value(a, { zone: `zone-${i % 3}` }) }];
}

let sink: unknown;

/**
 * How one change is made:
 * - flap:   one endpoint removed, then added back, alternately (a flapping instance; the e2e pattern);
 * - update: one endpoint's value changes (metadata), alternating between two values;
 * - spread: endpoint j removed then added back, j moving through the list (no key touched twice in a row).
 */
type Pattern = 'flap' | 'update' | 'spread';

/** ns per change: the median of `reps` calibrated repetitions of ~targetMs. */
/**
 * What the listener of the `change` event does, besides the apply:
 * - none:      no event built (the list alone);
 * - event:     the event's snapshot taken (what onListChange does), the listener reads added/removed only;
 * - endpoints: the same, and the listener reads `event.endpoints` (the whole list).
 */
type Read = 'none' | 'event' | 'endpoints';

function applyCost(size: number, pickers: readonly Strategy[], read: Read, pattern: Pattern, targetMs: number, reps: number): number {
  const list = new ServiceList('svc');
  const added: Endpoint[] = [];
  const removed: Endpoint[] = [];
  const entries: [string, ListEntry][] = [];
  for (let i = 0; i < size; i++) {
    const e = entry('svc', i);
    entries.push(e);
    list.set(e[0], e[1], added, removed);
  }
  list.commit(added, removed);
  for (const p of pickers) list.picker(p);
  sink = list.endpoints;
  const [probeKey, probe] = entry('svc', size + 1);
  const [key0, first] = entries[0]!;
  const other: ListEntry = { endpoint: Object.freeze({ ...first.endpoint, metadata: Object.freeze({ zone: 'other' }) }), value: value(first.endpoint.address, { zone: 'other' }) };
  let i = 0;
  const loop = (n: number): void => {
    for (let k = 0; k < n; k++, i++) {
      const a: Endpoint[] = [];
      const r: Endpoint[] = [];
      const odd = (i & 1) === 1;
      if (pattern === 'flap') list.set(probeKey, odd ? undefined : probe, a, r);
      else if (pattern === 'update') list.set(key0, odd ? first : other, a, r);
      else {
        const [key, e] = entries[(i >> 1) % size]!;
        list.set(key, odd ? e : undefined, a, r);
      }
      list.commit(a, r);
      if (read !== 'none') {
        const view = list.view();
        sink = a.length + r.length;
        if (read === 'endpoints') sink = view.endpoints;
      }
    }
  };
  let n = 16;
  for (;;) {
    const t0 = nowMs();
    loop(n);
    const dt = nowMs() - t0;
    if (dt >= targetMs / 4) {
      n = Math.max(2, Math.round((n * targetMs) / dt));
      break;
    }
    n *= 4;
  }
  if (n % 2 === 1) n++; // every repetition ends with the list as it began
  const all: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = nowMs();
    loop(n);
    all.push(((nowMs() - t0) * 1e6) / n);
  }
  return median(all);
}

export const fig6: Figure = async (ctx) => {
  const targetMs = ctx.quick ? 25 : 150;
  const reps = ctx.quick ? 3 : 7;
  const rows: Row[] = [];
  const data: Record<string, unknown> = { unit: 'ns per change (pure); ms (end to end)' };

  // (a) pure apply
  const variants: { name: string; pickers: Strategy[]; read: Read; pattern: Pattern; target?: number }[] = [
    { name: 'one endpoint removed / re-added, round-robin picker', pickers: ['round-robin'], read: 'none', pattern: 'flap', target: 1.5 },
    { name: '  one endpoint\'s metadata changed, round-robin picker', pickers: ['round-robin'], read: 'none', pattern: 'update' },
    { name: '  a different endpoint removed / re-added each time, round-robin', pickers: ['round-robin'], read: 'none', pattern: 'spread' },
    { name: '  removed / re-added, no picker (the list alone)', pickers: [], read: 'none', pattern: 'flap' },
    { name: 'removed / re-added + change event, listener reads added/removed', pickers: ['round-robin'], read: 'event', pattern: 'flap', target: 2 },
    { name: '  removed / re-added + change event, listener reads event.endpoints (one copy)', pickers: ['round-robin'], read: 'endpoints', pattern: 'flap' },
    { name: '  a different endpoint each time + change event, listener reads added/removed', pickers: ['round-robin'], read: 'event', pattern: 'spread' },
    { name: '  removed / re-added, random picker', pickers: ['random'], read: 'none', pattern: 'flap' },
    { name: '  removed / re-added, weighted picker', pickers: ['weighted'], read: 'none', pattern: 'flap' },
    { name: '  removed / re-added, consistent-hash picker', pickers: ['consistent-hash'], read: 'none', pattern: 'flap' },
  ];
  const pure: Record<string, Record<string, number>> = {};
  for (const v of variants) {
    const cost: Record<string, number> = {};
    for (const size of SIZES) cost[size] = applyCost(size, v.pickers, v.read, v.pattern, targetMs, reps);
    const ratio = cost[10_000]! / cost[10]!;
    pure[v.name.trim()] = { ...Object.fromEntries(Object.entries(cost).map(([k, x]) => [k, round(x)])), ratio: round(ratio) };
    rows.push({
      figure: '6',
      what: `${v.name}: 10 → 10,000`,
      ours: `${fmtNs(cost[10]!)} → ${fmtNs(cost[10_000]!)}`,
      baseline: '—',
      ratio: fmtRatio(ratio),
      target: v.target !== undefined ? `ratio ≤ ${v.target}` : 'info',
      met: v.target !== undefined ? ratio <= v.target : undefined,
    });
  }
  data.pure = pure;
  ctx.log('fig6: pure apply measured');

  // (b) end to end
  const samples = ctx.quick ? 60 : 600;
  const warmup = ctx.quick ? 15 : 100;
  const prefix = uniquePrefix('fig6');
  const client = rawClient(ctx.endpoint);
  const writer = rawClient(ctx.endpoint);
  const reg = registry(ctx.endpoint, prefix);
  try {
    let n = 0;
    for (const size of SIZES) {
      await putMany(
        client,
        Array.from({ length: size }, () => {
          const a = address(++n, 3000);
          return [`${prefix}/services/svc-${size}/${a}`, value(a)] as [string, string];
        }),
      );
      await reg.endpoints(`svc-${size}`);
      reg.pick(`svc-${size}`); // a round-robin picker, as an application would have
    }
    let seen: (() => void) | undefined;
    let at = 0;
    let reading = false;
    reg.on('change', (event) => {
      at = nowMs();
      if (reading) {
        let k = 0;
        for (const e of event.endpoints) if (e.address.length > 0) k++;
        sink = k;
      }
      seen?.();
    });
    const e2e: Record<string, Record<string, number[]>> = { quiet: { 10: [], 10000: [] }, reading: { 10: [], 10000: [] } };
    for (const mode of ['quiet', 'reading'] as const) {
      reading = mode === 'reading';
      for (let round = 0; round < warmup + samples; round++) {
        for (const size of shuffle([...SIZES])) {
          const key = `${prefix}/services/svc-${size}/probe:1`;
          for (const op of ['put', 'delete'] as const) {
            const arrived = new Promise<void>((resolve) => (seen = resolve));
            const t0 = nowMs();
            if (op === 'put') await writer.put(key).value(value('probe:1'));
            else await writer.delete().key(key);
            await arrived;
            if (round >= warmup) e2e[mode]![size]!.push(at - t0);
          }
        }
      }
    }
    const s = {
      quiet: { 10: summarize(e2e.quiet![10]!, 'e2e quiet, 10 endpoints'), 10000: summarize(e2e.quiet![10000]!, 'e2e quiet, 10,000 endpoints') },
      reading: { 10: summarize(e2e.reading![10]!, 'e2e reading endpoints, 10 endpoints'), 10000: summarize(e2e.reading![10000]!, 'e2e reading endpoints, 10,000 endpoints') },
    };
    data.endToEnd = {
      samples: samples * 2,
      quiet: { 10: roundSummary(s.quiet[10]), 10000: roundSummary(s.quiet[10000]) },
      reading: { 10: roundSummary(s.reading[10]), 10000: roundSummary(s.reading[10000]) },
    };
    for (const mode of ['quiet', 'reading'] as const) {
      rows.push({
        figure: '6',
        what: `  raw put/delete → change event, 10 vs 10,000 endpoints, listener ${mode === 'quiet' ? 'only stamps the clock' : 'walks event.endpoints'}`,
        ours: `${fmtP(s[mode][10])} vs ${fmtP(s[mode][10000])}`,
        baseline: '—',
        ratio: `p50 ${fmtRatio(s[mode][10000].p50 / s[mode][10].p50)}`,
        target: 'info',
        met: undefined,
      });
    }
  } finally {
    await reg.close();
    await deletePrefix(client, `${prefix}/`).catch(() => undefined);
    client.close();
    writer.close();
  }
  void sink;
  return { rows, data };
};
