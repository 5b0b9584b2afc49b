/**
 * Where the time goes between SIGTERM and the lease revoke reaching etcd:
 *   npx tsx bench/diagnostics/sigterm-trace.ts [children per mode]
 * Children of both modes (the library; raw etcd3 revoking on SIGTERM), interleaved,
 * one SIGTERM at a time; one raw watch in this process sees every delete. Prints,
 * per mode, the median time from the signal to each gRPC call made after it, to its
 * answer, and to the delete event.
 */
import { EtcdNode } from '../../test/support/etcd';
import { median, nowMs, sleep } from '../stats';
import { killAllChildren, rawClient, spawnChild } from '../support';

async function main(): Promise<void> {
  const etcd = new EtcdNode({ name: 'diag-sigterm' });
  await etcd.start();
  const runs = Number(process.argv[2] ?? 10);
  const client = rawClient(etcd.clientUrl);
  const prefix = `diag-sigterm-${process.pid}`;
  const deletes = new Map<string, number>();
  const watcher = await client.watch().prefix(`${prefix}/`).create();
  watcher.on('delete', (kv) => deletes.set(kv.key.toString(), nowMs()));
  const per: Record<string, Map<string, number[]>> = { ours: new Map(), raw: new Map() };
  const add = (mode: string, what: string, ms: number): void => {
    const m = per[mode]!;
    if (!m.has(what)) m.set(what, []);
    m.get(what)!.push(ms);
  };
  try {
    for (let i = 0; i < runs; i++) {
      for (const mode of i % 2 === 0 ? ['ours', 'raw'] : ['raw', 'ours']) {
        const child = spawnChild('trace-holder.ts', { BENCH_MODE: mode, BENCH_ETCD: etcd.clientUrl, BENCH_PREFIX: prefix, BENCH_SERVICE: 'api', BENCH_ADDRESS: `10.0.0.${i}:${mode === 'ours' ? 1 : 2}` });
        const { key } = await child.message<{ ready?: boolean; key: string }>((m) => m.ready === true, 60_000);
        await sleep(300);
        const report = child.message<{ marks: [string, number][] }>((m) => Array.isArray((m as { marks?: unknown }).marks), 15_000);
        child.process.kill('SIGTERM');
        const { marks } = await report;
        await child.exited;
        const t0 = marks.find(([w]) => w === 'signal')![1];
        const seen = new Set<string>();
        for (const [what, t] of marks) {
          if (what === 'signal' || seen.has(what)) continue;
          seen.add(what);
          add(mode, what, t - t0);
        }
        const d = deletes.get(key);
        if (d !== undefined) add(mode, 'delete event (watch here)', d - t0);
      }
    }
  } finally {
    watcher.removeAllListeners();
    await watcher.cancel().catch(() => undefined);
    client.close();
    await killAllChildren();
    await etcd.stop();
  }
  for (const [mode, m] of Object.entries(per)) {
    console.log(`${mode}:`);
    for (const [what, ms] of [...m.entries()].sort((a, b) => median(a[1]) - median(b[1]))) console.log(`  ${what.padEnd(28)} median ${median(ms).toFixed(2)} ms (n ${ms.length})`);
  }
}

void main();
