/**
 * Figure 2: SIGTERM sent to a registered child → its endpoint gone from this
 * process's list. Baseline: a raw etcd3 child whose SIGTERM handler revokes its
 * lease (the hand-written equivalent) → the delete event on a raw watch.
 *
 * Both clocks start when this process sends the signal. Children are spawned in
 * batches (ours and raw together), and the batch is measured one child at a time,
 * in a shuffled order, once every child is registered and the machine is quiet.
 */
import { HolderBench, type Mode } from './holders';
import { fmtP, fmtRatio, nowMs, roundSummary, sleep, summarize } from './stats';
import type { Figure } from './support';

export const fig2: Figure = async (ctx) => {
  const perMode = ctx.quick ? 4 : 30;
  const batch = ctx.quick ? 4 : 6;
  const bench = new HolderBench(ctx, 'fig2', 10);
  const gone: Record<Mode, number[]> = { ours: [], raw: [] };
  const exit: Record<Mode, number[]> = { ours: [], raw: [] };
  const failures: string[] = [];
  try {
    await bench.start();
    for (let done = 0; done < perMode; done += batch) {
      const holders = await bench.spawn(Math.min(batch, perMode - done));
      await sleep(300);
      for (const h of holders) {
        const seen = bench.gone.wait(h.key, 15_000);
        const t0 = nowMs();
        h.child.process.kill('SIGTERM');
        try {
          gone[h.mode].push((await seen) - t0);
        } catch (e) {
          failures.push(`${h.mode}: ${(e as Error).message}`);
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
  const ratio = s.ours.p50 / s.raw.p50;
  return {
    rows: [
      {
        figure: '2',
        what: `SIGTERM to a registered child → gone from the list, ${s.ours.n} children, p50 / p99`,
        ours: fmtP(s.ours),
        baseline: `${fmtP(s.raw)} (SIGTERM → raw revoke → delete event)`,
        ratio: `${fmtRatio(ratio)} / ${fmtRatio(s.ours.p99 / s.raw.p99)}`,
        target: 'p50 ≤ 1.3×',
        met: ratio <= 1.3 && failures.length === 0,
      },
    ],
    data: {
      unit: 'ms',
      perMode,
      gone: { ours: roundSummary(s.ours), raw: roundSummary(s.raw) },
      processExit: { ours: roundSummary(summarize(exit.ours, 'process exit, ours')), raw: roundSummary(summarize(exit.raw, 'process exit, raw')) },
      ratioP50: ratio,
      failures,
    },
    notes: failures.length > 0 ? [`${failures.length} removal(s) not seen: ${failures.slice(0, 3).join('; ')}`] : [],
  };
};
