/**
 * Figure 2's finding, reproduced with raw etcd3 only:
 *   npx tsx bench/diagnostics/revoke-after-cancel.ts
 * In a fresh process, cancelling the keepalive and watch streams right before
 * revoking the lease (what LeaseKeeper.close() does on SIGTERM) makes the revoke
 * take ~20 ms, most of it CPU spent on the cancellations' first run; revoking first
 * and cancelling after takes ~3-5 ms.
 */
import { EtcdNode } from '../../test/support/etcd';
import { median } from '../stats';
import { killAllChildren, spawnChild } from '../support';

async function main(): Promise<void> {
  const etcd = new EtcdNode({ name: 'diag-revoke' });
  await etcd.start();
  const runs = Number(process.argv[2] ?? 8);
  const result: Record<string, { ms: number[]; cpuMs: number[] }> = { 'cancel-first': { ms: [], cpuMs: [] }, 'revoke-first': { ms: [], cpuMs: [] } };
  try {
    for (let i = 0; i < runs; i++) {
      for (const order of Object.keys(result)) {
        const child = spawnChild('revoke-probe.ts', { BENCH_ETCD: etcd.clientUrl, BENCH_ORDER: order });
        const m = await child.message<{ ms: number; cpuMs: number }>((x) => typeof x.ms === 'number');
        result[order]!.ms.push(m.ms);
        result[order]!.cpuMs.push(m.cpuMs);
        await child.exited;
      }
    }
  } finally {
    await killAllChildren();
    await etcd.stop();
  }
  for (const [order, r] of Object.entries(result)) {
    console.log(`${order.padEnd(13)} revoke took median ${median(r.ms).toFixed(1)} ms (process CPU meanwhile ${median(r.cpuMs).toFixed(1)} ms) over ${r.ms.length} fresh processes`);
  }
}

void main();
