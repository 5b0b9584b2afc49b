/**
 * Figure 3: SIGKILL of a registered child → endpoint gone from this process's
 * list, against the lease TTL (target: within TTL + 1 s). Also measured for a raw
 * etcd3 child holding a lease of the same TTL (etcd3 keeps it alive every TTL/3).
 *
 * Children are killed at random moments relative to their keepalive cycle, a few
 * hundred ms apart, and waited for in parallel.
 */
import { HolderBench, type Mode } from './holders';
import { fmtMs, fmtRatio, nowMs, roundSummary, sleep, summarize } from './stats';
import type { Figure } from './support';

const TTL_SECONDS = 2;

export const fig3: Figure = async (ctx) => {
  const perMode = ctx.quick ? 2 : 10;
  const bench = new HolderBench(ctx, 'fig3', TTL_SECONDS);
  const gone: Record<Mode, number[]> = { ours: [], raw: [] };
  const failures: string[] = [];
  try {
    await bench.start();
    const holders = await bench.spawn(perMode);
    await sleep(ctx.quick ? 500 : 1000);
    const waits: Promise<void>[] = [];
    for (const h of holders) {
      const seen = bench.gone.wait(h.key, TTL_SECONDS * 1000 + 15_000);
      const t0 = nowMs();
      h.child.process.kill('SIGKILL');
      waits.push(
        seen.then(
          (t) => void gone[h.mode].push(t - t0),
          (e: Error) => void failures.push(`${h.mode}: ${e.message}`),
        ),
      );
      await sleep(ctx.quick ? 50 + Math.random() * 100 : 100 + Math.random() * 300);
    }
    await Promise.all(waits);
  } finally {
    await bench.close();
  }
  const s = { ours: summarize(gone.ours), raw: summarize(gone.raw) };
  const limit = TTL_SECONDS * 1000 + 1000;
  return {
    rows: [
      {
        figure: '3',
        what: `SIGKILL of a registered child → gone from the list (TTL ${TTL_SECONDS} s), ${s.ours.n} children, p50 / max`,
        ours: `${fmtMs(s.ours.p50)} / ${fmtMs(s.ours.max)}`,
        baseline: `TTL ${fmtMs(TTL_SECONDS * 1000)} (raw etcd3 lease: ${fmtMs(s.raw.p50)} / ${fmtMs(s.raw.max)})`,
        ratio: `max ${fmtRatio(s.ours.max / (TTL_SECONDS * 1000))} TTL`,
        target: '≤ TTL + 1 s',
        met: s.ours.n === perMode && s.ours.max <= limit,
      },
    ],
    data: {
      unit: 'ms',
      ttlSeconds: TTL_SECONDS,
      perMode,
      gone: { ours: roundSummary(s.ours), raw: roundSummary(s.raw) },
      failures,
    },
    notes: failures.length > 0 ? [`${failures.length} expiry(ies) not seen: ${failures.slice(0, 3).join('; ')}`] : [],
  };
};
