/**
 * Figure 2: SIGTERM sent to a registered child → its endpoint gone from the list
 * of a Registry in another process (this one). Baseline: a raw etcd3 child whose
 * SIGTERM handler revokes its lease (the hand-written equivalent).
 *
 * Both modes register under one prefix and are seen by the same observers: the
 * ratio is of what a user sees, the Registry's `change` event; the raw watch's
 * delete event is also recorded for both (the data's `watch`). Both clocks start
 * when this process sends the signal. Children are spawned in batches (ours and
 * raw together) and, once every child is registered and the machine is quiet,
 * measured one at a time, the modes alternating (which comes first in each pair
 * at random).
 */
import { HolderBench, type Holder, type Mode } from './holders';
import { fmtP, fmtRatio, nowMs, roundSummary, sleep, summarize } from './stats';
import type { Figure } from './support';

/** Met when ours is within this ratio of raw at p50, or within ABS_MS of it. */
const RATIO = 1.15;
const ABS_MS = 0.3;

/** Pairs of one child of each mode, in random order within each pair. */
function alternate(holders: readonly Holder[]): Holder[] {
  const ours = holders.filter((h) => h.mode === 'ours');
  const raw = holders.filter((h) => h.mode === 'raw');
  const order: Holder[] = [];
  for (let i = 0; i < Math.max(ours.length, raw.length); i++) {
    const pair = [ours[i], raw[i]].filter((h): h is Holder => h !== undefined);
    if (Math.random() < 0.5) pair.reverse();
    order.push(...pair);
  }
  return order;
}

export const fig2: Figure = async (ctx) => {
  const perMode = ctx.quick ? 4 : 30;
  const batch = ctx.quick ? 4 : 6;
  const bench = new HolderBench(ctx, 'fig2', 10, true);
  const gone: Record<Mode, number[]> = { ours: [], raw: [] };
  const watch: Record<Mode, number[]> = { ours: [], raw: [] };
  const exit: Record<Mode, number[]> = { ours: [], raw: [] };
  const failures: string[] = [];
  try {
    await bench.start();
    for (let done = 0; done < perMode; done += batch) {
      const holders = alternate(await bench.spawn(Math.min(batch, perMode - done)));
      await sleep(300);
      for (const h of holders) {
        const seen = bench.gone.wait(h.key, 15_000);
        const watched = bench.watched.wait(h.key, 15_000);
        const t0 = nowMs();
        h.child.process.kill('SIGTERM');
        try {
          gone[h.mode].push((await seen) - t0);
          watch[h.mode].push((await watched) - t0);
        } catch (e) {
          failures.push(`${h.mode}: ${(e as Error).message}`);
          watched.catch(() => undefined);
        }
        const exited = await h.child.exited;
        exit[h.mode].push(exited.at - t0);
        await sleep(30);
      }
      ctx.log(`fig2: ${Math.min(done + batch, perMode)}/${perMode} per mode`);
    }
  } finally {
    await bench.close();
  }
  const s = { ours: summarize(gone.ours, 'gone, ours'), raw: summarize(gone.raw, 'gone, raw') };
  const w = { ours: summarize(watch.ours, 'watch delete, ours'), raw: summarize(watch.raw, 'watch delete, raw') };
  const ratio = s.ours.p50 / s.raw.p50;
  const extra = s.ours.p50 - s.raw.p50;
  return {
    rows: [
      {
        figure: '2',
        what: `SIGTERM to a registered child → gone from another process's list, ${s.ours.n} children a mode, p50 / p99`,
        ours: fmtP(s.ours),
        baseline: `${fmtP(s.raw)} (SIGTERM → raw revoke; the same list)`,
        ratio: `${fmtRatio(ratio)} / ${fmtRatio(s.ours.p99 / s.raw.p99)}`,
        target: `p50 ≤ ${RATIO}× or ≤ raw + ${ABS_MS} ms`,
        met: (ratio <= RATIO || extra <= ABS_MS) && failures.length === 0 && s.ours.n === perMode && s.raw.n === perMode,
      },
    ],
    data: {
      unit: 'ms',
      perMode,
      gone: { ours: roundSummary(s.ours), raw: roundSummary(s.raw) },
      watch: { ours: roundSummary(w.ours), raw: roundSummary(w.raw) },
      processExit: { ours: roundSummary(summarize(exit.ours, 'process exit, ours')), raw: roundSummary(summarize(exit.raw, 'process exit, raw')) },
      ratioP50: ratio,
      extraP50Ms: extra,
      watchRatioP50: w.ours.p50 / w.raw.p50,
      failures,
    },
    notes: failures.length > 0 ? [`${failures.length} removal(s) not seen: ${failures.slice(0, 3).join('; ')}`] : [],
  };
};
